"""The Calendar class (MS-ASCAL) as a class codec, and the time arithmetic other parts need.

A calendar item crosses the wire as ``AirSync:ApplicationData`` with Calendar children (MS-ASCAL
2.2.2), times in the compact form ``20261125T094953Z`` (MS-ASDTYPE 2.7.2), its time zone as the
base64 of a Windows ``TIME_ZONE_INFORMATION`` (MS-ASDTYPE 2.7.6) and, from 16.0 on, the location
as ``airsyncbase:Location`` and exceptions named by ``airsyncbase:InstanceId``. ``CODEC`` turns
that into the record below and back; ``natsync.classes.ical`` maps the same record to RFC 5545.

The record (JSON; keys marked * are read by other modules and never change meaning):

==========================  =====================================================================
``uid`` *                   str: the event's id (Calendar:UID; 16.x ClientUid; iCalendar UID)
``subject`` *               str
``start``, ``end`` *        str, UTC ``YYYY-MM-DDTHH:MM:SSZ``; for a series, the first occurrence.
                            An all-day event runs from local midnight to local midnight (in UTC)
``all_day`` *               bool
``busy_status`` *           int, :class:`BusyStatus`
``tz``                      str | None: IANA zone name when the zone is known to zoneinfo
``tz_blob``                 str | None: the TimeZone blob as the client sent it (kept verbatim,
                            the only zone when no IANA zone has its rules)
``dtstamp``                 str | None (UTC text)
``location``                str | None (the display name)
``location_detail``         dict | None: 16.x airsyncbase:Location parts (``annotation``,
                            ``street``, ``city``, ``state``, ``country``, ``postal_code``,
                            ``latitude``, ``longitude``, ``accuracy``, ``altitude``,
                            ``altitude_accuracy``, ``location_uri``), all str
``body``                    str | None: plain text
``body_html``               str | None: HTML, when the body came as HTML
``sensitivity``             int, :class:`Sensitivity`
``reminder``                int | None: minutes before the start
``meeting_status``          int, :class:`MeetingStatus` (0: an appointment, not a meeting)
``organizer_email``,        str | None
``organizer_name``
``attendees``               list of {``email``: str, ``name``: str, ``status``: int | None
                            (:class:`AttendeeStatus`), ``type``: int | None (:class:`AttendeeType`)}
``categories``              list[str]
``recurrence``              dict | None: {``type`` (:class:`RecurrenceType`), ``interval``,
                            ``occurrences``, ``until`` (UTC text), ``week_of_month``,
                            ``day_of_week`` (bit mask, :class:`DayOfWeek`), ``day_of_month``,
                            ``month_of_year``, ``first_day_of_week``, ``calendar_type``,
                            ``is_leap_month``}: absent parts are None
``exceptions``              list of {``original_start``: UTC text of the replaced occurrence,
                            ``deleted``: bool, and any of ``subject``, ``start``, ``end``,
                            ``all_day``, ``busy_status``, ``location``, ``body``, ``body_html``,
                            ``sensitivity``, ``reminder``, ``meeting_status``, ``categories``,
                            ``attendees``, ``dtstamp``, ``response_type``,
                            ``appointment_reply_time`` that differ from the series}
``response_requested``      bool | None
``response_type``           int | None, :class:`ResponseType` (the user's own answer)
``appointment_reply_time``  str | None (UTC text)
``disallow_new_time_proposal``  bool | None
``online_meeting_conf_link``, ``online_meeting_external_link``  str | None
``sequence``                int: the iCalendar SEQUENCE, raised when a meeting changes (iMIP)
``invitations_by_server``   bool: the last phone write came in 16.x, where the server mails
                            the invitations of a meeting the user organizes (MS-ASCAL 3.1.5);
                            older phones send their own by SendMail
==========================  =====================================================================

Changes (MS-ASCMD 2.2.3.11): Calendar ghosts absent properties, so a Change sets what it carries
and keeps the rest; an empty container (``<Attendees/>``, ``<Categories/>``, ``<Recurrence/>``)
clears. A 16.x Change that moves a series' StartTime drops its exceptions (MS-ASCAL
2.2.2.42). A 16.x Change carrying ``airsyncbase:InstanceId`` changes that one occurrence (an
exception), and :func:`delete_occurrence` is the 16.x Sync Delete with an InstanceId.

Time (``in_window``, ``busy_intervals``): a series is expanded in its own zone, so a weekly
09:00 meeting stays at 09:00 local across daylight-saving changes. Non-Gregorian CalendarType
values are kept and sent back, but expanded as Gregorian (see docs/calendar.md).
"""

from __future__ import annotations

import base64
import binascii
import calendar as _gregorian
import enum
import functools
import struct
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from dateutil import rrule as _rrule  # type: ignore[import-untyped]

from natsync.classes.body import (
    MAX_CATEGORIES,
    BodyPreference,
    BodyType,
    build_body,
    parse_eas_date,
)
from natsync.classes.codec import ClassCodec, PimError, Record
from natsync.classes.versions import V14_0, V14_1, V16_0, Version
from natsync.mime import html_to_text
from natsync.mime.errors import EmailChangeError
from natsync.store.api import FolderType
from natsync.wbxml import Element

NS = "Calendar"
BASE = "AirSyncBase"

