"""Meetings by mail (iMIP, RFC 6047; iTIP methods of RFC 5546) on the server side.

Inbound (:func:`on_delivery`, called by ``relay.deliver_to_inbox`` in the delivery transaction,
so SMTP mail and mail from local users alike): a message with a ``text/calendar`` part

* ``METHOD:REQUEST`` puts the meeting in the recipient's Calendar as a tentative item (upsert by
  UID; a lone RECURRENCE-ID VEVENT updates that occurrence of the series),
* ``METHOD:CANCEL`` marks the item cancelled (MeetingStatus 7), or deletes the one occurrence,
* ``METHOD:REPLY`` from an attendee sets that attendee's status on the organizer's item.

The message itself stays in the Inbox; Sync shows it with an ``Email:MeetingRequest``
(natsync.classes.meeting, MS-ASEMAIL 2.2.2.48). A broken invitation never fails a
delivery: it is logged and the mail is delivered as mail.

Outbound iTIP mail (invitations, cancellations, replies) is natsync.mail.itip: it sends
through the relay, which calls this module on every delivery, so the two directions are two
modules and neither imports the other's caller.
"""

from __future__ import annotations

import logging

from natsync.classes import calendar as cal
from natsync.classes.codec import PimError, Record
from natsync.classes.ical import (
    IcsError,
    records_from_ics,
)
from natsync.classes.meeting import calendar_part
from natsync.store.api import FolderType, NewMessage, Txn, User

log = logging.getLogger(__name__)


def address_key(text: str | None) -> str:
    """An address as compared: stripped, lower case."""
    return (text or "").strip().lower()


def _calendar(txn: Txn, user: User) -> int:
    return txn.folder_by_type(user.id, FolderType.CALENDAR).id


# -- inbound ---------------------------------------------------------------------------------------


def _request(txn: Txn, user: User, record: Record) -> None:
    folder = _calendar(txn, user)
    if address_key(record.get("organizer_email")) == address_key(user.email):
        return  # our own invitation coming back: the organizer's item is the truth
    existing = txn.item_by_uid(folder, record["uid"])
    original = record.pop("instance_of", None)
    if original is not None and existing is not None and existing.data.get("recurrence"):
        data = dict(existing.data)
        exceptions = [e for e in data.get("exceptions") or [] if e["original_start"] != original]
        exceptions.append(
            {
                "original_start": original,
                "deleted": False,
                "start": record["start"],
                "end": record["end"],
                "subject": record["subject"],
            }
        )
        data["exceptions"] = sorted(exceptions, key=lambda e: str(e["original_start"]))
        txn.update_item(existing.id, data)
        return
    fresh = record | {
        "meeting_status": int(cal.MeetingStatus.MEETING_RECEIVED),
        "busy_status": int(cal.BusyStatus.TENTATIVE),
        "response_type": int(cal.ResponseType.NOT_RESPONDED),
        "response_requested": True,
    }
    if existing is None:
        txn.add_item(folder, fresh, uid=record["uid"])
        return
    old = existing.data
    if int(old.get("sequence") or 0) >= int(record.get("sequence") or 0):
        # A resend of the version we have: the user's answer stays.
        for key in ("busy_status", "response_type", "appointment_reply_time"):
            fresh[key] = old.get(key, fresh[key])
    txn.update_item(existing.id, fresh)


def _cancel(txn: Txn, user: User, record: Record) -> None:
    existing = txn.item_by_uid(_calendar(txn, user), record["uid"])
    if existing is None:
        return
    original = record.get("instance_of")
    if original is not None and existing.data.get("recurrence"):
        txn.update_item(existing.id, cal.delete_occurrence(existing.data, original))
        return
    data = dict(existing.data) | {"meeting_status": int(cal.MeetingStatus.CANCELED_RECEIVED)}
    txn.update_item(existing.id, data)


def _reply(txn: Txn, user: User, record: Record) -> None:
    existing = txn.item_by_uid(_calendar(txn, user), record["uid"])
    if existing is None:
        return
    answers = {address_key(a["email"]): a.get("status") for a in record.get("attendees") or []}
    data = dict(existing.data)
    people = []
    changed = False
    for person in data.get("attendees") or []:
        status = answers.get(address_key(person.get("email")))
        if status is not None and status != person.get("status"):
            changed = True
            people.append(dict(person) | {"status": status})
        else:
            people.append(person)
    if changed:
        txn.update_item(existing.id, data | {"attendees": people})


def on_delivery(txn: Txn, user: User, message: NewMessage) -> None:
    """Apply an iMIP message just delivered to *user* to their calendar (see the docstring)."""
    found = calendar_part(message.raw)
    if found is None:
        return
    method, data = found
    handler = {"REQUEST": _request, "CANCEL": _cancel, "REPLY": _reply}.get(method)
    if handler is None:
        return
    try:
        for record in records_from_ics(data):
            handler(txn, user, record)
    except (IcsError, PimError) as exc:  # the mail is delivered all the same
        log.info("iMIP %s for %s not applied: %s", method, user.email, exc.message)
