"""A stored message as EAS Email ApplicationData, and a client's email changes back (sans-I/O).

Implements the Email class of MS-ASEMAIL (2.2.2: To, Cc, From, Subject, ReplyTo, DateReceived,
DisplayTo, ThreadTopic, Importance, Read, Flag, MessageClass, InternetCPID, ContentClass,
Categories; Email2 ConversationId / ConversationIndex) with the AirSyncBase Body, Attachments
and NativeBodyType of MS-ASAIRS (2.2.2.9 Body, 2.2.2.7 Attachment, 2.2.2.12 BodyPreference,
2.2.2.32 NativeBodyType), for protocol versions 12.1, 14.0, 14.1, 16.0 and 16.1.

Public API (stable; natsync.eas calls it):

* ``BodyPreference`` (+ ``BodyPreference.from_element``, ``body_preferences(options)``): what a
  client asked for in Options / ItemOperations / Search.
* ``email_application_data(message, raw, version, preferences, *, mime_support=None,
  mime_truncation=None, container=("AirSync", "ApplicationData")) -> Element``: the whole item
  for a Sync Add, an ItemOperations Fetch (container ItemOperations:Properties) or a Search
  result (Search:Properties).
* ``email_change_data(message, version) -> Element``: the properties a server-side Change
  carries (Read, Flag, Categories).
* ``apply_email_change(appdata) -> EmailChange``: a client's Change parsed into plain values
  for ``Txn.set_read`` / ``set_flag`` / ``set_categories``; raises EmailChangeError (Sync
  Status 6) when a value does not parse.
* ``format_eas_date(dt)`` / ``parse_eas_date(text)``.

Body choice (MS-ASAIRS 2.2.2.3 AllOrNone, 2.2.2.12 BodyPreference): the preference whose Type
matches the message's native type is tried first, then the client's others in its order; a
preference with AllOrNone whose body would be truncated is skipped for the next one, and when
every preference would be truncated, the first is answered with Truncated=1 and no Data.
MIME (Type 4) is offered per airsync:MIMESupport (MS-ASCMD 2.2.3.110.3): 0 never, 1 only for
S/MIME messages, 2 always; when the client sent no MIMESupport but asked for Type 4 explicitly,
it gets MIME (lenient: some clients omit MIMESupport in ItemOperations). MIME data is sent as
the Data string (MS-ASAIRS 2.2.2.20.1); a raw message that is not valid UTF-8, or that holds a
character no WBXML string may carry to a peer (a NUL, another control character XML 1.0 forbids:
natsync.wbxml.chars), is sent as opaque bytes instead, so no byte of it is changed (issue 19).
Every other text (headers, plain and HTML bodies, previews) is cleaned by the encoder.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from natsync.mail.errors import EmailChangeError
from natsync.mail.mime import (
    CLASS_MEETING_CANCELED,
    CLASS_MEETING_REQUEST,
    CLASS_SMIME,
    CLASS_SMIME_SIGNED,
    MAX_PREVIEW_CHARS,
    address_list,
    header_text,
    preview_of,
    read_content,
)
from natsync.store.api import Flag, Message
from natsync.wbxml.chars import is_xml_text
from natsync.wbxml.tree import E, Element


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


class FlagStatus(enum.IntEnum):
    """MS-ASEMAIL 2.2.2.74 Status (of a Flag)."""

    CLEARED = 0
    COMPLETE = 1
    ACTIVE = 2


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

#: MS-ASEMAIL 2.2.2.41 InternetCPID: the code page of the body; we always send UTF-8.
INTERNET_CPID_UTF8 = 65001
_CPID_TEXT = str(INTERNET_CPID_UTF8)
#: MS-ASEMAIL 2.2.2.17 ContentClass of an email item.
CONTENT_CLASS_MESSAGE = "urn:content-classes:message"
#: MS-ASEMAIL2 ConversationId is a 16-byte value (MS-ASCON 2.2.2.3).
CONVERSATION_ID_BYTES = 16
#: MS-ASAIRS 2.2.2.40 TruncationSize maximum (an unsigned 32-bit value).
MAX_TRUNCATION_SIZE = 0xFFFFFFFF
#: Categories a client may set on one item; more is a broken or hostile client.
MAX_CATEGORIES = 300
#: A FILETIME counts 100 ns ticks since 1601-01-01.
_FILETIME_EPOCH_OFFSET = 116444736000000000

#: DisplayTo texts remembered: a mailbox's To lines repeat (the owner's own address, a few
#: lists), and parsing an address list is a tenth of rendering a message.
DISPLAY_TO_CACHE = 4096

_SUPPORTED_VERSIONS = ("12.1", "14.0", "14.1", "16.0", "16.1")


def _version(version: str) -> tuple[int, int]:
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
            if text is None or not text.strip().isdigit():
                return None
            return int(text.strip())

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


@dataclass(frozen=True, slots=True)
class EmailChange:
    """A client's change to an email item; ``None`` fields were not in the request."""

    read: bool | None = None
    flag: Flag | None = None
    categories: tuple[str, ...] | None = None


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


