"""natsync in front of a real Dovecot: IMAP login, mirror, push and write-back, end to end.

One Dovecot (tests/sources/dovecot.py) serves the module; each test has its own Dovecot user,
natsync store and server, and an emulated phone (natsync.client.EASClient). The 'laptop' is
Python's imaplib on the same Dovecot. Every end-to-end test runs on both store drivers (the
``store_factory`` fixture: a SQLite file, and a database of a real PostgreSQL server).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from natsync.client import ClientError, EASClient
from natsync.client.protocol import (
    BodyPreference,
    BodyType,
    ClientChange,
    Command,
    ItemCommand,
    sync_request,
)
from natsync.config import ServerConfig
from natsync.server import RunningServer, start_server
from natsync.sources import MirrorManager, install, sources_from_dict
from natsync.sources.structure import MARKER
from natsync.sources.worker import NO_LOCAL_PASSWORD
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import decode
from natsync.wbxml.tree import E, Element
from tests.conftest import StoreFactory
from tests.sources.dovecot import DOVEADM, Dovecot, available, free_port, sieve_available

pytestmark = [
    pytest.mark.skipif(not available(), reason="dovecot-imapd is not installed (apt)"),
    pytest.mark.timeout(120),
]

INBOX, DRAFTS, TRASH, SENT = 2, 3, 4, 5
#: Dovecot users made for the module: one per test.
USERS = 60
#: A user whose mailbox is (nearly) full.
QUOTA_USER = "full@example.test"


class Internet:
    """What Dovecot's submission service relays to: an aiosmtpd sink that keeps what it got."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []
        #: Senders whose mail comes back to them as a copy (Postfix's ``sender_bcc_maps``),
        #: delivered by these functions (Dovecot's LMTP: its Sieve files it in Sent).
        self.bcc_back: dict[str, Callable[..., None]] = {}

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        self.received.append(envelope)
        deliver = self.bcc_back.get(envelope.mail_from or "")
        if deliver is not None:
            sender = envelope.mail_from
            await asyncio.to_thread(deliver, sender, _content(envelope), sender=sender)
        return "250 2.0.0 queued"


@pytest.fixture(scope="module")
def internet() -> Iterator[tuple[Internet, int]]:
    sink = Internet()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def dovecot(
    tmp_path_factory: pytest.TempPathFactory, internet: tuple[Internet, int]
) -> Iterator[Dovecot]:
    # Users are written before the start: Dovecot re-reads its passwd-file only when the file's
    # mtime (whole seconds) changes, so users added within a second could go unseen.
    users = {f"user{n}@example.test": "imap-secret" for n in range(1, USERS + 1)}
    users[QUOTA_USER] = "imap-secret"
    # 1 KiB: an IMAP APPEND of a larger message is refused with NO [OVERQUOTA] (RFC 9208).
    extra = {QUOTA_USER: "userdb_quota_rule=*:storage=1"}
    server = Dovecot(tmp_path_factory.mktemp("dovecot"), users, extra, relay_port=internet[1])
    server.start()
    yield server
    server.stop()


def mail(subject: str, message_id: str | None = None) -> bytes:
    mid = message_id or f"<{subject.replace(' ', '.')}@example.org>"
    return (
        f"From: Bob <bob@example.org>\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\nHello {subject}\r\n"
    ).encode()


@dataclass
class Rig:
    dovecot: Dovecot
    login: str
    password: str
    store: Store
    server: RunningServer
    manager: MirrorManager

    def phone(self, password: str | None = None, device: str = "IMAPPHONE1") -> EASClient:
        return EASClient(
            f"http://127.0.0.1:{self.server.port}",
            self.login,
            password or self.password,
            device_id=device,
        )

    def laptop(self) -> imaplib.IMAP4_SSL:
        return self.dovecot.imap(self.login)

    async def ready(self, phone: EASClient) -> None:
        """Provision *phone*, sync its folder list and wait for the mirror's first round."""
        await phone.provision()
        await phone.folder_sync()
        await self.synced()

    async def synced(self) -> None:
        for _ in range(200):
            mirror = self.manager.mirrors.get(self.login)
            if mirror is not None and mirror.synced.is_set():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the mirror did not sync")


_counter = iter(range(1, 10_000))
T = TypeVar("T")


@contextlib.asynccontextmanager
async def _rig(
    dovecot: Dovecot, store_factory: StoreFactory, **settings: str
) -> AsyncIterator[Rig]:
    login = f"user{next(_counter)}@example.test"
    store = store_factory(with_alice=False)
    config = ServerConfig(host="127.0.0.1", port=0, domains=("example.test",))
    server = await start_server(config, store)
    sources = sources_from_dict(
        {
            "imap": {
                "dovecot": {
                    "host": "127.0.0.1",
                    "port": dovecot.imaps_port,
                    "tls": "implicit",
                    "ca_file": str(dovecot.ca_file),
                    "submission_port": dovecot.submission_port,
                    **settings,
                }
            },
            "domains": {"example.test": "dovecot"},
        }
    )
    manager = install(server.eas, sources, store)
    yield Rig(dovecot, login, "imap-secret", store, server, manager)
    await manager.aclose()
    await server.close()  # store_factory closes the store


@pytest.fixture
async def rig(dovecot: Dovecot, store_factory: StoreFactory) -> AsyncIterator[Rig]:
    async with _rig(dovecot, store_factory) as made:
        yield made


@pytest.fixture
async def server_files_sent_rig(
    dovecot: Dovecot, store_factory: StoreFactory
) -> AsyncIterator[Rig]:
    """A rig whose IMAP source says the mail server files its own Sent copies."""
    async with _rig(dovecot, store_factory, sent_copy="server") as made:
        yield made


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.1)


