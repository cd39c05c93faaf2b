#!/usr/bin/env python3
"""atheris harness for issue 19: any mail SMTP in accepts reaches the phone in valid answers.

Each input is a mail as SMTP in receives it. What ``parse_message`` accepts is delivered the way
SMTP in delivers (``deliver_to_inbox``) into a SQLite store made for this run; a phone (natsync.eas
dispatch in process, no sockets) then syncs the Inbox, fetches the message by ItemOperations with
a plain and a MIME body, and searches for a word of its subject. Every answer must be HTTP 200
and decode with our codec; the Sync must carry the new message, the Fetches Status 1 and
nothing may be left out (text is cleaned, never refused). The message is deleted afterwards, so
the store stays small whatever the run's length.

    python fuzz/fuzz_poison_mail.py -max_total_time=60 fuzz/corpus-fuzz_poison_mail

An empty corpus directory is seeded with mails that broke a folder before issue 19.
"""

from __future__ import annotations

import functools
import random
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.config import ServerConfig
    from natsync.eas import dispatch
    from natsync.eas.request import EasRequest
    from natsync.eas.versions import V16_1
    from natsync.mail.relay import deliver_to_inbox
    from natsync.mime import parse_message
    from natsync.mime.errors import MailError
    from natsync.store.api import FolderType, Txn
    from natsync.store.sqlite import SqliteStore
    from natsync.wbxml import E, Element, decode, encode

#: A fixed source for the commands' keys: a failing input reproduces with the same keys.
RNG = random.Random(0)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
USER = "alice"
CONFIG = ServerConfig(domains=("example.test",), require_provisioning=False)
AS, IO, SE = "AirSync", "ItemOperations", "Search"
_WORD = re.compile(r"[A-Za-z0-9]{3,}")

SEEDS = [
    b"Subject: nul \x00 raw\r\nContent-Type: text/plain\r\n\r\nbody \x00 here\r\n",
    b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"NUL =00 bell =07 =C3=28\r\n",
    b"Subject: bad \xff\xfe utf8\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>\xed\xa0\x80\x01</p>",
    b"Subject: =?utf-8?b?eADvv77vv78=?=\r\nContent-Type: text/plain; charset=utf-16\r\n\r\n"
    b"\xff\xfe\x00\x00",
    b"Subject: mp\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: text/plain; charset=bogus\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAEC=\r\n",
]


class Phone:
    """One device of one user, in process, and the Inbox's current SyncKey."""

    def __init__(self) -> None:
        self.store = SqliteStore(Path(tempfile.mkdtemp(prefix="natsync-fuzz-")) / "fuzz.db")
        self.store.run_sync(lambda txn: txn.add_user(USER, "alice@example.test", "A", "x", NOW))
        self.inbox = self.store.run_sync(self._inbox).server_id
        self.key = "0"
        self.key = self.collection(self.call("Sync", self.sync_body())).child_text("SyncKey") or ""

    def _inbox(self, txn: Txn) -> object:
        user = txn.get_user(USER)
        assert user is not None
        return txn.folder_by_type(user.id, FolderType.INBOX)

    def call(self, cmd: str, body: Element) -> Element:
        request = EasRequest(cmd, USER, "fuzzphone", "Fuzz", V16_1, None)
        wire = encode(body)
        response = self.store.run_sync(
            lambda txn: dispatch.handle(
                txn, request, USER, decode(wire), wire, NOW, CONFIG, rng=RNG
            )
        )
        assert response.http_status == 200, response
        assert response.skipped == (), response.skipped
        return decode(response.body)

    def sync_body(self) -> Element:
        coll = E(AS, "Collection", E(AS, "SyncKey", self.key), E(AS, "CollectionId", self.inbox))
        coll.add(AS, "WindowSize", 100)
        return E(AS, "Sync", E(AS, "Collections", coll))

    @staticmethod
    def collection(tree: Element) -> Element:
        coll = tree.find("Collections", AS)
        found = coll.find("Collection", AS) if coll is not None else None
        assert found is not None, tree
        assert found.child_text("Status", AS) == "1", found
        return found


@functools.cache
def the_phone() -> Phone:
    """The run's one store and phone, made on the first accepted mail."""
    return Phone()


def test_one_input(data: bytes) -> None:
    try:
        message = parse_message(data, NOW)
    except MailError:
        return
    phone = the_phone()

    def deliver(txn: Txn) -> tuple[str, int]:
        user = txn.get_user(USER)
        assert user is not None
        deliver_to_inbox(txn, user, message)
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        newest = max(txn.message_versions(inbox.id), key=lambda s: int(s.rpartition(":")[2]))
        found = txn.get_message(user.id, newest)
        assert found is not None
        return newest, found.id

    server_id, message_id = phone.store.run_sync(deliver)
    coll = phone.collection(phone.call("Sync", phone.sync_body()))
    phone.key = coll.child_text("SyncKey", AS) or ""
    commands = coll.find("Commands", AS)
    adds = [] if commands is None else commands.findall("Add", AS)
    assert [a.child_text("ServerId", AS) for a in adds] == [server_id]
    for body_type in (1, 4):
        pref = E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", body_type))
        options = E(IO, "Options", E(AS, "MIMESupport", 2), pref)
        op = E(IO, "Fetch", E(IO, "Store", "Mailbox"), E(AS, "ServerId", server_id), options)
        tree = phone.call(IO, E(IO, IO, op))
        fetched = tree.find("Response", IO)
        assert fetched is not None
        assert fetched.find("Fetch", IO).child_text("Status", IO) == "1", tree  # type: ignore[union-attr]
    word = _WORD.search(message.subject)
    if word is not None:
        query = E(SE, "Query", E(SE, "And", E(AS, "Class", "Email"), E(SE, "FreeText", word[0])))
        phone.call(SE, E(SE, SE, E(SE, "Store", E(SE, "Name", "Mailbox"), query)))
    phone.store.run_sync(lambda txn: txn.delete_message(message_id))


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".eml")
