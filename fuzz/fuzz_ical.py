#!/usr/bin/env python3
"""atheris harness for natsync.classes.ical: any bytes read as calendar records or raise IcsError.

Invitations from the internet reach ``records_from_ics`` unfiltered (iMIP by SMTP), and so do
files people import, so every input must give records or IcsError, never another exception or a
hang; what was read must also export again (``records_to_ics``), go to a phone
(``calendar.encode``) and expand for free/busy.

    python fuzz/fuzz_ical.py -max_total_time=60 fuzz/corpus-fuzz_ical

Given an empty corpus directory it first writes a few seed calendars (a recurring meeting with a
VTIMEZONE, a moved and a deleted occurrence, an all-day event) so the fuzzer starts from real
structure.
"""

from __future__ import annotations

from datetime import UTC, datetime

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.classes import calendar
    from natsync.classes.ical import IcsError, records_from_ics, records_to_ics
    from natsync.eas.versions import V12_1, V16_1

BEGIN = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)

SEEDS = [
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nMETHOD:REQUEST\r\nBEGIN:VTIMEZONE\r\n"
    b"TZID:Zone\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\n"
    b"TZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
    b"BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"
    b"RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
    b"BEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Zone:20260302T090000\r\n"
    b"DTEND;TZID=Zone:20260302T100000\r\nRRULE:FREQ=WEEKLY;COUNT=10;BYDAY=MO\r\n"
    b"EXDATE;TZID=Zone:20260330T090000\r\nSUMMARY:Sync\r\nORGANIZER;CN=B:mailto:b@x.test\r\n"
    b"ATTENDEE;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:a@x.test\r\n"
    b"BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\nEND:VEVENT\r\n"
    b"BEGIN:VEVENT\r\nUID:u1\r\nRECURRENCE-ID;TZID=Zone:20260316T090000\r\n"
    b"DTSTART;TZID=Zone:20260317T140000\r\nDTEND;TZID=Zone:20260317T150000\r\nSUMMARY:Moved\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n",
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:d\r\n"
    b"DTSTART;VALUE=DATE:20260704\r\nRRULE:FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=4\r\n"
    b'X-NATSYNC-EAS:{"meeting_status":1}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n',
    b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:m\r\nDTSTART:20260101T100000Z\r\n"
    b"DURATION:PT1H\r\nRRULE:FREQ=MONTHLY;BYDAY=-1FR\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
]


def test_one_input(data: bytes) -> None:
    try:
        records = records_from_ics(data)
    except IcsError:
        return
    again = records_from_ics(records_to_ics(records))
    assert len(again) == len(records)
    for record in records:
        calendar.encode(record, V16_1, [])
        calendar.encode(record, V12_1, [])
        calendar.in_window(record, BEGIN)
    calendar.busy_intervals(records, BEGIN, END)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".ics")
