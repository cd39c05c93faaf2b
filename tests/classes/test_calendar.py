"""The Calendar codec (MS-ASCAL): every field through encode → WBXML (read by libwbxml too) →
decode per protocol version, TimeZone blobs against zoneinfo, ghosting and 16.x instance
changes, occurrences for the sync window and free/busy, and "decodes or raises PimError"."""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import calendar
from natsync.classes.codec import PimError, Record
from natsync.classes.email import BodyPreference
from natsync.classes.ical import records_from_ics, records_to_ics
from natsync.classes.versions import V12_1, V14_0, V14_1, V16_0, V16_1, Version
from natsync.eas.context import new_uid
from natsync.eas.registry import codec_for
from natsync.mail import itip
from natsync.store.api import FolderType
from natsync.wbxml import E, Element, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

NS = "Calendar"
BASE = "AirSyncBase"
ALL_VERSIONS = [V12_1, V14_0, V14_1, V16_0, V16_1]


def weekly_meeting() -> Record:
    """A weekly Monday 09:00 Berlin meeting of 10 occurrences, one moved, one deleted."""
    record = calendar.empty_record()
    record.update(
        uid="040000008200E00074C5B7101A82E008-weekly",
        subject="Team sync – ü",
        start="2026-03-02T08:00:00Z",
        end="2026-03-02T09:00:00Z",
        tz="Europe/Berlin",
        dtstamp="2026-02-20T10:00:00Z",
        location="Room 4",
        body="Agenda:\n1. numbers",
        busy_status=2,
        sensitivity=1,
        reminder=15,
        meeting_status=1,
        organizer_email="alice@example.test",
        organizer_name="Alice",
        attendees=[
            {"email": "bob@remote.test", "name": "Bob", "status": 3, "type": 1},
            {"email": "carol@remote.test", "name": "Carol", "status": 5, "type": 2},
        ],
        categories=["Work", "Weekly"],
        recurrence={
            "type": 1,
            "interval": 1,
            "occurrences": 10,
            "until": None,
            "week_of_month": None,
            "day_of_week": 2,
            "day_of_month": None,
            "month_of_year": None,
            "first_day_of_week": 1,
            "calendar_type": 0,
            "is_leap_month": 0,
        },
        exceptions=[
            {
                "original_start": "2026-03-16T08:00:00Z",
                "deleted": False,
                "start": "2026-03-17T13:00:00Z",
                "end": "2026-03-17T14:00:00Z",
                "subject": "Team sync (moved)",
            },
            {"original_start": "2026-03-30T07:00:00Z", "deleted": True},
        ],
        response_requested=True,
        response_type=1,
        appointment_reply_time="2026-02-21T08:00:00Z",
        disallow_new_time_proposal=False,
        online_meeting_conf_link="https://meet.example.test/conf",
        online_meeting_external_link="https://meet.example.test/ext",
    )
    return record


def wire(record: Record, version: Version) -> Element:
    """Encode for a client taking plain bodies, through WBXML (checked by libwbxml), decoded."""
    children = calendar.CODEC.encode(record, version, [BodyPreference(type=1)])
    data = encode(E("AirSync", "Sync", E("AirSync", "ApplicationData", *children)))
    assert_libwbxml_decodes(data)
    found = decode(data).find("ApplicationData", "AirSync")
    assert found is not None
    return found


def _without(record: Record, *keys: str) -> Record:
    return {k: v for k, v in record.items() if k not in keys}


def test_registered_for_both_calendar_folder_types() -> None:
    """The Sync registry serves calendar.CODEC with natsync.mail.itip's after-write hook."""
    served = replace(calendar.CODEC, after_client_write=itip.after_client_write)
    assert calendar.CODEC.after_client_write is None  # a class never imports mail
    assert codec_for(FolderType.CALENDAR) == served
    assert codec_for(FolderType.USER_CALENDAR) == served