# -- client changes -----------------------------------------------------------------------------


def _parse_bool(text: str, name: str) -> bool:
    value = text.strip()
    if value in ("0", "1"):
        return value == "1"
    raise EmailChangeError(f"{name} must be 0 or 1, not {value[:20]!r}")


def _parse_flag(element: Element) -> Flag:
    if not element.children:
        return Flag()
    status_text = element.child_text("Status", "Email")
    status = FlagStatus.CLEARED
    if status_text is not None:
        try:
            status = FlagStatus(int(status_text.strip()))
        except ValueError as exc:
            raise EmailChangeError(f"Flag Status must be 0, 1 or 2: {status_text[:20]!r}") from exc
    if status == FlagStatus.CLEARED:
        return Flag()

    def date(*tags: str) -> datetime | None:
        for tag in tags:
            text = element.child_text(tag)
            if text:
                return parse_eas_date(text)
        return None

    return Flag(
        status=int(status),
        flag_type=(element.child_text("FlagType", "Email") or "").strip()[:255],
        # The UTC forms are the truth; the local-time forms are read when a client sends only
        # them, as UTC (the store keeps no time zone for a flag).
        start_date=date("UtcStartDate", "StartDate"),
        due_date=date("UtcDueDate", "DueDate"),
        complete_time=(
            date("CompleteTime", "DateCompleted") if status == FlagStatus.COMPLETE else None
        ),
    )


def apply_email_change(appdata: Element) -> EmailChange:
    """The Read / Flag / Categories a client's Sync Change ApplicationData sets."""
    read: bool | None = None
    flag: Flag | None = None
    categories: tuple[str, ...] | None = None
    for child in appdata.children:
        if child.tag == "Read" and child.namespace == "Email":
            read = _parse_bool(child.text(), "Read")
        elif child.tag == "Flag" and child.namespace == "Email":
            flag = _parse_flag(child)
        elif child.tag == "Categories" and child.namespace == "Email":
            names = [c.text().strip() for c in child.findall("Category")]
            if len(names) > MAX_CATEGORIES:
                raise EmailChangeError(f"more than {MAX_CATEGORIES} categories")
            categories = tuple(dict.fromkeys(n[:255] for n in names if n))
    return EmailChange(read=read, flag=flag, categories=categories)


# -- server to client ---------------------------------------------------------------------------


def _flag_element(flag: Flag) -> Element:
    element = Element("Email", "Flag")
    if flag.status == FlagStatus.CLEARED:
        return element
    element.add("Email", "Status", flag.status)
    if flag.flag_type or flag.status == FlagStatus.ACTIVE:
        element.add("Email", "FlagType", flag.flag_type or "Follow up")
    if flag.status == FlagStatus.COMPLETE:
        done = flag.complete_time
        if done is not None:
            element.add("Tasks", "DateCompleted", format_eas_date(done))
            element.add("Email", "CompleteTime", format_eas_date(done))
        return element
    start = flag.start_date or flag.due_date
    due = flag.due_date or flag.start_date
    if start is not None and due is not None:
        element.add("Tasks", "StartDate", format_eas_date(start))
        element.add("Tasks", "DueDate", format_eas_date(due))
        element.add("Tasks", "UtcStartDate", format_eas_date(start))
        element.add("Tasks", "UtcDueDate", format_eas_date(due))
    element.add("Tasks", "ReminderSet", 0)
    return element


def _categories_element(categories: Sequence[str]) -> Element:
    return E("Email", "Categories", *(E("Email", "Category", c) for c in categories))


def email_change_data(
    message: Message, version: str, container: tuple[str, str] = ("AirSync", "ApplicationData")
) -> Element:
    """The ApplicationData of a server-side Change: Read, Flag and (14.0+) Categories."""
    appdata = Element(*container)
    appdata.add("Email", "Read", message.read)
    appdata.append(_flag_element(message.flag))
    if _version(version) >= (14, 0):
        appdata.append(_categories_element(message.categories))
    return appdata


_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|tr|rv)\s*(\[\d+\])?\s*:\s*)+", re.I)


def thread_topic(subject: str) -> str:
    """The subject without reply/forward prefixes ("Re: Fwd: x" -> "x")."""
    return _REPLY_PREFIX.sub("", subject).strip()


@functools.lru_cache(maxsize=DISPLAY_TO_CACHE)
def _display_to(to_addrs: str) -> str:
    names = [name or addr for name, addr in address_list(to_addrs)]
    return "; ".join(n for n in names if n)