#: Attendees one item may carry: Exchange's own limit for a meeting is 500 recipients.
MAX_ATTENDEES = 500
#: Exceptions one series may carry: a daily series of nearly three years, every day changed.
MAX_EXCEPTIONS = 1000
#: Characters of a subject, location or name; more is a broken or hostile client.
MAX_TEXT_CHARS = 4096
#: MS-ASCAL 2.2.2.46 / 2.2.2.13: UID and ClientUid are at most 300 characters.
MAX_UID_CHARS = 300
#: Characters of a body; an invitation with a long agenda fits, a file does not.
MAX_BODY_CHARS = 2 * 1024 * 1024
#: MS-ASCAL 2.2.2.38 Reminder is an unsignedInt of minutes.
MAX_REMINDER = 0xFFFFFFFF
#: MS-ASCAL 2.2.2.29 / 2.2.2.31: Interval and Occurrences are at most 999.
MAX_INTERVAL = 999
MAX_OCCURRENCES = 999
#: Occurrences one expansion returns at most (free/busy, sync window): a range a year long
#: holds 366 of a daily series; more is a query too wide to answer usefully.
MAX_EXPANDED = 10_000
#: Occurrences of a series walked at most to reach a range: ActiveSync's shortest period is a
#: day, so this reaches 270 years past the first one and bounds what one endless series costs.
MAX_SCANNED = 100_000
#: Years a calendar time may lie in: from the FILETIME epoch to far beyond any plan, leaving
#: room for zone offsets and recurrence arithmetic before datetime's own limits.
MIN_YEAR = 1601
MAX_YEAR = 4500
#: Size of a TIME_ZONE_INFORMATION structure (MS-ASDTYPE 2.7.6): Bias, StandardName[32],
#: StandardDate, StandardBias, DaylightName[32], DaylightDate, DaylightBias.
TZ_BLOB_SIZE = 172
_TZ_STRUCT = struct.Struct("<i64s8Hi64s8Hi")
#: Zones a TimeZone blob is matched against when its name is not an IANA zone name: one per
#: distinct rule set people commonly use; anything else keeps the blob as the zone.
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "Europe/Moscow",
    "Europe/Istanbul",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "America/Halifax",
    "America/St_Johns",
    "America/Sao_Paulo",
    "America/Mexico_City",
    "America/Bogota",
    "Pacific/Honolulu",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Asia/Dubai",
    "Asia/Singapore",
    "Asia/Jakarta",
    "Asia/Karachi",
    "Asia/Tehran",
    "Asia/Jerusalem",
    "Australia/Sydney",
    "Australia/Brisbane",
    "Australia/Adelaide",
    "Australia/Perth",
    "Pacific/Auckland",
    "Africa/Johannesburg",
    "Africa/Lagos",
)


class BusyStatus(enum.IntEnum):
    """MS-ASCAL 2.2.2.10 BusyStatus."""

    FREE = 0
    TENTATIVE = 1
    BUSY = 2
    OUT_OF_OFFICE = 3
    WORKING_ELSEWHERE = 4


class Sensitivity(enum.IntEnum):
    """MS-ASCAL 2.2.2.41 Sensitivity."""

    NORMAL = 0
    PERSONAL = 1
    PRIVATE = 2
    CONFIDENTIAL = 3


class MeetingStatus(enum.IntEnum):
    """MS-ASCAL 2.2.2.28 MeetingStatus (bit 0: a meeting, bit 1: received, bit 2: cancelled;
    9-15 are the same with the 'meeting' bit 3 set)."""

    APPOINTMENT = 0
    MEETING_ORGANIZER = 1
    MEETING_RECEIVED = 3
    CANCELED_ORGANIZER = 5
    CANCELED_RECEIVED = 7
    MEETING_ORGANIZER_ALT = 9
    MEETING_RECEIVED_ALT = 11
    CANCELED_ORGANIZER_ALT = 13
    CANCELED_RECEIVED_ALT = 15


#: MeetingStatus values of a cancelled meeting: they take no time in free/busy.
CANCELLED_STATUSES = frozenset({5, 7, 13, 15})


class AttendeeStatus(enum.IntEnum):
    """MS-ASCAL 2.2.2.5 AttendeeStatus."""

    UNKNOWN = 0
    TENTATIVE = 2
    ACCEPTED = 3
    DECLINED = 4
    NOT_RESPONDED = 5


class AttendeeType(enum.IntEnum):
    """MS-ASCAL 2.2.2.6 AttendeeType."""

    REQUIRED = 1
    OPTIONAL = 2
    RESOURCE = 3


class ResponseType(enum.IntEnum):
    """MS-ASCAL 2.2.2.39 ResponseType."""

    NONE = 0
    ORGANIZER = 1
    TENTATIVE = 2
    ACCEPTED = 3
    DECLINED = 4
    NOT_RESPONDED = 5


class RecurrenceType(enum.IntEnum):
    """MS-ASCAL 2.2.2.43 Type (of a Recurrence); 4 is not defined."""

    DAILY = 0
    WEEKLY = 1
    MONTHLY = 2
    MONTHLY_NTH = 3
    YEARLY = 5
    YEARLY_NTH = 6


class DayOfWeek(enum.IntFlag):
    """MS-ASCAL 2.2.2.16 DayOfWeek bits; all seven with WeekOfMonth 5 is 'the last day'."""

    SUNDAY = 1
    MONDAY = 2
    TUESDAY = 4
    WEDNESDAY = 8
    THURSDAY = 16
    FRIDAY = 32
    SATURDAY = 64


_ALL_DAYS = 127
#: rrule weekday per DayOfWeek bit, Sunday first (the bit order).
_RR_DAYS = (_rrule.SU, _rrule.MO, _rrule.TU, _rrule.WE, _rrule.TH, _rrule.FR, _rrule.SA)


# -- values ---------------------------------------------------------------------------------------


def utc_text(moment: datetime) -> str:
    """A record's time text: ``2026-11-25T09:49:53Z``.

    The year is written by hand here and below, not with strftime: glibc's %Y does not pad
    years below 1000 ("607-02-24"), which then fail to parse back (found by fuzz/fuzz_ical.py)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}Z"


def parse_utc(text: str) -> datetime:
    """A record's (or an EAS) time text as an aware UTC datetime; PimError when it is not one."""
    try:
        return parse_eas_date(text)
    except EmailChangeError as exc:
        raise PimError(f"not a date-time: {text[:40]!r}; send the compact form") from exc


def compact(text: str) -> str:
    """A record's time text in the compact EAS form (MS-ASDTYPE 2.7.2): ``20261125T094953Z``."""
    moment = parse_utc(text)
    return f"{moment.year:04d}{moment:%m%dT%H%M%S}Z"


def instance_id(text: str) -> str:
    """A record's time text as an airsyncbase:InstanceId (MS-ASDTYPE 2.3 dateTime)."""
    moment = parse_utc(text)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.000Z"


def _int(element: Element, name: str, low: int, high: int) -> int:
    text = element.text().strip()
    # len(): int() of thousands of digits is refused (and slow); every bound here is far less
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not low <= int(text) <= high:
        raise PimError(f"Calendar {name} must be a number from {low} to {high}, not {text[:20]!r}")
    return int(text)


def _choice(element: Element, name: str, allowed: Iterable[int]) -> int:
    values = sorted(allowed)
    value = _int(element, name, values[0], values[-1])
    if value not in values:
        raise PimError(f"Calendar {name} must be one of {values}, not {value}")
    return value


def _bool(element: Element, name: str) -> bool:
    return _int(element, name, 0, 1) == 1


def _text(element: Element, name: str, limit: int = MAX_TEXT_CHARS) -> str:
    value = element.text()
    if len(value) > limit:
        raise PimError(f"Calendar {name} is longer than {limit} characters")
    return value


