"""Task records (natsync.classes.tasks) to and from iCalendar VTODOs (RFC 5545 3.6.2), for import
and export, with the ``icalendar`` library.

Mapping: UID is the store item's uid; SUMMARY subject; DESCRIPTION body (an HTML body also as
X-ALT-DESC;FMTTYPE=text/html); DTSTART / DUE the UTC start and due dates; COMPLETED and
STATUS:COMPLETED completion; PRIORITY importance (1 high, 5 normal, 9 low); CLASS sensitivity;
CATEGORIES; a VALARM with an absolute TRIGGER the reminder; RRULE the recurrence (daily,
weekly, monthly by day or nth weekday, yearly). What iCalendar has no property for — the local
start and due dates, Regenerate, DeadOccur, CalendarType, a body's exact type — travels in one
``X-NATSYNC-EAS`` property (JSON), so record → VTODO → record keeps every field; a VTODO from
another program, without it, gets the local dates from its own wall times.

Bad input raises :class:`natsync.classes.ical.IcsError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import icalendar

from natsync.classes.body import format_eas_date, parse_eas_date
from natsync.classes.codec import Record
from natsync.classes.ical import MAX_ICS_BYTES, IcsError, every
from natsync.mime import html_to_text
from natsync.mime.errors import EmailChangeError

#: VTODOs one file may hold.
MAX_TODOS = 100_000
_EXTRA = "X-NATSYNC-EAS"
_CLASS = {0: "PUBLIC", 1: "X-PERSONAL", 2: "PRIVATE", 3: "CONFIDENTIAL"}
_CLASS_BACK = {v: k for k, v in _CLASS.items()}
_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # DayOfWeek bit order
#: Record keys iCalendar holds only approximately: kept exactly in X-NATSYNC-EAS.
_EXTRA_KEYS = ("start_date", "due_date", "body_type", "recurrence", "reminder_set", "reminder_time")


@dataclass(frozen=True, slots=True)
class Todo:
    """One task of an iCalendar file: its UID and its task record."""

    uid: str
    record: Record


def _utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _wall(value: date | datetime) -> datetime:
    """The time as written in the file (its own zone's wall clock), labelled UTC as EAS does
    for a task's local StartDate / DueDate."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _text(component: Any, name: str) -> str:
    value = component.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return "" if value is None else str(value)


def _recurrence(rule: Mapping[str, Any], uid: str) -> dict[str, Any]:
    def one(name: str) -> Any:
        values = rule.get(name) or []
        return values[0] if values else None

    freq = str(one("FREQ") or "").upper()
    out: dict[str, Any] = {"interval": int(one("INTERVAL") or 1)}
    weekdays = [str(d).upper() for d in rule.get("BYDAY") or []]
    mask, nth = 0, None
    for day in weekdays:
        if day[-2:] not in _DAYS:
            raise IcsError(f"task {uid!r}: BYDAY={day} is not a week day")
        mask |= 1 << _DAYS.index(day[-2:])
        if day[:-2]:
            nth = int(day[:-2])
    if nth is not None and nth not in (1, 2, 3, 4, -1):
        raise IcsError(f"task {uid!r}: BYDAY={weekdays[0]} cannot be synced (use 1-4 or -1)")
    month_day = one("BYMONTHDAY")
    if freq == "DAILY":
        out["type"] = 0
    elif freq == "WEEKLY":
        out["type"] = 1
    elif freq in ("MONTHLY", "YEARLY"):
        yearly = freq == "YEARLY"
        out["type"] = (6 if yearly else 3) if nth is not None else (5 if yearly else 2)
        if yearly and one("BYMONTH") is not None:
            out["month_of_year"] = int(one("BYMONTH"))
        if nth is not None:
            out["week_of_month"] = 5 if nth == -1 else nth
        elif month_day is not None:
            out["day_of_month"] = int(month_day)
    else:
        raise IcsError(f"task {uid!r}: FREQ={freq or '?'} cannot be synced (daily to yearly)")
    if mask:
        out["day_of_week"] = mask
    if one("COUNT") is not None:
        out["occurrences"] = int(one("COUNT"))
    if one("UNTIL") is not None:
        out["until"] = format_eas_date(_utc(one("UNTIL")))
    return out


def _todo(component: Any) -> Todo:
    uid = _text(component, "UID")
    if not uid:
        raise IcsError("a task has no UID; every VTODO needs one (RFC 5545 3.8.4.7)")
    record: Record = {"complete": False}
    if _text(component, "SUMMARY"):
        record["subject"] = _text(component, "SUMMARY")
    html = next(
        (
            str(p)
            for p in every(component, "X-ALT-DESC")
            if str(p.params.get("FMTTYPE", "")).lower() == "text/html"
        ),
        "",
    )
    if html:
        record["body"], record["body_type"] = html, 2
    elif _text(component, "DESCRIPTION"):
        record["body"], record["body_type"] = _text(component, "DESCRIPTION"), 1
    for prop, utc_key, local_key in (
        ("DTSTART", "utc_start_date", "start_date"),
        ("DUE", "utc_due_date", "due_date"),
    ):
        value = getattr(component.get(prop), "dt", None)
        if isinstance(value, date):
            record[utc_key] = format_eas_date(_utc(value))
            record[local_key] = format_eas_date(_wall(value))
    completed = getattr(component.get("COMPLETED"), "dt", None)
    if isinstance(completed, date):
        record["date_completed"] = format_eas_date(_utc(completed))
    status = _text(component, "STATUS").upper()
    record["complete"] = status == "COMPLETED" or "date_completed" in record
    priority = int(component.get("PRIORITY") or 0)
    if priority:
        record["importance"] = 2 if priority <= 4 else 1 if priority == 5 else 0
    if _text(component, "CLASS").upper() in _CLASS_BACK:
        record["sensitivity"] = _CLASS_BACK[_text(component, "CLASS").upper()]
    categories = [str(c) for p in every(component, "CATEGORIES") for c in getattr(p, "cats", [p])]
    if categories:
        record["categories"] = list(dict.fromkeys(c for c in categories if c.strip()))
    for alarm in component.walk("VALARM"):
        trigger = getattr(alarm.get("TRIGGER"), "dt", None)
        if isinstance(trigger, datetime):
            record["reminder_set"] = True
            record["reminder_time"] = format_eas_date(_utc(trigger))
            break
    rule = component.get("RRULE")
    if rule is not None:
        record["recurrence"] = _recurrence(rule, uid)
        record["recurrence"].setdefault(
            "start", record.get("start_date") or record.get("due_date") or ""
        )
        if not record["recurrence"]["start"]:
            raise IcsError(f"task {uid!r} recurs but has no DTSTART or DUE to start from")
    extra = _text(component, _EXTRA)
    if extra:
        try:
            kept = json.loads(extra)
        except ValueError as exc:
            raise IcsError(f"task {uid!r}: {_EXTRA} is not JSON") from exc
        if not isinstance(kept, dict):
            raise IcsError(f"task {uid!r}: {_EXTRA} is not a JSON object")
        for key in _EXTRA_KEYS:
            if key in kept:
                record[key] = kept[key]
            elif key in ("recurrence", "reminder_set", "reminder_time"):
                record.pop(key, None)
    _check(record, uid)
    return Todo(uid=uid, record=record)


def _check(record: Record, uid: str) -> None:
    """Dates must be EAS date text: a hand-edited X-NATSYNC-EAS must not smuggle junk in."""
    try:
        for key in ("start_date", "due_date", "reminder_time"):
            if record.get(key) is not None:
                parse_eas_date(str(record[key]))
    except EmailChangeError as exc:
        raise IcsError(f"task {uid!r}: {exc.message}") from exc
    recurrence = record.get("recurrence")
    if recurrence is not None and not isinstance(recurrence, dict):
        raise IcsError(f"task {uid!r}: its recurrence is not an object")


def todos_from_ics(data: bytes) -> list[Todo]:
    """Every VTODO of an iCalendar document."""
    if len(data) > MAX_ICS_BYTES:
        raise IcsError(f"the iCalendar data is larger than {MAX_ICS_BYTES} bytes; split it")
    try:
        calendars = icalendar.Calendar.from_ical(data, multiple=True)
    except Exception as exc:  # the library raises ValueError, KeyError, IndexError ...
        raise IcsError(f"not iCalendar data: {str(exc)[:200]}") from exc
    out: list[Todo] = []
    seen: set[str] = set()
    try:
        for calendar in calendars:
            for component in calendar.walk("VTODO"):
                todo = _todo(component)
                if todo.uid in seen:
                    raise IcsError(f"task {todo.uid!r} appears twice")
                seen.add(todo.uid)
                out.append(todo)
                if len(out) > MAX_TODOS:
                    raise IcsError(f"more than {MAX_TODOS} tasks in one file; split it")
    except IcsError:
        raise
    except Exception as exc:  # a property of the wrong shape deep inside the library
        raise IcsError(f"iCalendar task data the importer cannot read: {str(exc)[:200]}") from exc
    return out


# -- writing ---------------------------------------------------------------------------------


def _rrule(recurrence: Mapping[str, Any]) -> dict[str, Any]:
    kind = int(recurrence.get("type", 0))
    rule: dict[str, Any] = {
        "FREQ": {0: "DAILY", 1: "WEEKLY", 2: "MONTHLY", 3: "MONTHLY"}.get(kind, "YEARLY"),
        "INTERVAL": int(recurrence.get("interval") or 1),
    }
    mask = int(recurrence.get("day_of_week") or 0)
    days = [d for i, d in enumerate(_DAYS) if mask & (1 << i)]
    if kind in (3, 6):
        week = int(recurrence.get("week_of_month") or 1)
        prefix = "-1" if week == 5 else str(week)
        rule["BYDAY"] = [prefix + d for d in days]
    elif days:
        rule["BYDAY"] = days
    if kind in (2, 5) and recurrence.get("day_of_month"):
        rule["BYMONTHDAY"] = int(recurrence["day_of_month"])
    if kind in (5, 6) and recurrence.get("month_of_year"):
        rule["BYMONTH"] = int(recurrence["month_of_year"])
    if recurrence.get("occurrences"):
        rule["COUNT"] = int(recurrence["occurrences"])
    elif recurrence.get("until"):
        rule["UNTIL"] = parse_eas_date(str(recurrence["until"]))
    return rule


def todo_component(uid: str, record: Mapping[str, Any]) -> Any:
    """The VTODO of one task record."""
    todo = icalendar.Todo()
    todo.add("UID", uid)
    todo.add("DTSTAMP", datetime(2000, 1, 1, tzinfo=UTC))
    if record.get("subject"):
        todo.add("SUMMARY", str(record["subject"]))
    body = str(record.get("body") or "")
    if body:
        body_type = int(record.get("body_type") or 1)
        todo.add("DESCRIPTION", html_to_text(body) if body_type == 2 else body)
        if body_type == 2:
            todo.add("X-ALT-DESC", body, parameters={"FMTTYPE": "text/html"})
    if record.get("utc_start_date"):
        todo.add("DTSTART", parse_eas_date(str(record["utc_start_date"])))
    if record.get("utc_due_date"):
        todo.add("DUE", parse_eas_date(str(record["utc_due_date"])))
    if record.get("complete"):
        todo.add("STATUS", "COMPLETED")
        todo.add("PERCENT-COMPLETE", 100)
    else:
        todo.add("STATUS", "NEEDS-ACTION")
    if record.get("date_completed"):
        todo.add("COMPLETED", parse_eas_date(str(record["date_completed"])))
    if "importance" in record:
        todo.add("PRIORITY", {2: 1, 1: 5, 0: 9}.get(int(record["importance"]), 5))
    if "sensitivity" in record:
        todo.add("CLASS", _CLASS.get(int(record["sensitivity"]), "PUBLIC"))
    if record.get("categories"):
        todo.add("CATEGORIES", [str(c) for c in record["categories"]])
    if record.get("reminder_set") and record.get("reminder_time"):
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", str(record.get("subject") or "Reminder"))
        alarm.add("TRIGGER", parse_eas_date(str(record["reminder_time"])))
        todo.add_component(alarm)
    if record.get("recurrence"):
        todo.add("RRULE", _rrule(record["recurrence"]))
    extra = {k: record[k] for k in _EXTRA_KEYS if k in record}
    if extra:
        todo.add(_EXTRA, json.dumps(extra, sort_keys=True, separators=(",", ":")))
    return todo


def todos_to_ics(todos: Iterable[Todo]) -> bytes:
    """A VCALENDAR of VTODOs."""
    document = icalendar.Calendar()
    document.add("PRODID", "-//natsync//natsync tasks//EN")
    document.add("VERSION", "2.0")
    for todo in todos:
        document.add_component(todo_component(todo.uid, todo.record))
    data: bytes = document.to_ical()
    return data
