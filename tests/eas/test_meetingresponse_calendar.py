"""MeetingResponse with a calendar: the answer lands on the calendar item (busy / tentative /
removed), CalendarId names it, the REPLY carries the PARTSTAT (and the occurrence for a 16.x
InstanceId), and a calendar item can be answered directly."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

import pytest

from natsync.classes import calendar as cal
from natsync.mail import relay
from natsync.mime import parse_message
from natsync.store.api import FolderType, Item, Store, Txn
from natsync.wbxml import E, Element
from tests.eas.helpers import NOW, Phone, collection, commands, folder_id

NS = "MeetingResponse"


def _invite(rule: str = "") -> bytes:
    ics = (
        "BEGIN:VCALENDAR\r\nPRODID:-//test//EN\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n"
        "BEGIN:VEVENT\r\nUID:meeting-7@remote.test\r\nDTSTAMP:20260301T090000Z\r\n"
        "DTSTART:20260305T100000Z\r\nDTEND:20260305T110000Z\r\nSEQUENCE:1\r\n"
        f"SUMMARY:Planning\r\n{rule}ORGANIZER;CN=Bob:mailto:bob@remote.test\r\n"
        "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@example.test\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    msg = EmailMessage()
    msg["From"] = "Bob <bob@remote.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Planning"
    msg.set_content("Please come.")
    msg.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
    return msg.as_bytes()


def _deliver(store: Store, raw: bytes) -> str:
    """Deliver as SMTP does (the calendar hook runs); the Inbox ServerId."""

    def run(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        relay.deliver_to_inbox(txn, user, parse_message(raw, NOW))
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        return max(txn.message_versions(inbox.id), key=lambda sid: int(sid.split(":")[1]))

    return store.run_sync(run)


def _items(store: Store) -> list[Item]:
    def run(txn: Txn) -> list[Item]:
        user = txn.get_user("alice")
        assert user is not None
        return txn.list_items(txn.folder_by_type(user.id, FolderType.CALENDAR).id)

    return store.run_sync(run)


def _queue(txn: Txn) -> list[bytes]:
    return [m.raw for m in txn.due_outbound(NOW + timedelta(days=1), 10)]


def _respond(phone: Phone, sid: str, folder: str, answer: int, *extra: Element) -> Element:
    request = E(
        NS,
        "Request",
        E(NS, "UserResponse", answer),
        E(NS, "CollectionId", folder),
        E(NS, "RequestId", sid),
        *extra,
    )
    result = phone.tree(NS, E(NS, NS, request)).find("Result")
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("answer", "busy", "response", "partstat"),
    [(1, 2, 3, b"PARTSTAT=ACCEPTED"), (2, 1, 2, b"PARTSTAT=TENTATIVE")],
)
def test_accept_or_tentative_updates_the_item_and_names_it(
    store: Store, answer: int, busy: int, response: int, partstat: bytes
) -> None:
    sid = _deliver(store, _invite())
    (before,) = _items(store)
    assert before.data["busy_status"] == cal.BusyStatus.TENTATIVE
    phone = Phone(store)
    phone.provision()
    result = _respond(phone, sid, folder_id(store, FolderType.INBOX), answer, E(NS, "SendResponse"))
    assert result.child_text("Status") == "1"
    (after,) = _items(store)
    assert result.child_text("CalendarId") == after.server_id
    assert (after.data["busy_status"], after.data["response_type"]) == (busy, response)
    assert after.data["attendees"][0]["status"] == response  # AttendeeStatus 3 / 2 alike
    (reply,) = store.run_sync(_queue)
    assert partstat in reply
    assert b"METHOD:REPLY" in reply
    assert b"SEQUENCE:1" in reply
    # The phone's calendar shows the item with the answer.
    calendar = folder_id(store, FolderType.CALENDAR)
    key = collection(phone.sync(calendar, "0")).child_text("SyncKey") or ""
    (add,) = commands(collection(phone.sync(calendar, key)), "Add")
    appdata = add.find("ApplicationData")
    assert appdata is not None
    assert appdata.child_text("BusyStatus", "Calendar") == str(busy)
    assert appdata.child_text("ResponseType", "Calendar") == str(response)


def test_decline_removes_the_item(store: Store) -> None:
    sid = _deliver(store, _invite())
    phone = Phone(store)
    phone.provision()
    result = _respond(phone, sid, folder_id(store, FolderType.INBOX), 3, E(NS, "SendResponse"))
    assert result.child_text("Status") == "1"
    assert result.find("CalendarId") is None
    assert _items(store) == []
    (reply,) = store.run_sync(_queue)
    assert b"PARTSTAT=DECLINED" in reply


def test_a_calendar_item_is_answered_directly_and_an_instance_alone(store: Store) -> None:
    _deliver(store, _invite("RRULE:FREQ=DAILY;COUNT=5\r\n"))
    (item,) = _items(store)
    phone = Phone(store)
    phone.provision()
    calendar = folder_id(store, FolderType.CALENDAR)
    instance = E(NS, "InstanceId", "2026-03-06T10:00:00.000Z")
    result = _respond(phone, item.server_id, calendar, 3, instance, E(NS, "SendResponse"))
    assert result.child_text("Status") == "1"
    (after,) = _items(store)
    assert after.data["exceptions"] == [{"original_start": "2026-03-06T10:00:00Z", "deleted": True}]
    (reply,) = store.run_sync(_queue)
    assert b"RECURRENCE-ID:20260306T100000Z" in reply
    assert b"PARTSTAT=DECLINED" in reply
    accepted = _respond(phone, item.server_id, calendar, 1)
    assert accepted.child_text("CalendarId") == item.server_id
    (final,) = _items(store)
    assert final.data["response_type"] == cal.ResponseType.ACCEPTED
    assert len(final.data["exceptions"]) == 1  # the declined day stays declined
    # An item alice organizes herself is no invitation to answer.
    store.run_sync(lambda txn: txn.update_item(item.id, final.data | {"meeting_status": 1}))
    assert _respond(phone, item.server_id, calendar, 1).child_text("Status") == "2"


def test_an_invitation_to_one_occurrence_is_answered_for_that_occurrence(store: Store) -> None:
    _deliver(store, _invite("RRULE:FREQ=DAILY;COUNT=5\r\n"))
    moved = (
        _invite()
        .replace(
            b"DTSTART:20260305T100000Z",
            b"RECURRENCE-ID:20260307T100000Z\r\nDTSTART:20260307T150000Z",
        )
        .replace(b"DTEND:20260305T110000Z", b"DTEND:20260307T160000Z")
    )
    sid = _deliver(store, moved)
    (item,) = _items(store)
    assert item.data["exceptions"][0]["start"] == "2026-03-07T15:00:00Z"
    phone = Phone(store)
    phone.provision()
    result = _respond(phone, sid, folder_id(store, FolderType.INBOX), 2, E(NS, "SendResponse"))
    assert result.child_text("CalendarId") == item.server_id
    (after,) = _items(store)
    assert after.data["response_type"] == cal.ResponseType.NOT_RESPONDED  # the series: unanswered
    (exception,) = after.data["exceptions"]
    assert exception["response_type"] == cal.ResponseType.TENTATIVE
    (reply,) = store.run_sync(_queue)
    assert b"RECURRENCE-ID:20260307T100000Z" in reply
    assert b"DTSTART:20260307T150000Z" in reply
