"""The Tasks codec: every MS-ASTASK field round trip, recurrence per version, completing a
recurring task (next occurrence, Regenerate, DeadOccur, Until, Occurrences), FilterType 8."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import tasks, vtodo
from natsync.classes.codec import PimError, Record
from natsync.classes.email import BodyPreference
from natsync.classes.ical import IcsError
from natsync.classes.versions import V12_1, V14_0, V14_1, V16_1, Version
from natsync.eas.registry import codec_for
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element
from tests.classes.test_contacts import decodes_or_pim_error, trees, wire

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def full_task() -> Record:
    return {
        "subject": "Water the plants",
        "body": "<p>All of them</p>",
        "body_type": 2,
        "importance": 2,
        "sensitivity": 1,
        "start_date": "2026-03-02T09:00:00.000Z",
        "utc_start_date": "2026-03-02T08:00:00.000Z",
        "due_date": "2026-03-02T17:00:00.000Z",
        "utc_due_date": "2026-03-02T16:00:00.000Z",
        "complete": False,
        "reminder_set": True,
        "reminder_time": "2026-03-02T07:30:00.000Z",
        "categories": ["Home"],
        "recurrence": {
            "type": 1,
            "start": "2026-03-02T00:00:00.000Z",
            "until": "2026-12-31T00:00:00.000Z",
            "interval": 1,
            "day_of_week": 2 | 32,  # Monday and Friday
            "regenerate": False,
            "dead_occur": False,
            "calendar_type": 1,
            "is_leap_month": False,
            "first_day_of_week": 1,
        },
    }


def test_registered() -> None:
    assert codec_for(FolderType.TASKS) is tasks.CODEC
    assert codec_for(FolderType.USER_TASKS) is tasks.CODEC


@pytest.mark.parametrize("version", [V14_1, V16_1])
def test_every_field_round_trips(version: Version) -> None:
    record = full_task()
    assert tasks.decode(wire(tasks.CODEC, record, version), version) == record


def test_completed_task_round_trips() -> None:
    record: Record = {
        "subject": "Done",
        "complete": True,
        "date_completed": "2026-03-01T10:00:00.000Z",
    }
    assert tasks.decode(wire(tasks.CODEC, record, V16_1), V16_1) == record


@pytest.mark.parametrize(
    ("version", "missing"),
    [
        (V12_1, {"calendar_type", "is_leap_month", "first_day_of_week"}),
        (V14_0, {"first_day_of_week"}),
    ],
)
def test_older_versions_get_only_their_recurrence_elements(
    version: Version, missing: set[str]
) -> None:
    record = full_task()
    back = tasks.decode(wire(tasks.CODEC, record, version), version)
    assert back["recurrence"] == {k: v for k, v in record["recurrence"].items() if k not in missing}


def _completion(**extra: object) -> Element:
    return E(
        "AirSync",
        "ApplicationData",
        E("Tasks", "Subject", "Water the plants"),
        E("Tasks", "Complete", "1"),
        E("Tasks", "DateCompleted", "2026-03-03T10:00:00.000Z"),
        *(E("Tasks", k, str(v)) for k, v in extra.items()),
    )


def _with_recurrence(record: Record, **changes: object) -> Element:
    rec = {**record["recurrence"], **changes}
    encoded = tasks.encode(
        {**record, "recurrence": rec, "complete": True}, V16_1, [BodyPreference(type=2)]
    )
    return E(
        "AirSync",
        "ApplicationData",
        *encoded,
        E("Tasks", "DateCompleted", "2026-03-03T10:00:00.000Z"),
    )


def _complete(old: Record, **changes: object) -> tuple[Record, Record | None]:
    """The client completes *old* (with *changes* to its recurrence): what the codec stores,
    split as after_client_write splits it."""
    sent = tasks.apply_change(old, _with_recurrence(old, **changes), V16_1)
    assert sent["complete"] is True
    return tasks.split_completion(sent)


def test_completing_a_weekly_task_moves_it_to_the_next_pattern_day() -> None:
    old = full_task()
    completed, new = _complete(old)
    assert new is not None
    # due Monday 2 March; the pattern is Monday and Friday: next is Friday 6 March
    assert new["complete"] is False
    assert new["due_date"] == "2026-03-06T17:00:00.000Z"
    assert new["utc_due_date"] == "2026-03-06T16:00:00.000Z"
    assert new["start_date"] == "2026-03-06T09:00:00.000Z"
    assert new["reminder_time"] == "2026-03-06T07:30:00.000Z"
    assert "date_completed" not in new
    assert new["body"] == old["body"]
    assert new["recurrence"] == old["recurrence"]
    assert completed["complete"] is True
    assert completed["due_date"] == old["due_date"]
    assert completed["date_completed"] == "2026-03-03T10:00:00.000Z"
    assert "recurrence" not in completed


def test_regenerating_task_counts_from_the_completion() -> None:
    old = full_task()
    old["recurrence"] = {"type": 0, "interval": 10, "regenerate": True, "start": old["start_date"]}
    _, new = _complete(old)
    assert new is not None
    # completed 3 March: due ten days later, 13 March
    assert new["due_date"] == "2026-03-13T17:00:00.000Z"


@pytest.mark.parametrize(
    "changes",
    [{"dead_occur": True}, {"until": "2026-03-04T00:00:00.000Z"}, {"occurrences": 1}],
)
def test_series_over_keeps_the_task_complete(changes: dict[str, object]) -> None:
    _, new = _complete(full_task(), **changes)
    assert new is None


def test_occurrences_count_down() -> None:
    old = full_task()
    old["recurrence"] = {**old["recurrence"], "occurrences": 3}
    _, new = _complete(old)
    assert new is not None
    assert new["recurrence"]["occurrences"] == 2


def test_after_client_write_keeps_the_completed_occurrence(store: Store) -> None:
    old_record = full_task()

    def run(txn: Txn) -> list[Record]:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.TASKS)
        old = txn.add_item(folder.id, old_record)
        sent = tasks.apply_change(old.data, _with_recurrence(old.data), V16_1)
        new = txn.update_item(old.id, sent)
        assert tasks.CODEC.after_client_write is not None
        assert tasks.CODEC.after_client_write(txn, user, old, new, NOW, random.Random(1)) is False
        # a second write of the same completed state does nothing more
        again = txn.get_item(user.id, new.server_id)
        assert again is not None
        tasks.CODEC.after_client_write(txn, user, again, again, NOW, random.Random(1))
        return sorted((i.data for i in txn.list_items(folder.id)), key=lambda d: d["due_date"])

    completed, following = store.run_sync(run)
    assert completed["complete"] is True
    assert "recurrence" not in completed
    assert following["complete"] is False
    assert following["due_date"] == "2026-03-06T17:00:00.000Z"


@pytest.mark.parametrize(
    ("recurrence", "due", "expected"),
    [
        ({"type": 0, "interval": 3}, date(2026, 3, 2), date(2026, 3, 5)),
        ({"type": 0, "day_of_week": 62}, date(2026, 3, 6), date(2026, 3, 9)),  # weekdays
        ({"type": 1, "interval": 2, "day_of_week": 2}, date(2026, 3, 2), date(2026, 3, 16)),
        ({"type": 2, "day_of_month": 31}, date(2026, 1, 31), date(2026, 2, 28)),
        ({"type": 3, "week_of_month": 5, "day_of_week": 32}, date(2026, 3, 27), date(2026, 4, 24)),
        ({"type": 3, "week_of_month": 2, "day_of_week": 2}, date(2026, 3, 9), date(2026, 4, 13)),
        ({"type": 5, "month_of_year": 5, "day_of_month": 4}, date(2026, 5, 4), date(2027, 5, 4)),
        (
            {"type": 6, "month_of_year": 11, "week_of_month": 4, "day_of_week": 16},
            date(2026, 11, 26),
            date(2027, 11, 25),
        ),
    ],
)
def test_next_date_per_pattern(recurrence: dict[str, int], due: date, expected: date) -> None:
    text = f"{due.isoformat()}T12:00:00.000Z"
    rec = {**recurrence, "start": text}
    assert tasks.next_date({"due_date": text, "recurrence": rec}) == expected


def test_impossible_pattern_ends_the_series() -> None:
    rec = {"type": 5, "month_of_year": 2, "day_of_month": 30, "start": "2026-01-01T00:00:00.000Z"}
    # 30 February is clamped to the month's last day, so it is not impossible ...
    assert tasks.next_date({"due_date": "2026-01-01T00:00:00.000Z", "recurrence": rec}) == date(
        2026, 2, 28
    )
    # ... but a weekly pattern on no weekday of an interval never reached is
    rec2 = {"type": 3, "week_of_month": 1, "day_of_week": 0, "start": "2026-01-01T00:00:00.000Z"}
    assert tasks.next_date({"due_date": "2026-01-01T00:00:00.000Z", "recurrence": rec2}) is None


def test_change_without_body_keeps_the_body() -> None:
    old = full_task()
    new = tasks.apply_change(
        old, E("AirSync", "ApplicationData", E("Tasks", "Subject", "x")), V16_1
    )
    assert new == {"subject": "x", "complete": False, "body": old["body"], "body_type": 2}


def test_filter_type_8_is_incomplete_tasks() -> None:
    assert tasks.FILTER_INCOMPLETE == 8
    assert tasks.in_window({"complete": False})
    assert tasks.in_window({})
    assert not tasks.in_window({"complete": True})


@pytest.mark.parametrize(
    "bad",
    [
        E("Tasks", "Importance", "7"),
        E("Tasks", "Complete", "yes"),
        E("Tasks", "DueDate", "soon"),
        E("Tasks", "Recurrence", E("Tasks", "Interval", "1")),  # no Type
        E("Tasks", "Recurrence", E("Tasks", "Type", "4")),
    ],
)
def test_bad_values_are_pim_errors(bad: Element) -> None:
    with pytest.raises(PimError):
        tasks.decode(E("AirSync", "ApplicationData", bad), V16_1)


@settings(max_examples=200, deadline=None)
@given(st.lists(trees(), max_size=6))
def test_arbitrary_trees_decode_or_raise_pim_error(children: list[Element]) -> None:
    decodes_or_pim_error(tasks.CODEC, children, full_task())


# -- iCalendar VTODO ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        full_task(),
        {"subject": "Done", "complete": True, "date_completed": "2026-03-01T10:00:00.000Z"},
        {
            **full_task(),
            "recurrence": {
                "type": 3,
                "week_of_month": 5,
                "day_of_week": 32,
                "interval": 1,
                "occurrences": 4,
                "start": "2026-03-02T00:00:00.000Z",
            },
        },
        {
            **full_task(),
            "recurrence": {
                "type": 6,
                "week_of_month": 2,
                "day_of_week": 2,
                "month_of_year": 11,
                "interval": 1,
                "regenerate": True,
                "start": "2026-03-02T00:00:00.000Z",
            },
        },
        {
            "complete": False,
            "body": "{\\rtf1 x}",
            "body_type": 3,
            "reminder_set": False,
            "reminder_time": "2026-03-02T07:30:00.000Z",
        },
    ],
)
def test_vtodo_round_trip_keeps_every_field(record: Record) -> None:
    data = vtodo.todos_to_ics([vtodo.Todo("task-1", record)])
    assert b"BEGIN:VTODO" in data
    (todo,) = vtodo.todos_from_ics(data)
    assert todo.uid == "task-1"
    assert todo.record == record


FOREIGN_VTODO = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//EN\r
BEGIN:VTODO\r
UID:other-1\r
DTSTAMP:20260301T000000Z\r
SUMMARY:Pay rent\r
DESCRIPTION:Before the 3rd\r
DTSTART;TZID=Europe/Berlin:20260301T090000\r
DUE;VALUE=DATE:20260303\r
PRIORITY:1\r
CLASS:PRIVATE\r
CATEGORIES:Home,Money\r
RRULE:FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
TRIGGER;VALUE=DATE-TIME:20260301T070000Z\r
END:VALARM\r
END:VTODO\r
BEGIN:VTODO\r
UID:other-2\r
SUMMARY:Old\r
STATUS:COMPLETED\r
COMPLETED:20260201T120000Z\r
END:VTODO\r
END:VCALENDAR\r
"""


