"""Reading Internet mail (RFC 5322 / MIME) into what the store indexes and EAS shows.

The mail format as the EAS wire format is natsync.wbxml: below everything that reads mail
(the Email class's codec in natsync.classes, SMTP in and the relay in natsync.mail, the
protocol's SendMail in natsync.eas, the IMAP mirror in natsync.sources), so that none of them
has to import another to parse a message.

This module owns the one parse of a message at delivery: :func:`parse_message` turns raw bytes
into a :class:`natsync.store.api.NewMessage` (decoded headers, importance, message class, a
preview and the attachment list), and :func:`body_text` / :func:`body_html` give the readable
bodies later. It uses the stdlib ``email`` package with ``policy.default`` (RFC 2047 words,
RFC 2231 parameters, address lists decoded to their Unicode display form).

Mail from the internet is often broken: wrong or unknown charsets, raw 8-bit headers, missing
headers, truncated multiparts, bad base64. None of that makes a function here raise; every
header and part is read defensively and falls back to the best text it can give. Only input
that is not a message at all (empty, or no header field before the body) raises
:class:`~natsync.mime.errors.MailError`.

Attachments are numbered by their position in ``email``'s walk order (``part_index``), the same
order :func:`natsync.store.mime.part_bytes` uses to cut one out again. A ``message/rfc822`` part
(a forwarded message) is one attachment; the parts inside it are not listed separately.

Public API (stable; natsync.classes, natsync.mail, natsync.eas and natsync.sources call it):

* ``parse_message(raw: bytes, now: datetime) -> NewMessage``
* ``body_text(raw: bytes) -> str`` and ``body_html(raw: bytes) -> str | None``
* ``read_content(raw: bytes) -> MailContent`` (bodies, attachments, headers in one parse)
* ``html_to_text(html: str) -> str``
* ``parse_bytes(raw: bytes) -> EmailMessage``; ``parse_tree(raw: bytes) -> Message``;
  ``header_text(msg, name) -> str``; ``address_list(value: str) -> list[tuple[str, str]]``
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import json
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Any

from natsync.mime.errors import MailError
from natsync.store.api import NewAttachment, NewMessage

#: MS-ASAIRS 2.2.2.35 Preview: at most 255 characters of plain text.
MAX_PREVIEW_CHARS = 255
#: A single decoded header value is cut here: no real Subject or address list is longer, and an
#: absurd one must not fill the index (or every Sync response) with megabytes.
MAX_HEADER_CHARS = 16 * 1024
#: Parts walked per message. Real mail has tens; a crafted message with 100,000 empty parts must
#: not stall SMTP ingest. Parts past the cap are neither body nor attachment.
MAX_PARTS = 1000
#: Attachment file names longer than this are cut (file systems on phones allow 255 bytes).
MAX_FILENAME_CHARS = 255

#: MS-ASEMAIL 2.2.2.49 MessageClass values natsync produces.
CLASS_NOTE = "IPM.Note"
CLASS_SMIME = "IPM.Note.SMIME"
CLASS_SMIME_SIGNED = "IPM.Note.SMIME.MultipartSigned"
CLASS_MEETING_REQUEST = "IPM.Schedule.Meeting.Request"
CLASS_MEETING_CANCELED = "IPM.Schedule.Meeting.Canceled"
CLASS_NDR = "REPORT.IPM.Note.NDR"

#: Importance as the store and EAS (MS-ASEMAIL 2.2.2.39) count it.
IMPORTANCE_LOW = 0
IMPORTANCE_NORMAL = 1
IMPORTANCE_HIGH = 2

_POLICY = email.policy.default
_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_ADDRESS_SPECIALS = re.compile(r'["()\\;]')
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")


def parse_bytes(raw: bytes) -> EmailMessage:
    """The ``email`` tree of *raw* under ``policy.default`` (never raises on bad input)."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    assert isinstance(message, EmailMessage)
    return message