@pytest.mark.parametrize("version", [V14_1, V16_1])
def test_every_field_round_trips(version: Version) -> None:
    record = weekly_meeting()
    back = calendar.decode(wire(record, version), version)
    blob = back.pop("tz_blob")
    assert calendar.zone_for_blob(blob, 2026) == "Europe/Berlin"
    by_server = version >= V16_0  # 16.x phones leave invitation mail to the server
    assert back == _without(record, "tz_blob") | {"sequence": 0, "invitations_by_server": by_server}


def test_12_1_gets_no_14_x_elements() -> None:
    record = weekly_meeting()
    back = calendar.decode(wire(record, V12_1), V12_1)
    for key in ("response_requested", "response_type", "appointment_reply_time"):
        assert back[key] is None
    assert back["online_meeting_conf_link"] is None
    assert back["recurrence"]["calendar_type"] is None
    assert back["recurrence"]["first_day_of_week"] is None
    assert back["exceptions"] == record["exceptions"]
    assert back["attendees"] == record["attendees"]


def test_16_x_location_and_instance_ids() -> None:
    record = weekly_meeting()
    record["location_detail"] = {"city": "Berlin", "latitude": "52.52", "location_uri": "geo:1"}
    children = calendar.encode(record, V16_1, [])
    location = next(c for c in children if c.tag == "Location")
    assert location.namespace == BASE
    assert location.child_text("DisplayName", BASE) == "Room 4"
    exceptions = next(c for c in children if c.tag == "Exceptions")
    ids = [e.child_text("InstanceId", BASE) for e in exceptions.children]
    assert ids == ["2026-03-16T08:00:00.000Z", "2026-03-30T07:00:00.000Z"]
    assert all(e.find("ExceptionStartTime", NS) is None for e in exceptions.children)
    assert calendar.decode(wire(record, V16_1), V16_1)["location_detail"] == {
        "city": "Berlin",
        "latitude": "52.52",
        "location_uri": "geo:1",
    }
    old = calendar.encode(record, V14_1, [])
    assert next(c for c in old if c.tag == "Location").text() == "Room 4"


def test_16_x_client_uid_names_the_event_and_uid_wins() -> None:
    add = E(
        "AirSync",
        "ApplicationData",
        E(NS, "StartTime", "20260302T080000Z"),
        E(NS, "ClientUid", "client-1"),
    )
    assert calendar.decode(add, V16_1)["uid"] == "client-1"
    add.append(E(NS, "UID", "server-2"))
    assert calendar.decode(add, V16_1)["uid"] == "server-2"
    bare = calendar.decode(
        E("AirSync", "ApplicationData", E(NS, "EndTime", "20260302T080000Z")), V16_1
    )
    assert bare["uid"] == ""  # the Sync Add gives it one (tests/eas/test_reproducible.py)
    assert bare["start"] == bare["end"] == "2026-03-02T08:00:00Z"


# -- time zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Sydney"])
def test_blob_rules_agree_with_zoneinfo_all_year(name: str) -> None:
    blob = calendar.blob_for_zone(name, 2027)
    assert len(base64.b64decode(blob)) == calendar.TZ_BLOB_SIZE
    mine, real = calendar.BlobZone(blob), ZoneInfo(name)
    moment = datetime(2027, 1, 1, tzinfo=UTC)
    while moment.year == 2027:
        assert moment.astimezone(mine).utcoffset() == moment.astimezone(real).utcoffset()
        local = moment.astimezone(real)
        assert local.replace(tzinfo=mine).utcoffset() == local.utcoffset(), local
        moment += timedelta(minutes=30)
    assert calendar.zone_for_blob(blob, 2027) == name


def _windows_blob(name: str, bias: int, std: tuple[int, ...], dst: tuple[int, ...]) -> str:
    encoded = name.encode("utf-16-le").ljust(64, b"\x00")
    raw = struct.pack("<i64s8Hi64s8Hi", bias, encoded, *std, 0, encoded, *dst, -60)
    return base64.b64encode(raw).decode()