def _conversation(thread_index: str, topic: str, received_at: datetime) -> tuple[bytes, bytes]:
    """ConversationId and ConversationIndex (MS-ASCON 2.2.2.3 / 2.2.2.4).

    With an Outlook ``Thread-Index`` header the conversation GUID is taken from it, so mail of
    one thread groups with what Outlook and Exchange show; otherwise it is derived from the
    normalized topic. The index is the 5-byte header from the received time (FILETIME >> 24).
    """
    conversation_id = b""
    if thread_index:
        try:
            decoded = base64.b64decode(thread_index, validate=False)
        except ValueError:
            decoded = b""
        if len(decoded) >= 22:
            conversation_id = decoded[6:22]
    if len(conversation_id) != CONVERSATION_ID_BYTES:
        digest = hashlib.md5(topic.lower().encode("utf-8"), usedforsecurity=False)
        conversation_id = digest.digest()[:CONVERSATION_ID_BYTES]
    moment = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    filetime = int(moment.timestamp() * 10_000_000) + _FILETIME_EPOCH_OFFSET
    index = ((filetime >> 24) & 0xFF_FFFF_FFFF).to_bytes(5, "big")
    return conversation_id, index


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
    if chosen.preview and _version(version) >= (14, 0):
        preview = preview_of(plain, chosen.preview)
    return _body_element(rendered, chosen, send_data, preview)


def email_application_data(
    message: Message,
    raw: bytes,
    version: str,
    preferences: Sequence[BodyPreference],
    *,
    mime_support: int | None = None,
    mime_truncation: int | None = None,
    container: tuple[str, str] = ("AirSync", "ApplicationData"),
) -> Element:
    """The Email ApplicationData of *message* (with its *raw* MIME) for protocol *version*.

    Built as plain child lists of text leaves rather than through ``Element.add`` (which
    checks each value's type): a Sync window builds about twenty of them per message."""
    v = _version(version if version in _SUPPORTED_VERSIONS else "16.1")
    content = read_content(raw)
    topic = header_text(content.message, "Thread-Topic") or thread_topic(message.subject)
    kids: list[Element] = []
    leaf = kids.append
    if message.to_addrs:
        leaf(Element("Email", "To", [], message.to_addrs))
    if message.cc_addrs:
        leaf(Element("Email", "Cc", [], message.cc_addrs))
    if message.from_addr:
        leaf(Element("Email", "From", [], message.from_addr))
    leaf(Element("Email", "Subject", [], message.subject))
    if message.reply_to:
        leaf(Element("Email", "ReplyTo", [], message.reply_to))
    leaf(Element("Email", "DateReceived", [], format_eas_date(message.received_at)))
    leaf(Element("Email", "DisplayTo", [], _display_to(message.to_addrs)))
    leaf(Element("Email", "ThreadTopic", [], topic))
    leaf(Element("Email", "Importance", [], str(message.importance)))
    leaf(Element("Email", "Read", [], "1" if message.read else "0"))
    if message.attachments:
        attachments = Element("AirSyncBase", "Attachments")
        leaf(attachments)
        for att in message.attachments:
            item = attachments.append(Element("AirSyncBase", "Attachment"))
            item.add("AirSyncBase", "DisplayName", att.filename)
            item.add("AirSyncBase", "FileReference", att.file_reference)
            item.add("AirSyncBase", "Method", 1)  # MS-ASAIRS 2.2.2.31.2: normal attachment
            item.add("AirSyncBase", "EstimatedDataSize", att.size)
            if att.content_id:
                item.add("AirSyncBase", "ContentId", att.content_id)
            item.add("AirSyncBase", "IsInline", att.is_inline)
    html_body = content.html
    leaf(
        build_body(
            raw,
            content.text,
            html_body,
            message.message_class,
            version,
            preferences,
            mime_support=mime_support,
            mime_truncation=mime_truncation,
        )
    )
    leaf(Element("Email", "MessageClass", [], message.message_class))
    if message.message_class in (CLASS_MEETING_REQUEST, CLASS_MEETING_CANCELED):
        from natsync.mail.imip import meeting_request_element  # imip builds on this module

        meeting = meeting_request_element(raw, version)
        if meeting is not None:
            leaf(meeting)
    leaf(Element("Email", "InternetCPID", [], _CPID_TEXT))
    leaf(_flag_element(message.flag))
    leaf(Element("Email", "ContentClass", [], CONTENT_CLASS_MESSAGE))
    native = BodyType.HTML if html_body is not None else BodyType.PLAIN
    leaf(Element("AirSyncBase", "NativeBodyType", [], str(int(native))))
    if v >= (14, 0):
        conversation_id, index = _conversation(
            header_text(content.message, "Thread-Index"), topic, message.received_at
        )
        leaf(Element("Email2", "ConversationId", [], conversation_id))
        leaf(Element("Email2", "ConversationIndex", [], index))
        leaf(_categories_element(message.categories))
    return Element(*container, kids)