def parse_tree(raw: bytes) -> Message:
    """The ``email`` tree of *raw* for walking its parts (never raises on bad input).

    The compat32 parser builds the same tree as ``policy.default`` (so the same walk order and
    ``part_index`` as natsync.store.mime) about four times faster, which matters at SMTP ingest
    rates; headers are still decoded with ``policy.default``'s header registry by
    :func:`header_text`, one header at a time and only those we show. A single-part message
    with well-formed headers (most mail) is built by :func:`_simple_tree` without the parser.
    """
    simple = _simple_tree(raw)
    return simple if simple is not None else email.message_from_bytes(raw)


#: A header field line as ``email.feedparser`` recognises one (a name, then a colon).
_FIELD_LINE = re.compile(r"[\041-\071\073-\176]+:")
#: The blank line ending the header section (CRLF or LF line ends; a bare CR goes to the parser).
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_COMPAT32 = email.policy.compat32


class _SinglePart(Message):
    """A compat32 ``Message`` that parses its Content-Type parameters once, not per question,
    and finds a header by a name index rather than a scan of every header.

    Reading a part asks for its charset, its ``name`` parameter and its type; each asks the
    stdlib to re-parse the header. Trees built by :func:`_simple_tree` are never changed after
    they are built, so the parameters are kept."""

    def __init__(self) -> None:
        super().__init__(_COMPAT32)
        self._param_cache: dict[str, Any] = {}
        #: Lower-cased name -> its first (name, value), built at the first question: the stdlib
        #: lower-cases every header name on every ``get`` (a Sync window asks ~10 per message).
        self._first: dict[str, tuple[str, Any]] | None = None

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        key = header.lower()
        if key not in self._param_cache:
            self._param_cache[key] = super()._get_params_preserve(failobj, header)  # type: ignore[misc]
        return self._param_cache[key]

    def _index(self) -> dict[str, tuple[str, Any]]:
        first = self._first
        if first is None:
            first = {}
            for name, value in self._headers:  # type: ignore[attr-defined]
                first.setdefault(name.lower(), (name, value))
            self._first = first
        return first

    def get(self, name: str, failobj: Any = None) -> Any:
        found = self._index().get(name.lower())
        return failobj if found is None else self.policy.header_fetch_parse(*found)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def set_raw(self, name: str, value: Any) -> None:
        super().set_raw(name, value)
        self._first = None

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, value)
        self._first = None

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._first = None


def _simple_tree(raw: bytes) -> Message | None:
    """The tree ``email.message_from_bytes`` builds for a single-part message, built directly.

    The feed parser spends most of its time feeding the body line by line, which a message that
    is not multipart never needs: its payload is the body as one string. Sync rendering (a parse
    per message sent) and SMTP ingest pay that cost per message, so this builds the same
    ``Message`` (the same raw headers through the same ``compat32`` ``header_source_parse``, the
    same surrogate-escaped payload) and returns None, letting the real parser run, for anything
    else: multipart or message/* types, an mbox ``From `` line, a header line the parser would
    record as a defect, no blank line after the headers.
    """
    end = _HEADER_END.search(raw)
    if end is None:
        return None
    head = raw[: end.start()]
    if head.count(b"\r") != head.count(b"\r\n"):
        return None  # a bare CR is a line end to the parser: leave such mail to it
    fields: list[list[str]] = []
    for line_bytes in head.splitlines(keepends=True):
        line = line_bytes.decode("ascii", "surrogateescape")
        if line[0] in " \t":
            if not fields:
                return None
            fields[-1].append(line)
        elif _FIELD_LINE.match(line) and not line.startswith("From "):
            fields.append([line])
        else:
            return None
    if not fields:
        return None
    # The last header line keeps its line end, as the parser's does; the blank line after it
    # is the separator, not payload.
    fields[-1][-1] += "\r\n" if raw[end.start()] == 0x0D else "\n"
    message = _SinglePart()
    for field_lines in fields:
        message.set_raw(*_COMPAT32.header_source_parse(field_lines))
    if message.get_content_maintype() in ("multipart", "message"):
        return None
    message.set_payload(raw[end.end() :].decode("ascii", "surrogateescape"))
    return message


def _unsurrogate(text: str) -> str:
    """Raw 8-bit header bytes arrive as surrogate escapes: read them as UTF-8, else cp1252."""
    if not _SURROGATE.search(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _clean_header(text: str) -> str:
    text = _unsurrogate(text).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub("", text).strip()[:MAX_HEADER_CHARS]


def _raw_header(msg: Message, name: str) -> str | None:
    lowered = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == lowered:
            return str(value)
    return None


_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})


