"""Issue 19, as a property: whatever mail SMTP in accepts reaches the phone, and every answer
about it is a valid EAS response.

Mail is made of hostile parts (raw NUL, control and 8-bit bytes in headers and bodies, ``=00``
and broken escapes in quoted-printable, bad base64, wrong and unknown charsets, multiparts cut
short) or is arbitrary bytes; it goes through the delivery SMTP in uses (``parse_message``,
then ``deliver_to_inbox``, as ``natsync.mail.smtp_in`` does in its DATA handler). The phone
(the in-process device of tests/eas/helpers.py, speaking natsync.eas.dispatch) then syncs the
Inbox, fetches the item by ItemOperations (plain and MIME) and searches for it (Search and
Find): each answer decodes with our codec and, where its XML can show it, with libwbxml; the new
mail is in the Sync, nothing is left out (text is cleaned, not refused), the fetch and the
searches find it.

One store for all examples (SQLite: the property is about the protocol, and a PostgreSQL
database per example would cost seconds); each example adds one mail to it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from natsync.mail.relay import deliver_to_inbox
from natsync.mime import parse_message
from natsync.mime.errors import MailError
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E
from tests.conftest import SQLITE_ONLY
from tests.eas.helpers import NOW, Phone, collection, commands, folder_id
from tests.eas.test_isolation import AS, IO, SE, answer, sync_body
from tests.libwbxml import assert_valid_response

#: Bytes that break naive text handling; drawn often so every example holds some.
NASTY = [b"\x00", b"\x01", b"\x0b", b"\x1b", b"\x7f", b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]
NASTY += [b"\xef\xbf\xbe", b"=00", b"=0C", b"=FF", b"=C3=28", b"=\r\n", b"=", b"=?utf-8?q?=00?="]
pieces = st.one_of(st.sampled_from(NASTY), st.binary(max_size=12), st.just(b"word "))
nasty_bytes = st.lists(pieces, max_size=12).map(b"".join)
header_bytes = nasty_bytes.map(lambda b: b.replace(b"\r", b"").replace(b"\n", b" "))
CHARSETS = ["utf-8", "iso-8859-1", "utf-16", "utf-16-le", "shift_jis", "bogus", "us-ascii"]
ENCODINGS = ["7bit", "8bit", "binary", "quoted-printable", "base64", "x-junk"]
TYPES = ["text/plain", "text/html", "text/calendar; method=REQUEST", "application/pdf"]


@st.composite
def mails(draw: st.DrawFn, token: str) -> bytes:
    """A message with hostile parts, its Subject starting with *token* (to search for it)."""
    if draw(st.integers(0, 9)) == 0:
        return b"Subject: " + token.encode() + b"\r\n" + draw(st.binary(max_size=300))
    ctype = draw(st.sampled_from(TYPES)).encode()
    charset = draw(st.sampled_from(CHARSETS)).encode()
    part = (
        b"Content-Type: " + ctype + b"; charset=" + charset + b"\r\n"
        b"Content-Transfer-Encoding: " + draw(st.sampled_from(ENCODINGS)).encode() + b"\r\n\r\n"
    ) + draw(nasty_bytes)
    head = b"From: " + draw(header_bytes) + b" <x@remote.test>\r\nTo: alice@example.test\r\n"
    head += b"Subject: " + token.encode() + b" " + draw(header_bytes) + b"\r\n"
    head += b"X-Junk: " + draw(header_bytes) + b"\r\nMIME-Version: 1.0\r\n"
    if draw(st.booleans()):
        cut = draw(st.booleans())  # a multipart cut short: no closing boundary
        tail = b"" if cut else b"\r\n--b--\r\n"
        return head + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + part + tail
    return head + part


TOKENS = (f"tok{n}" for n in itertools.count())


@dataclass
class Mailbox:
    """The test's one phone on the store, and where its Inbox sync stands (examples add mail)."""

    store: Store
    phone: Phone
    inbox: str
    key: str


@pytest.fixture
def mailbox(store: Store) -> Mailbox:
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    tree = assert_valid_response(phone.call("Sync", sync_body(inbox, "0")).body)
    return Mailbox(store, phone, inbox, collection(tree).child_text("SyncKey") or "")


@SQLITE_ONLY
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_mail_reaches_the_phone_in_valid_answers(mailbox: Mailbox, data: st.DataObject) -> None:
    token = next(TOKENS)
    raw = data.draw(mails(token), label="mail")
    try:
        message = parse_message(raw, NOW)
    except MailError:
        event("refused")
        return  # refused at SMTP (554): never stored, nothing to sync

    def deliver(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        deliver_to_inbox(txn, user, message)
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        return max(txn.message_versions(inbox.id), key=lambda s: int(s.rpartition(":")[2]))

    server_id = mailbox.store.run_sync(deliver)
    phone, inbox = mailbox.phone, mailbox.inbox
    added: list[str] = []
    for _ in range(5):
        tree, response = answer(phone, "Sync", sync_body(inbox, mailbox.key, 100))
        assert response.skipped == ()
        coll = collection(tree)
        mailbox.key = coll.child_text("SyncKey") or ""
        added += [a.child_text("ServerId") or "" for a in commands(coll, "Add")]
        if coll.find("MoreAvailable") is None:
            break
    assert added == [server_id]

    for body_type in (1, 4):  # plain text (cleaned), the whole MIME (untouched)
        options = E(
            IO,
            "Options",
            E(AS, "MIMESupport", 2),
            E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", body_type)),
        )
        op = E(IO, "Fetch", E(IO, "Store", "Mailbox"), E(AS, "ServerId", server_id), options)
        tree, response = answer(phone, IO, E(IO, IO, op), crosscheck=body_type == 4)
        assert response.skipped == ()
        fetched = tree.find("Response").find("Fetch")  # type: ignore[union-attr]
        assert fetched is not None
        assert fetched.child_text("Status") == "1"

    query = E(SE, "Query", E(SE, "And", E(AS, "Class", "Email"), E(SE, "FreeText", token)))
    search = E(SE, SE, E(SE, "Store", E(SE, "Name", "Mailbox"), query))
    tree, response = answer(phone, SE, search, crosscheck=False)
    assert response.skipped == ()
    found = tree.find("Response").find("Store")  # type: ignore[union-attr]
    assert found is not None
    if token in message.subject:  # the store indexes the subject as it was decoded
        assert server_id in {r.child_text("LongId") for r in found.findall("Result")}

    # Find (16.1) answers for it too (its code page is past libwbxml's: our codec reads it).
    fd = "Find"
    criterion = E(
        fd,
        "MailBoxSearchCriterion",
        E(fd, "Query", E(AS, "Class", "Email"), E(fd, "FreeText", token)),
    )
    find = E(fd, fd, E(fd, "SearchId", "s"), E(fd, "ExecuteSearch", criterion))
    tree, response = answer(phone, fd, find, crosscheck=False)
    assert response.skipped == ()
    assert tree.child_text("Status") == "1"
    results = tree.find("Response").findall("Result")  # type: ignore[union-attr]
    if token in message.subject:
        assert server_id in {r.child_text("ServerId", AS) for r in results}


@pytest.mark.parametrize("raw", [b"", b"\x00\x00", b"not a message"])
def test_what_smtp_refuses_is_never_stored(raw: bytes) -> None:
    with pytest.raises(MailError):
        parse_message(raw, NOW)