def test_a_windows_named_blob_is_matched_to_its_iana_zone_and_kept_verbatim() -> None:
    # What a phone sends for Central European time: Windows' name, last Sunday rules.
    blob = _windows_blob(
        "W. Europe Standard Time", -60, (0, 10, 0, 5, 3, 0, 0, 0), (0, 3, 0, 5, 2, 0, 0, 0)
    )
    add = E(
        "AirSync",
        "ApplicationData",
        E(NS, "TimeZone", blob),
        E(NS, "StartTime", "20260302T080000Z"),
        E(NS, "EndTime", "20260302T090000Z"),
    )
    record = calendar.decode(add, V14_1)
    assert record["tz"] == "Europe/Berlin"
    assert calendar.encode(record, V14_1, [])[0].text() == blob  # the phone's own bytes back


def test_a_blob_no_zone_has_stays_the_zone() -> None:
    blob = _windows_blob("Odd Time", -77, (0, 9, 3, 2, 4, 0, 0, 0), (0, 4, 3, 2, 4, 0, 0, 0))
    assert calendar.zone_for_blob(blob, 2026) is None
    zone = calendar.BlobZone(blob)
    assert datetime(2026, 1, 1, tzinfo=zone).utcoffset() == timedelta(minutes=77)
    assert datetime(2026, 6, 1, tzinfo=zone).utcoffset() == timedelta(minutes=137)
    record = calendar.empty_record() | {"tz_blob": blob, "start": "2026-06-01T00:00:00Z"}
    assert calendar.timezone_blob(record) == blob


@pytest.mark.parametrize(
    "blob",
    ["not base64!", base64.b64encode(b"short").decode(), base64.b64encode(b"\xff" * 172).decode()],
)
def test_damaged_blobs_are_status_6(blob: str) -> None:
    add = E(
        "AirSync",
        "ApplicationData",
        E(NS, "TimeZone", blob),
        E(NS, "StartTime", "20260302T080000Z"),
    )
    with pytest.raises(PimError) as caught:
        calendar.decode(add, V14_1)
    assert caught.value.eas_status == 6


# -- changes --------------------------------------------------------------------------------------


def test_change_ghosts_absent_properties_and_clears_empty_containers() -> None:
    old = weekly_meeting()
    change = E(
        "AirSync",
        "ApplicationData",
        E(NS, "Subject", "Renamed"),
        E(NS, "Categories"),
        E(NS, "Reminder", ""),
    )
    new = calendar.apply_change(old, change, V14_1)
    assert new["subject"] == "Renamed"
    assert new["categories"] == []
    assert new["reminder"] is None
    assert new["sequence"] == old["sequence"] + 1  # alice's meeting got a new subject
    changed = ("subject", "categories", "reminder", "sequence")
    assert _without(new, *changed) == _without(old, *changed)
    assert old["subject"] == "Team sync – ü"


def test_moving_a_16_x_series_drops_its_exceptions_and_empty_recurrence_ends_it() -> None:
    old = weekly_meeting()
    later = E("AirSync", "ApplicationData", E(NS, "StartTime", "20260302T090000Z"))
    assert calendar.apply_change(old, later, V16_1)["exceptions"] == []
    assert calendar.apply_change(old, later, V14_1)["exceptions"] == old["exceptions"]
    single = calendar.apply_change(old, E("AirSync", "ApplicationData", E(NS, "Recurrence")), V16_1)
    assert (single["recurrence"], single["exceptions"]) == (None, [])


def test_16_x_change_with_instance_id_changes_one_occurrence() -> None:
    old = weekly_meeting()
    change = E(
        "AirSync",
        "ApplicationData",
        E(BASE, "InstanceId", "2026-03-09T08:00:00.000Z"),
        E(NS, "StartTime", "20260309T100000Z"),
        E(NS, "EndTime", "20260309T110000Z"),
        E(NS, "Subject", "Later this week"),
    )
    new = calendar.apply_change(old, change, V16_1)
    assert new["subject"] == old["subject"]
    added = next(e for e in new["exceptions"] if e["original_start"] == "2026-03-09T08:00:00Z")
    assert added == {
        "original_start": "2026-03-09T08:00:00Z",
        "deleted": False,
        "start": "2026-03-09T10:00:00Z",
        "end": "2026-03-09T11:00:00Z",
        "subject": "Later this week",
    }
    gone = calendar.delete_occurrence(new, "2026-03-09T08:00:00.000Z")
    deleted = [e for e in gone["exceptions"] if e["original_start"] == "2026-03-09T08:00:00Z"]
    assert deleted == [{"original_start": "2026-03-09T08:00:00Z", "deleted": True}]
    starts = [
        s
        for s, _, _ in calendar.occurrences(
            gone, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
        )
    ]
    assert datetime(2026, 3, 9, 8, tzinfo=UTC) not in starts
    assert datetime(2026, 3, 9, 10, tzinfo=UTC) not in starts