def header_text(msg: Message, name: str) -> str:
    """Header *name* decoded to Unicode display form ("" when absent; never raises).

    Address headers come back as ``Name <addr>, addr2``; encoded words (RFC 2047) are decoded;
    a header the strict parser cannot read falls back to decoding its raw text.
    """
    raw = _raw_header(msg, name)
    if raw is None:
        return ""
    raw = _FOLD.sub("", raw)
    if _SURROGATE.search(raw):
        # Raw 8-bit bytes in a header (no RFC 2047): the strict parser would turn them into
        # U+FFFD; read them as UTF-8 (else cp1252) instead, then decode any encoded words.
        return _clean_header(_decode_words(_unsurrogate(raw)))
    if "=?" not in raw and (
        name.lower() not in _ADDRESS_HEADERS or not _ADDRESS_SPECIALS.search(raw)
    ):
        # Plain text, or a simple address list ("Name <a@b>, c@d"): already in display form;
        # the header registry would only cost time (it dominates parsing at ingest rates).
        return _clean_header(raw)
    try:
        value = _POLICY.header_factory(name, raw)
        # A header the parser had to repair (defects) shows its own text, decoded, rather
        # than the parser's guess, which can drop most of it.
        text = _decode_words(raw) if getattr(value, "defects", None) else str(value)
    except Exception:
        text = _decode_words(raw)
    return _clean_header(text)


def _decode_words(raw: str) -> str:
    try:
        return str(make_header(decode_header(raw)))
    except Exception:
        return raw


