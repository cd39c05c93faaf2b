"""The Tasks class (MS-ASTASK 2.2.2): a task's ApplicationData ⇄ a task record, recurring tasks
moved on when completed, and the FilterType 8 window (incomplete tasks only).

Record keys:

* ``subject`` (text), ``body`` / ``body_type`` (airsyncbase:Body, as in every PIM class);
* ``importance`` (0 low, 1 normal, 2 high), ``sensitivity`` (0 normal, 1 personal, 2 private,
  3 confidential);
* ``start_date``, ``utc_start_date``, ``due_date``, ``utc_due_date``, ``date_completed``,
  ``reminder_time``: EAS date-time text (the non-UTC ones are the local wall time written with a
  ``Z``, as MS-ASTASK 2.2.2.25 StartDate does);
* ``complete``, ``reminder_set``: booleans (``complete`` is always present, MS-ASTASK 2.2.2.4);
* ``categories``: list of text;
* ``recurrence``: a dict with ``type`` (0 daily, 1 weekly, 2 monthly, 3 monthly on the nth
  weekday, 5 yearly, 6 yearly on the nth weekday), ``start`` and ``until`` (date-time text),
  ``occurrences``, ``interval``, ``day_of_week`` (bit mask, 1 = Sunday .. 64 = Saturday),
  ``day_of_month``, ``week_of_month`` (5 = last), ``month_of_year``, ``calendar_type``,
  ``first_day_of_week`` (ints), ``regenerate``, ``dead_occur``, ``is_leap_month`` (booleans).

Change: Tasks replace the item with what the client sent, except the body, which a client
that leaves Body out keeps (phones send Change without the body they only had truncated).

Completing a recurring task: when a client's Change sets Complete on a recurring task whose
series goes on, :func:`after_client_write` (in the Sync transaction) keeps the completed
occurrence as a new, non-recurring item and moves the task itself to its next occurrence (dates
shifted, not complete); the device gets both on its next Sync, as from Exchange. With
Regenerate the next due date counts from the completion; without, it is the pattern's next
date after the current one; DeadOccur, a passed Until or used-up Occurrences end the series
and the task stays complete.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from natsync.classes.body import BodyPreference, format_eas_date, parse_eas_date
from natsync.classes.codec import ClassCodec, PimError, Record
from natsync.classes.fields import (
    body_element,
    bool_of,
    date_of,
    int_of,
    keep_absent_body,
    list_element,
    list_of,
    read_body,
    text_of,
)
from natsync.classes.versions import V14_0, V14_1, Version
from natsync.store.api import FolderType, Item, Txn, User
from natsync.wbxml import E, Element

NS = "Tasks"
#: FilterType 8 of a Tasks collection: incomplete tasks only (MS-ASCMD 2.2.3.70.2).
FILTER_INCOMPLETE = 8
#: Days searched for a pattern's next date. A pattern with no date in ten years (a yearly
#: pattern on 30 February) has none: the series ends rather than the loop running on.
MAX_SCAN_DAYS = 3660

_DATES = {
    "StartDate": "start_date",
    "UtcStartDate": "utc_start_date",
    "DueDate": "due_date",
    "UtcDueDate": "utc_due_date",
    "DateCompleted": "date_completed",
    "ReminderTime": "reminder_time",
}
_INTS = {"Importance": ("importance", 2), "Sensitivity": ("sensitivity", 3)}
_BOOLS = {"Complete": "complete", "ReminderSet": "reminder_set"}

# Recurrence children: element -> (key, kind, maximum); kind "int", "bool" or "date".
_RECURRENCE: dict[str, tuple[str, str, int]] = {
    "Type": ("type", "int", 6),
    "Start": ("start", "date", 0),
    "Until": ("until", "date", 0),
    "Occurrences": ("occurrences", "int", 999),
    "Interval": ("interval", "int", 999),
    "DayOfWeek": ("day_of_week", "int", 127),
    "DayOfMonth": ("day_of_month", "int", 31),
    "WeekOfMonth": ("week_of_month", "int", 5),
    "MonthOfYear": ("month_of_year", "int", 12),
    "Regenerate": ("regenerate", "bool", 1),
    "DeadOccur": ("dead_occur", "bool", 1),
    "CalendarType": ("calendar_type", "int", 20),
    "IsLeapMonth": ("is_leap_month", "bool", 1),
    "FirstDayOfWeek": ("first_day_of_week", "int", 6),
}
#: Recurrence elements a client of an older version does not know.
_RECURRENCE_SINCE = {"CalendarType": V14_0, "IsLeapMonth": V14_0, "FirstDayOfWeek": V14_1}
_PATTERN_TYPES = frozenset({0, 1, 2, 3, 5, 6})


def _recurrence(element: Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in element.children:
        spec = _RECURRENCE.get(child.tag) if child.namespace == NS else None
        if spec is None:
            continue
        key, kind, high = spec
        if kind == "date":
            out[key] = date_of(child)
        elif kind == "bool":
            out[key] = bool_of(child)
        else:
            out[key] = int_of(child, 0, high)
    if out.get("type") not in _PATTERN_TYPES:
        raise PimError("a task Recurrence needs a Type of 0, 1, 2, 3, 5 or 6 (MS-ASTASK 2.2.2.22)")
    return out


def _read(appdata: Element) -> Record:
    record: Record = {"complete": False}
    for child in appdata.children:
        if child.namespace == "AirSyncBase" and child.tag == "Body":
            read_body(child, record)
        if child.namespace != NS:
            continue
        tag = child.tag
        if tag == "Subject":
            record["subject"] = text_of(child)
        elif tag in _DATES:
            record[_DATES[tag]] = date_of(child)
        elif tag in _INTS:
            key, high = _INTS[tag]
            record[key] = int_of(child, 0, high)
        elif tag in _BOOLS:
            record[_BOOLS[tag]] = bool_of(child)
        elif tag == "Categories":
            record["categories"] = list_of(child, "Category")
        elif tag == "Recurrence":
            record["recurrence"] = _recurrence(child)
    if not record.get("categories"):
        record.pop("categories", None)
    if not record.get("subject"):
        record.pop("subject", None)
    return record


def decode(appdata: Element, version: Version) -> Record:
    """A client's Add: the whole task."""
    return _read(appdata)