def _time(element: Element, name: str) -> str:
    text = element.text().strip()
    try:
        moment = parse_eas_date(text)
    except EmailChangeError as exc:
        raise PimError(f"Calendar {name} is not a date-time: {text[:40]!r}") from exc
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise PimError(f"Calendar {name} must lie in the years {MIN_YEAR} to {MAX_YEAR}")
    return utc_text(moment)


# -- time zones (MS-ASDTYPE 2.7.6) -----------------------------------------------------------------


class _Rules:
    """A TIME_ZONE_INFORMATION: offsets in minutes east of UTC, transitions as SYSTEMTIMEs."""

    __slots__ = ("bias", "daylight", "daylight_bias", "name", "standard", "standard_bias")

    def __init__(
        self,
        bias: int,
        name: str,
        standard: tuple[int, ...],
        standard_bias: int,
        daylight: tuple[int, ...],
        daylight_bias: int,
    ) -> None:
        self.bias = bias
        self.name = name
        self.standard = standard
        self.standard_bias = standard_bias
        self.daylight = daylight
        self.daylight_bias = daylight_bias

    @property
    def has_dst(self) -> bool:
        return self.standard[1] != 0 and self.daylight[1] != 0

    def key(self) -> tuple[object, ...]:
        """What two zones must share to be the same zone (names aside)."""
        if not self.has_dst:
            return (self.bias + self.standard_bias,)
        return (self.bias, self.standard, self.standard_bias, self.daylight, self.daylight_bias)


