"""Calendar records (natsync.classes.calendar) to and from iCalendar VEVENTs (RFC 5545).

``records_from_ics(data)`` reads a whole VCALENDAR (an import file, an iMIP body) with the
``icalendar`` library and returns one record per event UID: the master VEVENT with its RRULE
(→ ``recurrence``), EXDATE (→ deleted exceptions) and the VEVENTs with a RECURRENCE-ID
(→ moved or changed exceptions). Times keep their zone: a TZID that is, or maps to, an IANA zone
sets ``tz``; a custom VTIMEZONE becomes a TimeZone blob with its rules (``tz_blob``). A lone
RECURRENCE-ID VEVENT (an update of one occurrence, as iMIP sends them) is returned as a record
with the extra key ``instance_of`` (the occurrence's original start, UTC text).

``records_to_ics(records)`` writes them back: DTSTART/DTEND in the event's IANA zone (with the
VTIMEZONEs they need) or in UTC, RRULE, EXDATE and one VEVENT per changed occurrence. What
iCalendar has no property for (MeetingStatus, ResponseType, a 16.x location's parts, a TimeZone
blob ...) travels in one ``X-NATSYNC-EAS`` property (JSON), so ics → record → ics keeps every
field the record holds.

Mapping (RFC 5545 ⇄ MS-ASCAL): SUMMARY subject, LOCATION location, DESCRIPTION body, X-ALT-DESC
(text/html) body_html, CLASS sensitivity (PUBLIC 0, X-PERSONAL 1, PRIVATE 2, CONFIDENTIAL 3),
TRANSP / X-MICROSOFT-CDO-BUSYSTATUS busy_status, VALARM TRIGGER reminder, ORGANIZER / ATTENDEE
(PARTSTAT ⇄ AttendeeStatus, ROLE / CUTYPE ⇄ AttendeeType), CATEGORIES, SEQUENCE, DTSTAMP;
X-MICROSOFT-DISALLOW-COUNTER disallow_new_time_proposal. RRULEs that ActiveSync cannot express
(hourly, BYWEEKNO, several month days ...) are refused with a message naming the event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from natsync.classes import calendar as cal
from natsync.classes.codec import PimError, Record
from natsync.errors import NatsyncError

#: Largest .ics accepted: a calendar of many years with long descriptions is a few MB.
MAX_ICS_BYTES = 32 * 1024 * 1024
#: Events (VEVENTs, overrides included) in one file.
MAX_EVENTS = 100_000
#: Properties of an event no VEVENT property holds, carried as X-NATSYNC-EAS JSON.
_EXTRA_KEYS = (
    "meeting_status",
    "response_requested",
    "response_type",
    "appointment_reply_time",
    "online_meeting_conf_link",
    "online_meeting_external_link",
    "location_detail",
    "tz_blob",
    "calendar_type",
    "is_leap_month",
)
_PRODID = "-//natsync//natsync calendar//EN"

_PARTSTAT = {0: "X-UNKNOWN", 2: "TENTATIVE", 3: "ACCEPTED", 4: "DECLINED", 5: "NEEDS-ACTION"}
_PARTSTAT_BACK = {v: k for k, v in _PARTSTAT.items()} | {"DELEGATED": 0, "COMPLETED": 3}
_CLASS = {0: "PUBLIC", 1: "X-PERSONAL", 2: "PRIVATE", 3: "CONFIDENTIAL"}
_CLASS_BACK = {v: k for k, v in _CLASS.items()}
_CDO_BUSY = {0: "FREE", 1: "TENTATIVE", 2: "BUSY", 3: "OOF", 4: "WORKINGELSEWHERE"}
_CDO_BUSY_BACK = {v: k for k, v in _CDO_BUSY.items()}
_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # DayOfWeek bit order
_FREQ = {0: "DAILY", 1: "WEEKLY", 2: "MONTHLY", 3: "MONTHLY", 5: "YEARLY", 6: "YEARLY"}


class IcsError(NatsyncError):
    """The iCalendar data cannot be read; fix or re-export the file and try again."""

    http_status = 400


# -- reading ---------------------------------------------------------------------------------------


def _as_utc(value: date | datetime, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # floating time: taken in the event's zone
            value = value.replace(tzinfo=zone)
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(UTC)


def _zone(component: Any) -> tuple[tzinfo, str | None, str | None]:
    """(tzinfo, IANA name, blob) of a VEVENT's DTSTART."""
    prop = component.get("DTSTART")
    value = getattr(prop, "dt", None)
    zone = getattr(value, "tzinfo", None) if isinstance(value, datetime) else None
    if zone is None or zone.utcoffset(datetime(2000, 1, 1)) is None:
        return UTC, None, None
    if isinstance(zone, ZoneInfo):
        return zone, zone.key, None
    if zone is UTC:
        return UTC, None, None
    name = str(prop.params.get("TZID", "custom"))
    year = value.year if isinstance(value, datetime) else 2000
    return zone, None, cal.blob_for_tzinfo(zone, year, name[:31])