def apply_change(old: Mapping[str, Any], appdata: Element, version: Version) -> Record:
    """A client's Change: the task as sent, the body kept when left out."""
    return keep_absent_body(old, appdata, _read(appdata))


def after_client_write(
    txn: Txn, user: User, old: Item | None, new: Item | None, now: datetime, rng: random.Random
) -> bool:
    """A recurring task the client just completed: keep the completed occurrence as its own
    item and move the series to its next occurrence (both reach the device on its next Sync)."""
    if new is None or not new.data.get("complete") or not new.data.get("recurrence"):
        return False
    if old is not None and old.data.get("complete"):
        return False
    completed, following = split_completion(new.data)
    if following is not None:
        txn.update_item(new.id, following)
        txn.add_item(new.folder_id, completed)
    return False


def encode(
    record: Mapping[str, Any], version: Version, body_preferences: Sequence[BodyPreference]
) -> list[Element]:
    """The task's ApplicationData children for a device speaking *version*."""
    out: list[Element] = []
    if record.get("body"):
        out.append(body_element(record, version, body_preferences))
    if record.get("subject"):
        out.append(E(NS, "Subject", str(record["subject"])))
    for tag, (key, _high) in _INTS.items():
        if key in record:
            out.append(E(NS, tag, int(record[key])))
    for tag, key in _DATES.items():
        if record.get(key):
            out.append(E(NS, tag, str(record[key])))
    out.append(E(NS, "Complete", bool(record.get("complete"))))
    if "reminder_set" in record:
        out.append(E(NS, "ReminderSet", bool(record["reminder_set"])))
    if record.get("categories"):
        out.append(list_element(NS, "Categories", "Category", list(record["categories"])))
    recurrence = record.get("recurrence")
    if recurrence:
        rec = E(NS, "Recurrence")
        for tag, (key, kind, _high) in _RECURRENCE.items():
            since = _RECURRENCE_SINCE.get(tag)
            if key not in recurrence or (since is not None and version < since):
                continue
            value = recurrence[key]
            rec.append(E(NS, tag, bool(value) if kind == "bool" else value))
        out.append(rec)
    return out


def in_window(record: Mapping[str, Any], cutoff: datetime | None = None) -> bool:
    """Whether a task belongs to a FilterType 8 (incomplete tasks) collection (*cutoff*, the
    ClassCodec.in_window argument, is None for it: no time window)."""
    return not record.get("complete", False)


# -- recurring tasks ----------------------------------------------------------------------------


def _day(text: str) -> date:
    return parse_eas_date(text).date()


def _mask_has(mask: int, day: date) -> bool:
    return bool(mask & (1 << ((day.weekday() + 1) % 7)))


def _nth_weekday(day: date, week: int, mask: int) -> bool:
    """*day* is the *week*-th (5: last) day of its month among the weekdays in *mask*."""
    if not _mask_has(mask, day):
        return False
    if week == 5:
        return day.day + 7 > calendar.monthrange(day.year, day.month)[1]
    return (day.day - 1) // 7 + 1 == week


