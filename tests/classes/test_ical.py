"""iCalendar ⇄ calendar records: a recurring meeting with one moved and one deleted occurrence
survives ics → record → EAS (WBXML) → record → ics; zones, all-day events, lone overrides;
what ActiveSync cannot express is refused by name; bad input raises IcsError only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import calendar
from natsync.classes.email import BodyPreference
from natsync.classes.ical import IcsError, records_from_ics, records_to_ics
from natsync.classes.versions import V14_1, V16_1, Version
from natsync.wbxml import E, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

MEETING = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Test//Test//EN\r
BEGIN:VTIMEZONE\r
TZID:Europe/Berlin\r
BEGIN:STANDARD\r
DTSTART:19701025T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:19700329T020000\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r
END:DAYLIGHT\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:weekly-42@remote.test\r
DTSTAMP:20260220T100000Z\r
DTSTART;TZID=Europe/Berlin:20260302T090000\r
DTEND;TZID=Europe/Berlin:20260302T100000\r
RRULE:FREQ=WEEKLY;COUNT=10;BYDAY=MO;WKST=MO\r
EXDATE;TZID=Europe/Berlin:20260330T090000\r
SUMMARY:Team sync\r
LOCATION:Room 4\r
DESCRIPTION:Agenda\\, and numbers\r
CATEGORIES:Work,Weekly\r
SEQUENCE:2\r
ORGANIZER;CN=Bob:mailto:bob@remote.test\r
ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:alice@example.test\r
ATTENDEE;CN=Carol;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT:mailto:carol@remote.test\r
ATTENDEE;CN=Room;CUTYPE=RESOURCE;ROLE=NON-PARTICIPANT:mailto:room@remote.test\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:Team sync\r
TRIGGER:-PT15M\r
END:VALARM\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:weekly-42@remote.test\r
RECURRENCE-ID;TZID=Europe/Berlin:20260316T090000\r
DTSTAMP:20260220T100000Z\r
DTSTART;TZID=Europe/Berlin:20260317T140000\r
DTEND;TZID=Europe/Berlin:20260317T150000\r
SUMMARY:Team sync (moved)\r
LOCATION:Room 4\r
DESCRIPTION:Agenda\\, and numbers\r
CATEGORIES:Work,Weekly\r
SEQUENCE:2\r
ORGANIZER;CN=Bob:mailto:bob@remote.test\r
ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:alice@example.test\r
ATTENDEE;CN=Carol;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT:mailto:carol@remote.test\r
ATTENDEE;CN=Room;CUTYPE=RESOURCE;ROLE=NON-PARTICIPANT:mailto:room@remote.test\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:Team sync\r
TRIGGER:-PT15M\r
END:VALARM\r
END:VEVENT\r
END:VCALENDAR\r
"""


def _through_eas(record: calendar.Record, version: Version) -> calendar.Record:
    """The record sent to a phone and all of it sent back as a Change (the server-side
    SEQUENCE is no EAS element: a Change keeps it; a new Add starts at 0)."""
    children = calendar.encode(record, version, [BodyPreference(type=1)])
    data = encode(E("AirSync", "Sync", E("AirSync", "ApplicationData", *children)))
    assert_libwbxml_decodes(data)
    appdata = decode(data).find("ApplicationData", "AirSync")
    assert appdata is not None
    added = calendar.decode(appdata, version)
    changed = calendar.apply_change(record, appdata, version)
    assert changed == added | {"sequence": record["sequence"]}
    return changed


def test_meeting_is_read_with_recurrence_and_both_exceptions() -> None:
    (record,) = records_from_ics(MEETING)
    assert record["uid"] == "weekly-42@remote.test"
    assert record["tz"] == "Europe/Berlin"
    assert (record["start"], record["end"]) == ("2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z")
    assert record["recurrence"] | {} == dict.fromkeys(calendar.RECURRENCE_KEYS) | {
        "type": 1,
        "interval": 1,
        "occurrences": 10,
        "day_of_week": 2,
        "first_day_of_week": 1,
    }
    assert record["exceptions"] == [
        {
            "original_start": "2026-03-16T08:00:00Z",
            "deleted": False,
            "start": "2026-03-17T13:00:00Z",
            "end": "2026-03-17T14:00:00Z",
            "subject": "Team sync (moved)",
        },
        {"original_start": "2026-03-30T07:00:00Z", "deleted": True},
    ]
    assert record["body"] == "Agenda, and numbers"
    assert record["reminder"] == 15
    assert record["sequence"] == 2
    assert record["meeting_status"] == calendar.MeetingStatus.MEETING_RECEIVED
    assert record["attendees"] == [
        {"email": "alice@example.test", "name": "Alice", "status": 3, "type": 1},
        {"email": "carol@remote.test", "name": "Carol", "status": 5, "type": 2},
        {"email": "room@remote.test", "name": "Room", "status": None, "type": 3},
    ]


