"""The parts every data class shares on the wire (sans-I/O): the AirSyncBase Body chosen by a
client's BodyPreference, and EAS date-time text.

MS-ASAIRS 2.2.2.9 Body, 2.2.2.12 BodyPreference, 2.2.2.41 Type; MS-ASCMD 2.2.3.110.3
MIMESupport and 2.2.3.111 MIMETruncation; MS-ASDTYPE 2.3 dates. Email, Calendar, Contacts,
Tasks and Notes all build their bodies here, which is why this is its own module: the email
codec renders meeting requests with the calendar's helpers (natsync.classes.meeting), and the
calendar builds its body here, so neither imports the other for it. The body choice rules are
in natsync.classes.email's docstring.
"""

from __future__ import annotations

import enum
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from natsync.mime import CLASS_SMIME, CLASS_SMIME_SIGNED, MAX_PREVIEW_CHARS, preview_of
from natsync.mime.errors import EmailChangeError
from natsync.wbxml.chars import is_xml_text
from natsync.wbxml.tree import Element


class BodyType(enum.IntEnum):
    """MS-ASAIRS 2.2.2.41 Type: the format of a body."""

    PLAIN = 1
    HTML = 2
    RTF = 3
    MIME = 4


class MimeSupport(enum.IntEnum):
    """MS-ASCMD 2.2.3.110.3 MIMESupport: when the client wants the message as MIME."""

    NEVER = 0
    SMIME_ONLY = 1
    ALWAYS = 2


#: MS-ASCMD 2.2.3.111 MIMETruncation: value -> characters kept (None: do not truncate).
MIME_TRUNCATION_SIZES: dict[int, int | None] = {
    0: 0,
    1: 4096,
    2: 5120,
    3: 7168,
    4: 10240,
    5: 20480,
    6: 51200,
    7: 102400,
    8: None,
}

#: MS-ASAIRS 2.2.2.40 TruncationSize maximum (an unsigned 32-bit value).
MAX_TRUNCATION_SIZE = 0xFFFFFFFF
#: Categories a client may set on one item; more is a broken or hostile client.
MAX_CATEGORIES = 300
#: Digits of a BodyPreference number read as they are; a longer one is past every limit and
#: clamped like one (int() of thousands of digits is not free).
NUMBER_DIGITS = 10


def version_tuple(version: str) -> tuple[int, int]:
    try:
        major, _, minor = version.partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return (16, 1)


@dataclass(frozen=True, slots=True)
class BodyPreference:
    """One airsyncbase:BodyPreference of a request (MS-ASAIRS 2.2.2.12)."""

    type: int
    truncation_size: int | None = None
    all_or_none: bool = False
    #: Characters of Preview wanted (0..255); 0 means none (MS-ASAIRS 2.2.2.35.4, 14.0+).
    preview: int = 0

    @classmethod
    def from_element(cls, element: Element) -> BodyPreference:
        """Read a BodyPreference element; values out of range are clamped, junk is ignored."""

        def number(tag: str) -> int | None:
            text = element.child_text(tag)
            text = None if text is None else text.strip()
            if not text or not (text.isascii() and text.isdigit()):  # not "²", which int() refuses
                return None
            digits = text.lstrip("0") or "0"
            return int(digits) if len(digits) <= NUMBER_DIGITS else 10**NUMBER_DIGITS  # clamped

        type_ = number("Type") or BodyType.PLAIN
        truncation = number("TruncationSize")
        if truncation is not None:
            truncation = min(truncation, MAX_TRUNCATION_SIZE)
        preview = min(number("Preview") or 0, MAX_PREVIEW_CHARS)
        return cls(
            type=type_,
            truncation_size=truncation,
            all_or_none=(number("AllOrNone") or 0) == 1,
            preview=preview,
        )


def body_preferences(options: Element | None) -> list[BodyPreference]:
    """All BodyPreference children of an Options element, in the client's order."""
    if options is None:
        return []
    return [BodyPreference.from_element(e) for e in options.findall("BodyPreference")]


