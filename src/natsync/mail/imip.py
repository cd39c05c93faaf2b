"""Meetings by mail (iMIP, RFC 6047; iTIP methods of RFC 5546) on the server side.

Inbound (:func:`on_delivery`, called by ``relay.deliver_to_inbox`` in the delivery transaction,
so SMTP mail and mail from local users alike): a message with a ``text/calendar`` part

* ``METHOD:REQUEST`` puts the meeting in the recipient's Calendar as a tentative item (upsert by
  UID; a lone RECURRENCE-ID VEVENT updates that occurrence of the series),
* ``METHOD:CANCEL`` marks the item cancelled (MeetingStatus 7), or deletes the one occurrence,
* ``METHOD:REPLY`` from an attendee sets that attendee's status on the organizer's item.

The message itself stays in the Inbox; Sync shows it with an ``Email:MeetingRequest``
(:func:`meeting_request_element`, MS-ASEMAIL 2.2.2.48). A broken invitation never fails a
delivery: it is logged and the mail is delivered as mail.

Outbound (:func:`send`): an iTIP message as a MIME mail (text/plain + text/calendar with the
method, RFC 6047 2.4) through ``relay.route_outgoing`` in the caller's transaction.
:func:`after_client_write` (the Calendar codec's Sync hook) sends REQUEST to the attendees of a
meeting the user organizes when a 16.x phone adds or changes it, and CANCEL when it is deleted
(or attendees are removed); 12.1-14.1 phones send their own invitations by SendMail, so their
writes send nothing. MeetingResponse (natsync.eas.meetingresponse) sends the REPLY.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import icalendar

from natsync.classes import calendar as cal
from natsync.classes.codec import PimError, Record
from natsync.classes.ical import (
    MAX_ICS_BYTES,
    IcsError,
    records_from_ics,
    records_to_ics,
)
from natsync.mail import compose, relay
from natsync.mail.errors import MailError
from natsync.mail.mime import parse_tree
from natsync.store.api import FolderType, Item, NewMessage, Txn, User
from natsync.wbxml import Element

log = logging.getLogger(__name__)

#: Cheap test for "may carry an invitation": every message delivered passes here, so plain
#: substring scans (memchr speed: ~5 ms for 20 MB) of the spellings senders use, not a
#: case-insensitive regular expression (~40 times slower).
_CALENDAR_SPELLINGS = (b"calendar", b"Calendar", b"CALENDAR")
#: MS-OXOCAL 2.2.1.27 GlobalObjectId: the fixed class id that starts every one.
_GOID_PREFIX = bytes.fromhex("040000008200E00074C5B7101A82E008")
#: What marks a UID that is not an Outlook id inside a GlobalObjectId (MS-OXOCAL 2.2.1.27).
_VCAL_UID = b"vCal-Uid\x01\x00\x00\x00"


class MeetingMessageType:
    """MS-ASEMAIL 2.2.2.51 MeetingMessageType (email2)."""

    SILENT_UPDATE = 0
    INITIAL_REQUEST = 1
    FULL_UPDATE = 2
    INFORMATIONAL_UPDATE = 3
    OUTDATED = 4
    DELEGATORS_COPY = 5
    DELEGATED = 6


class InstanceType:
    """MS-ASEMAIL 2.2.2.40 InstanceType."""

    SINGLE = 0
    RECURRING_MASTER = 1
    SINGLE_INSTANCE = 2
    EXCEPTION = 3


def calendar_part(raw: bytes) -> tuple[str, bytes] | None:
    """(METHOD, iCalendar bytes) of the first text/calendar part of *raw*, or None."""
    if not any(spelling in raw for spelling in _CALENDAR_SPELLINGS):
        return None
    for part in parse_tree(raw).walk():
        if part.get_content_type() != "text/calendar":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or len(payload) > MAX_ICS_BYTES:
            return None
        method = str(part.get_param("method") or "")
        return (method or _method(payload)).upper(), payload
    return None


def _method(data: bytes) -> str:
    try:
        return str(icalendar.Calendar.from_ical(data).get("METHOD", ""))
    except Exception:  # the library's own errors: a method-less part is no invitation
        return ""


def _address(text: str | None) -> str:
    return (text or "").strip().lower()


def _calendar(txn: Txn, user: User) -> int:
    return txn.folder_by_type(user.id, FolderType.CALENDAR).id


# -- inbound ---------------------------------------------------------------------------------------


def _request(txn: Txn, user: User, record: Record) -> None:
    folder = _calendar(txn, user)
    if _address(record.get("organizer_email")) == _address(user.email):
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
    answers = {_address(a["email"]): a.get("status") for a in record.get("attendees") or []}
    data = dict(existing.data)
    people = []
    changed = False
    for person in data.get("attendees") or []:
        status = answers.get(_address(person.get("email")))
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


# -- the Inbox item (MS-ASEMAIL 2.2.2.48) -------------------------------------------------------


def global_object_id(uid: str) -> bytes:
    """The Outlook GlobalObjectId of *uid* (MS-OXOCAL 2.2.1.27): an Outlook id as sent, any
    other UID wrapped as a 'vCal-Uid'."""
    if re.fullmatch(r"[0-9A-Fa-f]+", uid) and uid.upper().startswith(_GOID_PREFIX.hex().upper()):
        try:
            return bytes.fromhex(uid)
        except ValueError:
            pass
    data = _VCAL_UID + uid.encode("utf-8") + b"\x00"
    return _GOID_PREFIX + bytes(20) + len(data).to_bytes(4, "little") + data


def _dt(text: str) -> str:
    return cal.instance_id(text)


def meeting_request_element(raw: bytes, version: str) -> Element | None:
    """The ``Email:MeetingRequest`` of an invitation message, or None when *raw* has none."""
    found = calendar_part(raw)
    if found is None or found[0] not in ("REQUEST", "CANCEL"):
        return None
    try:
        records = records_from_ics(found[1])
    except IcsError:
        return None
    if not records:
        return None
    record = records[0]
    v = tuple(int(p) for p in version.split(".")) if re.fullmatch(r"\d+\.\d+", version) else (16, 1)
    ns = "Email"
    kids: list[Element] = []

    def leaf(tag: str, value: str | int | bool | None, space: str = ns) -> None:
        if value is None:
            return
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        kids.append(Element(space, tag, [], text))

    leaf("AllDayEvent", bool(record.get("all_day")))
    leaf("StartTime", _dt(record["start"]))
    leaf("DtStamp", _dt(record.get("dtstamp") or record["start"]))
    leaf("EndTime", _dt(record["end"]))
    original = record.get("instance_of")
    kind = InstanceType.SINGLE
    if original is not None:
        kind = InstanceType.EXCEPTION
    elif record.get("recurrence"):
        kind = InstanceType.RECURRING_MASTER
    leaf("InstanceType", kind)
    if record.get("location") is not None:
        if v >= (16, 0):
            kids.append(
                Element(
                    "AirSyncBase",
                    "Location",
                    [Element("AirSyncBase", "DisplayName", [], record["location"])],
                )
            )
        else:
            leaf("Location", record["location"])
    organizer = record.get("organizer_email") or ""
    name = record.get("organizer_name") or ""
    leaf("Organizer", email.utils.formataddr((name, organizer)) if name else organizer)
    if original is not None:
        leaf("RecurrenceId", _dt(original))
    leaf("Reminder", record.get("reminder"))
    leaf("ResponseRequested", True)
    recurrence = record.get("recurrence")
    if recurrence:
        parts: list[Element] = [Element(ns, "Type", [], str(recurrence["type"]))]
        for tag, key in (
            ("Interval", "interval"),
            ("Until", "until"),
            ("Occurrences", "occurrences"),
            ("WeekOfMonth", "week_of_month"),
            ("DayOfMonth", "day_of_month"),
            ("DayOfWeek", "day_of_week"),
            ("MonthOfYear", "month_of_year"),
        ):
            value = recurrence.get(key)
            if value is not None:
                text = _dt(value) if key == "until" else str(value)
                parts.append(Element(ns, tag, [], text))
        if v >= (14, 0):
            for tag, key in (("CalendarType", "calendar_type"), ("IsLeapMonth", "is_leap_month")):
                if recurrence.get(key) is not None:
                    parts.append(Element("Email2", tag, [], str(recurrence[key])))
        if v >= (14, 1) and recurrence.get("first_day_of_week") is not None:
            parts.append(
                Element("Email2", "FirstDayOfWeek", [], str(recurrence["first_day_of_week"]))
            )
        kids.append(Element(ns, "Recurrences", [Element(ns, "Recurrence", parts)]))
    leaf("Sensitivity", record.get("sensitivity") or 0)
    leaf("BusyStatus", int(cal.BusyStatus.TENTATIVE))
    leaf("TimeZone", cal.timezone_blob(record))
    kids.append(
        Element(ns, "GlobalObjId", [], base64.b64encode(global_object_id(record["uid"])).decode())
    )
    if v >= (14, 0):
        leaf("DisallowNewTimeProposal", bool(record.get("disallow_new_time_proposal")))
    if v >= (14, 1):
        update = int(record.get("sequence") or 0) > 0
        kind_of = MeetingMessageType.FULL_UPDATE if update else MeetingMessageType.INITIAL_REQUEST
        leaf("MeetingMessageType", kind_of, "Email2")
    return Element(ns, "MeetingRequest", kids)


# -- outbound --------------------------------------------------------------------------------------


def build_message(
    user: User,
    method: str,
    records: Sequence[Mapping[str, Any]],
    recipients: Sequence[str],
    subject: str,
    text: str,
    recurrence_id: str | None = None,
) -> bytes:
    """An iMIP message (RFC 6047 2.4): text/plain for people, text/calendar for programs."""
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((user.display_name, user.email))
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg.set_content(text)
    ics = records_to_ics(records, method, recurrence_id).decode("utf-8")
    msg.add_alternative(ics, subtype="calendar", params={"method": method})
    return msg.as_bytes()


def send(
    txn: Txn,
    user: User,
    method: str,
    records: Sequence[Mapping[str, Any]],
    recipients: Sequence[str],
    subject: str,
    text: str,
    now: datetime,
    local_domains: Iterable[str] | None = None,
    recurrence_id: str | None = None,
) -> bool:
    """Send an iTIP *method* message to *recipients* in the caller's transaction; True when
    something went to the outbound queue (the caller kicks the relay)."""
    targets = [r for r in dict.fromkeys(r.strip() for r in recipients) if "@" in r]
    targets = [r for r in targets if _address(r) != _address(user.email)]
    if not targets:
        return False
    raw = build_message(user, method, records, targets, subject, text, recurrence_id)
    try:
        out = compose.prepare_outgoing(raw, user.email, user.display_name, now)
    except MailError as exc:
        log.warning("iMIP %s from %s not sent: %s", method, user.email, exc.message)
        return False
    if local_domains is None:  # no configuration at hand: our domain is the user's, and theirs
        domains = {user.email.rpartition("@")[2].lower()}
        domains |= {r.rpartition("@")[2].lower() for r in targets if txn.get_user_by_email(r)}
        local_domains = domains
    result = relay.route_outgoing(txn, user, out.raw, out.recipients, now, local_domains)
    return result.outbound_id is not None


def _organizes(user: User, record: Mapping[str, Any]) -> bool:
    if not record.get("attendees"):
        return False
    organizer = _address(record.get("organizer_email"))
    if organizer:
        return organizer == _address(user.email)
    return record.get("meeting_status") in cal.ORGANIZER_STATUSES


def _outgoing(user: User, record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    data = dict(record) | {"dtstamp": cal.utc_text(now)}
    if not data.get("organizer_email"):
        data["organizer_email"], data["organizer_name"] = user.email, user.display_name or None
    return data


def _emails(record: Mapping[str, Any] | None) -> list[str]:
    if record is None:
        return []
    return [a["email"] for a in record.get("attendees") or [] if "@" in (a.get("email") or "")]


def after_client_write(
    txn: Txn, user: User, old: Item | None, new: Item | None, now: datetime
) -> bool:
    """The Calendar codec's Sync hook: invitations the phone made go out by mail."""
    before = old.data if old is not None else None
    after = new.data if new is not None else None
    last = after if after is not None else before
    if last is None or not last.get("invitations_by_server"):
        return False  # a 12.1-14.1 phone mails its own invitations (SendMail)
    queued = False
    if after is not None and _organizes(user, after):
        cancelled = after.get("meeting_status") in cal.CANCELLED_STATUSES
        was_cancelled = (
            before is not None and before.get("meeting_status") in cal.CANCELLED_STATUSES
        )
        data = _outgoing(user, after, now)
        subject = after.get("subject") or ""
        if cancelled and not was_cancelled:
            text = f"{user.display_name or user.email} canceled this meeting."
            return send(
                txn, user, "CANCEL", [data], _emails(after), f"Canceled: {subject}", text, now
            )
        if cancelled:
            return False
        changed = before is None or any(before.get(k) != after.get(k) for k in cal.SIGNIFICANT)
        removed = [
            e for e in _emails(before) if _address(e) not in {_address(x) for x in _emails(after)}
        ]
        added = [
            e for e in _emails(after) if _address(e) not in {_address(x) for x in _emails(before)}
        ]
        targets = _emails(after) if changed else added
        if targets:
            text = f"{user.display_name or user.email} invites you to {subject}."
            queued = send(txn, user, "REQUEST", [data], targets, subject, text, now)
        if removed:
            gone = _outgoing(user, after, now) | {
                "attendees": [a for a in before["attendees"] if a["email"] in removed]  # type: ignore[index]
            }
            text = f"{user.display_name or user.email} removed you from {subject}."
            queued = (
                send(txn, user, "CANCEL", [gone], removed, f"Canceled: {subject}", text, now)
                or queued
            )
        return queued
    if after is None and before is not None and _organizes(user, before):
        if before.get("meeting_status") in cal.CANCELLED_STATUSES:
            return False  # the attendees were told when it was cancelled
        data = _outgoing(user, before, now) | {
            "meeting_status": int(cal.MeetingStatus.CANCELED_ORGANIZER)
        }
        subject = before.get("subject") or ""
        text = f"{user.display_name or user.email} canceled this meeting."
        return send(txn, user, "CANCEL", [data], _emails(before), f"Canceled: {subject}", text, now)
    return False