@pytest.mark.parametrize("version", [V14_1, V16_1])
def test_round_trip_ics_record_eas_record_ics(version: Version) -> None:
    (first,) = records_from_ics(MEETING)
    back = _through_eas(first, version)
    local = ("tz_blob", "invitations_by_server")  # what the phone's write itself sets
    assert {k: v for k, v in back.items() if k not in local} == {
        k: v for k, v in first.items() if k not in local
    }
    ics = records_to_ics([back])
    (again,) = records_from_ics(ics)
    assert again == back | {"invitations_by_server": False}  # the blob travels too
    parsed = icalendar.Calendar.from_ical(ics)
    events = list(parsed.walk("VEVENT"))
    assert len(events) == 2
    assert [str(e["DTSTART"].params.get("TZID")) for e in events] == ["Europe/Berlin"] * 2
    assert list(parsed.walk("VTIMEZONE"))
    starts = {
        s
        for s, _, _ in calendar.occurrences(
            again, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
        )
    }
    assert datetime(2026, 3, 17, 13, tzinfo=UTC) in starts
    assert datetime(2026, 3, 30, 7, tzinfo=UTC) not in starts
    assert len(starts) == 9


def test_every_record_field_survives_records_to_ics_and_back() -> None:
    record = calendar.empty_record() | {
        "uid": "all-fields",
        "subject": "All",
        "start": "2026-06-01T07:00:00Z",
        "end": "2026-06-01T08:30:00Z",
        "tz": "America/New_York",
        "dtstamp": "2026-05-01T00:00:00Z",
        "location": "HQ",
        "location_detail": {"city": "NYC", "latitude": "40.7"},
        "body": "plain",
        "body_html": "<p>rich</p>",
        "busy_status": 3,
        "sensitivity": 1,
        "reminder": 30,
        "meeting_status": 1,
        "organizer_email": "alice@example.test",
        "organizer_name": "Alice",
        "attendees": [{"email": "bob@remote.test", "name": "Bob", "status": 0, "type": 1}],
        "categories": ["A"],
        "recurrence": dict.fromkeys(calendar.RECURRENCE_KEYS)
        | {
            "type": 6,
            "interval": 1,
            "week_of_month": 5,
            "day_of_week": 32,
            "month_of_year": 11,
            "until": "2030-12-31T23:59:59Z",
            "calendar_type": 1,
            "is_leap_month": 0,
        },
        "exceptions": [{"original_start": "2026-11-27T12:00:00Z", "deleted": True}],
        "response_requested": True,
        "response_type": 1,
        "appointment_reply_time": "2026-05-02T00:00:00Z",
        "disallow_new_time_proposal": True,
        "online_meeting_conf_link": "https://x.test/c",
        "online_meeting_external_link": "https://x.test/e",
        "sequence": 4,
    }
    (back,) = records_from_ics(records_to_ics([record]))
    assert back == record


def test_all_day_event_is_a_date_in_its_zone() -> None:
    ics = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:d1\r\n"
        b"DTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260704\r\nSUMMARY:Holiday\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    (record,) = records_from_ics(ics)
    assert record["all_day"] is True
    assert (record["start"], record["end"]) == ("2026-07-04T00:00:00Z", "2026-07-05T00:00:00Z")
    berlin = record | {
        "tz": "Europe/Berlin",
        "start": "2026-07-03T22:00:00Z",
        "end": "2026-07-04T22:00:00Z",
    }
    out = icalendar.Calendar.from_ical(records_to_ics([berlin]))
    (event,) = out.walk("VEVENT")
    assert event["DTSTART"].dt == datetime(2026, 7, 4).date()
    assert records_from_ics(records_to_ics([berlin]))[0]["start"] == "2026-07-03T22:00:00Z"


def test_a_custom_vtimezone_becomes_a_blob_with_its_rules() -> None:
    ics = MEETING.replace(b"Europe/Berlin", b"Custom Central")
    (record,) = records_from_ics(ics)
    assert record["tz"] is None
    zone = calendar.BlobZone(record["tz_blob"])
    assert datetime(2026, 1, 10, 12, tzinfo=zone).utcoffset() == timedelta(hours=1)
    assert datetime(2026, 7, 10, 12, tzinfo=zone).utcoffset() == timedelta(hours=2)
    assert calendar.zone_for_blob(record["tz_blob"], 2026) == "Europe/Berlin"
    assert record["start"] == "2026-03-02T08:00:00Z"


def test_a_lone_override_names_its_occurrence() -> None:
    lone = MEETING.split(b"END:VEVENT\r\n", 1)[1]
    header = MEETING.split(b"BEGIN:VEVENT", 1)[0]
    (record,) = records_from_ics(header + lone)
    assert record["instance_of"] == "2026-03-16T08:00:00Z"
    assert record["start"] == "2026-03-17T13:00:00Z"


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (b"FREQ=HOURLY", "FREQ=HOURLY"),
        (b"FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO"),
        (b"FREQ=MONTHLY;BYMONTHDAY=1,15", "several"),
        (b"FREQ=WEEKLY;COUNT=5000", "COUNT"),
    ],
)
def test_rules_activesync_cannot_express_are_refused_by_name(rule: bytes, words: str) -> None:
    ics = MEETING.replace(b"FREQ=WEEKLY;COUNT=10;BYDAY=MO;WKST=MO", rule)
    with pytest.raises(IcsError, match=words) as caught:
        records_from_ics(ics)
    assert "weekly-42@remote.test" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a calendar",
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n",
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:2026\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20260101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    ],
)
def test_bad_input_is_an_ics_error(data: bytes) -> None:
    with pytest.raises(IcsError):
        records_from_ics(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, len(MEETING)))
def test_arbitrary_bytes_read_or_raise_ics_error(noise: bytes, cut: int) -> None:
    for data in (noise, MEETING[:cut] + noise + MEETING[cut:], MEETING[:cut]):
        try:
            records = records_from_ics(data)
        except IcsError:
            continue
        records_to_ics(records)
