"""Issue 19, "one bad item never breaks a folder", end to end over real TLS on loopback.

Mail whose text a WBXML string cannot carry (a NUL raw or as ``=00`` in quoted-printable, other
control characters XML 1.0 forbids, invalid UTF-8 in a header or body) arrives by the real SMTP
in (aiosmtpd, smtplib as the sending MTA) between two ordinary mails; the phone (natsync.client)
syncs the Inbox with plain, HTML and MIME bodies, fetches each item by ItemOperations and finds
it by Search: every answer is a valid EAS response (our codec and libwbxml both read it), every
mail reaches the phone, and the MIME a phone asks for is the message byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import smtplib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natsync.cli.transfer import import_into, read_source
from natsync.client import BodyType, Command, EASClient
from natsync.client import protocol as p
from natsync.store.api import FolderType, Txn
from natsync.wbxml import E, encode
from natsync.wbxml.chars import XML_ILLEGAL
from tests.e2e.deployment import Deployment, deployment
from tests.libwbxml import assert_valid_response

REMOTE = "mallory@remote.test"
AS = "AirSync"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def mail(subject: bytes, headers: bytes, body: bytes) -> bytes:
    """A message as an MTA hands it over (SMTP ends the data with CRLF, smtplib adds one)."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    word = subject.split()[0]
    head = b"From: Mallory <%s>\r\nTo: ann@natsync.test\r\nSubject: %s\r\n" % (
        REMOTE.encode(),
        subject,
    )
    return head + b"Message-ID: <%s@remote.test>\r\n%s\r\n%s" % (word, headers, body)


#: (subject word to search for, raw message): each would have broken the Inbox before issue 19.
POISON = [
    (
        "nulraw",
        mail(
            b"nulraw \x00 in subject",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"body with a raw NUL \x00 here\r\n",
        ),
    ),
    (
        "nulqp",
        mail(
            b"nulqp quoted-printable",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"NUL as =00 and a bell =07 and form feed =0C end\r\n",
        ),
    ),
    (
        "badutf",
        mail(
            b"badutf \xff\xfe broken",
            b"Content-Type: text/html; charset=utf-8\r\n",
            b"<p>invalid \xc3\x28 utf-8 \xed\xa0\x80 surrogate \x01\x02\x1b</p>\r\n",
        ),
    ),
    (
        "nonchar",
        mail(
            b"nonchar =?utf-8?b?" + base64.b64encode("x\x00\ufffe\uffff".encode()) + b"?=",
            b"Content-Type: text/plain; charset=utf-16-le\r\n",
            "utf16 body \x00\x0b\ufffe end\r\n".encode("utf-16-le"),
        ),
    ),
]
#: The plain body the phone gets: what XML 1.0 forbids is dropped, bad UTF-8 is U+FFFD (the
#: HTML body, converted to text, loses its tags as for any mail).
PLAIN = {
    "firstgood": "hello\n",
    "nulraw": "body with a raw NUL  here\n",
    "nulqp": "NUL as  and a bell  and form feed  end\n",
    "badutf": "invalid \ufffd( utf-8 \ufffd\ufffd\ufffd surrogate ",
    "nonchar": "utf16 body  end",
    "lastgood": "bye\n",
}
GOOD = [
    ("firstgood", mail(b"firstgood ordinary", b"", b"hello\r\n")),
    ("lastgood", mail(b"lastgood ordinary", b"", b"bye\r\n")),
]