def address_list(value: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of a display-form address list such as ``To``."""
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:
        return []
    return [(name, addr) for name, addr in pairs if addr or name]


def _decode_bytes(data: bytes, charset: str | None) -> str:
    if charset:
        with contextlib.suppress(Exception):  # unknown or non-text codec names: fall through
            return data.decode(charset, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _part_charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return charset if isinstance(charset, str) else None


def _part_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: Message) -> str:
    """A text part decoded, with line ends normalized to LF (one form for EAS and quoting)."""
    text = _decode_bytes(_part_bytes(part), _part_charset(part))
    return text.replace("\r\n", "\n")


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):  # RFC 2231 (charset, language, text)
        value = value[2]
    return str(value).strip().lower() if value is not None else ""


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        return ""
    name = str(name)
    if "=?" in name:  # RFC 2047 words in a parameter: wrong, but what many mailers send
        name = _decode_words(name)
    name = _clean_header(name).replace("/", "_").replace("\\", "_")
    return name[:MAX_FILENAME_CHARS]


def _content_id(part: Message) -> str:
    cid = header_text(part, "Content-ID")
    return cid.strip().strip("<>").strip()


class _TextExtractor(HTMLParser):
    """HTML to readable text: block elements become line breaks, scripts and styles vanish."""

    _BLOCK = frozenset(
        {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr"}
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)


_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (for previews and plain-text requests)."""
    try:
        parser = _TextExtractor()
        parser.feed(html)
        parser.close()
        text = "".join(parser.chunks)
    except Exception:
        text = _TAG.sub(" ", html)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


@dataclass(slots=True)
class MailContent:
    """What one walk of a message finds: bodies, attachments and the facts that set its class."""

    message: Message
    plain_parts: list[str] = field(default_factory=list)
    html_parts: list[str] = field(default_factory=list)
    attachments: list[NewAttachment] = field(default_factory=list)
    calendar_method: str = ""

    @property
    def text(self) -> str:
        """The plain body; converted from HTML when the message has only HTML."""
        if self.plain_parts:
            return "\n".join(self.plain_parts)
        if self.html_parts:
            return html_to_text("\n".join(self.html_parts))
        return ""

    @property
    def html(self) -> str | None:
        """The HTML body, or ``None`` when the message has none."""
        return "\n".join(self.html_parts) if self.html_parts else None


def _default_filename(part: Message, content_type: str, number: int) -> str:
    if content_type in ("message/rfc822", "message/global"):
        inner = part.get_payload()
        subject = ""
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            subject = header_text(inner[0], "Subject")
        base = re.sub(r'[\\/:*?"<>|]+', "_", subject)[:100].strip() or "message"
        return f"{base}.eml"
    if content_type == "text/calendar":
        return "invite.ics"
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment-{number}{extension}"


def read_content(raw: bytes) -> MailContent:
    """Walk *raw* once and sort its parts into bodies and attachments (never raises)."""
    return _read_tree(parse_tree(raw))


def _read_tree(message: Message) -> MailContent:
    content = MailContent(message=message)
    skipped: set[int] = set()
    for index, part in enumerate(message.walk()):
        if index >= MAX_PARTS:
            break
        if id(part) in skipped:
            continue
        content_type = _content_type(part)
        is_message_attachment = index > 0 and content_type in ("message/rfc822", "message/global")
        if is_message_attachment:
            skipped.update(id(sub) for sub in part.walk() if sub is not part)
        elif part.is_multipart():
            continue
        disposition = _disposition(part)
        filename = _filename(part)
        if (
            not is_message_attachment
            and content_type in ("text/plain", "text/html")
            and disposition != "attachment"
            and not filename
        ):
            target = content.plain_parts if content_type == "text/plain" else content.html_parts
            target.append(_part_text(part))
            continue
        if content_type == "text/calendar" and not content.calendar_method:
            content.calendar_method = _param(part, "method") or _calendar_method(_part_text(part))
        payload_size = len(_part_bytes(part)) if not is_message_attachment else _inner_size(part)
        content_id = _content_id(part)
        content.attachments.append(
            NewAttachment(
                filename=filename
                or _default_filename(part, content_type, len(content.attachments) + 1),
                content_type=content_type,
                content_id=content_id,
                is_inline=bool(content_id) and disposition != "attachment",
                size=payload_size,
                part_index=index,
            )
        )
    return content


def _inner_size(part: Message) -> int:
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        try:
            return len(inner[0].as_bytes())
        except Exception:
            return 0
    return 0


_METHOD = re.compile(r"^METHOD:([A-Za-z-]+)", re.MULTILINE)


def _calendar_method(text: str) -> str:
    match = _METHOD.search(text)
    return match.group(1).lower() if match else ""


def _importance(msg: Message) -> int:
    importance = header_text(msg, "Importance").lower()
    if importance.startswith("high"):
        return IMPORTANCE_HIGH
    if importance.startswith("low"):
        return IMPORTANCE_LOW
    if importance.startswith("normal"):
        return IMPORTANCE_NORMAL
    priority = header_text(msg, "X-Priority")
    if priority[:1] in ("1", "2"):
        return IMPORTANCE_HIGH
    if priority[:1] in ("4", "5"):
        return IMPORTANCE_LOW
    ms_priority = header_text(msg, "X-MSMail-Priority").lower()
    if ms_priority.startswith("high"):
        return IMPORTANCE_HIGH
    if ms_priority.startswith("low"):
        return IMPORTANCE_LOW
    return IMPORTANCE_NORMAL


def _message_class(content: MailContent) -> str:
    msg = content.message
    content_type = _content_type(msg)
    if content_type == "multipart/signed" and "pkcs7-signature" in _param(msg, "protocol"):
        return CLASS_SMIME_SIGNED
    if content_type in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        return CLASS_SMIME
    if content_type == "multipart/report" and _param(msg, "report-type") == "delivery-status":
        return CLASS_NDR
    if content.calendar_method == "request":
        return CLASS_MEETING_REQUEST
    if content.calendar_method == "cancel":
        return CLASS_MEETING_CANCELED
    return CLASS_NOTE


def preview_of(text: str, limit: int = MAX_PREVIEW_CHARS) -> str:
    """The first *limit* characters of *text* with whitespace runs collapsed (EAS Preview)."""
    # str.split() splits on exactly the characters \s matches (str.isspace), several times
    # faster than the regular expression; SMTP ingest takes a preview of every message.
    return " ".join(text[: limit * 4].split())[:limit]


def looks_like_message(raw: bytes, msg: Message) -> bool:
    if not raw.strip():
        return False
    if len(msg.keys()) == 0:
        return False
    # The parser takes "anything: up to a colon" on the first line as a header; insist that the
    # first line really is one, so binary junk is refused instead of stored.
    start = raw.lstrip(b"\r\n")[:1000]
    if start.startswith(b"From "):  # an mbox envelope line before the headers
        start = start.partition(b"\n")[2]
    return bool(_HEADER_LINE.match(start))


def parse_message(raw: bytes, now: datetime) -> NewMessage:
    """The store's view of *raw*, received at *now*; raises MailError only for non-messages."""
    msg = parse_tree(raw)
    if not looks_like_message(raw, msg):
        raise MailError(
            "not a mail message: expected header fields, a blank line and a body (RFC 5322)"
        )
    content = _read_tree(msg)
    text = content.text
    html = content.html
    return NewMessage(
        raw=raw,
        received_at=now,
        subject=header_text(msg, "Subject"),
        from_addr=header_text(msg, "From"),
        to_addrs=header_text(msg, "To"),
        cc_addrs=header_text(msg, "Cc"),
        reply_to=header_text(msg, "Reply-To"),
        message_id_header=header_text(msg, "Message-ID"),
        importance=_importance(msg),
        message_class=_message_class(content),
        preview=preview_of(text),
        attachments=tuple(content.attachments),
        # The store indexes this text for Search; handing it over spares a second parse of
        # every message inside the delivery transaction.
        body_text=" ".join(text.split()),  # = _WHITESPACE.sub(" ", text).strip(), faster
        parts=kept_parts(SyncParts(text, html, *_thread_headers(msg))),
    )


#: The version of ``kept_parts``' JSON; stored parts of another version are read from the raw
#: message instead (so a later change of what is kept needs no migration of old rows).
PARTS_VERSION = 1
#: Bodies longer than this (text and HTML together, characters) are not kept twice: such a
#: message (a newsletter, a pasted log) is rare, and parsing it at Sync time costs less than
#: storing its text a second time costs every read of its row.
MAX_KEPT_PARTS_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class SyncParts:
    """What the Email class reads from a message's MIME at every Sync (natsync.classes.email)."""

    #: The plain body (converted from HTML when there is only HTML): ``MailContent.text``.
    text: str
    #: The HTML body, or None: ``MailContent.html``.
    html: str | None
    #: The decoded ``Thread-Topic`` header ("" when absent).
    thread_topic: str
    #: The decoded ``Thread-Index`` header ("" when absent).
    thread_index: str


def _thread_headers(msg: Message) -> tuple[str, str]:
    return header_text(msg, "Thread-Topic"), header_text(msg, "Thread-Index")


def kept_parts(parts: SyncParts) -> str | None:
    """*parts* as the text the store keeps (``NewMessage.parts``); None when too large."""
    if len(parts.text) + len(parts.html or "") > MAX_KEPT_PARTS_CHARS:
        return None
    # JSON escapes NUL and the other control characters: PostgreSQL text keeps it unchanged.
    return json.dumps(
        [PARTS_VERSION, parts.text, parts.html, parts.thread_topic, parts.thread_index],
        ensure_ascii=False,
    )


def sync_parts(raw: bytes, kept: str | None) -> SyncParts:
    """The parts of *raw* a Sync renders: from *kept* (``kept_parts``, stored at delivery) when
    it is there and readable, else read from the MIME (messages delivered before they were
    kept, very large ones). Never raises for bad input, as ``read_content`` does not."""
    if kept is not None:
        try:
            value = json.loads(kept)
        except ValueError:
            value = None
        if (
            isinstance(value, list)
            and len(value) == 5
            and value[0] == PARTS_VERSION
            and isinstance(value[1], str)
            and (value[2] is None or isinstance(value[2], str))
            and isinstance(value[3], str)
            and isinstance(value[4], str)
        ):
            return SyncParts(value[1], value[2], value[3], value[4])
    content = read_content(raw)
    return SyncParts(content.text, content.html, *_thread_headers(content.message))


def body_text(raw: bytes) -> str:
    """The plain-text body of *raw* (converted from HTML when there is only HTML)."""
    return read_content(raw).text


def body_html(raw: bytes) -> str | None:
    """The HTML body of *raw*, or ``None`` when it has none."""
    return read_content(raw).html