def _text(component: Any, name: str) -> str | None:
    value = component.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0]
    return str(value)


def _address(value: Any) -> str:
    text = str(value)
    return text[7:] if text.lower().startswith("mailto:") else text


def _attendee(prop: Any) -> dict[str, Any]:
    params = prop.params
    partstat = str(params.get("PARTSTAT", "")).upper()
    role = str(params.get("ROLE", "")).upper()
    cutype = str(params.get("CUTYPE", "")).upper()
    kind: int | None = None
    if cutype in ("RESOURCE", "ROOM"):
        kind = int(cal.AttendeeType.RESOURCE)
    elif role in ("REQ-PARTICIPANT", "CHAIR"):
        kind = int(cal.AttendeeType.REQUIRED)
    elif role in ("OPT-PARTICIPANT", "NON-PARTICIPANT"):
        kind = int(cal.AttendeeType.OPTIONAL)
    return {
        "email": _address(prop).strip(),
        "name": str(params.get("CN", "")),
        "status": _PARTSTAT_BACK.get(partstat) if partstat else None,
        "type": kind,
    }


def every(component: Any, name: str) -> list[Any]:
    """Every *name* property of an iCalendar *component* (icalendar gives one as itself and
    several as a list)."""
    value = component.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _categories(component: Any) -> list[str]:
    names: list[str] = []
    for prop in every(component, "CATEGORIES"):
        names += [str(c) for c in getattr(prop, "cats", [prop])]
    return list(dict.fromkeys(n.strip() for n in names if str(n).strip()))