def _unpack(blob: str) -> _Rules:
    try:
        raw = base64.b64decode(blob.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PimError("Calendar TimeZone is not base64; send a TIME_ZONE_INFORMATION") from exc
    if len(raw) != TZ_BLOB_SIZE:
        raise PimError(f"Calendar TimeZone must be {TZ_BLOB_SIZE} bytes, not {len(raw)}")
    fields = _TZ_STRUCT.unpack(raw)
    bias, std_name = fields[0], fields[1]
    standard, std_bias = tuple(fields[2:10]), fields[10]
    daylight, dst_bias = tuple(fields[12:20]), fields[20]
    for when in (standard, daylight):
        month, day_of_week, day, hour, minute = when[1], when[2], when[3], when[4], when[5]
        if when[1] != 0 and not (
            month <= 12 and day_of_week <= 6 and 1 <= day <= 31 and hour <= 23 and minute <= 59
        ):
            raise PimError("Calendar TimeZone has an impossible transition date")
    if max(abs(bias), abs(std_bias), abs(dst_bias)) > 24 * 60:
        raise PimError("Calendar TimeZone has an offset beyond a day")
    name = std_name.decode("utf-16-le", "replace").split("\x00", 1)[0]
    return _Rules(bias, name, standard, std_bias, daylight, dst_bias)


def _pack(rules: _Rules) -> str:
    name = rules.name[:31].encode("utf-16-le").ljust(64, b"\x00")
    raw = _TZ_STRUCT.pack(
        rules.bias,
        name,
        *rules.standard,
        rules.standard_bias,
        name,
        *rules.daylight,
        rules.daylight_bias,
    )
    return base64.b64encode(raw).decode("ascii")


def _transition(year: int, when: tuple[int, ...]) -> datetime:
    """The local wall time of a SYSTEMTIME transition in *year* (day form when wYear is 0)."""
    month, day_of_week, day, hour, minute = when[1], when[2], when[3], when[4], when[5]
    if when[0] != 0:  # an absolute date: taken as the same date every year
        last = _gregorian.monthrange(year, month)[1]
        return datetime(year, month, min(day, last), hour, minute)
    first = date(year, month, 1)
    offset = (day_of_week - (first.isoweekday() % 7)) % 7
    last = _gregorian.monthrange(year, month)[1]
    dom = 1 + offset + 7 * (min(day, 5) - 1)
    while dom > last:
        dom -= 7
    return datetime(year, month, dom, hour, minute)


class BlobZone(tzinfo):
    """A tzinfo that follows a TimeZone blob's rules (the same rule every year)."""

    def __init__(self, blob: str) -> None:
        self._rules = _unpack(blob)
        r = self._rules
        self._std = timedelta(minutes=-(r.bias + r.standard_bias))
        self._dst = timedelta(minutes=-(r.bias + r.daylight_bias))

    def _in_dst_local(self, local: datetime) -> bool:
        if not self._rules.has_dst:
            return False
        # A wall time in the skipped hour reads as standard time and one in the repeated hour
        # as daylight time, as zoneinfo does with fold=0.
        start = _transition(local.year, self._rules.daylight) + (self._dst - self._std)
        end = _transition(local.year, self._rules.standard)
        naive = local.replace(tzinfo=None, fold=0)
        if local.fold and end - (self._dst - self._std) <= naive < end:
            return False  # the second pass through the repeated hour
        if start < end:
            return start <= naive < end
        return naive >= start or naive < end

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is None:
            return self._std
        return self._dst if self._in_dst_local(dt) else self._std

    def dst(self, dt: datetime | None) -> timedelta:
        return self.utcoffset(dt) - self._std

    def tzname(self, dt: datetime | None) -> str:
        return self._rules.name or "custom"

    def fromutc(self, dt: datetime) -> datetime:
        naive = dt.replace(tzinfo=None)
        if self._rules.has_dst:
            start = _transition(naive.year, self._rules.daylight) - self._std
            end = _transition(naive.year, self._rules.standard) - self._dst
            dst = start <= naive < end if start < end else naive >= start or naive < end
        else:
            dst = False
        local = naive + (self._dst if dst else self._std)
        if not dst and self._rules.has_dst:
            end_local = _transition(local.year, self._rules.standard)
            if end_local - (self._dst - self._std) <= local < end_local:
                return local.replace(tzinfo=self, fold=1)
        return local.replace(tzinfo=self)


def _as_systemtime(local: datetime) -> tuple[int, ...]:
    last = _gregorian.monthrange(local.year, local.month)[1]
    week = 5 if local.day + 7 > last else (local.day - 1) // 7 + 1
    return (0, local.month, local.isoweekday() % 7, week, local.hour, local.minute, 0, 0)


def _offset_minutes(zone: tzinfo, moment: datetime) -> int:
    offset = moment.astimezone(zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds() // 60)


def _find_change(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    """The first minute (UTC) with the offset of *after*, between *before* and *after*."""
    target = _offset_minutes(zone, after)
    low, high = before, after
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) / 2
        middle = middle.replace(second=0, microsecond=0)
        if middle <= low:
            break
        if _offset_minutes(zone, middle) == target:
            high = middle
        else:
            low = middle
    return high


def rules_of_zone(zone: tzinfo, year: int, name: str) -> _Rules:
    """The TIME_ZONE_INFORMATION equivalent of *zone* in *year* (its first two changes)."""
    moment = datetime(year, 1, 1, tzinfo=UTC)
    changes: list[tuple[datetime, int, int]] = []
    previous = _offset_minutes(zone, moment)
    for _ in range(366):
        following = moment + timedelta(days=1)
        offset = _offset_minutes(zone, following)
        if offset != previous:
            changes.append((_find_change(zone, moment, following), previous, offset))
            previous = offset
        moment = following
    if len(changes) < 2:
        final = _offset_minutes(zone, datetime(year, 12, 31, 12, tzinfo=UTC))
        none = (0,) * 8
        return _Rules(-final, name, none, 0, none, 0)
    (first, before_first, after_first), (second, _, _) = changes[0], changes[1]
    std, dst = min(before_first, after_first), max(before_first, after_first)
    if after_first > before_first:  # first change starts daylight time (northern hemisphere)
        dst_start, dst_end = first, second
    else:
        dst_start, dst_end = second, first
    to_dst = _as_systemtime((dst_start + timedelta(minutes=std)).replace(tzinfo=None))
    to_std = _as_systemtime((dst_end + timedelta(minutes=dst)).replace(tzinfo=None))
    return _Rules(-std, name, to_std, 0, to_dst, -(dst - std))


@functools.lru_cache(maxsize=512)
def blob_for_zone(name: str, year: int) -> str:
    """The TimeZone blob of IANA zone *name* for events in *year* (the name is kept inside)."""
    zone: tzinfo = UTC if name == "UTC" else zoneinfo.ZoneInfo(name)
    return _pack(rules_of_zone(zone, year, name))


def blob_for_tzinfo(zone: tzinfo, year: int, name: str) -> str:
    """The TimeZone blob of any tzinfo (an iCalendar VTIMEZONE) for events in *year*."""
    return _pack(rules_of_zone(zone, year, name))


@functools.lru_cache(maxsize=4096)
def _zone_exists(name: str) -> bool:
    if name == "UTC":
        return True
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def zone_for_blob(blob: str, year: int) -> str | None:
    """The IANA zone with *blob*'s rules in *year*: the one it names, or a common one; None
    when no zone matches (the blob then is the zone)."""
    rules = _unpack(blob)
    wanted = rules.key()
    names = [rules.name] if _zone_exists(rules.name) else []
    for name in [*names, *COMMON_ZONES]:
        if _unpack(blob_for_zone(name, year)).key() == wanted:
            return name
    return None


def zone_of(record: Mapping[str, Any]) -> tzinfo:
    """The tzinfo a record's local times are in: its IANA zone, its blob's rules, or UTC."""
    name = record.get("tz")
    if isinstance(name, str) and _zone_exists(name):
        return UTC if name == "UTC" else zoneinfo.ZoneInfo(name)
    blob = record.get("tz_blob")
    if isinstance(blob, str):
        try:
            return BlobZone(blob)
        except PimError:
            return UTC
    return UTC


def _year(record: Mapping[str, Any]) -> int:
    start = record.get("start")
    try:
        return parse_utc(start).year if isinstance(start, str) else 2000
    except PimError:
        return 2000


def timezone_blob(record: Mapping[str, Any]) -> str:
    """The TimeZone element's value for *record*."""
    blob = record.get("tz_blob")
    if isinstance(blob, str):
        return blob
    name = record.get("tz")
    if isinstance(name, str) and _zone_exists(name):
        return blob_for_zone(name, _year(record))
    return blob_for_zone("UTC", 2000)


# -- decoding (client -> record) ------------------------------------------------------------------

_LOCATION_PARTS = {
    "Annotation": "annotation",
    "Street": "street",
    "City": "city",
    "State": "state",
    "Country": "country",
    "PostalCode": "postal_code",
    "Latitude": "latitude",
    "Longitude": "longitude",
    "Accuracy": "accuracy",
    "Altitude": "altitude",
    "AltitudeAccuracy": "altitude_accuracy",
    "LocationUri": "location_uri",
}

_RECURRENCE_PARTS: dict[str, tuple[str, int, int]] = {
    "Interval": ("interval", 1, MAX_INTERVAL),
    "Occurrences": ("occurrences", 1, MAX_OCCURRENCES),
    "WeekOfMonth": ("week_of_month", 1, 5),
    "DayOfWeek": ("day_of_week", 1, _ALL_DAYS),
    "DayOfMonth": ("day_of_month", 1, 31),
    "MonthOfYear": ("month_of_year", 1, 12),
    "FirstDayOfWeek": ("first_day_of_week", 0, 6),
    "CalendarType": ("calendar_type", 0, 23),
    "IsLeapMonth": ("is_leap_month", 0, 1),
}

RECURRENCE_KEYS = ("type", "until", *(key for key, _, _ in _RECURRENCE_PARTS.values()))


def _attendees(element: Element) -> list[dict[str, Any]]:
    people = element.findall("Attendee", NS)
    if len(people) > MAX_ATTENDEES:
        raise PimError(f"more than {MAX_ATTENDEES} attendees; split the meeting")
    out: list[dict[str, Any]] = []
    for person in people:
        entry: dict[str, Any] = {"email": "", "name": "", "status": None, "type": None}
        for child in person.children:
            if child.namespace != NS:
                continue
            if child.tag == "Email":
                entry["email"] = _text(child, "Attendee Email").strip()
            elif child.tag == "Name":
                entry["name"] = _text(child, "Attendee Name")
            elif child.tag == "AttendeeStatus":
                entry["status"] = _choice(
                    child, "AttendeeStatus", (s.value for s in AttendeeStatus)
                )
            elif child.tag == "AttendeeType":
                entry["type"] = _int(child, "AttendeeType", 1, 3)
        if not entry["email"] and not entry["name"]:
            raise PimError("an Attendee needs an Email or a Name")
        out.append(entry)
    return out


def _categories(element: Element) -> list[str]:
    names = [c.text().strip() for c in element.findall("Category", NS)]
    if len(names) > MAX_CATEGORIES:
        raise PimError(f"more than {MAX_CATEGORIES} categories")
    return list(dict.fromkeys(n[:255] for n in names if n))


def _body(element: Element) -> tuple[str | None, str | None] | None:
    """(plain, html) of an airsyncbase:Body, or None when it carries nothing we can keep."""
    data = element.child_text("Data", BASE)
    kind = (element.child_text("Type", BASE) or "1").strip()
    if data is None:
        return None
    if len(data) > MAX_BODY_CHARS:
        raise PimError(f"the body is longer than {MAX_BODY_CHARS} characters")
    if kind == str(BodyType.HTML):
        return html_to_text(data), data
    if kind == str(BodyType.PLAIN):
        return data, None
    return None  # RTF or MIME: nothing a calendar item keeps; the old body stays


def _location(element: Element) -> tuple[str, dict[str, str] | None]:
    if not element.children:
        return _text(element, "Location"), None
    detail: dict[str, str] = {}
    name = ""
    for child in element.children:
        if child.namespace != BASE:
            continue
        if child.tag == "DisplayName":
            name = _text(child, "Location DisplayName")
        elif child.tag in _LOCATION_PARTS:
            detail[_LOCATION_PARTS[child.tag]] = _text(child, f"Location {child.tag}")
    return name, detail or None


def _recurrence(element: Element) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(RECURRENCE_KEYS)
    kind = element.find("Type", NS)
    if kind is None:
        raise PimError("a Recurrence needs a Type (0 daily .. 6 yearly on the nth day)")
    out["type"] = _choice(kind, "Recurrence Type", (t.value for t in RecurrenceType))
    for child in element.children:
        if child.namespace != NS:
            continue
        if child.tag == "Until":
            out["until"] = _time(child, "Until")
        elif child.tag in _RECURRENCE_PARTS:
            key, low, high = _RECURRENCE_PARTS[child.tag]
            out[key] = _int(child, child.tag, low, high)
    return out


#: Properties a top-level item and an Exception share: tag -> (record key, reader).
def _read_common(child: Element, into: dict[str, Any]) -> bool:
    """Read one property an item and an Exception share; False when *child* is not one."""
    tag, ns = child.tag, child.namespace
    if ns == NS:
        if tag == "Subject":
            into["subject"] = _text(child, "Subject")
        elif tag == "StartTime":
            into["start"] = _time(child, "StartTime")
        elif tag == "EndTime":
            into["end"] = _time(child, "EndTime")
        elif tag == "AllDayEvent":
            into["all_day"] = _bool(child, "AllDayEvent")
        elif tag == "BusyStatus":
            into["busy_status"] = _int(child, "BusyStatus", 0, 4)
        elif tag == "Location":
            into["location"], into["location_detail"] = _location(child)
        elif tag == "Sensitivity":
            into["sensitivity"] = _int(child, "Sensitivity", 0, 3)
        elif tag == "Reminder":
            text = child.text().strip()
            into["reminder"] = None if not text else _int(child, "Reminder", 0, MAX_REMINDER)
        elif tag == "MeetingStatus":
            into["meeting_status"] = _choice(
                child, "MeetingStatus", (m.value for m in MeetingStatus)
            )
        elif tag == "Categories":
            into["categories"] = _categories(child)
        elif tag == "Attendees":
            into["attendees"] = _attendees(child)
        elif tag == "DtStamp":
            into["dtstamp"] = _time(child, "DtStamp")
        elif tag == "ResponseType":
            into["response_type"] = _int(child, "ResponseType", 0, 5)
        elif tag == "AppointmentReplyTime":
            into["appointment_reply_time"] = _time(child, "AppointmentReplyTime")
        else:
            return False
        return True
    if ns == BASE and tag == "Body":
        body = _body(child)
        if body is not None:
            into["body"], into["body_html"] = body
        return True
    if ns == BASE and tag == "Location":
        into["location"], into["location_detail"] = _location(child)
        return True
    return False


def _exception(element: Element) -> dict[str, Any]:
    out: dict[str, Any] = {"original_start": None, "deleted": False}
    for child in element.children:
        if child.namespace == NS and child.tag == "Deleted":
            out["deleted"] = _bool(child, "Deleted")
        elif child.namespace == NS and child.tag == "ExceptionStartTime":
            out["original_start"] = _time(child, "ExceptionStartTime")
        elif child.namespace == BASE and child.tag == "InstanceId":
            out["original_start"] = _time(child, "InstanceId")
        elif child.namespace == NS and child.tag == "Attendees":
            out["attendees"] = _attendees(child)
        else:
            _read_common(child, out)
    if out["original_start"] is None:
        raise PimError("an Exception needs an ExceptionStartTime (16.x: an InstanceId)")
    return out


def _exceptions(element: Element) -> list[dict[str, Any]]:
    items = element.findall("Exception", NS)
    if len(items) > MAX_EXCEPTIONS:
        raise PimError(f"more than {MAX_EXCEPTIONS} exceptions; end the series and start a new one")
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        exc = _exception(item)
        merged[exc["original_start"]] = exc
    return sorted(merged.values(), key=lambda e: str(e["original_start"]))


def _read_item(appdata: Element, into: dict[str, Any]) -> None:
    """Every top-level property *appdata* carries, into *into* (absent ones untouched)."""
    for child in appdata.children:
        if _read_common(child, into):
            continue
        tag, ns = child.tag, child.namespace
        if ns != NS:
            continue
        if tag == "TimeZone":
            text = child.text().strip()
            if text:
                _unpack(text)  # refuse a damaged blob now, not when the item is read
                into["tz_blob"] = text
                into["tz"] = None  # found again below, once the start is known
        elif tag == "OrganizerEmail":
            into["organizer_email"] = _text(child, "OrganizerEmail").strip() or None
        elif tag == "OrganizerName":
            into["organizer_name"] = _text(child, "OrganizerName") or None
        elif tag in ("UID", "ClientUid"):
            uid = child.text().strip()
            if len(uid) > MAX_UID_CHARS:
                raise PimError(f"Calendar {tag} is longer than {MAX_UID_CHARS} characters")
            if uid and (tag == "UID" or not into.get("uid")):
                into["uid"] = uid
        elif tag == "Recurrence":
            # An empty Recurrence makes the series a single event again.
            into["recurrence"] = _recurrence(child) if child.children else None
            if not child.children:
                into["exceptions"] = []
        elif tag == "Exceptions":
            into["exceptions"] = _exceptions(child)
        elif tag == "ResponseRequested":
            into["response_requested"] = _bool(child, "ResponseRequested")
        elif tag == "DisallowNewTimeProposal":
            into["disallow_new_time_proposal"] = _bool(child, "DisallowNewTimeProposal")
        elif tag == "OnlineMeetingConfLink":
            into["online_meeting_conf_link"] = _text(child, tag) or None
        elif tag == "OnlineMeetingExternalLink":
            into["online_meeting_external_link"] = _text(child, tag) or None


def empty_record() -> Record:
    """A record with every key at its 'not set' value."""
    return {
        "uid": "",
        "subject": "",
        "start": None,
        "end": None,
        "all_day": False,
        "busy_status": int(BusyStatus.BUSY),
        "tz": None,
        "tz_blob": None,
        "dtstamp": None,
        "location": None,
        "location_detail": None,
        "body": None,
        "body_html": None,
        "sensitivity": int(Sensitivity.NORMAL),
        "reminder": None,
        "meeting_status": int(MeetingStatus.APPOINTMENT),
        "organizer_email": None,
        "organizer_name": None,
        "attendees": [],
        "categories": [],
        "recurrence": None,
        "exceptions": [],
        "response_requested": None,
        "response_type": None,
        "appointment_reply_time": None,
        "disallow_new_time_proposal": None,
        "online_meeting_conf_link": None,
        "online_meeting_external_link": None,
        "sequence": 0,
        "invitations_by_server": False,
    }


def _finish(record: Record) -> Record:
    """Fill what a client may leave out (MS-ASCAL 3.2.4.4: missing times) and check order. A
    missing UID stays empty: the command that stores the item gives it one from its source of
    randomness (natsync.eas.context.new_uid), so a command's answer is reproducible."""
    given_start, given_end = record.get("start"), record.get("end")
    if given_start is None and given_end is None:
        raise PimError("a calendar item needs a StartTime or an EndTime")
    start = str(given_start if given_start is not None else given_end)
    end: str
    if given_end is None:
        length = timedelta(days=1) if record.get("all_day") else timedelta(0)
        end = utc_text(parse_utc(start) + length)
    else:
        end = str(given_end)
    if parse_utc(end) < parse_utc(start):
        raise PimError("the EndTime is before the StartTime; send them in order")
    record["start"], record["end"] = start, end
    blob = record.get("tz_blob")
    if isinstance(blob, str) and record.get("tz") is None:
        record["tz"] = zone_for_blob(blob, parse_utc(start).year)
    for exc in record.get("exceptions") or []:
        if "start" in exc and "end" in exc and parse_utc(exc["end"]) < parse_utc(exc["start"]):
            raise PimError("an Exception's EndTime is before its StartTime")
    return record


def decode(appdata: Element, version: Version) -> Record:
    """A client's Add: the whole record (MS-ASCAL 2.2.2)."""
    record = empty_record()
    _read_item(appdata, record)
    record["invitations_by_server"] = version >= V16_0
    return _finish(record)


def _apply_instance(record: Record, original: str, appdata: Element) -> Record:
    """A 16.x Change of one occurrence: its exception gets the properties sent."""
    exceptions = [dict(e) for e in record.get("exceptions") or []]
    current = next((e for e in exceptions if e.get("original_start") == original), None)
    if current is None:
        if len(exceptions) >= MAX_EXCEPTIONS:
            raise PimError(f"more than {MAX_EXCEPTIONS} exceptions")
        current = {"original_start": original, "deleted": False}
        exceptions.append(current)
    for child in appdata.children:
        if child.namespace == NS and child.tag == "Deleted":
            current["deleted"] = _bool(child, "Deleted")
        elif not (child.namespace == BASE and child.tag == "InstanceId"):
            _read_common(child, current)
    record["exceptions"] = sorted(exceptions, key=lambda e: str(e["original_start"]))
    return record


def apply_change(old: Mapping[str, Any], appdata: Element, version: Version) -> Record:
    """A client's Change: the old record with what *appdata* carries (ghosting: absent kept)."""
    record = {**empty_record(), **dict(old)}
    record["exceptions"] = [dict(e) for e in record.get("exceptions") or []]
    record["invitations_by_server"] = version >= V16_0
    instance = appdata.find("InstanceId", BASE)
    if instance is not None:
        return _finish(_apply_instance(record, _time(instance, "InstanceId"), appdata))
    uid = record.get("uid")
    _read_item(appdata, record)
    record["uid"] = uid or record.get("uid")  # the series keeps its UID
    moved = record.get("start") != old.get("start")
    if (
        version >= V16_0
        and moved
        and old.get("recurrence")
        and appdata.find("Exceptions", NS) is None
    ):
        record["exceptions"] = []  # MS-ASCAL 2.2.2.42: a 16.x series moved loses its exceptions
    return _finish(_next_sequence(old, record))


#: Properties whose change makes a new version of a meeting (RFC 5546 2.1.4: SEQUENCE).
SIGNIFICANT = ("start", "end", "all_day", "recurrence", "exceptions", "subject", "location")
#: MeetingStatus of a meeting the user organizes.
ORGANIZER_STATUSES = frozenset({1, 5, 9, 13})


def _next_sequence(old: Mapping[str, Any], new: Record) -> Record:
    """A meeting the user organizes gets a higher SEQUENCE when it changes significantly, so
    the attendees' calendars take the update (RFC 5546 2.1.4)."""
    if old.get("meeting_status") in ORGANIZER_STATUSES and any(
        old.get(k) != new.get(k) for k in SIGNIFICANT
    ):
        new["sequence"] = int(old.get("sequence") or 0) + 1
    return new


def delete_occurrence(old: Mapping[str, Any], instance: str) -> Record:
    """The record with the occurrence *instance* (an InstanceId) deleted (16.x Sync Delete)."""
    original = utc_text(parse_utc(instance))
    record = {**empty_record(), **dict(old)}
    exceptions = [
        dict(e) for e in record.get("exceptions") or [] if e["original_start"] != original
    ]
    if len(exceptions) >= MAX_EXCEPTIONS:
        raise PimError(f"more than {MAX_EXCEPTIONS} exceptions")
    exceptions.append({"original_start": original, "deleted": True})
    record["exceptions"] = sorted(exceptions, key=lambda e: str(e["original_start"]))
    return record


# -- encoding (record -> client) ------------------------------------------------------------------


def _leaf(out: list[Element], ns: str, tag: str, value: str | int | bool | None) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        value = "1" if value else "0"
    out.append(Element(ns, tag, [], str(value)))


def _body_element(
    plain: str | None, rich: str | None, version: Version, prefs: Sequence[BodyPreference]
) -> Element | None:
    if plain is None and rich is None:
        return None
    usable = [p for p in prefs if p.type in (BodyType.PLAIN, BodyType.HTML)]
    text = plain if plain is not None else html_to_text(rich or "")
    return build_body(b"", text, rich, "", str(version), usable)


def _location_elements(record: Mapping[str, Any], version: Version) -> list[Element]:
    name = record.get("location")
    detail = record.get("location_detail") or {}
    if name is None and not detail:
        return []
    if version < V16_0:
        return [Element(NS, "Location", [], name or "")]
    kids = [Element(BASE, "DisplayName", [], name or "")]
    for tag, key in _LOCATION_PARTS.items():
        if isinstance(detail.get(key), str):
            kids.append(Element(BASE, tag, [], detail[key]))
    return [Element(BASE, "Location", kids)]


def _attendee_elements(attendees: Sequence[Mapping[str, Any]]) -> Element:
    people = []
    for person in attendees:
        kids: list[Element] = []
        _leaf(kids, NS, "Email", person.get("email") or "")
        _leaf(kids, NS, "Name", person.get("name") or person.get("email") or "")
        _leaf(kids, NS, "AttendeeStatus", person.get("status"))
        _leaf(kids, NS, "AttendeeType", person.get("type"))
        people.append(Element(NS, "Attendee", kids))
    return Element(NS, "Attendees", people)


def _common_elements(
    record: Mapping[str, Any],
    version: Version,
    prefs: Sequence[BodyPreference],
    *,
    top: bool,
) -> list[Element]:
    out: list[Element] = []
    if "all_day" in record:
        _leaf(out, NS, "AllDayEvent", bool(record["all_day"]))
    if "body" in record or "body_html" in record:
        body = _body_element(record.get("body"), record.get("body_html"), version, prefs)
        if body is not None:
            out.append(body)
    _leaf(out, NS, "BusyStatus", record.get("busy_status"))
    if top:
        _leaf(out, NS, "OrganizerName", record.get("organizer_name"))
        _leaf(out, NS, "OrganizerEmail", record.get("organizer_email"))
    if record.get("dtstamp"):
        _leaf(out, NS, "DtStamp", compact(record["dtstamp"]))
    if record.get("end"):
        _leaf(out, NS, "EndTime", compact(record["end"]))
    out += _location_elements(record, version)
    _leaf(out, NS, "Reminder", record.get("reminder"))
    _leaf(out, NS, "Sensitivity", record.get("sensitivity"))
    if "subject" in record:
        _leaf(out, NS, "Subject", record.get("subject") or "")
    if record.get("start"):
        _leaf(out, NS, "StartTime", compact(record["start"]))
    return out


def _recurrence_element(recurrence: Mapping[str, Any], version: Version) -> Element:
    kids: list[Element] = []
    _leaf(kids, NS, "Type", recurrence.get("type"))
    if recurrence.get("until"):
        _leaf(kids, NS, "Until", compact(recurrence["until"]))
    for tag, (key, _, _) in _RECURRENCE_PARTS.items():
        if tag in ("CalendarType", "IsLeapMonth") and version < V14_0:
            continue
        if tag == "FirstDayOfWeek" and version < V14_1:
            continue
        _leaf(kids, NS, tag, recurrence.get(key))
    return Element(NS, "Recurrence", kids)


def _exception_element(
    exc: Mapping[str, Any], version: Version, prefs: Sequence[BodyPreference]
) -> Element:
    kids: list[Element] = []
    if exc.get("deleted"):
        _leaf(kids, NS, "Deleted", True)
    if version >= V16_0:
        _leaf(kids, BASE, "InstanceId", instance_id(exc["original_start"]))
    else:
        _leaf(kids, NS, "ExceptionStartTime", compact(exc["original_start"]))
    if exc.get("deleted"):
        return Element(NS, "Exception", kids)
    kids += _common_elements(exc, version, prefs, top=False)
    if "categories" in exc:
        kids.append(
            Element(NS, "Categories", [Element(NS, "Category", [], c) for c in exc["categories"]])
        )
    _leaf(kids, NS, "MeetingStatus", exc.get("meeting_status"))
    if version >= V14_0:
        if "attendees" in exc:
            kids.append(_attendee_elements(exc["attendees"]))
        if exc.get("appointment_reply_time"):
            _leaf(kids, NS, "AppointmentReplyTime", compact(exc["appointment_reply_time"]))
        _leaf(kids, NS, "ResponseType", exc.get("response_type"))
    return Element(NS, "Exception", kids)


def encode(
    record: Mapping[str, Any], version: Version, body_preferences: Sequence[BodyPreference]
) -> list[Element]:
    """The ApplicationData children of *record* for a client speaking *version*."""
    out: list[Element] = [Element(NS, "TimeZone", [], timezone_blob(record))]
    out += _common_elements(record, version, body_preferences, top=True)
    _leaf(out, NS, "UID", record.get("uid") or None)
    _leaf(out, NS, "MeetingStatus", record.get("meeting_status", 0))
    if record.get("attendees"):
        out.append(_attendee_elements(record["attendees"]))
    if record.get("categories"):
        out.append(
            Element(
                NS, "Categories", [Element(NS, "Category", [], c) for c in record["categories"]]
            )
        )
    if record.get("recurrence"):
        out.append(_recurrence_element(record["recurrence"], version))
        if record.get("exceptions"):
            items = [_exception_element(e, version, body_preferences) for e in record["exceptions"]]
            out.append(Element(NS, "Exceptions", items))
    if version >= V14_0:
        _leaf(out, NS, "ResponseRequested", record.get("response_requested"))
        if record.get("appointment_reply_time"):
            _leaf(out, NS, "AppointmentReplyTime", compact(record["appointment_reply_time"]))
        _leaf(out, NS, "ResponseType", record.get("response_type"))
        _leaf(out, NS, "DisallowNewTimeProposal", record.get("disallow_new_time_proposal"))
    if version >= V14_1:
        _leaf(out, NS, "OnlineMeetingConfLink", record.get("online_meeting_conf_link"))
        _leaf(out, NS, "OnlineMeetingExternalLink", record.get("online_meeting_external_link"))
    return out


# -- occurrences -----------------------------------------------------------------------------------


def _rule(recurrence: Mapping[str, Any], local_start: datetime, until: datetime | None) -> Any:
    kind = recurrence.get("type")
    interval = recurrence.get("interval") or 1
    mask = recurrence.get("day_of_week")
    days = [_RR_DAYS[i] for i in range(7) if mask and mask & (1 << i)]
    week = recurrence.get("week_of_month")
    position = -1 if week == 5 else week
    options: dict[str, Any] = {
        "dtstart": local_start,
        "interval": interval,
        "count": recurrence.get("occurrences"),
        "until": until,
        "wkst": _RR_DAYS[(recurrence.get("first_day_of_week") or 0) % 7].weekday,
        "cache": False,
    }
    day = recurrence.get("day_of_month") or local_start.day
    month = recurrence.get("month_of_year") or local_start.month
    if kind == RecurrenceType.DAILY:
        return _rrule.rrule(_rrule.DAILY, byweekday=days or None, **options)
    if kind == RecurrenceType.WEEKLY:
        return _rrule.rrule(
            _rrule.WEEKLY, byweekday=days or _RR_DAYS[local_start.isoweekday() % 7], **options
        )
    if kind == RecurrenceType.MONTHLY:
        return _rrule.rrule(_rrule.MONTHLY, bymonthday=day, **options)
    nth: dict[str, Any] = {}
    if mask == _ALL_DAYS and week == 5:
        nth = {"bymonthday": -1}
    else:
        chosen = days or [_RR_DAYS[local_start.isoweekday() % 7]]
        nth = {"byweekday": chosen, "bysetpos": position or 1}
    if kind == RecurrenceType.MONTHLY_NTH:
        return _rrule.rrule(_rrule.MONTHLY, **nth, **options)
    if kind == RecurrenceType.YEARLY:
        return _rrule.rrule(_rrule.YEARLY, bymonth=month, bymonthday=day, **options)
    return _rrule.rrule(_rrule.YEARLY, bymonth=month, **nth, **options)


def series_starts(record: Mapping[str, Any], limit: int = MAX_SCANNED) -> Iterator[datetime]:
    """The start (UTC) of every occurrence of *record*'s pattern, deleted ones included,
    moved ones at their original time; one start for an item without recurrence."""
    start = parse_utc(record["start"])
    recurrence = record.get("recurrence")
    if not recurrence:
        yield start
        return
    zone = zone_of(record)
    local = start.astimezone(zone).replace(tzinfo=None)
    until = None
    if recurrence.get("until"):
        until_local = parse_utc(recurrence["until"]).astimezone(zone).replace(tzinfo=None)
        until = max(until_local, local)
    rule = _rule(recurrence, local, until)
    for count, moment in enumerate(rule):
        if count >= limit or moment.year > MAX_YEAR:
            return
        yield moment.replace(tzinfo=zone).astimezone(UTC)


def occurrences(
    record: Mapping[str, Any], begin: datetime, end: datetime
) -> list[tuple[datetime, datetime, Mapping[str, Any]]]:
    """The occurrences of *record* overlapping [begin, end): (start, end, properties), with
    deleted occurrences left out and moved ones where they were moved to."""
    first = parse_utc(record["start"])
    length = parse_utc(record["end"]) - first
    exceptions = {e["original_start"]: e for e in record.get("exceptions") or []}
    out: list[tuple[datetime, datetime, Mapping[str, Any]]] = []
    for original in series_starts(record):
        if original >= end:
            break
        exc = exceptions.pop(utc_text(original), None) if record.get("recurrence") else None
        if exc is not None and exc.get("deleted"):
            continue
        props: Mapping[str, Any] = {**record, **exc} if exc else record
        o_start = parse_utc(exc["start"]) if exc and exc.get("start") else original
        o_end = parse_utc(exc["end"]) if exc and exc.get("end") else o_start + length
        if o_end > begin and o_start < end:
            out.append((o_start, o_end, props))
            if len(out) >= MAX_EXPANDED:
                break
    for exc in exceptions.values():  # moved occurrences whose original lies outside the range
        if exc.get("deleted") or not exc.get("start") or not record.get("recurrence"):
            continue
        o_start = parse_utc(exc["start"])
        o_end = parse_utc(exc["end"]) if exc.get("end") else o_start + length
        if o_end > begin and o_start < end:
            out.append((o_start, o_end, {**record, **exc}))
    return sorted(out, key=lambda o: o[0])


def in_window(record: Mapping[str, Any], cutoff: datetime | None) -> bool:
    """Whether *record* belongs in a Sync window starting at *cutoff* (FilterType): it, or
    any occurrence of its recurrence, ends after *cutoff* (None: no time window, all do)."""
    if cutoff is None:
        return True
    try:
        if parse_utc(record["end"]) > cutoff:
            return True
        recurrence = record.get("recurrence")
        if not recurrence:
            return False
        length = parse_utc(record["end"]) - parse_utc(record["start"])
        for exc in record.get("exceptions") or []:
            if not exc.get("deleted") and exc.get("end") and parse_utc(exc["end"]) > cutoff:
                return True  # an occurrence moved into the window
        if recurrence.get("until"):
            # The last occurrence starts by Until: near enough (a day early at most counts it).
            return parse_utc(recurrence["until"]) + length > cutoff
        if not recurrence.get("occurrences"):
            return True  # a series without end always has occurrences ahead
        starts = list(series_starts(record, limit=MAX_OCCURRENCES))
        return bool(starts) and starts[-1] + length > cutoff
    except (PimError, KeyError, TypeError, ValueError):
        return True  # a record we cannot reason about is shown rather than hidden


def busy_intervals(
    records: Iterable[Mapping[str, Any]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime, int]]:
    """(start, end, BusyStatus) of every occurrence overlapping [start, end), for free/busy:
    cancelled meetings and deleted occurrences take no time; moved ones count where they are."""
    out: list[tuple[datetime, datetime, int]] = []
    for record in records:
        if record.get("meeting_status") in CANCELLED_STATUSES:
            continue
        try:
            found = occurrences(record, start, end)
        except (PimError, KeyError, TypeError, ValueError):
            continue
        for o_start, o_end, props in found:
            if props.get("meeting_status") in CANCELLED_STATUSES:
                continue
            status = props.get("busy_status")
            out.append((o_start, o_end, int(status if status is not None else BusyStatus.BUSY)))
    return sorted(out, key=lambda o: (o[0], o[1]))


CODEC = ClassCodec(
    eas_class="Calendar",
    folder_types=frozenset({FolderType.CALENDAR, FolderType.USER_CALENDAR}),
    decode=decode,
    apply_change=apply_change,
    encode=encode,
    in_window=in_window,
    delete_occurrence=delete_occurrence,
    # Meetings the phone organizes go out as iMIP mail: natsync.eas.registry adds
    # natsync.mail.itip.after_client_write here (mail builds on this module, never the reverse).
)
