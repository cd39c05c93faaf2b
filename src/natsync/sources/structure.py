"""Large messages mirrored lazily, sans-I/O: their structure and text first, the rest on demand.

A phone lists a message by its headers, its text (preview and body, usually truncated) and its
attachments' names and sizes; the attachments' bytes and the whole MIME only when the user opens
one (ItemOperations Fetch, GetAttachment) or the phone asks for MIME (MS-ASAIRS Type 4,
MIMESupport). So the mirror FETCHes a message larger than :data:`LAZY_ABOVE` as its header,
``BODYSTRUCTURE`` (RFC 3501 §7.4.2) and its text parts, at most :data:`TEXT_LIMIT` bytes of each
(``BODY.PEEK[section]<0.N>``, RFC 3501 §6.4.5), and stores a *partial* message rebuilt from them:
the same MIME tree (so attachments keep their walk-order ``part_index``) with empty attachment
bodies, marked by a first header line (:data:`MARKER`) that carries the user's partial key — a
random secret kept in the store, so mail that arrives starting with such a line is never taken
for a partial copy (it could otherwise never be fetched). natsync.sources.bodies fetches the whole
message when a command needs it and puts it in place (``Txn.replace_message_body``).

Here: a reader for FETCH responses with nested lists and literals (what BODYSTRUCTURE needs;
natsync.sources.wire reads the flat ones), the BODYSTRUCTURE tree, the partial message, and the
marker. Everything decodes or raises :class:`ImapWireError` (fuzzed in fuzz/fuzz_imap_wire.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from natsync.sources.wire import MAX_MODSEQ, MAX_UID, FetchItem, ImapWireError
from natsync.store.api import NewAttachment, NewMessage

#: Messages up to this size are fetched whole at once (most mail: text, a small picture); the
#: bytes a lazy fetch saves start above it.
LAZY_ABOVE = 128 * 1024
#: Bytes of each text part fetched with the structure: far more than a phone's truncated body
#: (Android and iOS ask 5-200 KB) and previews (255 chars, MS-ASAIRS 2.2.2.35); a longer text is
#: marked cut, and any command reading the message then fetches it whole.
TEXT_LIMIT = 256 * 1024
#: The first line of a partial message as the store keeps it (never sent to a phone).
MARKER = b"X-Natsync-Partial:"
#: Nesting depth and list length a server may send in one response (BODYSTRUCTURE of a real
#: message nests a few levels; a hostile one must not exhaust the stack or memory).
MAX_DEPTH = 32
MAX_ITEMS = 10_000
#: Parts of one message we rebuild (more: the message is fetched whole instead).
MAX_PARTS = 500

Value = bytes | int | None | list["Value"]


# -- FETCH responses with nested lists and literals (RFC 3501 §9 formal syntax) --------------

_ATOM_END = b" ()\r\n"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def _fail(self, what: str) -> ImapWireError:
        near = self.data[self.pos : self.pos + 40]
        return ImapWireError(f"cannot read the FETCH response: {what} at {self.pos} ({near!r})")

    def skip_spaces(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in b" \r\n":
            self.pos += 1

    def value(self, depth: int = 0) -> Value:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            raise self._fail("too deep or too long")
        self.skip_spaces()
        if self.pos >= len(self.data):
            raise self._fail("unexpected end")
        first = self.data[self.pos]
        if first == ord("("):
            self.pos += 1
            out: list[Value] = []
            while True:
                self.skip_spaces()
                if self.pos >= len(self.data):
                    raise self._fail("unterminated list")
                if self.data[self.pos] == ord(")"):
                    self.pos += 1
                    return out
                out.append(self.value(depth + 1))
        if first == ord('"'):
            end = self.pos + 1
            chunk = bytearray()
            while end < len(self.data) and self.data[end] != ord('"'):
                if self.data[end] == ord("\\") and end + 1 < len(self.data):
                    end += 1
                chunk.append(self.data[end])
                end += 1
            if end >= len(self.data):
                raise self._fail("unterminated quoted string")
            self.pos = end + 1
            return bytes(chunk)
        if first == ord("{"):
            match = re.compile(rb"\{(\d{1,10})\}\r\n").match(self.data, self.pos)
            if match is None:
                raise self._fail("bad literal")
            size = int(match.group(1))
            start = match.end()
            if start + size > len(self.data):
                raise self._fail("literal longer than the response")
            self.pos = start + size
            return self.data[start : self.pos]
        if first == ord(")"):
            raise self._fail("unexpected ')'")
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in _ATOM_END:
            if self.data[self.pos] == ord("["):  # BODY[HEADER.FIELDS (A B)]<0>: one atom
                close = self.data.find(b"]", self.pos)
                if close < 0:
                    raise self._fail("unterminated section")
                self.pos = close
            self.pos += 1
        atom = self.data[start : self.pos]
        if atom.upper() == b"NIL":
            return None
        if atom.isdigit() and len(atom) <= 20:
            return int(atom)
        return atom


def fetch_stream(data: list[Any]) -> bytes:
    """imaplib's untagged FETCH data joined back into the server's bytes: each literal follows
    its ``{n}`` line again (imaplib hands (line, literal) tuples and the lines after them)."""
    out = bytearray()
    for entry in data:
        if isinstance(entry, tuple) and len(entry) == 2:
            out += entry[0] + b"\r\n" + entry[1]
        elif isinstance(entry, bytes):
            out += entry
    return bytes(out)


def parse_fetches(data: bytes) -> list[dict[str, Value]]:
    """``n (NAME value NAME value ...)`` responses, each as {NAME upper-cased: value}."""
    reader = _Reader(data)
    found: list[dict[str, Value]] = []
    while True:
        reader.skip_spaces()
        if reader.pos >= len(data):
            return found
        number = reader.value()
        items = reader.value()
        if not isinstance(number, int) or not isinstance(items, list) or len(items) % 2:
            raise ImapWireError(f"not a FETCH response: {data[:120]!r}")
        response: dict[str, Value] = {}
        for name, value in zip(items[::2], items[1::2], strict=True):
            if not isinstance(name, bytes):
                raise ImapWireError(f"FETCH item without a name: {data[:120]!r}")
            response[name.decode("ascii", "replace").upper()] = value
        found.append(response)


# -- BODYSTRUCTURE (RFC 3501 §7.4.2) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    type: str  # lower case: "multipart", "text", "application" ...
    subtype: str
    params: tuple[tuple[str, str], ...]
    #: IMAP section ("1", "1.2"; "" for a multipart message's top).
    section: str
    encoding: str = "7bit"
    size: int = 0
    content_id: str = ""
    description: str = ""
    disposition: str = ""
    disposition_params: tuple[tuple[str, str], ...] = ()
    children: tuple[Part, ...] = field(default=())

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str:
        return next((v for k, v in self.params if k.lower() == name), "")

    @property
    def is_text(self) -> bool:
        """Text the phone shows (natsync.mime's rule for body parts) or a calendar part
        (a meeting request's), fetched with the structure."""
        if self.mime_type == "text/calendar":
            return True
        named = self.param("name") or any(
            k.lower().startswith("filename") for k, _ in self.disposition_params
        )
        return (
            self.mime_type in ("text/plain", "text/html")
            and self.disposition != "attachment"
            and not named
        )

    def walk(self) -> list[Part]:
        """The parts in ``email``'s walk order (pre-order, containers included)."""
        out = [self]
        for child in self.children:
            out += child.walk()
        return out


def _text(value: Value, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise ImapWireError(f"BODYSTRUCTURE: {what} is not a string")


def _pairs(value: Value, what: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise ImapWireError(f"BODYSTRUCTURE: {what} is not a list of pairs")
    return tuple(
        (_text(k, what), _text(v, what)) for k, v in zip(value[::2], value[1::2], strict=True)
    )


def _disposition(value: Value) -> tuple[str, tuple[tuple[str, str], ...]]:
    if not isinstance(value, list) or not value:
        return "", ()
    kind = _text(value[0], "disposition").lower()
    return kind, _pairs(value[1] if len(value) > 1 else None, "disposition parameters")


def parse_bodystructure(value: Value, section: str = "", depth: int = 0) -> Part:
    """The tree of a BODYSTRUCTURE value (as :func:`parse_fetches` reads it)."""
    if not isinstance(value, list) or not value or depth > MAX_DEPTH:
        raise ImapWireError("BODYSTRUCTURE is not a body list")
    if isinstance(value[0], list):  # multipart: 1*body SP subtype [ext]
        count = 0  # the leading bodies; the subtype (a string) ends them
        while count < len(value) and isinstance(value[count], list):
            count += 1
        children_values, rest = value[:count], value[count:]
        if not rest or rest[0] is None:
            raise ImapWireError("BODYSTRUCTURE: multipart without a subtype")
        children = tuple(
            parse_bodystructure(v, f"{section}.{n}" if section else str(n), depth + 1)
            for n, v in enumerate(children_values, start=1)
        )
        kind, kind_params = _disposition(rest[2] if len(rest) > 2 else None)
        return Part(
            "multipart",
            _text(rest[0], "subtype").lower(),
            _pairs(rest[1] if len(rest) > 1 else None, "parameters"),
            section,
            disposition=kind,
            disposition_params=kind_params,
            children=children,
        )
    if len(value) < 7:
        raise ImapWireError("BODYSTRUCTURE: a part has fewer than 7 fields")
    type_, subtype = _text(value[0], "type").lower(), _text(value[1], "subtype").lower()
    size = value[6]
    if not isinstance(size, int) or size > 2**63:
        raise ImapWireError("BODYSTRUCTURE: a part's size is not a number")
    # Extension data starts after the type-specific fields: text has lines; message/rfc822 has
    # envelope, body and lines (RFC 3501 §7.4.2).
    if type_ == "text":
        ext = 8
    elif (type_, subtype) in (("message", "rfc822"), ("message", "global")):
        ext = 10
    else:
        ext = 7
    kind, kind_params = _disposition(value[ext + 1] if len(value) > ext + 1 else None)
    return Part(
        type_,
        subtype,
        _pairs(value[2], "parameters"),
        section or "1",
        encoding=_text(value[5], "encoding").lower() or "7bit",
        size=size,
        content_id=_text(value[3], "id"),
        description=_text(value[4], "description"),
        disposition=kind,
        disposition_params=kind_params,
    )


def can_be_lazy(top: Part) -> bool:
    """Whether a partial copy of the message keeps its walk order: no embedded message (the
    ``email`` walk enters message/rfc822 parts, whose structure we do not rebuild)."""
    parts = top.walk()
    return len(parts) <= MAX_PARTS and not any(p.type == "message" for p in parts)


def text_sections(top: Part) -> list[str]:
    """IMAP sections of the text parts fetched with the structure ("TEXT" for a one-part
    message: its section "1" is the body, RFC 3501 §6.4.5)."""
    if not top.children:
        return ["TEXT"] if top.is_text else []
    return [p.section for p in top.walk() if not p.children and p.is_text]


# -- the partial message ----------------------------------------------------------------------


def _header_params(params: tuple[tuple[str, str], ...]) -> str:
    out = ""
    for name, value in params:
        if name.endswith("*"):  # RFC 2231 extended value: a token, never quoted
            out += f"; {name}={value}"
        else:
            out += '; {}="{}"'.format(name, value.replace("\\", "\\\\").replace('"', '\\"'))
    return out


def _render(part: Part, texts: dict[str, bytes], top: bool) -> bytes:
    lines: list[str] = []
    if not top:
        lines.append(f"Content-Type: {part.mime_type}{_header_params(part.params)}")
        if part.encoding not in ("7bit", ""):
            lines.append(f"Content-Transfer-Encoding: {part.encoding}")
        if part.content_id:
            lines.append(f"Content-ID: {part.content_id}")
        if part.description:
            lines.append(f"Content-Description: {part.description}")
        if part.disposition:
            lines.append(
                f"Content-Disposition: {part.disposition}{_header_params(part.disposition_params)}"
            )
    head = "".join(line.replace("\r", " ").replace("\n", " ") + "\r\n" for line in lines)
    head_bytes = head.encode("utf-8") + (b"" if top else b"\r\n")
    if not part.children:
        section = "TEXT" if top else part.section
        return head_bytes + texts.get(section, b"")
    boundary = part.param("boundary").encode("utf-8", "replace")
    if not boundary:
        raise ImapWireError(f"BODYSTRUCTURE: multipart part {part.section!r} has no boundary")
    body = bytearray(head_bytes)
    for child in part.children:
        body += b"\r\n--" + boundary + b"\r\n" + _render(child, texts, False)
    body += b"\r\n--" + boundary + b"--\r\n"
    return bytes(body)


def partial_message(
    header: bytes, top: Part, texts: dict[str, bytes], size: int, cut: bool, key: str
) -> bytes:
    """The message as the store keeps it until a phone needs it whole: :data:`MARKER` (with
    the user's partial *key*, the whole message's *size* and whether a text was *cut*), the
    real *header*, and *top*'s tree with the fetched *texts* (by section) and empty
    attachments."""
    if not header.endswith(b"\r\n\r\n"):
        header = header.rstrip(b"\r\n") + b"\r\n\r\n"
    marker = MARKER + f" key={key}; size={size}; cut={int(cut)}\r\n".encode()
    return marker + header + _render(top, texts, True)


@dataclass(frozen=True, slots=True)
class Partial:
    size: int
    cut: bool


_MARKER_LINE = re.compile(
    rb"X-Natsync-Partial: key=([0-9a-f]{16,64}); size=(\d{1,20}); cut=([01])\r\n"
)


def partial_of(raw: bytes, key: str) -> Partial | None:
    """What the marker of a partial message says, or None for a whole one (any message whose
    first line is not a marker with *key*)."""
    if not key or not raw.startswith(MARKER):
        return None
    match = _MARKER_LINE.match(raw)
    if match is None or match.group(1).decode() != key:
        return None
    return Partial(int(match.group(2)), match.group(3) == b"1")


def trim_text(data: bytes, limit: int) -> tuple[bytes, bool]:
    """A fetched text section *data* (asked for at most *limit* bytes) and whether it was
    cut; a cut one ends at its last whole line (base64 and quoted-printable stay decodable)."""
    if len(data) < limit:
        return data, False
    end = data.rfind(b"\n")
    return (data[: end + 1] if end >= 0 else b""), True


def decoded_size(part: Part) -> int:
    """The size an attachment has once decoded (a phone shows it; MS-ASAIRS
    EstimatedDataSize), from its encoded size: base64 carries 57 bytes a 78-byte line."""
    if part.encoding == "base64":
        return part.size * 57 // 78
    return part.size


def with_sizes(message: NewMessage, top: Part) -> NewMessage:
    """*message* (parsed from the partial copy, whose attachments are empty) with each
    attachment's size from the structure (matched by walk order)."""
    parts = top.walk()
    attachments: list[NewAttachment] = []
    for attachment in message.attachments:
        index = attachment.part_index
        size = decoded_size(parts[index]) if 0 <= index < len(parts) else attachment.size
        attachments.append(replace(attachment, size=size))
    return replace(message, attachments=tuple(attachments))


def fetch_uid(response: dict[str, Value]) -> int:
    uid = response.get("UID")
    if not isinstance(uid, int) or not 0 < uid <= MAX_UID:
        raise ImapWireError(f"FETCH response without a valid UID: {sorted(response)}")
    return uid


def fetch_item(response: dict[str, Value]) -> FetchItem:
    """UID, FLAGS, MODSEQ and INTERNALDATE of a response (no body)."""
    flags_value = response.get("FLAGS")
    flags = None
    if isinstance(flags_value, list):
        flags = frozenset(_text(f, "FLAGS") for f in flags_value)
    modseq_value = response.get("MODSEQ")
    modseq = None
    if isinstance(modseq_value, list) and modseq_value:
        number = modseq_value[0]
        if not isinstance(number, int) or number > MAX_MODSEQ:
            raise ImapWireError("FETCH: MODSEQ is not a number")
        modseq = number
    date = None
    date_value = response.get("INTERNALDATE")
    if isinstance(date_value, bytes):
        try:
            date = datetime.strptime(
                date_value.decode("ascii", "replace").strip(), "%d-%b-%Y %H:%M:%S %z"
            ).astimezone(UTC)
        except ValueError:
            raise ImapWireError(f"bad INTERNALDATE {date_value!r}") from None
    return FetchItem(fetch_uid(response), flags, modseq, date, None)
