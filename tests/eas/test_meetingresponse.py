"""MeetingResponse for invitations that arrived by mail: iMIP REPLY to the organizer (16.x with
SendResponse), the request leaves the Inbox, non-invitations are refused."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

from natsync.eas.context import KickRelay
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode
from tests.eas.helpers import NOW, Phone, collection, commands, deliver, folder_id, make_mail

NS = "MeetingResponse"
INVITE = (
    "BEGIN:VCALENDAR\r\nPRODID:-//test//EN\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n"
    "BEGIN:VEVENT\r\nUID:meeting-42@remote.test\r\nDTSTAMP:20260301T090000Z\r\n"
    "DTSTART:20260305T100000Z\r\nDTEND:20260305T110000Z\r\nSEQUENCE:0\r\n"
    "SUMMARY:Planning\r\nORGANIZER;CN=Bob:mailto:bob@remote.test\r\n"
    "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@example.test\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _invite() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@remote.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Planning"
    msg["Message-ID"] = "<invite-42@remote.test>"
    msg.set_content("Please come.")
    msg.add_alternative(INVITE, subtype="calendar", params={"method": "REQUEST"})
    return msg.as_bytes()


def _request(sid: str, inbox: str, answer: int, send: bool) -> Element:
    request = E(
        NS,
        "Request",
        E(NS, "UserResponse", answer),
        E(NS, "CollectionId", inbox),
        E(NS, "RequestId", sid),
    )
    if send:
        request.append(E(NS, "SendResponse"))
    return request


def test_accept_sends_imip_reply_and_moves_the_request(store: Store) -> None:
    sid = deliver(store, _invite())
    plain = deliver(store, make_mail("not a meeting", "x"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = Phone(store)
    phone.provision()
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    key = collection(phone.sync(inbox, key)).child_text("SyncKey") or ""
    body = E(NS, NS, _request(sid, inbox, 1, True), _request(plain, inbox, 1, True))
    response = phone.call("MeetingResponse", body)
    assert KickRelay() in response.effects
    results = decode(response.body).findall("Result")
    assert [r.child_text("RequestId") for r in results] == [sid, plain]
    assert [r.child_text("Status") for r in results] == ["1", "2"]
    tree = phone.tree("MeetingResponse", body)  # the second time the invite is gone: Status 2
    first = phone.store.run_sync(_queue)
    assert len(first) == 1
    raw = first[0]
    assert b"METHOD:REPLY" in raw
    assert b"PARTSTAT=ACCEPTED" in raw
    assert b"UID:meeting-42@remote.test" in raw
    assert b"Subject: Accepted: Planning" in raw
    statuses = [r.child_text("Status") for r in tree.findall("Result")]
    assert statuses == ["2", "2"]
    # The request left the Inbox; the responding phone is not told to delete it again.
    coll = collection(phone.sync(inbox, key))
    assert commands(coll, "Delete") == []

    def inbox_subjects(txn: Txn) -> list[str]:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.INBOX)
        return [m.subject for m in txn.get_messages(user.id, list(txn.message_versions(folder.id)))]

    assert store.run_sync(inbox_subjects) == ["not a meeting"]

    def calendar_busy(txn: Txn) -> list[tuple[str, int]]:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
        return [(i.uid, i.data["busy_status"]) for i in txn.list_items(folder.id)]

    # Delivered without the calendar hook (as mail stored before calendars existed): the
    # answer puts the accepted meeting in the calendar.
    assert store.run_sync(calendar_busy) == [("meeting-42@remote.test", 2)]


def _queue(txn: Txn) -> list[bytes]:
    return [item.raw for item in txn.due_outbound(NOW + timedelta(days=1), 10)]


def test_before_16_no_reply_is_sent(store: Store) -> None:
    sid = deliver(store, _invite())
    inbox = folder_id(store, FolderType.INBOX)
    phone = Phone(store, version="14.1")
    phone.provision()
    tree = phone.tree("MeetingResponse", E(NS, NS, _request(sid, inbox, 3, True)))
    assert tree.find("Result").child_text("Status") == "1"  # type: ignore[union-attr]
    assert store.run_sync(_queue) == []
