"""Calendar end to end over real TLS on loopback, with the real server, SMTP in and relay, on
both stores (issue 10's "done when" for the calendar).

* An iMIP invitation from a remote sender (smtplib to the real SMTP in) arrives as a meeting
  request in the Inbox and a tentative calendar item; the phone accepts it with
  MeetingResponse; the REPLY reaches the sender's side (the real aiosmtpd smarthost); the
  phone's calendar then shows the item busy. A meeting the phone organizes goes out as an iMIP
  REQUEST.
* A recurring meeting with one moved and one deleted occurrence survives ics → record → phone 1
  (Sync Add) → server → phone 2 → record → ics, and an occurrence changed and one deleted on
  phone 2 (16.x InstanceId) reach phone 1.

libwbxml decodes every response the server sent.
"""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

from natsync.classes import calendar
from natsync.classes.ical import records_from_ics, records_to_ics
from natsync.classes.meeting import calendar_part
from natsync.client import Command, EASClient, ItemCommand
from natsync.eas.versions import V16_1
from natsync.store.api import FolderType, Txn
from natsync.wbxml import E, Element
from tests.classes.test_ical import MEETING
from tests.conftest import StoreFactory
from tests.e2e.deployment import Deployment, deployment
from tests.e2e.test_mail_roundtrip import RELAY_WAIT, Wire, phone

REMOTE = "bob@remote.test"
MR = "MeetingResponse"