async def eventually(probe: Callable[[], Awaitable[T]], what: str, timeout: float = 15.0) -> T:
    """The first truthy result of the phone-side *probe* (a Sync, a FolderSync ...)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def flags_of(laptop: imaplib.IMAP4_SSL, mailbox: str, subject: str) -> str | None:
    """The FLAGS of the message with *subject* in *mailbox*, None when it is not there."""
    laptop.select(f'"{mailbox}"', readonly=True)
    _typ, data = laptop.uid("SEARCH", "SUBJECT", f'"{subject}"')
    uids = data[0].split() if data and data[0] else []
    if not uids:
        return None
    _typ, data = laptop.uid("FETCH", uids[-1].decode(), "(FLAGS)")
    return str(data[0])


async def test_imap_login_creates_the_user_without_a_password(rig: Rig) -> None:
    async with rig.phone(password="wrong") as phone:
        with pytest.raises(Exception, match=r"401|uthenticat"):
            await phone.provision()
    assert await rig.store.run(lambda t: t.get_user(rig.login)) is None
    async with rig.phone() as phone:
        await phone.provision()
        await phone.folder_sync()
    user = await rig.store.run(lambda t: t.get_user(rig.login))
    assert user is not None
    stored = await rig.store.run(lambda t: t.password_hash(user.id))
    assert stored == NO_LOCAL_PASSWORD


async def test_push_flags_move_delete_round_trip(rig: Rig) -> None:
    laptop = rig.laptop()
    laptop.create('"Projects"')
    rig.dovecot.deliver(rig.login, mail("first"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        inbox = phone.folder(type=INBOX).server_id
        projects = phone.folder(name="Projects").server_id
        trash = phone.folder(type=TRASH).server_id
        first = await phone.sync(inbox)
        assert [m.subject for m in first.added] == ["first"]

        # Push: a delivery ends the held Ping within about a second.
        ping = asyncio.create_task(phone.ping([inbox], 60))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.to_thread(rig.dovecot.deliver, rig.login, mail("second"))
        assert await asyncio.wait_for(ping, 10) == [inbox]
        assert time.monotonic() - started < 2.0
        second = await phone.sync(inbox)
        assert [m.subject for m in second.added] == ["second"]
        first_id, second_id = first.added[0].server_id, second.added[0].server_id

        # Phone -> server: read and flagged.
        await phone.change_read(inbox, first_id, True)
        await phone.change_flag(inbox, second_id, 2)
        await until(lambda: "\\Seen" in (flags_of(laptop, "INBOX", "first") or ""))
        await until(lambda: "\\Flagged" in (flags_of(laptop, "INBOX", "second") or ""))

        # Server -> phone: the laptop reads "second".
        laptop.select("INBOX")
        _typ, data = laptop.uid("SEARCH", "SUBJECT", '"second"')
        laptop.uid("STORE", data[0].decode(), "+FLAGS", "(\\Seen)")

        async def read_on_phone() -> bool:
            result = await phone.sync(inbox)
            return any(
                m.server_id == second_id and m.fields.get("Email:Read") == "1"
                for m in result.changed
            )

        deadline = time.monotonic() + 5
        while not await read_on_phone():
            assert time.monotonic() < deadline, "the laptop's \\Seen did not reach the phone"
            await asyncio.sleep(0.2)

        # Move on the phone -> UID MOVE on the server.
        await phone.move_items([first_id], inbox, projects)
        await until(lambda: flags_of(laptop, "Projects", "first") is not None)
        assert flags_of(laptop, "INBOX", "first") is None
        # Delete on the phone (as a move to Deleted Items) -> the message is in Trash.
        await phone.delete(inbox, [second_id])
        await until(lambda: flags_of(laptop, "Trash", "second") is not None)
        assert flags_of(laptop, "INBOX", "second") is None
        # Delete for good in Trash -> EXPUNGE.
        trashed = await phone.sync(trash)
        await phone.delete(trash, [m.server_id for m in trashed.added], deletes_as_moves=False)
        await until(lambda: flags_of(laptop, "Trash", "second") is None)
        # Nothing came back to the phone twice.
        again = await phone.sync(inbox)
        assert not again.added
        assert not again.duplicates
    laptop.logout()


async def test_send_goes_through_submission_and_the_copy_to_sent(
    rig: Rig, internet: tuple[Internet, int]
) -> None:
    sink, _ = internet
    laptop = rig.laptop()
    async with rig.phone() as phone:
        await rig.ready(phone)
        raw = (
            f"From: {rig.login}\r\nTo: carol@example.org\r\nSubject: from the phone\r\n"
            "Message-ID: <phone.1@example.test>\r\n\r\nsent from natsync\r\n"
        ).encode()
        await phone.send_mail(raw)
        await until(lambda: flags_of(laptop, "Sent", "from the phone") is not None)

        # It left through Dovecot's submission service, authenticated as the user.
        def mine() -> list[Envelope]:  # the sink serves the module: other tests' mail too
            return [
                e
                for e in sink.received
                if b"from the phone" in _content(e) and e.mail_from == rig.login
            ]

        await until(mine)
        sent = mine()
        assert len(sent) == 1
        assert sent[0].rcpt_tos == ["carol@example.org"]
        queued = await rig.store.run(lambda t: t.due_outbound(datetime.now(UTC), 10))
        assert queued == []
    laptop.logout()


def _content(envelope: Envelope) -> bytes:
    content = envelope.content or b""
    return content if isinstance(content, bytes) else content.encode()


async def test_uidvalidity_change_resyncs_without_duplicates(rig: Rig) -> None:
    laptop = rig.laptop()
    laptop.create('"Archive"')
    for n in (1, 2):
        laptop.append('"Archive"', None, None, mail(f"old {n}"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        archive = phone.folder(name="Archive").server_id
        first = await phone.sync(archive)
        assert sorted(m.subject for m in first.added) == ["old 1", "old 2"]
        # A new UIDVALIDITY for the same messages (as after a restore of the mailbox; a
        # mailbox deleted and created again is a folder deleted on the phone), plus one new.
        conf = str(rig.dovecot.root / "dovecot.conf")
        validity = str(int(time.time()) + 12345)
        update = [DOVEADM, "-c", conf, "mailbox", "update", "-u", rig.login]
        await asyncio.to_thread(
            subprocess.run,
            [*update, "--uid-validity", validity, "Archive"],
            check=True,
            capture_output=True,
        )
        laptop.append('"Archive"', None, None, mail("old 3"))
        mirror = rig.manager.mirrors[rig.login]
        mirror.wake.set()

        async def three() -> list[str]:
            result = await phone.sync(archive)
            assert not result.deleted, "a UIDVALIDITY change must not delete kept messages"
            assert not result.duplicates
            return [m.subject for m in result.added]

        added: list[str] = []
        deadline = time.monotonic() + 5
        while "old 3" not in added:
            assert time.monotonic() < deadline
            added += await three()
            await asyncio.sleep(0.2)
        assert added == ["old 3"]
    laptop.logout()


async def test_reconnects_and_resumes(rig: Rig) -> None:
    async with rig.phone() as phone:
        await rig.ready(phone)
        inbox = phone.folder(type=INBOX).server_id
        await phone.sync(inbox)
        mirror = rig.manager.mirrors[rig.login]
        assert mirror.connects == 1
        conf = str(rig.dovecot.root / "dovecot.conf")
        await asyncio.to_thread(
            subprocess.run,
            [DOVEADM, "-c", conf, "kick", rig.login],
            check=True,
            capture_output=True,
        )
        rig.dovecot.deliver(rig.login, mail("after the kick"))
        await until(lambda: mirror.connects >= 2, timeout=10)

        async def arrived() -> bool:
            return any(m.subject == "after the kick" for m in (await phone.sync(inbox)).added)

        deadline = time.monotonic() + 10
        while not await arrived():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


async def test_natsync_server_reads_the_sources_table(dovecot: Dovecot, tmp_path: Path) -> None:
    """`natsync server --config FILE` with a [sources] table: an IMAP user logs in and syncs."""
    login = f"user{USERS}@example.test"
    dovecot.deliver(login, mail("for the server process"))
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{tmp_path / "data"}"\n'
        f'[sources]\ndefault = "dovecot"\n'
        f'[sources.imap.dovecot]\nhost = "127.0.0.1"\nport = {dovecot.imaps_port}\n'
        f'ca_file = "{dovecot.ca_file}"\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - once; its output is read in a thread
        [str(Path(sys.executable).parent / "natsync"), "server", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not url:
            line = await asyncio.to_thread(proc.stderr.readline)
            found = re.search(r"ActiveSync at (http://\S+?)/Microsoft", line)
            url = found.group(1) if found else ""
        assert url
        async with EASClient(url, login, "imap-secret", device_id="CLIPHONE") as phone:
            await phone.provision()
            await phone.folder_sync()
            inbox = phone.folder(type=INBOX).server_id
            subjects: list[str] = []
            deadline = time.monotonic() + 10
            while "for the server process" not in subjects:
                assert time.monotonic() < deadline
                subjects += [m.subject for m in (await phone.sync(inbox)).added]
                await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == 0


def _uid_of(laptop: imaplib.IMAP4_SSL, mailbox: str, subject: str) -> str:
    laptop.select(f'"{mailbox}"')
    _typ, data = laptop.uid("SEARCH", "SUBJECT", f'"{subject}"')
    return str(data[0].split()[-1].decode())


async def test_categories_and_keywords_both_ways(rig: Rig) -> None:
    laptop = rig.laptop()
    rig.dovecot.deliver(rig.login, mail("labelled"))
    rig.dovecot.deliver(rig.login, mail("tagged on the laptop"))
    # Dovecot keeps any keyword (PERMANENTFLAGS has \*).
    _typ, _data = laptop.select("INBOX")
    assert "\\*" in str(laptop.untagged_responses.get("PERMANENTFLAGS", [b""])[-1])
    async with rig.phone() as phone:
        await rig.ready(phone)
        inbox = phone.folder(type=INBOX).server_id
        first = await phone.sync(inbox)
        ids = {m.subject: m.server_id for m in first.added}

        # Phone -> server: two categories, one not an IMAP atom.
        change = ClientChange(ids["labelled"], categories=("Work", "Très important"))
        await phone.sync(inbox, changes=[change])
        await until(
            lambda: "Tr&C3A8-s&20-important" in (flags_of(laptop, "INBOX", "labelled") or "")
        )
        assert "Work" in (flags_of(laptop, "INBOX", "labelled") or "")
        # Removing one removes its keyword only; \Seen and other flags are left alone.
        await phone.sync(inbox, changes=[ClientChange(ids["labelled"], categories=("Work",))])
        await until(lambda: "Tr&C3A8" not in (flags_of(laptop, "INBOX", "labelled") or ""))
        assert "Work" in (flags_of(laptop, "INBOX", "labelled") or "")

        # Server -> phone: keywords an IMAP client sets show as categories (markers do not).
        uid = _uid_of(laptop, "INBOX", "tagged on the laptop")
        laptop.uid("STORE", uid, "+FLAGS", "(Family $Forwarded Caf&C3A9-)")

        async def categories_on_phone() -> list[str] | None:
            result = await phone.sync(inbox)
            for m in result.changed:
                if m.server_id == ids["tagged on the laptop"] and m.categories:
                    return sorted(m.categories)
            return None

        found = await eventually(categories_on_phone, "the laptop's keywords are not on the phone")
        assert found == ["Café", "Family"]
        # ... and the phone's later change of them removes the keyword on the server, keeping
        # the marker.
        await phone.sync(
            inbox, changes=[ClientChange(ids["tagged on the laptop"], categories=("Family",))]
        )
        await until(
            lambda: "Caf&C3A9-" not in (flags_of(laptop, "INBOX", "tagged on the laptop") or "")
        )
        kept = flags_of(laptop, "INBOX", "tagged on the laptop") or ""
        assert "Family" in kept
        assert "$Forwarded" in kept
        # Nothing bounced back to the phone as a change it did not make.
        assert rig.manager.mirrors[rig.login].refused == 0
    laptop.logout()


async def test_refusals_are_undone_not_retried(
    rig: Rig, internet: tuple[Internet, int], caplog: pytest.LogCaptureFixture
) -> None:
    """NO [OVERQUOTA] to the APPEND of a Sent copy: the copy leaves the store (the phone's next
    Sync shows the server's truth), one log line, no retry, the connection kept."""
    rig.login = QUOTA_USER
    sink, _ = internet
    caplog.set_level("INFO", logger="natsync.sources")
    laptop = rig.laptop()
    async with rig.phone() as phone:
        await rig.ready(phone)
        sent = phone.folder(type=SENT).server_id
        await phone.sync(sent)
        mirror = rig.manager.mirrors[rig.login]
        raw = (
            f"From: {rig.login}\r\nTo: carol@example.org\r\nSubject: too big to keep\r\n"
            "Message-ID: <quota.1@example.test>\r\n\r\n" + ("x" * 70 + "\r\n") * 60
        ).encode()
        await phone.send_mail(raw)
        await until(lambda: mirror.refused == 1)
        # The mail itself was sent (submission has no quota); only the copy was refused.
        await until(lambda: any(b"too big to keep" in _content(e) for e in sink.received))
        assert flags_of(laptop, "Sent", "too big to keep") is None
        # The store holds no copy the server does not have.
        subjects = [m.subject for m in (await phone.sync(sent)).added]
        assert "too big to keep" not in subjects
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1
        assert "OVERQUOTA" in refusals[0].getMessage()
        # Not retried, and the session went on.
        mirror.wake.set()
        await asyncio.sleep(0.5)
        assert mirror.refused == 1
        assert mirror.connects == 1
    laptop.logout()


def _mailboxes(laptop: imaplib.IMAP4_SSL, command: str = "LIST") -> set[str]:
    """The mailbox names LIST (or LSUB: the subscribed ones) shows the laptop."""
    _typ, data = laptop.lsub() if command == "LSUB" else laptop.list()
    names = set()
    for line in data:
        if isinstance(line, bytes):
            names.add(line.decode().rsplit(' "/" ', 1)[-1].strip('"'))
    return names


async def test_folders_both_ways(rig: Rig) -> None:
    laptop = rig.laptop()
    async with rig.phone() as phone:
        await rig.ready(phone)
        inbox = phone.folder(type=INBOX).server_id

        # Phone -> server: FolderCreate (top level and below it), FolderUpdate, FolderDelete.
        trips = await phone.folder_create("Trips")
        await phone.folder_create("Japan", parent_id=trips.server_id)
        await until(lambda: {"Trips", "Trips/Japan"} <= _mailboxes(laptop))
        # SUBSCRIBE follows CREATE: LIST may show the mailbox a moment before LSUB does.
        await until(lambda: {"Trips", "Trips/Japan"} <= _mailboxes(laptop, "LSUB"))
        await phone.folder_update(trips.server_id, "Voyages")
        await until(lambda: {"Voyages", "Voyages/Japan"} <= _mailboxes(laptop))
        assert "Trips" not in _mailboxes(laptop)
        await until(lambda: "Voyages" in _mailboxes(laptop, "LSUB"))
        # A message moved into the renamed folder's child lands in the renamed mailbox.
        rig.dovecot.deliver(rig.login, mail("to japan"))
        await phone.folder_sync()
        japan = phone.folder(name="Japan").server_id

        async def added() -> list[str]:
            return [m.server_id for m in (await phone.sync(inbox)).added]

        got = await eventually(added, "the delivery did not reach the phone")
        await phone.move_items(got, inbox, japan)
        await until(lambda: flags_of(laptop, "Voyages/Japan", "to japan") is not None)
        await phone.folder_delete(trips.server_id)
        await until(lambda: not {"Voyages", "Voyages/Japan"} & _mailboxes(laptop))

        mirror = rig.manager.mirrors[rig.login]
        assert mirror.connects == 1
        # Server -> phone: a mailbox the laptop creates appears, one it deletes goes. (Dovecot
        # drops a connection whose selected mailbox another session deletes: the mirror may
        # reconnect here, by design.)
        laptop.create('"Receipts"')

        async def receipts(there: bool) -> bool:
            await phone.folder_sync()
            names = {f.display_name for f in phone.state.folders.values()}
            return ("Receipts" in names) == there

        await eventually(partial(receipts, True), "the laptop's new mailbox is not on the phone")
        laptop.delete('"Receipts"')
        await eventually(partial(receipts, False), "the laptop's deleted mailbox is still there")
        assert mirror.refused == 0
    laptop.logout()


def _subjects(laptop: imaplib.IMAP4_SSL, mailbox: str) -> dict[str, str]:
    """Subject -> FLAGS of every message in *mailbox*."""
    laptop.select(f'"{mailbox}"')
    _typ, data = laptop.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    found = {}
    for part in data:
        if isinstance(part, tuple):
            subject = part[1].decode().partition(":")[2].strip()
            found[subject] = part[0].decode()
    return found


def _draft(subject: str, body: str) -> Element:
    return E(
        "AirSync",
        "ApplicationData",
        E("Email", "To", "bob@example.org"),
        E("Email", "Subject", subject),
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", 1), E("AirSyncBase", "Data", body)),
    )


async def test_drafts_both_ways(rig: Rig) -> None:
    laptop = rig.laptop()
    async with rig.phone() as phone:
        await rig.ready(phone)
        drafts = phone.folder(type=DRAFTS).server_id
        await phone.sync(drafts)
        # Saved on the phone (16.x Sync Add in Drafts) -> APPENDed with \Draft.
        added = await phone.sync(drafts, changes=[ItemCommand.add(_draft("plan", "v1"), "c1")])
        replies = [r for r in added.responses if r.kind == "Add" and r.client_id == "c1"]
        assert replies
        assert replies[0].status == 1
        await until(lambda: "plan" in _subjects(laptop, "Drafts"))
        assert "\\Draft" in _subjects(laptop, "Drafts")["plan"]
        # Changed on the phone -> the new version replaces the old one on the server.
        sid = replies[0].server_id
        await phone.sync(drafts, changes=[ItemCommand.change(sid, _draft("plan v2", "v2"))])
        await until(lambda: set(_subjects(laptop, "Drafts")) == {"plan v2"})
        # A draft an IMAP client saves appears on the phone.
        laptop.append('"Drafts"', "(\\Draft)", None, mail("from the laptop"))

        async def laptops_draft() -> bool:
            return "from the laptop" in [m.subject for m in (await phone.sync(drafts)).added]

        await eventually(laptops_draft, "the laptop's draft did not reach the phone")
        assert rig.manager.mirrors[rig.login].refused == 0
    laptop.logout()


async def test_a_move_into_a_mailbox_deleted_meanwhile_is_undone(rig: Rig) -> None:
    """The phone moves a message into a folder whose mailbox a laptop has just deleted: UID MOVE
    is refused (NO [TRYCREATE]); the message goes back to the Inbox — on the phone too — and is
    not lost with the folder."""
    laptop = rig.laptop()
    laptop.create('"Doomed"')
    rig.dovecot.deliver(rig.login, mail("nearly lost"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        inbox = phone.folder(type=INBOX).server_id
        doomed = phone.folder(name="Doomed").server_id
        message = (await phone.sync(inbox)).added[0].server_id
        # The mirror is away (as between two of its rounds) while both happen.
        user = rig.manager.mirrors[rig.login].user
        rig.manager._watchers.pop(rig.login).cancel()
        await asyncio.to_thread(rig.manager.mirrors.pop(rig.login).stop)
        laptop.delete('"Doomed"')
        await phone.move_items([message], inbox, doomed)
        mirror = await rig.manager.start(user, rig.login, rig.password)
        await until(lambda: mirror.refused == 1)

        async def back_in_inbox() -> bool:
            return "nearly lost" in [m.subject for m in (await phone.sync(inbox)).added]

        await eventually(back_in_inbox, "the refused move was not undone on the phone")
        assert flags_of(laptop, "INBOX", "nearly lost") is not None

        async def doomed_gone() -> bool:
            await phone.folder_sync()
            return all(f.display_name != "Doomed" for f in phone.state.folders.values())

        await eventually(doomed_gone, "the deleted mailbox is still on the phone")
        assert mirror.connects == 1
    laptop.logout()


class ServerProcess:
    """`natsync server --config FILE` in a process of its own; its log lines kept as they come."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "natsync"), "server", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    async def url(self) -> str:
        async def found() -> str:
            match = re.search(r"ActiveSync at (http://\S+?)/Microsoft", self.log())
            return match.group(1) if match else ""

        try:
            return await eventually(found, "the server did not start", timeout=40)
        except AssertionError:
            raise AssertionError(f"the server did not start: {self.log()[-3000:]}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(10)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


MIRRORS = "this process mirrors it now"


async def test_two_processes_mirror_an_account_once_and_take_over(
    dovecot: Dovecot, tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> None:
    """Two `natsync server` processes on one store (SQLite file / PostgreSQL database), a phone
    on each: one process mirrors the account (the store's lease), the other waits; killed
    (SIGKILL: no clean release), the first is taken over once its 2 s lease runs out, and mail
    delivered meanwhile reaches the phone once."""
    login = f"user{next(_counter)}@example.test"
    store = f'"{tmp_path / "natsync.db"}"'
    pg_url = ""
    if store_kind == "postgres":
        pg_url = request.getfixturevalue("pg_server").acquire()
        store = f'"{pg_url}"'
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{tmp_path / "data"}"\n'
        f"store = {store}\n"
        f'[sources]\ndefault = "dovecot"\nlease = 2\n'
        f'[sources.imap.dovecot]\nhost = "127.0.0.1"\nport = {dovecot.imaps_port}\n'
        f'ca_file = "{dovecot.ca_file}"\n',
        encoding="utf-8",
    )
    first, second = ServerProcess(config), ServerProcess(config)
    phones: list[EASClient] = []
    try:
        phones += [
            EASClient(await p.url(), login, "imap-secret", device_id=f"LEASE{n}")
            for n, p in enumerate((first, second))
        ]
        for phone in phones:
            await phone.provision()
        await until(lambda: MIRRORS in first.log() + second.log(), timeout=15)
        await asyncio.sleep(1.5)  # a second one would have started by now
        holders = [p for p in (first, second) if MIRRORS in p.log()]
        assert len(holders) == 1, [p.log()[-2000:] for p in (first, second)]
        holder = holders[0]
        other = second if holder is first else first
        phone = phones[1] if holder is first else phones[0]
        assert "mirrored by another natsync process" in other.log()

        await asyncio.to_thread(holder.stop, signal.SIGKILL)
        dovecot.deliver(login, mail("after the takeover"))
        await until(lambda: MIRRORS in other.log(), timeout=15)
        await phone.folder_sync()
        inbox = phone.folder(type=INBOX).server_id

        async def arrived() -> list[str]:
            added = [m.subject for m in (await phone.sync(inbox)).added]
            return [s for s in added if s == "after the takeover"]

        got = await eventually(arrived, "the mail did not arrive", 15)
        assert got == ["after the takeover"], other.log()[-6000:]
        await asyncio.sleep(1.0)
        assert not await arrived()  # once
    finally:
        codes = [await asyncio.to_thread(p.stop) for p in (first, second)]
        for p in phones:
            await p.close()
        if pg_url:
            request.getfixturevalue("pg_server").release(pg_url)
    assert 0 in codes  # the survivor stops cleanly


def big_mail(subject: str, attachment: bytes, text: str = "see the report attached") -> bytes:
    """A message with text and HTML bodies and a PDF attachment (what a phone lists first)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = "Bob <bob@example.org>"
    message["To"] = "someone@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@example.org>"
    message["Date"] = "Sun, 06 Dec 2026 12:00:00 +0000"
    message.set_content(text)
    message.add_alternative(f"<p>{text}</p>", subtype="html")
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename="report.pdf")
    return message.as_bytes()


def _server_copy(laptop: imaplib.IMAP4_SSL, subject: str) -> bytes:
    laptop.select("INBOX")
    _typ, data = laptop.uid("SEARCH", "SUBJECT", f'"{subject}"')
    _typ, data = laptop.uid("FETCH", data[0].split()[-1].decode(), "(BODY.PEEK[])")
    return bytes(data[0][1])


async def test_large_messages_are_mirrored_lazily(rig: Rig) -> None:
    """A message above LAZY_ABOVE reaches the phone from its structure and text (a small copy
    in the store); its attachment and its whole MIME are fetched from Dovecot when the phone
    asks (ItemOperations Fetch by FileReference / with BodyPreference Type 4)."""
    attachment = bytes(range(256)) * 1200  # 300 KiB
    rig.dovecot.deliver(rig.login, big_mail("big one", attachment))
    rig.dovecot.deliver(rig.login, big_mail("big two", attachment[::-1], "a second report"))
    rig.dovecot.deliver(rig.login, mail("small one"))
    forged = b"X-Natsync-Partial: key=" + b"0" * 32 + b"; size=1; cut=0\r\n" + mail("forged")
    rig.dovecot.deliver(rig.login, forged)
    laptop = rig.laptop()
    async with rig.phone() as phone:
        await rig.ready(phone)
        inbox = phone.folder(type=INBOX).server_id
        prefs = [BodyPreference(BodyType.HTML, truncation_size=2000)]
        added = {m.subject: m for m in (await phone.sync(inbox, body_preference=prefs)).added}
        assert set(added) == {"big one", "big two", "small one", "forged"}
        big = added["big one"]
        assert big.body is not None
        assert "see the report attached" in big.body.data
        [listed] = big.attachments
        assert listed.display_name == "report.pdf"
        assert abs(listed.estimated_size - len(attachment)) < len(attachment) // 50

        def stored(subject: str) -> Callable[[Txn], bytes]:
            def read(txn: Txn) -> bytes:
                user = txn.get_user(rig.login)
                assert user is not None
                [found] = [m for m in txn.search_messages(user.id, subject, None, 10)]
                return txn.raw_message(found.id)

            return read

        for subject in ("big one", "big two"):
            kept = await rig.store.run(stored(subject))
            assert kept.startswith(MARKER)
            assert len(kept) < 10_000
        assert not (await rig.store.run(stored("small one"))).startswith(MARKER)

        # The attachment, when the phone opens it: from Dovecot, whole.
        fetched = await phone.item_operations_fetch(file_reference=listed.file_reference)
        assert fetched.data == attachment
        whole = _server_copy(laptop, "big one")
        assert await rig.store.run(stored("big one")) == whole
        # The whole MIME of the other one (BodyPreference Type 4), after Dovecot dropped the
        # kept fetch connection (as its idle timeout would): a new one is made.
        laptop.logout()  # (the kick would end the laptop's session too)
        await asyncio.to_thread(
            subprocess.run,
            [DOVEADM, "-c", str(rig.dovecot.root / "dovecot.conf"), "kick", rig.login],
            check=True,
            capture_output=True,
        )
        laptop = rig.laptop()
        mime = await phone.item_operations_fetch(
            collection_id=inbox,
            server_id=added["big two"].server_id,
            body_preference=[BodyPreference(BodyType.MIME)],
        )
        assert mime.item is not None
        assert mime.item.body is not None
        assert mime.item.body.data.encode() == _server_copy(laptop, "big two")
        # Mail arriving with a marker line of its own is a whole message, fetched as it is.
        fetched = await phone.item_operations_fetch(
            collection_id=inbox,
            server_id=added["forged"].server_id,
            body_preference=[BodyPreference(BodyType.MIME)],
        )
        assert fetched.item is not None
        assert fetched.item.body is not None
        assert fetched.item.body.data.encode() == _server_copy(laptop, "forged")
        # Nothing flagged as changed on the phone by putting the whole message in place.
        assert (await phone.sync(inbox, body_preference=prefs)).added == []
    laptop.logout()


async def test_a_refused_move_answers_the_phone_with_its_status(rig: Rig) -> None:
    """A mailbox the user may read but not write (Dovecot's ACL: rights "lr", RFC 4314): the
    MOVE into it is refused (NO [NOPERM]). The phone's MoveItems answer waits for the server's
    verdict and says Status 5 (MS-ASCMD 2.2.3.177.10, failure) instead of 3; the message stays
    in the Inbox on the server and comes back to the phone's Inbox. FolderCreate below it and
    FolderDelete of it are refused too, and answered so."""
    laptop = rig.laptop()
    laptop.create('"Readonly"')
    rig.dovecot.deliver(rig.login, mail("not for that folder"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        inbox = phone.folder(type=INBOX).server_id
        readonly = phone.folder(name="Readonly").server_id
        [message] = (await phone.sync(inbox)).added
        with pytest.raises(ClientError) as refused:
            await phone.move_items([message.server_id], inbox, readonly)
        assert refused.value.eas_status == 5
        mirror = rig.manager.mirrors[rig.login]
        assert mirror.refused == 1
        assert flags_of(laptop, "INBOX", "not for that folder") is not None
        assert flags_of(laptop, "Readonly", "not for that folder") is None

        async def back() -> list[str]:
            return [m.subject for m in (await phone.sync(inbox)).added]

        assert await eventually(back, "the message did not come back") == ["not for that folder"]
        assert (await phone.sync(readonly)).added == []

        # FolderCreate below it (no "k" right: NO [NOPERM]): Status 6 (MS-ASCMD 2.2.3.177.3,
        # an error on the server), and the folder is not kept.
        with pytest.raises(ClientError) as refused:
            await phone.folder_create("Child", parent_id=readonly)
        assert refused.value.eas_status == 6
        await phone.folder_sync()
        assert all(f.display_name != "Child" for f in phone.state.folders.values())
        assert "Readonly/Child" not in _mailboxes(laptop)
        # FolderDelete of it (no "x" right): Status 6 (2.2.3.177.4); the mailbox stays, and the
        # phone, told the delete failed, keeps a "Readonly" folder (the server's, mirrored anew).
        with pytest.raises(ClientError) as refused:
            await phone.folder_delete(readonly)
        assert refused.value.eas_status == 6
        assert "Readonly" in _mailboxes(laptop)

        async def still_there() -> bool:
            await phone.folder_sync()
            return any(f.display_name == "Readonly" for f in phone.state.folders.values())

        assert await eventually(still_there, "the undeletable folder left the phone")
        assert mirror.refused == 3
    laptop.logout()


def _pause_folder_syncs(mirror: Any) -> threading.Event:
    """While the returned event is set, *mirror* writes back but does not look at the server's
    mailboxes: a laptop's change stays unseen by it, as between two of its rounds."""
    paused = threading.Event()
    for name in ("_sync_folder", "_server_folders"):
        original = getattr(mirror, name)

        def unless_paused(*args: Any, original: Any = original) -> None:
            if not paused.is_set():
                original(*args)

        setattr(mirror, name, unless_paused)
    return paused


async def test_a_sync_answers_what_the_server_refused_with_its_status(rig: Rig) -> None:
    """Changes riding on a Sync wait for the mirror's write-back round (MS-ASCMD 2.2.3.177.17):
    a read change a laptop overtook (UNCHANGEDSINCE -> MODIFIED) is Status 7 and the laptop's
    state reaches the phone; a delete out of a mailbox whose ACL keeps its messages (rights
    "lri", UID MOVE -> NO [NOPERM]) is Status 8 and the message comes back once under a new
    ServerId; an accepted change answers nothing."""
    laptop = rig.laptop()
    laptop.create('"Kept"')
    laptop.append('"Kept"', None, None, mail("kept for good"))
    rig.dovecot.deliver(rig.login, mail("contested"))
    rig.dovecot.deliver(rig.login, mail("plain"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        inbox = phone.folder(type=INBOX).server_id
        kept = phone.folder(name="Kept").server_id
        ids = {m.subject: m.server_id for m in (await phone.sync(inbox)).added}
        [kept_message] = (await phone.sync(kept)).added
        mirror = rig.manager.mirrors[rig.login]

        # Accepted: no per-item response (the client assumes success: MS-ASCMD 2.2.3.42.2).
        started = time.monotonic()
        done = await phone.sync(inbox, changes=[ClientChange(ids["plain"], read=True)])
        assert done.responses == []
        assert time.monotonic() - started < 5
        assert "\\Seen" in (flags_of(laptop, "INBOX", "plain") or "")

        # Overtaken by a laptop the mirror has not looked at yet: Conflict, the server wins.
        paused = _pause_folder_syncs(mirror)
        paused.set()
        laptop.select("INBOX")
        laptop.uid("STORE", _uid_of(laptop, "INBOX", "contested"), "+FLAGS", "(\\Flagged)")
        with pytest.raises(ClientError) as refused:
            await phone.sync(inbox, changes=[ClientChange(ids["contested"], read=True)])
        assert refused.value.eas_status == 7
        assert f"Change of {ids['contested']} " in str(refused.value)
        assert "\\Seen" not in (flags_of(laptop, "INBOX", "contested") or "")
        paused.clear()
        mirror.wake.set()

        async def laptops_state() -> bool:
            for m in (await phone.sync(inbox)).changed:
                if m.server_id == ids["contested"]:
                    return m.fields.get("Email:Read") == "0" and m.flag_status == 2
            return False

        await eventually(laptops_state, "the laptop's state did not reach the phone")

        # A delete the server refuses: Object not found (the ServerId is void), and the
        # message is back at the next Sync, once.
        with pytest.raises(ClientError) as refused:
            await phone.delete(kept, [kept_message.server_id])
        assert refused.value.eas_status == 8
        assert f"Delete of {kept_message.server_id} " in str(refused.value)
        assert flags_of(laptop, "Kept", "kept for good") is not None
        assert flags_of(laptop, "Trash", "kept for good") is None

        async def back() -> list[str]:
            return [m.subject for m in (await phone.sync(kept)).added]

        assert await eventually(back, "the message did not come back") == ["kept for good"]
        assert (await phone.sync(kept)).added == []
        assert mirror.refused == 2
    laptop.logout()


async def test_a_change_in_a_mailbox_a_laptop_deleted_is_object_not_found(rig: Rig) -> None:
    """The phone marks a message read in a folder whose mailbox a laptop has just deleted (the
    mirror has not seen it yet): SELECT is refused and the mailbox is not in LIST, so the
    Change is answered Status 8 (object not found); the folder then leaves the phone."""
    laptop = rig.laptop()
    laptop.create('"Gone"')
    laptop.append('"Gone"', None, None, mail("in a doomed mailbox"))
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        gone = phone.folder(name="Gone").server_id
        [message] = (await phone.sync(gone)).added
        mirror = rig.manager.mirrors[rig.login]
        paused = _pause_folder_syncs(mirror)
        paused.set()
        laptop.delete('"Gone"')
        # (Dovecot drops a session whose selected mailbox another one deletes: the mirror
        # may reconnect here; its answers wait for rounds only in a session.)
        await asyncio.sleep(1.0)
        await until(lambda: mirror.in_session)
        with pytest.raises(ClientError) as refused:
            await phone.sync(gone, changes=[ClientChange(message.server_id, read=True)])
        assert refused.value.eas_status == 8
        paused.clear()
        mirror.wake.set()

        async def folder_gone() -> bool:
            await phone.folder_sync()
            return all(f.display_name != "Gone" for f in phone.state.folders.values())

        await eventually(folder_gone, "the deleted mailbox is still on the phone")
    laptop.logout()


async def test_refused_drafts_are_answered_status_6(rig: Rig) -> None:
    """A draft saved on the phone over the user's quota (APPEND -> NO [OVERQUOTA]): its Add is
    answered Status 6 without a ServerId, and the store keeps no draft the server lacks; a
    draft changed over quota: its Change is Status 6 and the server's version comes back."""
    rig.login = QUOTA_USER
    laptop = rig.laptop()
    # The quota user serves several tests (and both store drivers): start with empty Drafts.
    _typ, exists = laptop.select('"Drafts"')
    if exists[0] != b"0":
        laptop.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        laptop.expunge()
    async with rig.phone() as phone:
        await rig.ready(phone)
        drafts = phone.folder(type=DRAFTS).server_id
        await phone.sync(drafts)
        big = _draft("too big to save", "x" * 4000)
        key = phone.state.collection(drafts).sync_key
        with pytest.raises(ClientError) as refused:
            await phone.sync(drafts, changes=[ItemCommand.add(big, "c1")])
        # No ServerId: the client names the Add by its ClientId.
        assert refused.value.eas_status == 6
        assert "Add of c1 " in str(refused.value)
        assert "too big to save" not in _subjects(laptop, "Drafts")
        user = rig.manager.mirrors[rig.login].user
        drafts_id = await rig.store.run(lambda t: t.folder_by_type(user.id, FolderType.DRAFTS).id)
        assert await rig.store.run(lambda t: t.message_versions(drafts_id)) == {}
        # A retransmission (the same SyncKey) gets the same answer, with its status ...
        request = sync_request(drafts, key, changes=[ItemCommand.add(big, "c1")])
        again = await phone.request(Command.Sync, request)
        [add] = [
            e
            for e in decode(again.body).iter()
            if e.tag == "Add" and e.find("ClientId") is not None
        ]
        assert add.child_text("Status") == "6"
        assert add.child_text("ServerId") is None
        # ... and the next Sync deletes nothing on the phone (it was told no item was made).
        later = await phone.sync(drafts)
        assert later.deleted == []
        assert later.added == []

        # A small draft fits; its change into a big one does not (APPEND of the new version
        # refused): the Change is Status 6, the refused version never reaches the phone, and
        # the server's draft (the small one) comes back at the next Sync.
        small = await phone.sync(drafts, changes=[ItemCommand.add(_draft("small", "s"), "c2")])
        [taken] = [r for r in small.responses if r.client_id == "c2"]
        assert taken.status == 1
        await until(lambda: "small" in _subjects(laptop, "Drafts"))
        with pytest.raises(ClientError) as refused:
            await phone.sync(drafts, changes=[ItemCommand.change(taken.server_id, big)])
        assert refused.value.eas_status == 6
        assert f"Change of {taken.server_id} " in str(refused.value)
        # (the answer deleted the old ServerId, as for every draft change, and added nothing)
        assert phone.state.collection(drafts).server_ids == set()
        assert set(_subjects(laptop, "Drafts")) == {"small"}

        async def server_draft() -> list[str]:
            return [m.subject for m in (await phone.sync(drafts)).added]

        assert await eventually(server_draft, "the server's draft did not come back") == ["small"]
        assert (await phone.sync(drafts)).deleted == []
    laptop.logout()


async def test_a_refused_rename_is_answered_and_undone(rig: Rig) -> None:
    """FolderUpdate of a mailbox the user may not rename (ACL without "x": RENAME -> NO
    [NOPERM]): Status 6 (MS-ASCMD 2.2.3.177.6), and the folder keeps its old name."""
    laptop = rig.laptop()
    laptop.create('"Readonly"')
    async with rig.phone() as phone:
        await rig.ready(phone)
        await phone.folder_sync()
        readonly = phone.folder(name="Readonly").server_id
        with pytest.raises(ClientError) as refused:
            await phone.folder_update(readonly, "Renamed")
        assert refused.value.eas_status == 6
        assert "Readonly" in _mailboxes(laptop)
        assert "Renamed" not in _mailboxes(laptop)
        user = rig.manager.mirrors[rig.login].user
        folder = await rig.store.run(lambda t: t.get_folder(user.id, readonly))
        assert folder is not None
        assert folder.display_name == "Readonly"
        await phone.folder_sync()
        assert phone.state.folders[readonly].display_name == "Readonly"
        assert rig.manager.mirrors[rig.login].refused == 1
    laptop.logout()


@pytest.mark.skipif(not sieve_available(), reason="dovecot-sieve is not installed (apt)")
async def test_a_server_that_files_its_sent_copy_leaves_one_on_the_phone(
    server_files_sent_rig: Rig, internet: tuple[Internet, int]
) -> None:
    """sent_copy = "server": natsync does not APPEND the Sent copy. The mail server files its
    own: the relay's copy back to the sender (Postfix's sender_bcc_maps, here the test's SMTP
    sink delivering it by LMTP) is filed in Sent by a real Sieve script (Pigeonhole). The
    phone's copy becomes that message: one item, the same ServerId, on the phone and on the
    server. A copy the server never files leaves the store after the wait."""
    rig = server_files_sent_rig
    sink, _ = internet
    sink.bcc_back[rig.login] = rig.dovecot.deliver
    laptop = rig.laptop()
    try:
        async with rig.phone() as phone:
            await rig.ready(phone)
            sent = phone.folder(type=SENT).server_id
            await phone.sync(sent)
            raw = (
                f"From: {rig.login}\r\nTo: carol@example.org\r\nSubject: filed by sieve\r\n"
                "Message-ID: <sieve.1@example.test>\r\n\r\nsent from natsync\r\n"
            ).encode()
            await phone.send_mail(raw)
            [copy] = (await phone.sync(sent)).added
            assert copy.subject == "filed by sieve"
            await until(lambda: flags_of(laptop, "Sent", "filed by sieve") is not None)
            mirror = rig.manager.mirrors[rig.login]
            user_id = mirror.user.id

            def mapped() -> bool:
                def count(txn: Txn) -> int:
                    folder = txn.folder_by_type(user_id, FolderType.SENT_ITEMS)
                    return len(txn.mirror_messages(folder.id))

                return (
                    asyncio.run_coroutine_threadsafe(rig.store.run(count), mirror.loop).result()
                    == 1
                )

            await until(mapped)
            # One copy on the server (the Sieve's: natsync appended none) ...
            assert list(_subjects(laptop, "Sent")) == ["filed by sieve"]
            # ... and on the phone: the item it has is that one; nothing added or deleted.
            again = await phone.sync(sent)
            assert again.added == []
            assert again.deleted == []
            assert mirror.refused == 0

            # A server that files nothing: natsync's copy waits, then goes.
            del sink.bcc_back[rig.login]
            mirror.sent_copy_wait = 1.0
            raw2 = raw.replace(b"filed by sieve", b"never filed").replace(b"sieve.1", b"nf.1")
            await phone.send_mail(raw2)
            [lonely] = (await phone.sync(sent)).added
            await asyncio.sleep(1.2)
            mirror.wake.set()

            async def gone() -> bool:
                return lonely.server_id in (await phone.sync(sent)).deleted

            await eventually(gone, "the copy the server never filed stayed")
            assert list(_subjects(laptop, "Sent")) == ["filed by sieve"]
    finally:
        sink.bcc_back.pop(rig.login, None)
        laptop.logout()
