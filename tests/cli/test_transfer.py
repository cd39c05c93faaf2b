"""`natsync import` / `natsync export`: ics (events and tasks), vcf, mbox and maildir, on a real
SQLite store file through the CLI and on both drivers through the library; import → export →
import round trips equal, re-import adds nothing, a bad file stores nothing."""

from __future__ import annotations

import base64
import json
import mailbox
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from natsync.classes.vcard import Card, write_vcards
from natsync.cli import main
from natsync.cli.transfer import TransferError, import_into, read_source
from natsync.mime import parse_tree
from natsync.store.api import FolderType, Store, Txn
from natsync.store.sqlite import SqliteStore
from tests.conftest import CREATED_AT

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()

ICS = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Test//EN\r
BEGIN:VEVENT\r
UID:standup\r
DTSTAMP:20260301T000000Z\r
SUMMARY:Stand-up\r
DTSTART;TZID=Europe/Berlin:20260302T093000\r
DTEND;TZID=Europe/Berlin:20260302T094500\r
RRULE:FREQ=WEEKLY;BYDAY=MO,WE\r
EXDATE;TZID=Europe/Berlin:20260304T093000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:standup\r
DTSTAMP:20260301T000000Z\r
RECURRENCE-ID;TZID=Europe/Berlin:20260309T093000\r
SUMMARY:Stand-up (moved)\r
DTSTART;TZID=Europe/Berlin:20260309T110000\r
DTEND;TZID=Europe/Berlin:20260309T111500\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:dentist\r
DTSTAMP:20260301T000000Z\r
SUMMARY:Dentist\r
LOCATION:Main St 1\r
DTSTART:20260305T140000Z\r
DTEND:20260305T150000Z\r
END:VEVENT\r
BEGIN:VTODO\r
UID:todo-1\r
DTSTAMP:20260301T000000Z\r
SUMMARY:File taxes\r
DUE:20260430T170000Z\r
PRIORITY:1\r
END:VTODO\r
BEGIN:VTODO\r
UID:todo-2\r
DTSTAMP:20260301T000000Z\r
SUMMARY:Done already\r
STATUS:COMPLETED\r
COMPLETED:20260201T100000Z\r
END:VTODO\r
END:VCALENDAR\r
"""

CARDS = [
    Card(
        "card-1",
        {
            "first_name": "Jane",
            "last_name": "Doe",
            "email1_address": "jane@example.test",
            "mobile_phone_number": "+1 555 0100",
            "birthday": "1980-05-04T00:00:00.000Z",
            "categories": ["Friends"],
            "picture": PNG,
            "body": "Met at the conference",
            "body_type": 1,
        },
    ),
    Card("card-2", {"company_name": "ACME", "business_phone_number": "+1 555 0199"}),
]
# A card without a UID gets one made from its content.
NO_UID = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Uid\r\nN:Uid;No;;;\r\nEND:VCARD\r\n"


def make_mail(n: int, *, message_id: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@remote.test"
    msg["To"] = "alice@example.test"
    msg["Subject"] = f"message {n}"
    msg["Date"] = f"Sun, 0{n} Mar 2026 10:00:00 +0000"
    if message_id:
        msg["Message-ID"] = f"<m{n}@remote.test>"
    msg.set_content(f"body {n}\n")
    return msg.as_bytes()


def write_mbox(path: Path, read: set[int] = frozenset({2})) -> Path:  # type: ignore[assignment]
    box = mailbox.mbox(path)
    for n in (1, 2, 3):
        entry = mailbox.mboxMessage(make_mail(n, message_id=n != 3))
        entry.set_flags("RO" if n in read else "O")
        box.add(entry)
    box.close()
    return path


def write_maildir(path: Path) -> Path:
    box = mailbox.Maildir(path, create=True)
    for n in (1, 2, 3):
        entry = mailbox.MaildirMessage(make_mail(n, message_id=n != 3))
        if n == 2:
            entry.set_subdir("cur")
            entry.set_flags("S")
        box.add(entry)
    box.close()
    return path


# -- the CLI on a real SQLite file -------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path, alice_password_hash: str) -> Path:
    path = tmp_path / "natsync.db"
    store = SqliteStore(path)
    try:
        for name in ("alice", "bob"):
            store.run_sync(
                lambda txn, n=name: txn.add_user(
                    n, f"{n}@example.test", n.title(), alice_password_hash, CREATED_AT
                )
            )
    finally:
        store.close()
    return path


def natsync(db: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--store", str(db)])


def in_store(db: Path, fn: Callable[[Txn], Any]) -> Any:
    store = SqliteStore(db)
    try:
        return store.run_sync(fn)
    finally:
        store.close()


def items(db: Path, user: str, ftype: FolderType) -> dict[str, dict[str, Any]]:
    def run(txn: Txn) -> dict[str, dict[str, Any]]:
        u = txn.get_user(user)
        assert u is not None
        return {i.uid: i.data for i in txn.list_items(txn.folder_by_type(u.id, ftype).id)}

    result: dict[str, dict[str, Any]] = in_store(db, run)
    return result


def mail(db: Path, user: str, ftype: FolderType = FolderType.INBOX) -> list[tuple[str, str, bool]]:
    """(Message-ID, Subject, read) of the folder's messages, by subject."""

    def run(txn: Txn) -> list[tuple[str, str, bool]]:
        u = txn.get_user(user)
        assert u is not None
        folder = txn.folder_by_type(u.id, ftype)
        msgs = txn.get_messages(u.id, list(txn.message_versions(folder.id)))
        return sorted((m.message_id_header, m.subject, m.read) for m in msgs)

    result: list[tuple[str, str, bool]] = in_store(db, run)
    return result