def format_eas_date(moment: datetime) -> str:
    """EAS date-time text (MS-ASDTYPE 2.3): ``2026-11-25T09:49:53.000Z``, always UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # isoformat is C code and several times cheaper than strftime; every Sync item has a date.
    # An aware time's isoformat ends with its "+00:00" offset, replaced by the "Z" EAS wants.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_EAS_DATE = re.compile(
    r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.(\d{1,7}))?Z?$", re.ASCII
)


def parse_eas_date(text: str) -> datetime:
    """Parse an EAS date (``2026-11-25T09:49:53.000Z`` or the compact ``20261125T094953Z``)."""
    match = _EAS_DATE.match(text.strip())
    if match is None:
        raise EmailChangeError(f"not an EAS date-time: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC
        )
    except ValueError as exc:
        raise EmailChangeError(f"not a valid date: {text[:40]!r}") from exc


def truncate_utf8(data: bytes, limit: int) -> bytes:
    """At most *limit* bytes of UTF-8 *data*, cut before a character, never inside one."""
    if len(data) <= limit:
        return data
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut]


def plain_to_html(text: str) -> str:
    """A plain body as minimal HTML, for clients that asked only for HTML."""
    escaped = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f"</head><body>{escaped}</body></html>"
    )


@dataclass(frozen=True, slots=True)
class _Rendered:
    type: int
    data: bytes
    text: bool  # data is UTF-8 text (else opaque bytes)


def _choose(
    preferences: Sequence[BodyPreference],
    native: int,
    message_class: str,
    mime_support: int | None,
    mime_truncation: int | None,
) -> list[BodyPreference]:
    is_smime = message_class in (CLASS_SMIME, CLASS_SMIME_SIGNED)
    wants_mime = mime_support == MimeSupport.ALWAYS or (
        mime_support == MimeSupport.SMIME_ONLY and is_smime
    )
    usable: list[BodyPreference] = []
    for pref in preferences:
        if pref.type == BodyType.MIME:
            if mime_support is not None and not wants_mime:
                continue
            if pref.truncation_size is None and mime_truncation is not None:
                size = MIME_TRUNCATION_SIZES.get(mime_truncation)
                usable.append(BodyPreference(pref.type, size, pref.all_or_none, pref.preview))
                continue
        elif pref.type not in (BodyType.PLAIN, BodyType.HTML):
            continue  # RTF: we hold no RTF and convert to none
        usable.append(pref)
    if not usable:
        return [BodyPreference(BodyType.PLAIN)]

    def rank(pref: BodyPreference) -> int:
        if pref.type == BodyType.MIME and wants_mime:
            return 0
        return 1 if pref.type == native else 2

    return sorted(usable, key=rank)  # stable: the client's order within a rank


def _render(pref_type: int, raw: bytes, plain: str, rich: str | None) -> _Rendered:
    if pref_type == BodyType.MIME:
        try:
            as_text = is_xml_text(raw.decode("utf-8"))
        except UnicodeDecodeError:
            as_text = False
        return _Rendered(BodyType.MIME, raw, text=as_text)
    if pref_type == BodyType.HTML:
        return _Rendered(BodyType.HTML, (rich or plain_to_html(plain)).encode("utf-8"), True)
    return _Rendered(BodyType.PLAIN, plain.encode("utf-8"), text=True)


def _body_element(
    rendered: _Rendered, pref: BodyPreference, send_data: bool, preview: str | None
) -> Element:
    size = len(rendered.data)
    limit = pref.truncation_size
    truncated = limit is not None and size > limit
    kids = [
        Element("AirSyncBase", "Type", [], str(int(rendered.type))),
        Element("AirSyncBase", "EstimatedDataSize", [], str(size)),
        Element("AirSyncBase", "Truncated", [], "1" if truncated else "0"),
    ]
    if send_data:
        data = rendered.data
        if truncated and limit is not None:
            data = truncate_utf8(data, limit) if rendered.text else data[:limit]
        value: str | bytes = data.decode("utf-8") if rendered.text else data
        kids.append(Element("AirSyncBase", "Data", [], value))
    if preview is not None:
        kids.append(Element("AirSyncBase", "Preview", [], preview))
    return Element("AirSyncBase", "Body", kids)


def build_body(
    raw: bytes,
    plain: str,
    rich: str | None,
    message_class: str,
    version: str,
    preferences: Sequence[BodyPreference],
    *,
    mime_support: int | None = None,
    mime_truncation: int | None = None,
) -> Element:
    """The airsyncbase:Body for the client's preferences (see the module docstring)."""
    native = BodyType.HTML if rich is not None else BodyType.PLAIN
    ordered = _choose(preferences, native, message_class, mime_support, mime_truncation)
    chosen, send_data, rendered = ordered[0], False, None
    for pref in ordered:
        candidate = _render(pref.type, raw, plain, rich)
        fits = pref.truncation_size is None or len(candidate.data) <= pref.truncation_size
        if fits or not pref.all_or_none:
            chosen, send_data, rendered = pref, True, candidate
            break
    if rendered is None:
        rendered = _render(chosen.type, raw, plain, rich)
    preview = None
    if chosen.preview and version_tuple(version) >= (14, 0):
        preview = preview_of(plain, chosen.preview)
    return _body_element(rendered, chosen, send_data, preview)
