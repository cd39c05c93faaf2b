"""A meeting request or cancellation in the Inbox, as the Email class shows it (sans-I/O):
``Email:MeetingRequest`` (MS-ASEMAIL 2.2.2.48) built from the message's ``text/calendar`` part,
with the Outlook GlobalObjectId of its UID (MS-OXOCAL 2.2.1.27).

It lives with the data classes because the Email codec renders it inside a Sync item; it reads
the calendar records with natsync.classes.ical. What the server *does* with an invitation
(the recipient's Calendar, replies, outbound iTIP mail) is natsync.mail.imip, which builds on
this module and never the other way.
"""

from __future__ import annotations

import base64
import email.utils
import re

import icalendar

from natsync.classes import calendar as cal
from natsync.classes.ical import MAX_ICS_BYTES, IcsError, records_from_ics
from natsync.mime import parse_tree
from natsync.wbxml import Element

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