def reply(
    txn: Txn,
    user: User,
    record: Mapping[str, Any],
    partstat_status: int,
    now: datetime,
    local_domains: Iterable[str] | None = None,
    instance: str | None = None,
) -> bool:
    """Send the organizer of *record* the user's answer (RFC 5546 3.2.3 REPLY); with
    *instance* (an occurrence's original start) the answer is for that occurrence only."""
    organizer = record.get("organizer_email") or ""
    if "@" not in organizer:
        return False
    me = {"email": user.email, "name": user.display_name, "status": partstat_status, "type": 1}
    answer = {k: record.get(k) for k in ("uid", "start", "end", "all_day", "tz", "subject")}
    answer |= {
        "dtstamp": cal.utc_text(now),
        "sequence": int(record.get("sequence") or 0),
        "organizer_email": organizer,
        "organizer_name": record.get("organizer_name"),
        "attendees": [me],
        "recurrence": record.get("recurrence"),
        "exceptions": [],
    }
    original = None if instance is None else cal.utc_text(cal.parse_utc(instance))
    if original is not None and record.get("recurrence"):  # that occurrence's own times
        length = cal.parse_utc(record["end"]) - cal.parse_utc(record["start"])
        moved: Mapping[str, Any] = next(
            (e for e in record.get("exceptions") or [] if e["original_start"] == original), {}
        )
        begin = moved.get("start") or original
        finish = moved.get("end") or cal.utc_text(cal.parse_utc(begin) + length)
        answer |= {"start": begin, "end": finish, "recurrence": None}
    verb = {2: "Tentative", 3: "Accepted", 4: "Declined"}.get(partstat_status, "Reply")
    subject = f"{verb}: {record.get('subject') or ''}"
    text = f"{user.display_name or user.email} {verb.lower()}.\n"
    return send(
        txn,
        user,
        "REPLY",
        [cal.empty_record() | answer],
        [organizer],
        subject,
        text,
        now,
        local_domains,
        original,
    )
