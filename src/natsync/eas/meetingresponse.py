"""MeetingResponse (MS-ASCMD 2.2.1.11): the user accepts, tentatively accepts or declines a
meeting, named by the invitation in the Inbox (an iMIP REQUEST, RFC 6047) or by the calendar
item itself (RequestId = its ServerId, CollectionId = its calendar folder).

* The calendar item (natsync.classes.calendar, upserted by UID from the invitation when delivery did
  not create it) takes the answer: accept → Busy, ResponseType 3; tentative → Tentative,
  ResponseType 2; the user's own attendee entry gets the same status; decline removes the item.
  A 16.x InstanceId answers one occurrence: it becomes an exception (declined: deleted).
  Accepted and tentative answers return the item's ServerId as CalendarId (MS-ASCMD 2.2.3.18).
* From EAS 16.0 on, when the client asks for it (SendResponse), the server sends the organizer
  the iMIP REPLY (RFC 5546 3.2.3) with the user's PARTSTAT through the outbound queue
  (natsync.mail.itip.reply); earlier clients send their own reply by SendMail (MS-ASCMD 3.1.5.8).
* The meeting request leaves the Inbox for Deleted Items, as Exchange does after a response;
  the responding device's sync state is told, so no Delete comes back to it.
"""

from __future__ import annotations

import enum
from typing import Any

from natsync.classes import calendar as cal
from natsync.classes.codec import PimError, Record
from natsync.classes.ical import IcsError, records_from_ics
from natsync.classes.meeting import calendar_part
from natsync.eas.context import Context, Response, kick_relay
from natsync.eas.errors import EasError
from natsync.eas.sync_request import adjust_known
from natsync.eas.versions import V16_0
from natsync.mail import itip
from natsync.mime import CLASS_MEETING_REQUEST
from natsync.store.api import FolderType, Item, Message
from natsync.wbxml import E, Element

NS = "MeetingResponse"
#: Requests one command may carry (a user answers a handful of invitations at a time).
MAX_REQUESTS = 100


# MS-ASCMD 2.2.3.177.9 Status (MeetingResponse).
class MeetingStatus(enum.IntEnum):
    SUCCESS = 1
    INVALID_REQUEST = 2
    MAILBOX_ERROR = 3
    SERVER_ERROR = 4


class UserResponse(enum.IntEnum):
    """MS-ASCMD 2.2.3.185 UserResponse."""

    ACCEPTED = 1
    TENTATIVE = 2
    DECLINED = 3


#: UserResponse -> (AttendeeStatus, ResponseType, BusyStatus) of the calendar item.
_EFFECT = {
    UserResponse.ACCEPTED: (
        cal.AttendeeStatus.ACCEPTED,
        cal.ResponseType.ACCEPTED,
        cal.BusyStatus.BUSY,
    ),
    UserResponse.TENTATIVE: (
        cal.AttendeeStatus.TENTATIVE,
        cal.ResponseType.TENTATIVE,
        cal.BusyStatus.TENTATIVE,
    ),
    UserResponse.DECLINED: (
        cal.AttendeeStatus.DECLINED,
        cal.ResponseType.DECLINED,
        cal.BusyStatus.FREE,
    ),
}


def _invitation(ctx: Context, msg: Message) -> Record | None:
    """The meeting a REQUEST message carries (its master event), or None."""
    found = calendar_part(ctx.txn.raw_message(msg.id))
    if found is None or found[0] != "REQUEST":
        return None
    try:
        records = records_from_ics(found[1])
    except IcsError:
        return None
    return records[0] if records else None


def _answered(
    record: dict[str, Any], answer: UserResponse, email: str, instance: str | None, now: str
) -> dict[str, Any]:
    status, response, busy = _EFFECT[answer]
    people = []
    for person in record.get("attendees") or []:
        mine = (person.get("email") or "").lower() == email.lower()
        people.append(dict(person) | {"status": int(status)} if mine else person)
    changes = {
        "response_type": int(response),
        "busy_status": int(busy),
        "appointment_reply_time": now,
    }
    if instance is None:
        return record | changes | {"attendees": people}
    original = cal.utc_text(cal.parse_utc(instance))
    exceptions = [dict(e) for e in record.get("exceptions") or []]
    current = next((e for e in exceptions if e["original_start"] == original), None)
    if current is None:
        current = {"original_start": original, "deleted": False}
        exceptions.append(current)
    current.update(changes)
    return record | {"exceptions": sorted(exceptions, key=lambda e: str(e["original_start"]))}