def _reminder(component: Any, start: datetime) -> int | None:
    for alarm in component.walk("VALARM"):
        trigger = alarm.get("TRIGGER")
        value = getattr(trigger, "dt", None)
        if isinstance(value, timedelta):
            minutes = int(-value.total_seconds() // 60)
        elif isinstance(value, datetime):
            minutes = int((start - _as_utc(value, UTC)).total_seconds() // 60)
        else:
            continue
        return min(max(minutes, 0), cal.MAX_REMINDER)
    return None


def _busy(component: Any) -> int:
    cdo = (_text(component, "X-MICROSOFT-CDO-BUSYSTATUS") or "").upper()
    if cdo in _CDO_BUSY_BACK:
        return _CDO_BUSY_BACK[cdo]
    if (_text(component, "TRANSP") or "").upper() == "TRANSPARENT":
        return int(cal.BusyStatus.FREE)
    if (_text(component, "STATUS") or "").upper() == "TENTATIVE":
        return int(cal.BusyStatus.TENTATIVE)
    return int(cal.BusyStatus.BUSY)


def _mask(days: Iterable[Any], uid: str) -> int:
    mask = 0
    for day in days:
        text = str(day).upper()
        if text[-2:] not in _DAYS or text[:-2]:
            raise IcsError(f"event {uid!r}: BYDAY={text} cannot be synced; use plain week days")
        mask |= 1 << _DAYS.index(text[-2:])
    return mask


def _recurrence(rule: Mapping[str, Any], uid: str, start: datetime, zone: tzinfo) -> dict[str, Any]:
    """An RRULE as an MS-ASCAL recurrence; IcsError for what ActiveSync cannot express."""
    parts = {str(k).upper(): list(v) for k, v in rule.items()}
    supported = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH"}
    supported |= {"BYSETPOS", "WKST"}
    unknown = sorted(set(parts) - supported)
    if unknown:
        raise IcsError(f"event {uid!r}: RRULE {','.join(unknown)} cannot be synced to ActiveSync")
    freq = str(parts.get("FREQ", [""])[0]).upper()
    out: dict[str, Any] = dict.fromkeys(cal.RECURRENCE_KEYS)
    out["interval"] = int(parts.get("INTERVAL", [1])[0])
    if not 1 <= out["interval"] <= cal.MAX_INTERVAL:
        raise IcsError(f"event {uid!r}: RRULE INTERVAL must be 1..{cal.MAX_INTERVAL}")
    if "COUNT" in parts:
        out["occurrences"] = int(parts["COUNT"][0])
        if not 1 <= out["occurrences"] <= cal.MAX_OCCURRENCES:
            raise IcsError(f"event {uid!r}: RRULE COUNT above {cal.MAX_OCCURRENCES}; use UNTIL")
    if "UNTIL" in parts:
        until = parts["UNTIL"][0]
        if isinstance(until, datetime):
            out["until"] = cal.utc_text(_as_utc(until, zone))
        elif isinstance(until, date):
            end_of_day = datetime(until.year, until.month, until.day, 23, 59, 59, tzinfo=zone)
            out["until"] = cal.utc_text(end_of_day)
    if "WKST" in parts:
        out["first_day_of_week"] = _DAYS.index(str(parts["WKST"][0]).upper())
    days = parts.get("BYDAY", [])
    monthdays = [int(d) for d in parts.get("BYMONTHDAY", [])]
    months = [int(m) for m in parts.get("BYMONTH", [])]
    setpos = [int(p) for p in parts.get("BYSETPOS", [])]
    if len(monthdays) > 1 or len(months) > 1 or len(setpos) > 1:
        raise IcsError(f"event {uid!r}: an RRULE with several BYMONTHDAY/BYMONTH/BYSETPOS")
    ordinal = [str(d) for d in days if str(d)[:-2]]
    if ordinal:
        if len(days) != 1:
            raise IcsError(f"event {uid!r}: BYDAY with several ordinal days cannot be synced")
        text = str(days[0]).upper()
        position = int(text[:-2])
        days, setpos = [text[-2:]], [position]
    week = None
    if setpos:
        week = 5 if setpos[0] == -1 else setpos[0]
        if not 1 <= week <= 5:
            raise IcsError(f"event {uid!r}: only the 1st-4th and last occurrence can be synced")
    if monthdays == [-1] and not days:
        days, week, monthdays = list(_DAYS), 5, []
    elif monthdays and not 1 <= monthdays[0] <= 31:
        raise IcsError(f"event {uid!r}: BYMONTHDAY={monthdays[0]} cannot be synced")
    mask = _mask(days, uid) if days else None
    if freq == "DAILY":
        out["type"], out["day_of_week"] = int(cal.RecurrenceType.DAILY), mask
    elif freq == "WEEKLY":
        out["type"] = int(cal.RecurrenceType.WEEKLY)
        local = start.astimezone(zone)
        out["day_of_week"] = mask or 1 << (local.isoweekday() % 7)
    elif freq in ("MONTHLY", "YEARLY"):
        yearly = freq == "YEARLY"
        local = start.astimezone(zone)
        if mask is not None and week is not None:
            out["type"] = int(
                cal.RecurrenceType.YEARLY_NTH if yearly else cal.RecurrenceType.MONTHLY_NTH
            )
            out["week_of_month"], out["day_of_week"] = week, mask
        elif mask is None and week is None:
            out["type"] = int(cal.RecurrenceType.YEARLY if yearly else cal.RecurrenceType.MONTHLY)
            out["day_of_month"] = monthdays[0] if monthdays else local.day
        else:
            raise IcsError(f"event {uid!r}: this {freq} RRULE cannot be synced to ActiveSync")
        if yearly:
            out["month_of_year"] = months[0] if months else local.month
    else:
        raise IcsError(f"event {uid!r}: RRULE FREQ={freq or '?'} cannot be synced to ActiveSync")
    return out


def _extras(component: Any, uid: str) -> dict[str, Any]:
    extra = _text(component, "X-NATSYNC-EAS")
    if not extra:
        return {}
    try:
        loaded = json.loads(extra)
    except ValueError as exc:
        raise IcsError(f"event {uid!r}: X-NATSYNC-EAS is not JSON") from exc
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if k in (*_EXTRA_KEYS, "tz")}


def _event(component: Any) -> Record:
    """One VEVENT as a record (no exceptions yet)."""
    uid = _text(component, "UID") or ""
    if len(uid) > cal.MAX_UID_CHARS:
        raise IcsError(f"a UID is longer than {cal.MAX_UID_CHARS} characters")
    start_prop = component.get("DTSTART")
    if start_prop is None:
        raise IcsError(f"event {uid!r} has no DTSTART")
    extras = _extras(component, uid)
    zone, name, blob = _zone(component)
    value = start_prop.dt
    all_day = not isinstance(value, datetime)
    day_zone = extras.pop("tz", None)
    if all_day and isinstance(day_zone, str) and cal.zone_of({"tz": day_zone}) is not UTC:
        zone, name = cal.zone_of({"tz": day_zone}), day_zone
    start = _as_utc(value, zone)
    end_prop = component.get("DTEND")
    if end_prop is not None:
        end = _as_utc(end_prop.dt, zone)
    elif component.get("DURATION") is not None:
        end = start + component.get("DURATION").dt
    else:
        end = start + (timedelta(days=1) if all_day else timedelta(0))
    if end < start:
        raise IcsError(f"event {uid!r} ends before it starts")
    record = cal.empty_record()
    record.update(
        uid=uid,
        subject=_text(component, "SUMMARY") or "",
        start=cal.utc_text(start),
        end=cal.utc_text(end),
        all_day=all_day,
        busy_status=_busy(component),
        tz=name,
        tz_blob=blob,
        location=_text(component, "LOCATION"),
        body=_text(component, "DESCRIPTION"),
        sensitivity=_CLASS_BACK.get((_text(component, "CLASS") or "PUBLIC").upper(), 0),
        reminder=_reminder(component, start),
        categories=_categories(component),
        sequence=int(str(component.get("SEQUENCE", 0))),
        disallow_new_time_proposal=None,
    )
    stamp = component.get("DTSTAMP")
    if stamp is not None:
        record["dtstamp"] = cal.utc_text(_as_utc(stamp.dt, UTC))
    for alt in every(component, "X-ALT-DESC"):
        if str(alt.params.get("FMTTYPE", "")).lower() == "text/html":
            record["body_html"] = str(alt)
    organizer = component.get("ORGANIZER")
    if organizer is not None:
        record["organizer_email"] = _address(organizer).strip() or None
        record["organizer_name"] = str(organizer.params.get("CN", "")) or None
    attendees = [_attendee(a) for a in every(component, "ATTENDEE")]
    if len(attendees) > cal.MAX_ATTENDEES:
        raise IcsError(f"event {uid!r} has more than {cal.MAX_ATTENDEES} attendees")
    record["attendees"] = attendees
    if organizer is not None or attendees:
        cancelled = (_text(component, "STATUS") or "").upper() == "CANCELLED"
        record["meeting_status"] = int(
            cal.MeetingStatus.CANCELED_RECEIVED if cancelled else cal.MeetingStatus.MEETING_RECEIVED
        )
    disallow = _text(component, "X-MICROSOFT-DISALLOW-COUNTER")
    if disallow is not None:
        record["disallow_new_time_proposal"] = disallow.upper() == "TRUE"
    record.update({k: v for k, v in extras.items() if k not in ("calendar_type", "is_leap_month")})
    if record["tz_blob"] is not None:
        try:
            cal.BlobZone(record["tz_blob"])
        except PimError as exc:
            raise IcsError(f"event {uid!r}: {exc.message}") from exc
    rules = every(component, "RRULE")
    if len(rules) > 1:
        raise IcsError(f"event {uid!r} has several RRULEs; ActiveSync takes one")
    if rules:
        recurrence = _recurrence(rules[0], uid, start, zone)
        for key in ("calendar_type", "is_leap_month"):
            recurrence[key] = extras.get(key)
        record["recurrence"] = recurrence
    if component.get("RDATE") is not None:
        raise IcsError(f"event {uid!r} has RDATEs; ActiveSync has no extra occurrence dates")
    return record


_OVERRIDABLE = (
    "subject",
    "start",
    "end",
    "all_day",
    "busy_status",
    "location",
    "body",
    "body_html",
    "sensitivity",
    "reminder",
    "meeting_status",
    "categories",
    "attendees",
    "dtstamp",
    "response_type",
    "appointment_reply_time",
)


def _exception(master: Record, override: Record, original: str) -> dict[str, Any]:
    exc: dict[str, Any] = {"original_start": original, "deleted": False}
    length = cal.parse_utc(master["end"]) - cal.parse_utc(master["start"])
    default_end = cal.utc_text(cal.parse_utc(original) + length)
    for key in _OVERRIDABLE:
        if key == "start" and override["start"] == original:
            continue
        if key == "end" and override["end"] == default_end and "start" not in exc:
            continue
        if override.get(key) != master.get(key):
            exc[key] = override.get(key)
    if "start" in exc and "end" not in exc:
        exc["end"] = override["end"]
    return exc


def _original_start(component: Any, zone: tzinfo) -> str:
    return cal.utc_text(_as_utc(component.get("RECURRENCE-ID").dt, zone))


def records_from_ics(data: bytes) -> list[Record]:
    """Every event of an iCalendar document, as calendar records (see the module docstring)."""
    if len(data) > MAX_ICS_BYTES:
        raise IcsError(f"the iCalendar data is larger than {MAX_ICS_BYTES} bytes; split it")
    try:
        calendars = icalendar.Calendar.from_ical(data, multiple=True)
    except Exception as exc:  # the library raises ValueError, KeyError, IndexError ...
        raise IcsError(f"not iCalendar data: {str(exc)[:200]}") from exc
    if not calendars or any(c.name != "VCALENDAR" for c in calendars):
        raise IcsError("not iCalendar data: no BEGIN:VCALENDAR ... END:VCALENDAR")
    masters: dict[str, Record] = {}
    overrides: list[tuple[Any, Record]] = []
    count = 0
    try:
        for calendar in calendars:
            for component in calendar.walk("VEVENT"):
                count += 1
                if count > MAX_EVENTS:
                    raise IcsError(f"more than {MAX_EVENTS} events in one file; split it")
                record = _event(component)
                if not record["uid"]:
                    raise IcsError("an event has no UID; every VEVENT needs one (RFC 5545 3.8.4.7)")
                if component.get("RECURRENCE-ID") is not None:
                    overrides.append((component, record))
                elif record["uid"] in masters:
                    raise IcsError(f"event {record['uid']!r} appears twice")
                else:
                    masters[record["uid"]] = record
        lone: dict[str, Record] = {}
        for component, record in overrides:
            master = masters.get(record["uid"])
            original = _original_start(component, cal.zone_of(master or record))
            if master is None or not master.get("recurrence"):
                lone.setdefault(record["uid"], record | {"instance_of": original})
                continue
            exceptions = master["exceptions"]
            if len(exceptions) >= cal.MAX_EXCEPTIONS:
                raise IcsError(
                    f"event {record['uid']!r} has more than {cal.MAX_EXCEPTIONS} exceptions"
                )
            exceptions.append(_exception(master, record, original))
        for component in (c for calendar in calendars for c in calendar.walk("VEVENT")):
            if component.get("RECURRENCE-ID") is not None:
                continue
            master = masters[_text(component, "UID") or ""]
            _add_exdates(master, component)
    except IcsError:
        raise
    except PimError as exc:
        raise IcsError(exc.message) from exc
    except Exception as exc:  # a property of the wrong shape deep inside the library
        raise IcsError(f"iCalendar data the importer cannot read: {str(exc)[:200]}") from exc
    out = list(masters.values()) + [r for uid, r in lone.items() if uid not in masters]
    for record in out:
        record["exceptions"] = sorted(record["exceptions"], key=lambda e: str(e["original_start"]))
    return out


def _add_exdates(master: Record, component: Any) -> None:
    zone = cal.zone_of(master)
    known = {e["original_start"] for e in master["exceptions"]}
    for prop in every(component, "EXDATE"):
        for value in prop.dts:
            original = cal.utc_text(_as_utc(value.dt, zone))
            if original in known:
                continue
            if len(master["exceptions"]) >= cal.MAX_EXCEPTIONS:
                raise IcsError(
                    f"event {master['uid']!r} has more than {cal.MAX_EXCEPTIONS} exceptions"
                )
            master["exceptions"].append({"original_start": original, "deleted": True})
            known.add(original)


# -- writing ---------------------------------------------------------------------------------------


def _local(text: str, record: Mapping[str, Any]) -> datetime:
    """A record time as DTSTART/DTEND write it: in the IANA zone when there is one, else UTC."""
    moment = cal.parse_utc(text)
    name = record.get("tz")
    if isinstance(name, str) and name != "UTC":
        return moment.astimezone(ZoneInfo(name))
    return moment


def _when(component: Any, prop: str, text: str, record: Mapping[str, Any], all_day: bool) -> None:
    if all_day:
        zone = cal.zone_of(record)
        component.add(prop, cal.parse_utc(text).astimezone(zone).date())
    else:
        component.add(prop, _local(text, record))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean(text: str) -> str:
    """An address or name without the control characters iCalendar cannot carry there."""
    return _CONTROL.sub("", text)


def _put_people(component: Any, record: Mapping[str, Any]) -> None:
    if record.get("organizer_email"):
        organizer = icalendar.vCalAddress(f"mailto:{_clean(record['organizer_email'])}")
        if record.get("organizer_name"):
            organizer.params["CN"] = _clean(record["organizer_name"])
        component.add("ORGANIZER", organizer)
    for person in record.get("attendees") or []:
        address = icalendar.vCalAddress(f"mailto:{_clean(person.get('email') or '')}")
        if person.get("name"):
            address.params["CN"] = _clean(person["name"])
        if person.get("status") in _PARTSTAT:
            address.params["PARTSTAT"] = _PARTSTAT[person["status"]]
        kind = person.get("type")
        if kind == cal.AttendeeType.RESOURCE:
            address.params["CUTYPE"] = "RESOURCE"
            address.params["ROLE"] = "NON-PARTICIPANT"
        elif kind == cal.AttendeeType.REQUIRED:
            address.params["ROLE"] = "REQ-PARTICIPANT"
        elif kind == cal.AttendeeType.OPTIONAL:
            address.params["ROLE"] = "OPT-PARTICIPANT"
        component.add("ATTENDEE", address)


def _rrule(recurrence: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    kind = recurrence["type"]
    rule: dict[str, Any] = {"FREQ": _FREQ[kind]}
    if (recurrence.get("interval") or 1) != 1:
        rule["INTERVAL"] = recurrence["interval"]
    if recurrence.get("occurrences"):
        rule["COUNT"] = recurrence["occurrences"]
    if recurrence.get("until"):
        rule["UNTIL"] = cal.parse_utc(recurrence["until"])
    mask = recurrence.get("day_of_week") or 0
    days = [_DAYS[i] for i in range(7) if mask & (1 << i)]
    week = recurrence.get("week_of_month")
    if kind in (cal.RecurrenceType.DAILY, cal.RecurrenceType.WEEKLY) and days:
        rule["BYDAY"] = days
    elif kind in (cal.RecurrenceType.MONTHLY, cal.RecurrenceType.YEARLY):
        if recurrence.get("day_of_month"):
            rule["BYMONTHDAY"] = recurrence["day_of_month"]
    elif mask == 127 and week == 5:
        rule["BYMONTHDAY"] = -1
    elif days:
        rule["BYDAY"] = days
        rule["BYSETPOS"] = -1 if week == 5 else (week or 1)
    if kind in (cal.RecurrenceType.YEARLY, cal.RecurrenceType.YEARLY_NTH) and recurrence.get(
        "month_of_year"
    ):
        rule["BYMONTH"] = recurrence["month_of_year"]
    if recurrence.get("first_day_of_week") is not None:
        rule["WKST"] = _DAYS[recurrence["first_day_of_week"]]
    return rule


def _vevent(record: Mapping[str, Any], original: str | None = None, *, extras: bool = True) -> Any:
    component = icalendar.Event()
    component.add("UID", record.get("uid") or "")
    stamp = record.get("dtstamp") or record["start"]
    component.add("DTSTAMP", cal.parse_utc(str(stamp)))
    all_day = bool(record.get("all_day"))
    _when(component, "DTSTART", record["start"], record, all_day)
    _when(component, "DTEND", record["end"], record, all_day)
    if original is not None:
        _when(component, "RECURRENCE-ID", original, record, all_day)
    component.add("SUMMARY", record.get("subject") or "")
    if record.get("location") is not None:
        component.add("LOCATION", record["location"])
    if record.get("body") is not None:
        component.add("DESCRIPTION", record["body"])
    if record.get("body_html") is not None:
        component.add("X-ALT-DESC", record["body_html"], parameters={"FMTTYPE": "text/html"})
    component.add("CLASS", _CLASS.get(record.get("sensitivity") or 0, "PUBLIC"))
    busy = record.get("busy_status")
    busy = int(cal.BusyStatus.BUSY) if busy is None else busy
    component.add("TRANSP", "TRANSPARENT" if busy == cal.BusyStatus.FREE else "OPAQUE")
    component.add("X-MICROSOFT-CDO-BUSYSTATUS", _CDO_BUSY.get(busy, "BUSY"))
    if record.get("meeting_status") in cal.CANCELLED_STATUSES:
        component.add("STATUS", "CANCELLED")
    component.add("SEQUENCE", int(record.get("sequence") or 0))
    if record.get("categories"):
        component.add("CATEGORIES", list(record["categories"]))
    _put_people(component, record)
    if record.get("disallow_new_time_proposal") is not None:
        component.add(
            "X-MICROSOFT-DISALLOW-COUNTER",
            "TRUE" if record["disallow_new_time_proposal"] else "FALSE",
        )
    if record.get("reminder") is not None:
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", record.get("subject") or "Reminder")
        alarm.add("TRIGGER", timedelta(minutes=-int(record["reminder"])))
        component.add_component(alarm)
    carried = {k: record.get(k) for k in _EXTRA_KEYS if record.get(k) is not None}
    recurrence = record.get("recurrence") or {}
    for key in ("calendar_type", "is_leap_month"):
        if original is None and recurrence.get(key) is not None:
            carried[key] = recurrence[key]
    if all_day and record.get("tz"):
        carried["tz"] = record["tz"]  # a DATE has no TZID; the zone midnight is taken in
    if original is not None:
        carried.pop("tz_blob", None)
    if carried and extras:
        component.add("X-NATSYNC-EAS", json.dumps(carried, sort_keys=True, separators=(",", ":")))
    return component


def event_components(record: Mapping[str, Any], *, extras: bool = True) -> list[Any]:
    """The VEVENTs of one record: the master, then one per changed occurrence (*extras*:
    with X-NATSYNC-EAS, left out of iMIP mail, which leaves the server)."""
    master = _vevent(record, extras=extras)
    recurrence = record.get("recurrence")
    out = [master]
    if not recurrence:
        return out
    master.add("RRULE", _rrule(recurrence, record))
    all_day = bool(record.get("all_day"))
    deleted = [e for e in record.get("exceptions") or [] if e.get("deleted")]
    for exc in deleted:
        zone = cal.zone_of(record)
        moment = cal.parse_utc(exc["original_start"])
        master.add(
            "EXDATE",
            moment.astimezone(zone).date() if all_day else _local(exc["original_start"], record),
        )
    length = cal.parse_utc(record["end"]) - cal.parse_utc(record["start"])
    for exc in record.get("exceptions") or []:
        if exc.get("deleted"):
            continue
        start = exc.get("start") or exc["original_start"]
        end = exc.get("end") or cal.utc_text(cal.parse_utc(start) + length)
        merged = {**record, **{k: v for k, v in exc.items() if k in _OVERRIDABLE}}
        merged.update(start=start, end=end, recurrence=None)
        out.append(_vevent(merged, exc["original_start"], extras=extras))
    return out


def records_to_ics(
    records: Iterable[Mapping[str, Any]],
    method: str | None = None,
    recurrence_id: str | None = None,
) -> bytes:
    """A VCALENDAR of *records* (with *method* for iMIP: REQUEST, REPLY, CANCEL). With
    *recurrence_id* (UTC text) each record is written as that one occurrence of its series."""
    document = icalendar.Calendar()
    document.add("PRODID", _PRODID)
    document.add("VERSION", "2.0")
    if method:
        document.add("METHOD", method)
    for record in records:
        if recurrence_id is not None:
            component = _vevent(record, extras=method is None)
            component.add("RECURRENCE-ID", _local(recurrence_id, record))
            document.add_component(component)
            continue
        for component in event_components(record, extras=method is None):
            document.add_component(component)
    document.add_missing_timezones()
    data: bytes = document.to_ical()
    return data