def invitation(dep: Deployment) -> bytes:
    ics = (
        "BEGIN:VCALENDAR\r\nPRODID:-//Remote//EN\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n"
        "BEGIN:VEVENT\r\nUID:e2e-meeting@remote.test\r\nDTSTAMP:20261120T090000Z\r\n"
        "DTSTART:20261203T100000Z\r\nDTEND:20261203T110000Z\r\nSEQUENCE:0\r\n"
        "SUMMARY:Budget review\r\nLOCATION:Room 7\r\n"
        f"ORGANIZER;CN=Bob Remote:mailto:{REMOTE}\r\n"
        f"ATTENDEE;CN=Ann;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{dep.email}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    msg = EmailMessage()
    msg["From"] = f"Bob Remote <{REMOTE}>"
    msg["To"] = f"Ann Example <{dep.email}>"
    msg["Subject"] = "Invitation: Budget review"
    msg["Message-ID"] = "<e2e-invite@remote.test>"
    msg.set_content("You are invited.\n")
    msg.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
    return msg.as_bytes(policy=policy.SMTP)


def smtp_send(dep: Deployment, raw: bytes) -> None:
    with smtplib.SMTP(dep.smtp_host, dep.smtp_port, timeout=30) as smtp:
        assert smtp.sendmail(REMOTE, [dep.email], raw) == {}


async def arrived(dep: Deployment, count: int) -> list[tuple[str, list[str], bytes]]:
    """The smarthost's messages once it holds *count* of them."""
    async with asyncio.timeout(RELAY_WAIT):
        while len(dep.smarthost.messages) < count:
            dep.smarthost.arrived.clear()
            await dep.smarthost.arrived.wait()
    return dep.smarthost.messages


async def ready(dep: Deployment, device_id: str, wire: Wire) -> tuple[EASClient, str, str]:
    client = phone(dep, device_id, wire)  # closed by the caller
    await client.folder_sync()
    cal_id = client.folder(type=FolderType.CALENDAR).server_id
    inbox = client.folder(type=FolderType.INBOX).server_id
    return client, cal_id, inbox


async def test_imip_invitation_accepted_on_the_phone_replies_to_the_sender(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    wire = Wire()
    async with deployment(tmp_path, store_factory(with_alice=False)) as dep:
        await asyncio.to_thread(smtp_send, dep, invitation(dep))
        ann, cal_id, inbox = await ready(dep, "E2ECALONE", wire)
        async with ann:
            # The meeting request in the Inbox.
            mail = await ann.sync_items(inbox)
            ((request_id, data),) = mail.items.items()
            assert data.child_text("MessageClass", "Email") == "IPM.Schedule.Meeting.Request"
            meeting = data.find("MeetingRequest", "Email")
            assert meeting is not None
            assert meeting.child_text("StartTime", "Email") == "2026-12-03T10:00:00.000Z"
            assert REMOTE in (meeting.child_text("Organizer", "Email") or "")
            # The tentative calendar item.
            first = await ann.sync_items(cal_id)
            ((item_id, item),) = first.items.items()
            assert item.child_text("Subject", "Calendar") == "Budget review"
            assert item.child_text("BusyStatus", "Calendar") == "1"
            assert item.child_text("UID", "Calendar") == "e2e-meeting@remote.test"

            # Accepted from the phone, the organizer asked to be told.
            body = E(
                MR,
                MR,
                E(
                    MR,
                    "Request",
                    E(MR, "UserResponse", 1),
                    E(MR, "CollectionId", inbox),
                    E(MR, "RequestId", request_id),
                    E(MR, "SendResponse"),
                ),
            )
            response = await ann.request(Command.MeetingResponse, body)
            assert response.tree is not None
            result = response.tree.find("Result")
            assert result is not None
            assert result.child_text("Status") == "1"
            assert result.child_text("CalendarId") == item_id

            ((sender, rcpts, raw),) = await arrived(dep, 1)
            assert (sender, rcpts) == (dep.email, [REMOTE])
            assert b"METHOD:REPLY" in raw
            assert b"PARTSTAT=ACCEPTED" in raw
            assert b"UID:e2e-meeting@remote.test" in raw
            part = calendar_part(raw)
            assert part is not None
            assert part[0] == "REPLY"
            (reply,) = records_from_ics(part[1])
            assert b"X-NATSYNC" not in part[1]  # nothing of ours leaves in iMIP mail
            assert reply["attendees"][0]["email"] == dep.email

            # The phone's calendar now shows it accepted; the request left the Inbox.
            after = await ann.sync_items(cal_id)
            assert after.items[item_id].child_text("BusyStatus", "Calendar") == "2"
            assert after.items[item_id].child_text("ResponseType", "Calendar") == "3"
            # (the responding phone moved it itself: no Delete comes back to it)
            assert (await ann.sync_items(inbox)).deleted == []

            def inbox_size(txn: Txn) -> int:
                user = txn.get_user(dep.user)
                assert user is not None
                folder = txn.folder_by_type(user.id, FolderType.INBOX)
                return len(txn.message_versions(folder.id))

            assert await dep.store.run(inbox_size) == 0

            # A meeting organized on the phone goes out as an iMIP REQUEST.
            ours = calendar.empty_record() | {
                "uid": "ann-planning-1",
                "subject": "Planning",
                "start": "2026-12-10T09:00:00Z",
                "end": "2026-12-10T10:00:00Z",
                "meeting_status": 1,
                "organizer_email": dep.email,
                "organizer_name": "Ann Example",
                "attendees": [{"email": REMOTE, "name": "Bob", "status": 5, "type": 1}],
            }
            add = ItemCommand.add(appdata(ours), ann.new_client_id())
            await ann.sync_items(cal_id, [add])
            messages = await arrived(dep, 2)
            sender, rcpts, raw = messages[1]
            assert rcpts == [REMOTE]
            assert b"METHOD:REQUEST" in raw
            assert b"UID:ann-planning-1" in raw
    wire.check_with_libwbxml()


def appdata(record: calendar.Record) -> Element:
    return E("AirSync", "ApplicationData", *calendar.encode(record, V16_1, []))


async def test_recurring_meeting_with_moved_and_deleted_occurrence_round_trips(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    (original,) = records_from_ics(MEETING)
    wire = Wire()
    async with deployment(tmp_path, store_factory(with_alice=False)) as dep:
        one, cal_id, _ = await ready(dep, "E2ECALRECONE", wire)
        two, _, _ = await ready(dep, "E2ECALRECTWO", wire)
        async with one, two:
            await one.sync_items(cal_id)
            await two.sync_items(cal_id)
            client_id = one.new_client_id()
            made = await one.sync_items(cal_id, [ItemCommand.add(appdata(original), client_id)])
            sid = made.created[client_id]

            seen = await two.sync_items(cal_id)
            back = calendar.decode(seen.items[sid], V16_1)
            # What the phones' writes set themselves: the zone blob, SEQUENCE, who mails.
            local = ("tz_blob", "sequence", "invitations_by_server")
            assert {k: v for k, v in back.items() if k not in local} == {
                k: v for k, v in original.items() if k not in local
            }
            (again,) = records_from_ics(records_to_ics([back]))
            assert again == back | {"invitations_by_server": False}
            assert [e["original_start"] for e in again["exceptions"]] == [
                "2026-03-16T08:00:00Z",
                "2026-03-30T07:00:00Z",
            ]

            # The server's copy exports the same meeting (what `natsync export` writes).
            def stored(txn: Txn) -> calendar.Record:
                user = txn.get_user(dep.user)
                assert user is not None
                (item,) = txn.list_items(txn.folder_by_type(user.id, FolderType.CALENDAR).id)
                return item.data

            (exported,) = records_from_ics(records_to_ics([await dep.store.run(stored)]))
            assert exported["exceptions"] == original["exceptions"]
            assert exported["recurrence"] == original["recurrence"]

            # Phone 2 moves one more occurrence and deletes another (16.x instances).
            change = E(
                "AirSync",
                "ApplicationData",
                E("Calendar", "StartTime", "20260323T120000Z"),
                E("Calendar", "EndTime", "20260323T130000Z"),
            )
            await two.sync_items(
                cal_id,
                [
                    ItemCommand.change(sid, change, instance_id="2026-03-23T08:00:00.000Z"),
                    ItemCommand.remove(sid, instance_id="2026-04-06T07:00:00.000Z"),
                ],
            )
            got = await one.sync_items(cal_id)
            final = calendar.decode(got.items[sid], V16_1)
            exceptions = {e["original_start"]: e for e in final["exceptions"]}
            assert exceptions["2026-03-23T08:00:00Z"]["start"] == "2026-03-23T12:00:00Z"
            assert exceptions["2026-04-06T07:00:00Z"]["deleted"] is True
            assert exceptions["2026-03-16T08:00:00Z"]["subject"] == "Team sync (moved)"
            starts = {
                s
                for s, _, _ in calendar.occurrences(
                    final, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
                )
            }
            assert len(starts) == 8
    wire.check_with_libwbxml()