def _apply(
    ctx: Context, item: Item | None, record: Record, answer: UserResponse, instance: str | None
) -> Item | None:
    """The calendar after the answer: the item updated (or added), or removed on decline."""
    folder = ctx.txn.folder_by_type(ctx.user.id, FolderType.CALENDAR)
    if item is None:
        item = ctx.txn.item_by_uid(folder.id, record["uid"])
    if item is None or not item.data.get("recurrence"):
        instance = None  # no series here: the answer is for the item itself
    if answer == UserResponse.DECLINED and instance is None:
        if item is not None:
            ctx.txn.delete_item(item.id)
        return None
    if answer == UserResponse.DECLINED and instance is not None and item is not None:
        return ctx.txn.update_item(item.id, cal.delete_occurrence(item.data, instance))
    base = dict(item.data) if item is not None else dict(record)
    base["meeting_status"] = base.get("meeting_status") or int(cal.MeetingStatus.MEETING_RECEIVED)
    data = _answered(base, answer, ctx.user.email, instance, cal.utc_text(ctx.now))
    if item is None:
        return ctx.txn.add_item(folder.id, data, uid=data["uid"])
    return ctx.txn.update_item(item.id, data)


def _move_to_trash(ctx: Context, msg: Message) -> None:
    folder = next((f for f in ctx.txn.list_folders(ctx.user.id) if f.id == msg.folder_id), None)
    trash = ctx.txn.folder_by_type(ctx.user.id, FolderType.DELETED_ITEMS)
    if folder is not None and folder.id != trash.id:
        moved = ctx.txn.move_message(msg.id, trash.id)
        adjust_known(ctx, folder.server_id, remove=(msg.server_id,))
        adjust_known(ctx, trash.server_id, add={moved.server_id: moved.modseq})


def _one(ctx: Context, request: Element) -> tuple[Element, bool]:
    request_id = request.child_text("RequestId", NS) or request.child_text("LongId", "Search") or ""
    result = E(NS, "Result", E(NS, "RequestId", request_id))
    answer_text = (request.child_text("UserResponse", NS) or "").strip()
    answer = UserResponse(int(answer_text)) if answer_text in ("1", "2", "3") else None
    instance = request.child_text("InstanceId", NS)
    msg = ctx.txn.get_message(ctx.user.id, request_id) if request_id else None
    item = None
    record: Record | None = None
    if msg is not None and msg.message_class == CLASS_MEETING_REQUEST:
        record = _invitation(ctx, msg)
    elif msg is None and request_id:
        item = ctx.txn.get_item(ctx.user.id, request_id)
        if item is not None and item.data.get("meeting_status") not in cal.ORGANIZER_STATUSES:
            record = dict(item.data)
    if answer is None or record is None:
        result.add(NS, "Status", MeetingStatus.INVALID_REQUEST)
        return result, False
    if instance is None and record.get("instance_of"):
        instance = record["instance_of"]  # an invitation to one occurrence of a series
    record = {k: v for k, v in record.items() if k != "instance_of"}
    try:
        if instance is not None:
            cal.parse_utc(instance)
        updated = _apply(ctx, item, record, answer, instance)
    except PimError:
        result.add(NS, "Status", MeetingStatus.INVALID_REQUEST)
        return result, False
    queued = False
    if ctx.version >= V16_0 and request.find("SendResponse", NS) is not None:
        status = int(_EFFECT[answer][0])
        queued = itip.reply(
            ctx.txn, ctx.user, record, status, ctx.now, ctx.rng, ctx.config.domains, instance
        )
    if msg is not None:
        _move_to_trash(ctx, msg)
    result.add(NS, "Status", MeetingStatus.SUCCESS)
    if updated is not None and answer != UserResponse.DECLINED:
        result.add(NS, "CalendarId", updated.server_id)
    return result, queued


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "MeetingResponse" or body.namespace != NS:
        raise EasError("MeetingResponse needs a body", status=MeetingStatus.INVALID_REQUEST)
    requests = body.findall("Request", NS)
    if not requests or len(requests) > MAX_REQUESTS:
        raise EasError(
            "MeetingResponse needs 1..100 requests", status=MeetingStatus.INVALID_REQUEST
        )
    root = E(NS, "MeetingResponse")
    queued = False
    for request in requests:
        result, sent = _one(ctx, request)
        root.append(result)
        queued = queued or sent
    return Response.of(root, status=MeetingStatus.SUCCESS, effects=kick_relay(queued))