@pytest.mark.parametrize(
    "bad",
    [
        E(NS, "BusyStatus", "9"),
        E(NS, "AllDayEvent", "yes"),
        E(NS, "MeetingStatus", "2"),
        E(NS, "StartTime", "tomorrow"),
        E(NS, "StartTime", "99991231T000000Z"),
        E(NS, "Recurrence", E(NS, "Type", "4")),
        E(NS, "Recurrence", E(NS, "Interval", "1")),
        E(NS, "Recurrence", E(NS, "Type", "1"), E(NS, "Occurrences", "1000")),
        E(NS, "Exceptions", E(NS, "Exception", E(NS, "Deleted", "1"))),
        E(NS, "Attendees", E(NS, "Attendee", E(NS, "AttendeeStatus", "3"))),
        E(NS, "Reminder", "٣"),
        E(NS, "Reminder", "1" * 5000),  # int() refuses this many digits: PimError, not ValueError
        E(NS, "BusyStatus", "²"),
        E(NS, "UID", "u" * 301),
    ],
)
def test_bad_values_are_status_6(bad: Element) -> None:
    appdata = E("AirSync", "ApplicationData", E(NS, "StartTime", "20260302T080000Z"), bad)
    with pytest.raises(PimError):
        calendar.decode(appdata, V16_1)


def test_end_before_start_is_refused() -> None:
    appdata = E(
        "AirSync",
        "ApplicationData",
        E(NS, "StartTime", "20260302T080000Z"),
        E(NS, "EndTime", "20260302T070000Z"),
    )
    with pytest.raises(PimError, match="in order"):
        calendar.decode(appdata, V16_1)


def test_too_many_attendees_is_refused() -> None:
    people = [
        E(NS, "Attendee", E(NS, "Email", f"p{i}@x.test")) for i in range(calendar.MAX_ATTENDEES + 1)
    ]
    appdata = E(
        "AirSync",
        "ApplicationData",
        E(NS, "StartTime", "20260302T080000Z"),
        E(NS, "Attendees", *people),
    )
    with pytest.raises(PimError, match="attendees"):
        calendar.decode(appdata, V16_1)
    del appdata.children[1].children[-1]
    assert len(calendar.decode(appdata, V16_1)["attendees"]) == calendar.MAX_ATTENDEES


# -- occurrences ----------------------------------------------------------------------------------


def test_weekly_series_keeps_local_time_across_dst_and_honours_exceptions() -> None:
    record = weekly_meeting()
    found = calendar.occurrences(
        record, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )
    starts = [s for s, _, _ in found]
    assert len(starts) == 9  # ten, one deleted
    berlin = ZoneInfo("Europe/Berlin")
    moved = datetime(2026, 3, 17, 13, tzinfo=UTC)
    assert all(s.astimezone(berlin).hour == 9 for s in starts if s != moved)
    assert moved in starts
    assert datetime(2026, 3, 30, 7, tzinfo=UTC) not in starts  # deleted (09:00 CEST)
    assert datetime(2026, 4, 6, 7, tzinfo=UTC) in starts  # after the DST change: 07:00 UTC
    subject = {s: p["subject"] for s, _, p in found}
    assert subject[moved] == "Team sync (moved)"