def imported(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    outcome: dict[str, Any] = json.loads(result.output)
    return outcome


def test_ics_round_trip_and_idempotent_reimport(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.ics"
    source.write_bytes(ICS)
    first = imported(natsync(db, "import", "ics", "alice", str(source), "--json"))
    assert first["added"] == {"events": 2, "tasks": 2}
    again = imported(natsync(db, "import", "ics", "alice", str(source), "--json"))
    assert again["added"] == {}
    assert again["already_there"] == {"events": 2, "tasks": 2}
    events = items(db, "alice", FolderType.CALENDAR)
    assert set(events) == {"standup", "dentist"}
    standup = events["standup"]
    assert standup["recurrence"]["type"] == 1
    assert [bool(e.get("deleted")) for e in standup["exceptions"]] == [True, False]
    assert set(items(db, "alice", FolderType.TASKS)) == {"todo-1", "todo-2"}

    exported = tmp_path / "out.ics"
    result = natsync(db, "export", "ics", "alice", str(exported))
    assert result.exit_code == 0, result.output
    imported(natsync(db, "import", "ics", "bob", str(exported), "--json"))
    assert items(db, "bob", FolderType.CALENDAR) == events
    assert items(db, "bob", FolderType.TASKS) == items(db, "alice", FolderType.TASKS)


def test_ics_export_to_stdout(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.ics"
    source.write_bytes(ICS)
    imported(natsync(db, "import", "ics", "alice", str(source), "--json"))
    result = natsync(db, "export", "ics", "alice")
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"BEGIN:VCALENDAR")
    assert result.stdout_bytes.count(b"BEGIN:VTODO") == 2


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_vcf_round_trip_and_idempotent_reimport(db: Path, tmp_path: Path, version: str) -> None:
    source = tmp_path / "in.vcf"
    source.write_bytes(write_vcards(CARDS) + NO_UID)
    assert imported(natsync(db, "import", "vcf", "alice", str(source), "--json"))["added"] == {
        "contacts": 3
    }
    assert imported(natsync(db, "import", "vcf", "alice", str(source), "--json"))[
        "already_there"
    ] == {"contacts": 3}
    contacts = items(db, "alice", FolderType.CONTACTS)
    assert contacts["card-1"] == CARDS[0].record
    assert contacts["card-2"] == CARDS[1].record
    exported = tmp_path / "out.vcf"
    result = natsync(db, "export", "vcf", "alice", str(exported), "--vcard-version", version)
    assert result.exit_code == 0, result.output
    assert f"VERSION:{version}".encode() in exported.read_bytes()
    imported(natsync(db, "import", "vcf", "bob", str(exported), "--json"))
    assert items(db, "bob", FolderType.CONTACTS) == contacts


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_mail_round_trip_and_idempotent_reimport(db: Path, tmp_path: Path, kind: str) -> None:
    source = write_mbox(tmp_path / "in.mbox") if kind == "mbox" else write_maildir(tmp_path / "in")
    assert imported(natsync(db, "import", kind, "alice", str(source), "--json"))["added"] == {
        "messages": 3
    }
    assert imported(natsync(db, "import", kind, "alice", str(source), "--json"))[
        "already_there"
    ] == {"messages": 3}
    inbox = mail(db, "alice")
    assert inbox == [
        ("", "message 3", False),
        ("<m1@remote.test>", "message 1", False),
        ("<m2@remote.test>", "message 2", True),
    ]
    target = tmp_path / ("out.mbox" if kind == "mbox" else "out")
    result = natsync(db, "export", kind, "alice", str(target))
    assert result.exit_code == 0, result.output
    imported(natsync(db, "import", kind, "bob", str(target), "--json"))
    assert mail(db, "bob") == inbox
    refused = natsync(db, "export", kind, "alice", str(target))
    assert refused.exit_code == 1
    assert "exists" in refused.output


def test_mail_keeps_its_date_and_goes_to_a_named_folder(db: Path, tmp_path: Path) -> None:
    source = write_mbox(tmp_path / "in.mbox")
    imported(
        natsync(db, "import", "mbox", "alice", str(source), "--folder", "sent items", "--json")
    )
    assert len(mail(db, "alice", FolderType.SENT_ITEMS)) == 3
    assert mail(db, "alice") == []

    def dates(txn: Txn) -> list[datetime]:
        u = txn.get_user("alice")
        assert u is not None
        folder = txn.folder_by_type(u.id, FolderType.SENT_ITEMS)
        return sorted(
            m.received_at for m in txn.get_messages(u.id, list(txn.message_versions(folder.id)))
        )

    assert in_store(db, dates) == [datetime(2026, 3, n, 10, tzinfo=UTC) for n in (1, 2, 3)]
    missing = natsync(db, "import", "mbox", "alice", str(source), "--folder", "Nope")
    assert missing.exit_code == 1
    assert "no mail folder named 'Nope'" in missing.output


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [
        ("vcf", write_vcards(CARDS) + b"BEGIN:VCARD\r\nBDAY:soon\r\nEND:VCARD\r\n", "BDAY"),
        ("vcf", b"hello\r\n", "not a vCard"),
        ("ics", ICS.replace(b"UID:dentist\r\n", b""), "no UID"),
        ("ics", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", "no VEVENT and no VTODO"),
        ("mbox", b"just text\n", "no messages"),
        ("mbox", b"From a@b Sun Mar  1 10:00:00 2026\n\nno header\n", "not RFC 5322 mail"),
    ],
)
def test_bad_file_gives_a_clear_error_and_stores_nothing(
    db: Path, tmp_path: Path, kind: str, content: bytes, message: str
) -> None:
    source = tmp_path / f"bad.{kind}"
    source.write_bytes(content)
    result = natsync(db, "import", kind, "alice", str(source))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    for ftype in (FolderType.CONTACTS, FolderType.CALENDAR, FolderType.TASKS):
        assert items(db, "alice", ftype) == {}
    assert mail(db, "alice") == []


def test_not_a_maildir_and_unknown_user(db: Path, tmp_path: Path) -> None:
    result = natsync(db, "import", "maildir", "alice", str(tmp_path))
    assert result.exit_code == 1
    assert "not a Maildir" in result.output
    source = tmp_path / "in.vcf"
    source.write_bytes(write_vcards(CARDS))
    nobody = natsync(db, "import", "vcf", "carol", str(source))
    assert nobody.exit_code == 1
    assert "no user named 'carol'" in nobody.output
    assert natsync(db, "export", "mbox", "alice").exit_code == 2  # needs a FILE


# -- the library on both drivers ---------------------------------------------------------------


def test_import_on_both_stores_is_one_idempotent_transaction(store: Store, tmp_path: Path) -> None:
    vcf = tmp_path / "in.vcf"
    vcf.write_bytes(write_vcards(CARDS) + NO_UID)
    ics = tmp_path / "in.ics"
    ics.write_bytes(ICS)
    mbox = write_mbox(tmp_path / "in.mbox")
    for path, kind in ((vcf, "vcf"), (ics, "ics"), (mbox, "mbox")):
        parsed = read_source(kind, path)
        seen: list[int] = []
        first = store.run_sync(
            lambda txn, p=parsed, s=seen: import_into(txn, "alice", p, None, NOW, s.append)
        )
        assert sum(first.added.values()) == parsed.count() == len(seen)
        again = store.run_sync(lambda txn, p=parsed: import_into(txn, "alice", p, None, NOW))
        assert again.added == {}
    # A failure inside the transaction, after an import in it added a contact, leaves the
    # store as it was: the contact deleted and re-added in the failed transaction is the old one.
    parsed = read_source("vcf", vcf)

    def contact_ids(txn: Txn) -> list[int]:
        user = txn.get_user("alice")
        assert user is not None
        return sorted(
            i.id for i in txn.list_items(txn.folder_by_type(user.id, FolderType.CONTACTS).id)
        )

    before = store.run_sync(contact_ids)

    def half(txn: Txn) -> None:
        txn.delete_item(contact_ids(txn)[0])
        assert import_into(txn, "alice", parsed, None, NOW).added == {"contacts": 1}
        assert contact_ids(txn) != before
        import_into(txn, "alice", parsed, "No such folder", NOW)

    with pytest.raises(TransferError, match="no contacts folder"):
        store.run_sync(half)
    assert store.run_sync(contact_ids) == before


def test_imported_mail_is_what_smtp_would_store(db: Path, tmp_path: Path) -> None:
    source = write_mbox(tmp_path / "in.mbox")
    imported(natsync(db, "import", "mbox", "alice", str(source), "--json"))

    def raw_of_first(txn: Txn) -> bytes:
        u = txn.get_user("alice")
        assert u is not None
        folder = txn.folder_by_type(u.id, FolderType.INBOX)
        (m1,) = [
            m
            for m in txn.get_messages(u.id, list(txn.message_versions(folder.id)))
            if m.subject == "message 1"
        ]
        assert m1.from_addr == "bob@remote.test"
        assert m1.preview.startswith("body 1")
        return txn.raw_message(m1.id)

    raw = in_store(db, raw_of_first)
    assert parse_tree(raw)["Message-ID"] == "<m1@remote.test>"