def test_reads_another_programs_vtodos() -> None:
    first, second = vtodo.todos_from_ics(FOREIGN_VTODO)
    assert first.uid == "other-1"
    assert first.record == {
        "complete": False,
        "subject": "Pay rent",
        "body": "Before the 3rd",
        "body_type": 1,
        "utc_start_date": "2026-03-01T08:00:00.000Z",
        "start_date": "2026-03-01T09:00:00.000Z",  # the wall time in Berlin
        "utc_due_date": "2026-03-03T00:00:00.000Z",
        "due_date": "2026-03-03T00:00:00.000Z",
        "importance": 2,
        "sensitivity": 2,
        "categories": ["Home", "Money"],
        "reminder_set": True,
        "reminder_time": "2026-03-01T07:00:00.000Z",
        "recurrence": {
            "type": 2,
            "interval": 1,
            "day_of_month": 1,
            "occurrences": 12,
            "start": "2026-03-01T09:00:00.000Z",
        },
    }
    assert second.record == {
        "complete": True,
        "subject": "Old",
        "date_completed": "2026-02-01T12:00:00.000Z",
    }
    # what was read encodes for a phone and decodes the same
    for todo in (first, second):
        assert tasks.decode(wire(tasks.CODEC, todo.record, V16_1), V16_1) == todo.record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a calendar", "not iCalendar"),
        (
            b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nSUMMARY:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
            "no UID",
        ),
        (
            b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:a\r\nDTSTART:20260101T000000Z\r\n"
            b"RRULE:FREQ=HOURLY\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
            "FREQ=HOURLY",
        ),
        (
            b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:a\r\nEND:VTODO\r\nBEGIN:VTODO\r\nUID:a\r\n"
            b"END:VTODO\r\nEND:VCALENDAR\r\n",
            "twice",
        ),
        (
            b'BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:a\r\nX-NATSYNC-EAS:{"due_date": 5}\r\n'
            b"END:VTODO\r\nEND:VCALENDAR\r\n",
            "not an EAS date",
        ),
    ],
)
def test_bad_vtodos_raise_ics_error(data: bytes, message: str) -> None:
    with pytest.raises(IcsError, match=message):
        vtodo.todos_from_ics(data)
