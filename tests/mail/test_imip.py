"""iMIP on the server: a delivered REQUEST becomes a tentative calendar item (upsert by UID),
CANCEL cancels, REPLY sets the attendee's status; the Inbox item carries Email:MeetingRequest;
meetings organized on the phone go out as REQUEST / CANCEL mail (the Sync hook)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from natsync.classes import calendar as cal
from natsync.classes.email import email_application_data
from natsync.classes.ical import records_from_ics
from natsync.classes.meeting import global_object_id, meeting_request_element
from natsync.eas.versions import V16_1
from natsync.mail import itip, relay
from natsync.mime import parse_message
from natsync.store.api import FolderType, Item, Message, Store, Txn, User
from natsync.wbxml import E, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RNG = random.Random(21)


def invite(
    method: str = "REQUEST",
    *,
    sequence: int = 0,
    start: str = "20260305T100000Z",
    extra: str = "",
    attendee: str = "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@example.test",
    uid: str = "meeting-42@remote.test",
) -> str:
    return (
        "BEGIN:VCALENDAR\r\nPRODID:-//test//EN\r\nVERSION:2.0\r\n"
        f"METHOD:{method}\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260301T090000Z\r\n"
        f"DTSTART:{start}\r\nDTEND:20260305T110000Z\r\nSEQUENCE:{sequence}\r\n"
        f"SUMMARY:Planning\r\nORGANIZER;CN=Bob:mailto:bob@remote.test\r\n{attendee}\r\n"
        f"{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def mail(ics: str, method: str = "REQUEST", sender: str = "Bob <bob@remote.test>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Planning"
    msg.set_content("Please come.")
    msg.add_alternative(ics, subtype="calendar", params={"method": method})
    return msg.as_bytes()


def deliver(store: Store, raw: bytes, user: str = "alice") -> None:
    def run(txn: Txn) -> None:
        found = txn.get_user(user)
        assert found is not None
        relay.deliver_to_inbox(txn, found, parse_message(raw, NOW))

    store.run_sync(run)


def calendar_items(store: Store, user: str = "alice") -> list[Item]:
    def run(txn: Txn) -> list[Item]:
        found = txn.get_user(user)
        assert found is not None
        return txn.list_items(txn.folder_by_type(found.id, FolderType.CALENDAR).id)

    return store.run_sync(run)


def test_request_makes_a_tentative_item_and_a_resend_keeps_the_answer(store: Store) -> None:
    deliver(store, mail(invite()))
    (item,) = calendar_items(store)
    assert item.uid == "meeting-42@remote.test"
    assert item.data["subject"] == "Planning"
    assert item.data["busy_status"] == cal.BusyStatus.TENTATIVE
    assert item.data["meeting_status"] == cal.MeetingStatus.MEETING_RECEIVED
    assert item.data["response_type"] == cal.ResponseType.NOT_RESPONDED
    answered = item.data | {"busy_status": 2, "response_type": 3}
    store.run_sync(lambda txn: txn.update_item(item.id, answered))
    deliver(store, mail(invite()))  # the same version again: the answer stays
    (again,) = calendar_items(store)
    assert (again.data["busy_status"], again.data["response_type"]) == (2, 3)
    deliver(store, mail(invite(sequence=1, start="20260305T093000Z")))  # a new version
    (moved,) = calendar_items(store)
    assert moved.id == item.id
    assert moved.data["start"] == "2026-03-05T09:30:00Z"
    assert (moved.data["busy_status"], moved.data["response_type"]) == (1, 5)


def test_cancel_marks_the_item_cancelled_and_a_reply_sets_the_attendee(store: Store) -> None:
    deliver(store, mail(invite()))
    deliver(store, mail(invite("CANCEL", sequence=1), "CANCEL"))
    (item,) = calendar_items(store)
    assert item.data["meeting_status"] == cal.MeetingStatus.CANCELED_RECEIVED
    # alice organizes a meeting with bob; bob's REPLY comes back by mail.
    record = cal.empty_record() | {
        "uid": "alice-1",
        "start": "2026-03-06T10:00:00Z",
        "end": "2026-03-06T11:00:00Z",
        "meeting_status": 1,
        "organizer_email": "alice@example.test",
        "attendees": [{"email": "bob@remote.test", "name": "Bob", "status": 5, "type": 1}],
    }

    def add(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        txn.add_item(txn.folder_by_type(user.id, FolderType.CALENDAR).id, record, uid="alice-1")

    store.run_sync(add)
    reply = invite(
        "REPLY", uid="alice-1", attendee="ATTENDEE;PARTSTAT=DECLINED:mailto:Bob@Remote.test"
    ).replace("ORGANIZER;CN=Bob:mailto:bob@remote.test", "ORGANIZER:mailto:alice@example.test")
    deliver(store, mail(reply, "REPLY"))
    mine = next(i for i in calendar_items(store) if i.uid == "alice-1")
    assert mine.data["attendees"][0]["status"] == cal.AttendeeStatus.DECLINED


def test_a_broken_invitation_is_delivered_as_mail_only(store: Store) -> None:
    deliver(store, mail("BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n"))
    assert calendar_items(store) == []

    def inbox(txn: Txn) -> int:
        user = txn.get_user("alice")
        assert user is not None
        return len(txn.message_versions(txn.folder_by_type(user.id, FolderType.INBOX).id))

    assert store.run_sync(inbox) == 1


@pytest.mark.parametrize("version", ["12.1", "14.1"])
def test_older_versions_get_their_meeting_request_too(version: str) -> None:
    raw = mail(invite(extra="RRULE:FREQ=DAILY;COUNT=2\r\nLOCATION:Room 4\r\n"))
    meeting = meeting_request_element(raw, version)
    assert meeting is not None
    assert meeting.child_text("Location", "Email") == "Room 4"
    assert (meeting.find("MeetingMessageType", "Email2") is None) == (version == "12.1")
    assert_libwbxml_decodes(encode(E("AirSync", "Sync", E("AirSync", "ApplicationData", meeting))))
    assert meeting_request_element(mail(invite("REPLY"), "REPLY"), version) is None


def test_inbox_item_carries_the_meeting_request(store: Store) -> None:
    rule = "RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=TH\r\nLOCATION:Room 4\r\n"
    raw = mail(invite(extra=rule))
    deliver(store, raw)

    def stored(txn: Txn) -> Message:
        user = txn.get_user("alice")
        assert user is not None
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        (message,) = txn.get_messages(user.id, list(txn.message_versions(inbox.id)))
        return message

    appdata = email_application_data(store.run_sync(stored), raw, "16.1", [])
    data = encode(E("AirSync", "Sync", appdata))
    assert_libwbxml_decodes(data)
    meeting = decode(data).children[0].find("MeetingRequest", "Email")
    assert meeting is not None
    assert meeting.child_text("StartTime", "Email") == "2026-03-05T10:00:00.000Z"
    assert meeting.child_text("InstanceType", "Email") == "1"
    assert meeting.child_text("Organizer", "Email") == "Bob <bob@remote.test>"
    recurrence = meeting.find("Recurrences").find("Recurrence")  # type: ignore[union-attr]
    assert recurrence is not None
    assert (recurrence.child_text("Type"), recurrence.child_text("DayOfWeek")) == ("1", "16")
    goid = base64.b64decode(meeting.child_text("GlobalObjId", "Email") or "")
    assert goid.startswith(bytes.fromhex("040000008200E00074C5B7101A82E008"))
    assert goid.endswith(b"vCal-Uid\x01\x00\x00\x00meeting-42@remote.test\x00")
    assert meeting.child_text("MeetingMessageType", "Email2") == "1"
    location = meeting.find("Location", "AirSyncBase")
    assert location is not None
    assert location.child_text("DisplayName") == "Room 4"


def test_an_outlook_uid_is_its_own_global_object_id() -> None:
    outlook = "040000008200E00074C5B7101A82E00800000000D0A1B2C3D4E5F60100000000000000001000"
    assert global_object_id(outlook).hex().upper() == outlook


def _item(user_folder: int, data: dict[str, Any], number: int = 1) -> Item:
    return Item(number, user_folder, f"x:{number}", data["uid"], data, 1)


def _queue(txn: Txn) -> list[tuple[tuple[str, ...], bytes]]:
    return [(m.recipients, m.raw) for m in txn.due_outbound(NOW + timedelta(days=1), 50)]


def test_phone_meetings_go_out_as_request_and_cancel(store: Store, alice: User) -> None:
    store.run_sync(
        lambda txn: txn.add_user("dave", "dave@example.test", "Dave", "x", NOW)  # a local one
    )
    meeting = cal.empty_record() | {
        "invitations_by_server": True,  # written by a 16.x phone
        "uid": "phone-1",
        "subject": "Review",
        "start": "2026-03-10T10:00:00Z",
        "end": "2026-03-10T11:00:00Z",
        "meeting_status": 1,
        "organizer_email": "alice@example.test",
        "organizer_name": "Alice",
        "attendees": [
            {"email": "bob@remote.test", "name": "Bob", "status": 5, "type": 1},
            {"email": "dave@example.test", "name": "Dave", "status": 5, "type": 1},
        ],
    }
    from_14_1 = _item(1, meeting | {"invitations_by_server": False})
    assert not store.run_sync(
        lambda txn: itip.after_client_write(txn, alice, None, from_14_1, NOW, RNG)
    )
    assert store.run_sync(_queue) == []  # that phone sends its own invitation by SendMail
    added = _item(1, meeting)
    assert store.run_sync(lambda txn: itip.after_client_write(txn, alice, None, added, NOW, RNG))
    ((rcpts, raw),) = store.run_sync(_queue)
    assert rcpts == ("bob@remote.test",)
    assert b"METHOD:REQUEST" in raw
    assert b"UID:phone-1" in raw
    dave = calendar_items(store, "dave")  # the local attendee got it at once, as an invitation
    assert [i.data["busy_status"] for i in dave] == [cal.BusyStatus.TENTATIVE]
    # Bob is dropped: he alone gets a CANCEL; Dave is told nothing new.
    fewer = _item(1, meeting | {"attendees": meeting["attendees"][1:]})
    store.run_sync(
        lambda txn: [txn.outbound_sent(m.id) for m in txn.due_outbound(NOW + timedelta(days=1), 50)]
    )
    assert store.run_sync(lambda txn: itip.after_client_write(txn, alice, added, fewer, NOW, RNG))
    ((rcpts, raw),) = store.run_sync(_queue)
    assert rcpts == ("bob@remote.test",)
    assert b"METHOD:CANCEL" in raw
    # The meeting is deleted on the phone: the attendees left are told.
    assert not store.run_sync(
        lambda txn: itip.after_client_write(txn, alice, fewer, None, NOW, RNG)
    )
    assert [i.data["meeting_status"] for i in calendar_items(store, "dave")] == [7]


def test_apply_change_raises_the_sequence_of_an_organized_meeting() -> None:
    old = cal.empty_record() | {
        "uid": "s",
        "start": "2026-03-10T10:00:00Z",
        "end": "2026-03-10T11:00:00Z",
        "meeting_status": 1,
        "sequence": 3,
    }
    moved = E("AirSync", "ApplicationData", E("Calendar", "StartTime", "20260310T090000Z"))
    assert cal.apply_change(old, moved, V16_1)["sequence"] == 4
    note = E("AirSync", "ApplicationData", E("Calendar", "Reminder", "5"))
    assert cal.apply_change(old, note, V16_1)["sequence"] == 3
    received = old | {"meeting_status": 3}
    assert cal.apply_change(received, moved, V16_1)["sequence"] == 3


def test_reply_for_one_occurrence_names_it() -> None:
    user = User(1, "alice", "alice@example.test", "Alice", NOW)
    record = records_from_ics(invite(extra="RRULE:FREQ=DAILY;COUNT=3\r\n").encode())[0]
    raw = itip.build_message(
        user,
        "REPLY",
        [record],
        ["bob@remote.test"],
        "x",
        "y",
        "2026-03-06T10:00:00Z",
        rng=RNG,
    )
    assert b"RECURRENCE-ID:20260306T100000Z" in raw