def smtp_send(dep: Deployment, raw: bytes) -> None:
    with smtplib.SMTP(dep.smtp_host, dep.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail(REMOTE, [dep.email], raw)
    assert refused == {}


async def test_poison_mail_reaches_the_phone(tmp_path: Path) -> None:
    sent = [GOOD[0], *POISON, GOOD[1]]
    bodies: list[bytes] = []
    async with deployment(tmp_path) as dep:
        for _word, raw in sent:
            await asyncio.to_thread(smtp_send, dep, raw)
        async with EASClient(
            dep.url,
            dep.user,
            dep.password,
            ca_file=dep.ca_file,
            device_id="POISONPHONE",
            on_response=lambda _c, r: bodies.append(r.body) if r.tree is not None else None,
        ) as phone:
            await phone.provision()
            await phone.folder_sync()
            inbox = phone.folder(type=FolderType.INBOX).server_id
            for pref in (BodyType.PLAIN, BodyType.HTML):
                phone.state.collection(inbox).sync_key = "0"
                phone.state.collection(inbox).server_ids.clear()
                synced = await phone.sync(inbox, window_size=2, body_preference=[pref])
                assert len(synced.added) == len(sent)
                subjects = sorted(i.subject.split()[0] for i in synced.added)
                assert subjects == sorted(w for w, _ in sent)
                for item in synced.added:
                    # Cleaned as Exchange does: what XML 1.0 forbids is gone, the rest is there.
                    assert item.body is not None
                    assert item.body.data.strip()
                    for text in (item.subject, item.body.data, item.sender):
                        assert XML_ILLEGAL.search(text) is None, text
                    word = item.subject.split()[0]
                    assert XML_ILLEGAL.search(item.body.data) is None
                    if pref == BodyType.PLAIN:
                        assert item.body.data.startswith(PLAIN[word])
                    else:
                        assert PLAIN[word].strip() in item.body.data
            # The whole MIME, when the phone asks for it, is the message byte for byte.
            phone.state.collection(inbox).sync_key = "0"
            phone.state.collection(inbox).server_ids.clear()
            mime = await phone.sync(inbox, body_preference=[BodyType.MIME])
            assert len(mime.added) == len(sent)
            for item in mime.added:
                assert item.data is not None
                body = item.data.find("Body", "AirSyncBase")
                assert body is not None
                data = body.find("Data", "AirSyncBase")
                assert data is not None
                assert data.value is not None
                value = data.value.encode() if isinstance(data.value, str) else data.value
                (raw,) = [r for w, r in sent if item.subject.startswith(w)]
                assert value.endswith(raw)  # after the Received line SMTP in adds
            for item in synced.added:
                fetched = await phone.item_operations_fetch(
                    collection_id=inbox, server_id=item.server_id, body_preference=[BodyType.PLAIN]
                )
                assert fetched.item is not None
                assert fetched.item.subject == item.subject
            for word, _raw in sent:
                found = await phone.search(word, body_preference=[BodyType.HTML])
                assert len(found.items) == 1, word
    for answer in bodies:
        assert_valid_response(answer)


#: What a phone's write may carry in a WBXML string (legal in STR_I, not in XML 1.0 nor UTF-8).
DIRTY_WIRE = b"Dirty\x01\x1b \xff\xfe Name"
#: How the other phone reads it: the controls dropped, the bad bytes U+FFFD.
DIRTY_READ = "Dirty \ufffd\ufffd Name"
VCARD = (
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:poison-card\r\nN:Card\x01\x1b;Imported\r\n"
    b"FN:Imported Card\r\nNOTE:note \x00 \x0b end\r\nEND:VCARD\r\n"
)
ICS = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
    b"UID:poison-event\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20261201T100000Z\r\n"
    b"DTEND:20261201T110000Z\r\nSUMMARY:Meeting\x01\x1b \xff\xfe end\r\n"
    b"LOCATION:Room\x0c 1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


async def test_pim_items_from_a_phone_an_import_and_a_bad_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A contact a phone writes with control characters and invalid UTF-8 in its strings, a
    vCard and an iCalendar file imported with the same, and a note row no codec can render:
    the other phone syncs Contacts, Calendar and Notes over the real server; the access log
    names the note it left out, and no answer is an HTTP error."""
    caplog.set_level(logging.INFO, "natsync")
    bodies: list[bytes] = []
    async with deployment(tmp_path) as dep:
        for kind, data in (("vcf", VCARD), ("ics", ICS)):
            source = tmp_path / f"import.{kind}"
            source.write_bytes(data)
            parsed = read_source(kind, source)
            into = functools.partial(
                import_into, user_name=dep.user, parsed=parsed, folder_name=None, now=NOW
            )
            await dep.store.run(into)

        def bad_note(txn: Txn) -> str:
            user = txn.get_user(dep.user)
            assert user is not None
            notes = txn.folder_by_type(user.id, FolderType.NOTES)
            txn.add_item(notes.id, {"subject": "good note"})
            return txn.add_item(notes.id, {"subject": "bad", "categories": 3}).server_id

        bad = await dep.store.run(bad_note)
        record = lambda _c, r: bodies.append(r.body) if r.tree is not None else None  # noqa: E731
        async with (
            EASClient(dep.url, dep.user, dep.password, ca_file=dep.ca_file,
                      device_id="POISONWRITER", on_response=record) as writer,
            EASClient(dep.url, dep.user, dep.password, ca_file=dep.ca_file,
                      device_id="POISONREADER", on_response=record) as reader,
        ):  # fmt: skip
            await writer.folder_sync()
            await reader.folder_sync()
            contacts = writer.folder(type=FolderType.CONTACTS).server_id
            await writer.sync_items(contacts)
            # The writer's Add, with bytes our encoder would never write, spliced into the wire.
            add = p.ItemCommand.add(
                E(AS, "ApplicationData", E("Contacts", "FileAs", "PLACEHOLDER")), "c1"
            )
            key = writer.state.collection(contacts).sync_key
            wire = encode(p.sync_request(contacts, key, changes=[add], version=writer.version))
            wire = wire.replace(b"PLACEHOLDER", DIRTY_WIRE)
            written = await writer.request(Command.Sync, wire)
            assert written.tree is not None
            (page,) = p.parse_sync(written.tree)
            assert [r.status for r in page.responses] == [1]

            seen = await reader.sync_items(contacts)
            names = sorted(d.child_text("FileAs", "Contacts") or "" for d in seen.items.values())
            assert DIRTY_READ in names
            (card,) = [d for d in seen.items.values() if d.child_text("LastName") == "Card"]
            assert card.child_text("FirstName") == "Imported"
            calendar = reader.folder(type=FolderType.CALENDAR).server_id
            events = await reader.sync_items(calendar)
            (event,) = events.items.values()
            assert event.child_text("Subject", "Calendar") == "Meeting \ufffd\ufffd end"
            location = event.find("Location", "AirSyncBase")
            assert location is not None
            assert location.child_text("DisplayName", "AirSyncBase") == "Room 1"
            notes = reader.folder(type=FolderType.NOTES).server_id
            got = await reader.sync_items(notes)
            assert [d.child_text("Subject", "Notes") for d in got.items.values()] == ["good note"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith(".access")]
    assert [line["http"] for line in lines if line["http"] != 200] == []
    assert [line["skipped"] for line in lines if "skipped" in line] == [bad]
    for answer in bodies:
        tree = assert_valid_response(answer)
        for el in tree.iter():
            assert not isinstance(el.value, str) or XML_ILLEGAL.search(el.value) is None