def test_in_window_follows_the_series() -> None:
    record = weekly_meeting()  # last occurrence 2026-05-04
    assert calendar.in_window(record, datetime(2026, 5, 1, tzinfo=UTC))
    assert not calendar.in_window(record, datetime(2026, 5, 5, tzinfo=UTC))
    endless = record | {"recurrence": record["recurrence"] | {"occurrences": None}}
    assert calendar.in_window(endless, datetime(2040, 1, 1, tzinfo=UTC))
    single = calendar.empty_record() | {
        "start": "2026-03-02T08:00:00Z",
        "end": "2026-03-02T09:00:00Z",
    }
    assert calendar.in_window(single, datetime(2026, 3, 2, 8, 30, tzinfo=UTC))
    assert not calendar.in_window(single, datetime(2026, 3, 2, 9, tzinfo=UTC))


def test_in_window_counts_until_and_occurrences_moved_into_the_window() -> None:
    record = weekly_meeting()
    until = record | {
        "recurrence": record["recurrence"] | {"occurrences": None, "until": "2026-06-01T00:00:00Z"}
    }
    assert calendar.in_window(until, datetime(2026, 5, 31, tzinfo=UTC))
    assert not calendar.in_window(until, datetime(2026, 6, 2, tzinfo=UTC))
    late = {
        "original_start": "2026-05-04T07:00:00Z",
        "deleted": False,
        "start": "2026-07-01T07:00:00Z",
        "end": "2026-07-01T08:00:00Z",
    }
    moved = record | {"exceptions": [*record["exceptions"], late]}
    assert calendar.in_window(moved, datetime(2026, 6, 1, tzinfo=UTC))


def test_an_old_daily_series_still_expands_today() -> None:
    record = calendar.empty_record() | {
        "start": "2000-01-03T09:00:00Z",
        "end": "2000-01-03T09:15:00Z",
        "recurrence": dict.fromkeys(calendar.RECURRENCE_KEYS) | {"type": 0},
    }
    got = calendar.busy_intervals(
        [record], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)
    )
    assert [s for s, _, _ in got] == [
        datetime(2026, 3, 2, 9, tzinfo=UTC),
        datetime(2026, 3, 3, 9, tzinfo=UTC),
    ]


def test_busy_intervals_expand_and_skip_cancelled_and_deleted() -> None:
    record = weekly_meeting()
    cancelled = calendar.empty_record() | {
        "start": "2026-03-17T08:00:00Z",
        "end": "2026-03-17T09:00:00Z",
        "meeting_status": 7,
    }
    tentative = calendar.empty_record() | {
        "start": "2026-03-18T08:00:00Z",
        "end": "2026-03-18T08:30:00Z",
        "busy_status": 1,
    }
    got = calendar.busy_intervals(
        [record, cancelled, tentative],
        datetime(2026, 3, 16, tzinfo=UTC),
        datetime(2026, 3, 31, tzinfo=UTC),
    )
    assert got == [
        (datetime(2026, 3, 17, 13, tzinfo=UTC), datetime(2026, 3, 17, 14, tzinfo=UTC), 2),
        (datetime(2026, 3, 18, 8, tzinfo=UTC), datetime(2026, 3, 18, 8, 30, tzinfo=UTC), 1),
        (datetime(2026, 3, 23, 8, tzinfo=UTC), datetime(2026, 3, 23, 9, tzinfo=UTC), 2),
    ]


@pytest.mark.parametrize(
    ("recurrence", "expected"),
    [
        ({"type": 0, "interval": 2, "occurrences": 3}, [(2026, 3, 2), (2026, 3, 4), (2026, 3, 6)]),
        ({"type": 2, "day_of_month": 31, "occurrences": 2}, [(2026, 3, 31), (2026, 5, 31)]),
        (
            {"type": 3, "week_of_month": 5, "day_of_week": 127, "occurrences": 2},
            [(2026, 3, 31), (2026, 4, 30)],
        ),
        (
            {"type": 3, "week_of_month": 2, "day_of_week": 4, "occurrences": 2},
            [(2026, 3, 10), (2026, 4, 14)],
        ),
        (
            {"type": 5, "month_of_year": 3, "day_of_month": 2, "occurrences": 2},
            [(2026, 3, 2), (2027, 3, 2)],
        ),
        (
            {
                "type": 6,
                "month_of_year": 11,
                "week_of_month": 4,
                "day_of_week": 16,
                "occurrences": 1,
            },
            [(2026, 11, 26)],
        ),
    ],
)
def test_each_recurrence_type_expands(
    recurrence: dict[str, Any], expected: list[tuple[int, int, int]]
) -> None:
    record = calendar.empty_record() | {
        "start": "2026-03-02T08:00:00Z",
        "end": "2026-03-02T09:00:00Z",
        "tz": "Europe/Berlin",
        "recurrence": dict.fromkeys(calendar.RECURRENCE_KEYS) | recurrence,
    }
    days = [s.astimezone(ZoneInfo("Europe/Berlin")).date() for s in calendar.series_starts(record)]
    assert [(d.year, d.month, d.day) for d in days] == expected


