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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from natsync.classes.body import (
    MAX_CATEGORIES,
    BodyPreference,
    BodyType,
    MimeSupport,
    body_preferences,
    build_body,
    format_eas_date,
    parse_eas_date,
    truncate_utf8,
)
from natsync.classes.body import version_tuple as _version
from natsync.classes.meeting import meeting_request_element
from natsync.mime import (
    CLASS_MEETING_CANCELED,
    CLASS_MEETING_REQUEST,
    address_list,
    sync_parts,
)
from natsync.mime.errors import EmailChangeError
from natsync.store.api import Flag, Message
from natsync.wbxml.tree import E, Element

#: The body helpers live in natsync.classes.body (every class shares them); the Email class's
#: callers keep reaching the ones they always had here.
__all__ = [
    "BodyPreference",
    "BodyType",
    "EmailChange",
    "MimeSupport",
    "apply_email_change",
    "body_preferences",
    "email_application_data",
    "email_change_data",
    "format_eas_date",
    "parse_eas_date",
    "thread_topic",
    "truncate_utf8",
]


class FlagStatus(enum.IntEnum):
    """MS-ASEMAIL 2.2.2.74 Status (of a Flag)."""

    CLEARED = 0
    COMPLETE = 1
    ACTIVE = 2


#: MS-ASEMAIL 2.2.2.41 InternetCPID: the code page of the body; we always send UTF-8.
INTERNET_CPID_UTF8 = 65001
_CPID_TEXT = str(INTERNET_CPID_UTF8)
#: MS-ASEMAIL 2.2.2.17 ContentClass of an email item.
CONTENT_CLASS_MESSAGE = "urn:content-classes:message"
#: MS-ASEMAIL2 ConversationId is a 16-byte value (MS-ASCON 2.2.2.3).
CONVERSATION_ID_BYTES = 16
#: A FILETIME counts 100 ns ticks since 1601-01-01.
_FILETIME_EPOCH_OFFSET = 116444736000000000

#: DisplayTo texts remembered: a mailbox's To lines repeat (the owner's own address, a few
#: lists), and parsing an address list is a tenth of rendering a message.
DISPLAY_TO_CACHE = 4096

_SUPPORTED_VERSIONS = ("12.1", "14.0", "14.1", "16.0", "16.1")


@dataclass(frozen=True, slots=True)
class EmailChange:
    """A client's change to an email item; ``None`` fields were not in the request."""

    read: bool | None = None
    flag: Flag | None = None
    categories: tuple[str, ...] | None = None


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


def email_application_data(
    message: Message,
    raw: bytes,
    version: str,
    preferences: Sequence[BodyPreference],
    *,
    mime_support: int | None = None,
    mime_truncation: int | None = None,
    container: tuple[str, str] = ("AirSync", "ApplicationData"),
    parts: str | None = None,
) -> Element:
    """The Email ApplicationData of *message* (with its *raw* MIME) for protocol *version*.

    *parts* are the bodies and thread headers kept at delivery (``Txn.message_bodies``,
    natsync.mime.sync_parts); without them the MIME is parsed for them. Built as plain child
    lists of text leaves rather than through ``Element.add`` (which checks each value's type):
    a Sync window builds about twenty of them per message."""
    v = _version(version if version in _SUPPORTED_VERSIONS else "16.1")
    content = sync_parts(raw, parts)
    topic = content.thread_topic or thread_topic(message.subject)
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
        meeting = meeting_request_element(raw, version)
        if meeting is not None:
            leaf(meeting)
    leaf(Element("Email", "InternetCPID", [], _CPID_TEXT))
    leaf(_flag_element(message.flag))
    leaf(Element("Email", "ContentClass", [], CONTENT_CLASS_MESSAGE))
    native = BodyType.HTML if html_body is not None else BodyType.PLAIN
    leaf(Element("AirSyncBase", "NativeBodyType", [], str(int(native))))
    if v >= (14, 0):
        conversation_id, index = _conversation(content.thread_index, topic, message.received_at)
        leaf(Element("Email2", "ConversationId", [], conversation_id))
        leaf(Element("Email2", "ConversationIndex", [], index))
        leaf(_categories_element(message.categories))
    return Element(*container, kids)