def _months(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _day_of_month(day: date, wanted: int) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.day == min(wanted, last)


def matches(recurrence: Mapping[str, Any], anchor: date, day: date) -> bool:
    """Whether *day* is a date of the pattern whose series began at *anchor*."""
    kind = recurrence.get("type", 0)
    interval = max(int(recurrence.get("interval") or 1), 1)
    mask = int(recurrence.get("day_of_week") or 0)
    dom = int(recurrence.get("day_of_month") or anchor.day)
    moy = int(recurrence.get("month_of_year") or anchor.month)
    week = int(recurrence.get("week_of_month") or 1)
    if kind == 0:
        return _mask_has(mask, day) if mask else (day - anchor).days % interval == 0
    if kind == 1:
        monday = anchor - timedelta(days=anchor.weekday())
        weeks = (day - monday).days // 7
        return _mask_has(mask or 1 << ((anchor.weekday() + 1) % 7), day) and weeks % interval == 0
    if kind == 2:
        return _day_of_month(day, dom) and _months(anchor, day) % interval == 0
    if kind == 3:
        return _nth_weekday(day, week, mask) and _months(anchor, day) % interval == 0
    if kind == 5:
        return (
            day.month == moy
            and _day_of_month(day, dom)
            and (day.year - anchor.year) % interval == 0
        )
    return (
        day.month == moy
        and _nth_weekday(day, week, mask)
        and (day.year - anchor.year) % interval == 0
    )


def _step(recurrence: Mapping[str, Any], day: date) -> date:
    """Regenerate: one interval after *day* (MS-ASTASK 2.2.2.21)."""
    interval = max(int(recurrence.get("interval") or 1), 1)
    kind = recurrence.get("type", 0)
    if kind == 0:
        return day + timedelta(days=interval)
    if kind == 1:
        return day + timedelta(weeks=interval)
    months = interval if kind in (2, 3) else 12 * interval
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_date(record: Mapping[str, Any]) -> date | None:
    """The due (or start) day of the occurrence after the current one; None: series over."""
    try:
        return _next_date(record)
    except OverflowError:  # a series reaching past year 9999 is over
        return None


def _next_date(record: Mapping[str, Any]) -> date | None:
    recurrence = record.get("recurrence") or {}
    current_text = record.get("due_date") or record.get("start_date") or recurrence.get("start")
    if not recurrence or not current_text or recurrence.get("dead_occur"):
        return None
    current = _day(str(current_text))
    if recurrence.get("regenerate"):
        done = record.get("date_completed")
        found: date | None = _step(recurrence, _day(str(done)) if done else current)
    else:
        anchor = _day(str(recurrence.get("start") or current_text))
        found = None
        for offset in range(1, MAX_SCAN_DAYS + 1):
            candidate = current + timedelta(days=offset)
            if matches(recurrence, anchor, candidate):
                found = candidate
                break
    if found is None:
        return None
    until = recurrence.get("until")
    if until and found > _day(str(until)):
        return None
    if "occurrences" in recurrence and int(recurrence["occurrences"]) <= 1:
        return None
    return found


def split_completion(record: Mapping[str, Any]) -> tuple[Record, Record | None]:
    """A recurring task just completed → (the completed occurrence without recurrence, the
    series moved to its next occurrence and not complete, or None when the series is over)."""
    completed = {k: v for k, v in record.items() if k != "recurrence"}
    completed["complete"] = True
    following_day = next_date(record)
    if following_day is None:
        return completed, None
    current_text = (
        record.get("due_date") or record.get("start_date") or record["recurrence"]["start"]
    )
    shift = following_day - _day(str(current_text))
    following: Record = {k: v for k, v in record.items() if k not in ("date_completed",)}
    following["complete"] = False
    for key in ("start_date", "utc_start_date", "due_date", "utc_due_date", "reminder_time"):
        if following.get(key):
            try:
                moved = parse_eas_date(str(following[key])) + shift
            except OverflowError:  # a date pushed past year 9999: the series is over
                return completed, None
            following[key] = format_eas_date(moved.astimezone(UTC))
    recurrence = dict(following["recurrence"])
    if "occurrences" in recurrence:
        recurrence["occurrences"] = int(recurrence["occurrences"]) - 1
    following["recurrence"] = recurrence
    return completed, following


CODEC = ClassCodec(
    eas_class="Tasks",
    folder_types=frozenset({FolderType.TASKS, FolderType.USER_TASKS}),
    decode=decode,
    apply_change=apply_change,
    encode=encode,
    after_client_write=after_client_write,
    in_window=in_window,
)