# -- arbitrary input ------------------------------------------------------------------------------

_TAGS = [
    (NS, t)
    for t in (
        "TimeZone",
        "AllDayEvent",
        "Attendees",
        "Attendee",
        "Email",
        "Name",
        "BusyStatus",
        "Categories",
        "Category",
        "DtStamp",
        "EndTime",
        "Exception",
        "Exceptions",
        "Deleted",
        "ExceptionStartTime",
        "Location",
        "MeetingStatus",
        "OrganizerEmail",
        "Recurrence",
        "Type",
        "Until",
        "Occurrences",
        "Interval",
        "DayOfWeek",
        "DayOfMonth",
        "WeekOfMonth",
        "MonthOfYear",
        "Reminder",
        "Sensitivity",
        "Subject",
        "StartTime",
        "UID",
        "AttendeeStatus",
        "AttendeeType",
        "ClientUid",
        "ResponseType",
        "FirstDayOfWeek",
    )
] + [(BASE, t) for t in ("Body", "Type", "Data", "Location", "DisplayName", "InstanceId", "City")]
_VALUES = st.one_of(
    st.none(),
    st.sampled_from(
        ["0", "1", "3", "5", "127", "20260302T080000Z", "2026-03-09T08:00:00.000Z", ""]
    ),
    st.text(max_size=12),
    st.just(calendar.blob_for_zone("Europe/Berlin", 2026)),
)


def _trees() -> st.SearchStrategy[Element]:
    leaf = st.builds(lambda t, v: Element(t[0], t[1], [], v), st.sampled_from(_TAGS), _VALUES)
    return st.recursive(
        leaf,
        lambda kids: st.builds(
            lambda t, c: Element(t[0], t[1], c), st.sampled_from(_TAGS), st.lists(kids, max_size=5)
        ),
        max_leaves=25,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_trees(), max_size=8), st.sampled_from(ALL_VERSIONS))
def test_arbitrary_application_data_decodes_or_raises_pim_error(
    children: list[Element], version: Version
) -> None:
    appdata = Element("AirSync", "ApplicationData", children)
    for step in (
        lambda: calendar.decode(appdata, version),
        lambda: calendar.apply_change(weekly_meeting(), appdata, version),
    ):
        try:
            record = step()
        except PimError:
            continue
        if not record.get("uid"):  # a phone's new item gets its UID from the command's rng
            record["uid"] = new_uid(random.Random(0))  # (natsync.eas.sync_client)
        encode(E("AirSync", "ApplicationData", *calendar.encode(record, version, [])))
        records_from_ics(records_to_ics([record]))  # whatever a phone stored exports and back
        calendar.in_window(record, datetime(2026, 1, 1, tzinfo=UTC))
        calendar.busy_intervals(
            [record], datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
        )


@pytest.mark.parametrize("year", [1, 607, 999, 1000, 2026, 9999])
def test_time_texts_pad_the_year_and_parse_back(year: int) -> None:
    moment = datetime(year, 2, 24, 7, 5, 3, tzinfo=UTC)
    text = calendar.utc_text(moment)
    assert text == f"{year:04d}-02-24T07:05:03Z"
    assert calendar.parse_utc(text) == moment
    assert calendar.compact(text) == f"{year:04d}0224T070503Z"
    assert calendar.instance_id(text) == f"{year:04d}-02-24T07:05:03.000Z"
