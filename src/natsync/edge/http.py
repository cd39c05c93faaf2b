"""HTTP/1.1 framing for the edge, sans-I/O: request heads in, decisions and bytes out.

The edge stands between the internet and a server that trusts it, so it must never let two
parties disagree about where a request ends (request smuggling, RFC 9112 6.3 and 11.2). The
rules here are deliberately stricter than a general-purpose parser such as h11, which accepts
``Content-Length`` together with ``Transfer-Encoding``, unfolds obs-fold lines and takes bare LF
line ends — all harmless for an origin server and all classic desync vectors for a proxy:

* lines end in CRLF; a bare LF or CR is 400;
* obs-fold (a line starting with SP/HT, RFC 9112 5.2) is 400;
* header names are tokens, with no whitespace before the colon (RFC 9112 5.1) — else 400;
* at most one ``Content-Length``, digits only; at most one ``Transfer-Encoding``, and it must be
  exactly ``chunked``; both together is 400; another coding is 501 (RFC 9112 6.1);
* exactly one ``Host`` on HTTP/1.1; the target is origin-form (``/...``) or ``*`` for OPTIONS;
* the head is at most :data:`MAX_HEAD_SIZE` bytes and :data:`MAX_HEADER_COUNT` fields (431);
  a declared body above the configured maximum is 413;
* chunked bodies are checked as they pass (:class:`ChunkedScanner`): hex sizes only, a bounded
  size line, CRLF after every chunk's data, bounded trailers — else 400 and the connection ends.

Everything the edge forwards is re-serialised from the parsed head (hop-by-hop fields dropped,
``X-Forwarded-*`` set by the edge), so the server only ever sees a head this module produced.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from http import HTTPStatus
from typing import TypeVar
from urllib.parse import parse_qsl

from natsync.base.http1 import BAD_VALUE as _BAD_VALUE
from natsync.base.http1 import MAX_CHUNK_LINE, MAX_TRAILER_SIZE, Http1Error, chunk_size
from natsync.errors import NatsyncError

#: Largest request or response head (request line + fields). Real EAS heads are < 2 KiB; nginx's
#: default large_client_header_buffers allow 8 KiB per line. Beyond this: 431.
MAX_HEAD_SIZE = 16 * 1024
#: Most header fields in one head; a phone sends about a dozen. Beyond this: 431.
MAX_HEADER_COUNT = 100
#: Longest Content-Length we parse (digits); 18 digits keep the value inside a 64-bit int.
MAX_LENGTH_DIGITS = 18
#: Empty lines (CRLF) ignored before a request line (RFC 9112 2.2 asks for "at least one";
#: nginx takes any number). Beyond this the request is 400: nobody sends more by accident.
MAX_EMPTY_LINES = 8


class Status(IntEnum):
    """HTTP status codes the edge answers by itself (RFC 9110 15, RFC 6585 4-5)."""

    OK = 200
    BAD_REQUEST = 400
    NOT_FOUND = 404
    CONTENT_TOO_LARGE = 413
    HEADERS_TOO_LARGE = 431
    NOT_IMPLEMENTED = 501
    BAD_GATEWAY = 502
    SERVICE_UNAVAILABLE = 503
    GATEWAY_TIMEOUT = 504


REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


#: The request cannot be forwarded as sent; the edge answers it and closes (the error of
#: ``natsync.base.http1``, shared with the server's front; MAX_CHUNK_LINE and MAX_TRAILER_SIZE
#: are there too).
EdgeHttpError = Http1Error


class Framing(IntEnum):
    """How a message body is delimited (RFC 9112 6.3)."""

    NONE = 0
    LENGTH = 1
    CHUNKED = 2
    CLOSE = 3  # responses only: the body runs until the server closes


#: The members as module globals: the hot path reads them per message, and reading a global
#: is several times cheaper than an enum class attribute.
F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[!-~]*")
_DIGITS = re.compile(rb"[0-9]+")
# One whole field line: token ":" OWS value OWS, the value without CTLs (the fast path; a line
# that does not match is examined again to say what is wrong with it).
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[^\x00-\x1f\x7f]|\t)*?)[ \t]*")

# The fast path: a request line, and a whole field section (every line token ":" value CRLF,
# the value visible ASCII, obs-text, SP or HT), each checked by one match. Whatever does not
# match is parsed again line by line (``_strict_*``), which says what is wrong — or accepts it.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[!-~]*|\*) (HTTP/1\.[01])")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_SECTION = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r]*?)[ \t]*\r\n")

#: Fields that concern one connection only (RFC 9110 7.6.1) or that the edge alone sets.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"forwarded",
    }
)


@dataclass(slots=True)
class RequestHead:
    """A validated request head. ``section`` is its field lines as received, each with its CRLF
    (every one checked); ``fields`` gives them parsed, in order and with their spelling."""

    method: bytes
    target: bytes
    version: bytes
    section: bytes
    has_host: bool
    framing: Framing
    length: int
    keep_alive: bool
    #: Names listed in Connection (dropped when forwarding, RFC 9110 7.6.1).
    connection_tokens: frozenset[bytes]
    #: A field the edge does not forward is present (hop-by-hop, the client's X-Forwarded-*).
    hop: bool = True
    #: The length comes from a Content-Length field (forwarded as it is, once checked).
    length_field: bool = False
    #: Where the one line the edge drops starts in ``section`` (the usual ``Connection:``
    #: line), or -1: none, or several (then one regex pass removes them).
    hop_at: int = -1

    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        return _fields(self.section)

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def query(self) -> str:
        return self.target.partition(b"?")[2].decode("latin-1")

    def get(self, name: bytes) -> bytes | None:
        if name not in self.section.lower():
            return None
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class ResponseHead:
    status: int
    section: bytes
    framing: Framing
    length: int
    keep_alive: bool
    version: bytes
    connection_tokens: frozenset[bytes] = frozenset()
    hop: bool = True
    #: As :attr:`RequestHead.hop_at`.
    hop_at: int = -1

    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        return _fields(self.section)


#: The field names that decide framing, Host and what the edge drops, found in b"\\n" + the
#: lowered section by one ``findall`` (one scan of the head instead of one per name).
_NAMES = re.compile(
    rb"\n(host|content-length|transfer-encoding|connection|keep-alive|proxy-connection|te"
    rb"|trailer|upgrade|x-forwarded-for|x-forwarded-proto|x-forwarded-host|x-real-ip"
    rb"|forwarded):"
)
#: Of those, the ones the edge drops (Content-Length and Transfer-Encoding stay: checked, and
#: forwarded as they are).
_HOP_NAMES = frozenset(HOP_BY_HOP - {b"content-length", b"transfer-encoding"})
#: The lines of _HOP_NAMES, removed from a section in one pass (Content-Length and
#: Transfer-Encoding stay: checked, and forwarded as they are).
_HOP_LINE = re.compile(
    rb"(?im)^(?:connection|keep-alive|proxy-connection|te|trailer|upgrade|x-forwarded-for"
    rb"|x-forwarded-proto|x-forwarded-host|x-real-ip|forwarded):[^\r]*\r\n"
)
#: Connection tokens that name no other field: with only these, dropping the hop-by-hop lines
#: is enough; any other token names a field to drop too (the slow path does it).
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive"})


def _fields(section: bytes) -> list[tuple[bytes, bytes]]:
    return [(m[0], m[1]) for m in _FIELD_LINE.findall(section)]


def _value(low: bytes, needle: bytes) -> bytes:
    """The (lowered, trimmed) value of the one field whose b"\\n" + name + b":" is *needle*, in
    b"\\n" + a lowered section."""
    start = low.index(needle) + len(needle)
    return low[start : low.index(b"\r", start)].strip(b" \t")


_NO_TOKENS: frozenset[bytes] = frozenset()
#: The names :data:`_NAMES` finds in the common GET's head: no framing, nothing to drop.
_HOST_ONLY = [b"host"]
#: The Connection values nearly every message has, and their tokens (no set built per message).
_COMMON_CONNECTION = {
    b"keep-alive": frozenset({b"keep-alive"}),
    b"close": frozenset({b"close"}),
    b"upgrade": frozenset({b"upgrade"}),
}


def _section_framing(
    low: bytes, names: list[bytes], version: bytes, is_request: bool
) -> tuple[Framing, int, frozenset[bytes]]:
    """Framing and Connection tokens from b"\\n" + the lowered section and the names
    :data:`_NAMES` found in it (the same rules as :func:`_framing`, without splitting fields)."""
    tokens = _NO_TOKENS
    if names == _HOST_ONLY:  # the common GET: nothing else to look at
        return (F_NONE, 0, tokens) if is_request else (F_CLOSE, 0, tokens)
    connections = names.count(b"connection")
    if connections == 1:
        value = _value(low, b"\nconnection:")
        common = _COMMON_CONNECTION.get(value)
        tokens = (
            common
            if common is not None
            else frozenset(t.strip() for t in value.split(b",") if t.strip())
        )
    elif connections:
        tokens = _connection_tokens(_fields(low[1:]))
    lengths = names.count(b"content-length")
    codings = names.count(b"transfer-encoding")
    if lengths:
        if codings:
            raise EdgeHttpError(400, "both Content-Length and Transfer-Encoding are present")
        if lengths > 1:
            raise EdgeHttpError(400, "more than one Content-Length")
        raw = _value(low, b"\ncontent-length:")
        # bytes.isdigit: ASCII digits only, and False for b""
        if len(raw) > MAX_LENGTH_DIGITS or not raw.isdigit():
            raise EdgeHttpError(400, "Content-Length is not a plain decimal number")
        length = int(raw)
        return (F_LENGTH, length, tokens) if length else (F_NONE, 0, tokens)
    if codings:
        if codings > 1:
            raise EdgeHttpError(400, "more than one Transfer-Encoding")
        if version != b"HTTP/1.1":
            raise EdgeHttpError(400, "Transfer-Encoding in an HTTP/1.0 message")
        if _value(low, b"\ntransfer-encoding:") != b"chunked":
            raise EdgeHttpError(501, "only Transfer-Encoding: chunked is supported")
        return F_CHUNKED, 0, tokens
    return (F_NONE, 0, tokens) if is_request else (F_CLOSE, 0, tokens)


def _hop(low: bytes, names: list[bytes]) -> tuple[bool, int]:
    """Whether the section has lines the edge drops, and where the line starts when it is
    only one (an index in b"\\n" + section is the line's start in the section)."""
    hop = [name for name in names if name in _HOP_NAMES]
    if len(hop) == 1:
        return True, low.index(b"\n" + hop[0] + b":")
    return bool(hop), -1


def _without_hop(section: bytes, hop: bool, hop_at: int) -> bytes:
    """*section* less the lines the edge drops: sliced out when one, else one regex pass."""
    if not hop:
        return section
    if hop_at >= 0:
        return section[:hop_at] + section[section.index(b"\r\n", hop_at) + 2 :]
    return _HOP_LINE.sub(b"", section)


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the head, or -1; 431 when it is too long."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_SIZE + 4)
    stop = end if end >= 0 else MAX_HEAD_SIZE + 4
    if buffer.count(b"\n", 0, stop) != buffer.count(b"\r\n", 0, stop):
        raise EdgeHttpError(400, "a head line ends in a bare LF")
    if end < 0:
        if len(buffer) > MAX_HEAD_SIZE:
            raise EdgeHttpError(431, "the request head is larger than the edge accepts")
        return -1
    return end + 4


def empty_lines(buffer: bytes | bytearray) -> int:
    """Bytes of empty lines (CRLF) at the start of *buffer*, ignored before a request line
    (RFC 9112 2.2); 400 beyond :data:`MAX_EMPTY_LINES`."""
    skip = 0
    while buffer.startswith(b"\r\n", skip):
        skip += 2
        if skip > 2 * MAX_EMPTY_LINES:
            raise EdgeHttpError(400, "too many empty lines before the request line")
    return skip


_Head = TypeVar("_Head")
_Arg = TypeVar("_Arg")


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The head (through its blank line) and the bytes after it, or None while the head is
    incomplete; the same checks as :func:`head_end`, with fewer copies on the usual read."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_SIZE + 4) + 4
    if end < 4:
        head_end(buffer)  # raises for a bare LF or a head too long
        return None
    if end == len(buffer):
        head, rest = buffer, b""
    else:
        head, rest = buffer[:end], buffer[end:]
    if head.count(b"\n") != head.count(b"\r\n"):
        raise EdgeHttpError(400, "a head line ends in a bare LF")
    return head, rest


def take_request(buffer: bytes, max_body: int) -> tuple[RequestHead, bytes] | None:
    """The validated request head at the start of *buffer* and the bytes after it, or None
    while the head is incomplete; EdgeHttpError as :func:`split_head` and
    :func:`parse_request_head`."""
    return _c_take_request(buffer, max_body) or python_take_request(buffer, max_body)


def python_take_request(buffer: bytes, max_body: int) -> tuple[RequestHead, bytes] | None:
    """:func:`take_request` in Python alone (what C declined, or no C)."""
    if buffer[:2] == b"\r\n":  # empty lines before the request line (C declines them)
        buffer = buffer[empty_lines(buffer) :]
    return _take_in_python(buffer, python_request_head, max_body)


def take_response(buffer: bytes, request_method: bytes) -> tuple[ResponseHead, bytes] | None:
    """As :func:`take_request`, for the server's response head (errors as
    :func:`parse_response_head`'s, except a bare LF: 400 from :func:`split_head`)."""
    return _c_take_response(buffer, request_method) or python_take_response(buffer, request_method)


def python_take_response(buffer: bytes, request_method: bytes) -> tuple[ResponseHead, bytes] | None:
    """:func:`take_response` in Python alone (what C declined, or no C)."""
    return _take_in_python(buffer, python_response_head, request_method)


def _take_in_python(
    buffer: bytes, parse: Callable[[bytes, _Arg], _Head], arg: _Arg
) -> tuple[_Head, bytes] | None:
    split = split_head(buffer)
    return None if split is None else (parse(split[0], arg), split[1])


def _split_lines(head: bytes) -> list[bytes]:
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise EdgeHttpError(400, "a head line ends in a bare LF or CR")
    return head.split(b"\r\n")


def _parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    if len(lines) > MAX_HEADER_COUNT:
        raise EdgeHttpError(431, "the head has more header fields than the edge accepts")
    fields: list[tuple[bytes, bytes]] = []
    match = _FIELD.fullmatch
    for line in lines:
        found = match(line)
        if found is not None:
            fields.append((found[1], found[2]))
            continue
        if line[:1] in (b" ", b"\t"):
            raise EdgeHttpError(400, "obs-fold (a folded header line) is not accepted")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise EdgeHttpError(400, f"malformed header line {line[:40]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            raise EdgeHttpError(400, f"control character in header {name.decode()!r}")
        fields.append((name, value))
    return fields


def _framing(
    fields: list[tuple[bytes, bytes]], version: bytes, is_request: bool
) -> tuple[Framing, int]:
    lengths = [v for k, v in fields if k.lower() == b"content-length"]
    codings = [v for k, v in fields if k.lower() == b"transfer-encoding"]
    if lengths and codings:
        raise EdgeHttpError(400, "both Content-Length and Transfer-Encoding are present")
    if len(lengths) > 1:
        raise EdgeHttpError(400, "more than one Content-Length")
    if len(codings) > 1:
        raise EdgeHttpError(400, "more than one Transfer-Encoding")
    if codings:
        if version != b"HTTP/1.1":
            raise EdgeHttpError(400, "Transfer-Encoding in an HTTP/1.0 message")
        if codings[0].lower() != b"chunked":
            raise EdgeHttpError(501, "only Transfer-Encoding: chunked is supported")
        return F_CHUNKED, 0
    if lengths:
        raw = lengths[0]
        if len(raw) > MAX_LENGTH_DIGITS or _DIGITS.fullmatch(raw) is None:
            raise EdgeHttpError(400, "Content-Length is not a plain decimal number")
        length = int(raw)
        return (F_LENGTH, length) if length else (F_NONE, 0)
    return (F_NONE, 0) if is_request else (F_CLOSE, 0)


def _connection_tokens(fields: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for key, value in fields:
        if key.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def parse_request_head(head: bytes, max_body: int) -> RequestHead:
    """Validate a request head (ending with the blank line); EdgeHttpError when unsafe.

    The C module takes the clean, common head; anything else (errors included) is
    :func:`python_request_head`'s."""
    parsed: RequestHead | None = _c_request_head(head, max_body)
    return parsed if parsed is not None else python_request_head(head, max_body)


def python_request_head(head: bytes, max_body: int) -> RequestHead:
    """:func:`parse_request_head` in Python: the reference, and the whole parser without C.

    One match for the request line and one for the whole field section; a head either fails
    to match (then :func:`_strict_request_head` says why, line by line) or is what the strict
    parser accepts too (the tests check both agree)."""
    if len(head) > MAX_HEAD_SIZE + 4:
        raise EdgeHttpError(431, "the request head is larger than the edge accepts")
    line_end = head.find(b"\r\n")
    section = head[line_end + 2 : -2]
    line = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if line is None or _SECTION.fullmatch(section) is None:
        return _strict_request_head(head, max_body)
    method, target, version = line.groups()
    if target == b"*" and method != b"OPTIONS":
        raise EdgeHttpError(400, "the request target is not origin-form")
    if section.count(b"\n") > MAX_HEADER_COUNT:
        raise EdgeHttpError(431, "the head has more header fields than the edge accepts")
    low = b"\n" + section.lower()
    names = _NAMES.findall(low)
    hosts = names.count(b"host")
    if hosts > 1 or (version == b"HTTP/1.1" and not hosts):
        raise EdgeHttpError(400, "an HTTP/1.1 request needs exactly one Host")
    framing, length, tokens = _section_framing(low, names, version, is_request=True)
    if framing == F_LENGTH and length > max_body:
        raise EdgeHttpError(413, "the request body is larger than the edge accepts")
    keep_alive = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
    hop, hop_at = (False, -1) if names == _HOST_ONLY else _hop(low, names)
    return RequestHead(
        method, target, version, section, hosts == 1, framing, length, keep_alive, tokens,
        hop, b"content-length" in names, hop_at,
    )  # fmt: skip


def _strict_request_head(head: bytes, max_body: int) -> RequestHead:
    """The line-by-line parser: the precise error for a head the fast path did not match."""
    lines = _split_lines(head[:-4])
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise EdgeHttpError(400, "malformed request line")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise EdgeHttpError(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise EdgeHttpError(400, "unsupported HTTP version")
    if _TARGET.fullmatch(target) is None and not (method == b"OPTIONS" and target == b"*"):
        raise EdgeHttpError(400, "the request target is not origin-form")
    fields = _parse_fields(lines[1:])
    hosts = [v for k, v in fields if k.lower() == b"host"]
    if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
        raise EdgeHttpError(400, "an HTTP/1.1 request needs exactly one Host")
    framing, length = _framing(fields, version, is_request=True)
    if framing == F_LENGTH and length > max_body:
        raise EdgeHttpError(413, "the request body is larger than the edge accepts")
    tokens = _connection_tokens(fields)
    keep_alive = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
    names = {k.lower() for k, _ in fields}
    return RequestHead(
        method, target, version, _canonical(fields), bool(hosts), framing, length, keep_alive,
        tokens, bool(names & HOP_BY_HOP - {b"content-length", b"transfer-encoding"}),
        b"content-length" in names,
    )  # fmt: skip


def _canonical(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(k + b": " + v + b"\r\n" for k, v in fields)


def parse_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    """Parse the server's response head; EdgeHttpError(502) when it cannot be trusted (the C
    module takes the clean, common head, :func:`python_response_head` the rest)."""
    parsed: ResponseHead | None = _c_response_head(head, request_method)
    return parsed if parsed is not None else python_response_head(head, request_method)


def python_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    """:func:`parse_response_head` in Python: the reference, and the whole parser without C."""
    try:
        line_end = head.find(b"\r\n")
        section = head[line_end + 2 : -2]
        line = _STATUS_LINE.fullmatch(head, 0, line_end)
        if line is None or _SECTION.fullmatch(section) is None:
            return _strict_response_head(head, request_method)
        version = line[1]
        status = int(line[2])
        if section.count(b"\n") > MAX_HEADER_COUNT:
            raise EdgeHttpError(431, "the head has more header fields than the edge accepts")
        low = b"\n" + section.lower()
        names = _NAMES.findall(low)
        framing, length, tokens = _section_framing(low, names, version, is_request=False)
        if request_method == b"HEAD" or status < 200 or status in (204, 304):
            framing, length = F_NONE, 0
    except EdgeHttpError as exc:
        raise EdgeHttpError(502, f"the server sent a bad response head: {exc.message}") from exc
    keep_alive = (
        framing != F_CLOSE
        and b"close" not in tokens
        and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    )
    hop, hop_at = _hop(low, names)
    return ResponseHead(
        status, section, framing, length, keep_alive, version, tokens, hop, hop_at,
    )  # fmt: skip


def _strict_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    lines = _split_lines(head[:-4])
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or _DIGITS.fullmatch(code) is None:
        raise EdgeHttpError(502, "malformed status line from the server")
    status = int(code)
    fields = _parse_fields(lines[1:])
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        framing, length = F_NONE, 0
        _framing(fields, version, is_request=False)  # still refuse conflicting framing
    else:
        framing, length = _framing(fields, version, is_request=False)
    tokens = _connection_tokens(fields)
    keep_alive = (
        framing != F_CLOSE
        and b"close" not in tokens
        and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    )
    return ResponseHead(status, _canonical(fields), framing, length, keep_alive, version, tokens)


def _forwardable(fields: list[tuple[bytes, bytes]], tokens: frozenset[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for key, value in fields:
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in tokens:
            continue
        out.append(key + b": " + value + b"\r\n")
    return out


def backend_request(head: RequestHead, client_ip: str) -> bytes:
    """The head the server receives: normalised, hop-by-hop dropped, X-Forwarded-* ours (C's
    when it takes the head, else :func:`python_backend_request`'s: the same bytes)."""
    return _c_backend_request(head, client_ip) or python_backend_request(head, client_ip)


def python_backend_request(head: RequestHead, client_ip: str) -> bytes:
    """:func:`backend_request` in Python: the reference, and every case C declines.

    The checked field lines pass as they are, less the hop-by-hop ones (one regex pass); only
    a Connection header naming other fields makes the edge rebuild the section field by field.
    """
    line = head.method + b" " + head.target + b" HTTP/1.1\r\n"
    if (
        not head.hop
        and head.has_host
        and head.framing == F_NONE
        and not head.length_field
        and head.method not in (b"POST", b"PUT")
    ):  # the common bodiless request: its lines as they came, and ours
        return line + head.section + _forwarded_for(client_ip)
    if head.connection_tokens and not head.connection_tokens <= _PLAIN_TOKENS:
        parts = [line, *_forwardable(head.fields, head.connection_tokens)]
        framed = False
    elif head.framing == F_CHUNKED and _CHUNKED_LINE not in head.section:
        # chunked spelled otherwise ("Chunked", "chunked " ...): the server gets the one form
        parts = [line, _TE_LINE.sub(b"", _without_hop(head.section, head.hop, head.hop_at))]
        framed = False
    else:
        parts = [line, _without_hop(head.section, head.hop, head.hop_at)]
        framed = head.framing == F_CHUNKED or head.length_field
    if not head.has_host:
        parts.append(b"Host: localhost\r\n")
    if not framed:
        if head.framing == F_CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif head.framing == F_LENGTH:
            parts.append(b"Content-Length: %d\r\n" % head.length)
        elif head.method in (b"POST", b"PUT"):
            parts.append(b"Content-Length: 0\r\n")
    parts.append(_forwarded_for(client_ip))
    return b"".join(parts)


#: The Transfer-Encoding line as the edge forwards it; another spelling of it is rewritten.
_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"
_TE_LINE = re.compile(rb"(?im)^transfer-encoding:[^\r]*\r\n")


@functools.lru_cache(maxsize=1024)
def _forwarded_for(client_ip: str) -> bytes:
    """The fields the edge adds for a client, and the blank line that ends the head."""
    return (
        b"X-Forwarded-For: " + client_ip.encode("ascii") + b"\r\nX-Forwarded-Proto: https\r\n\r\n"
    )


#: The status line the phone receives, per status: RFC 9110's reason phrases (``401
#: Unauthorized``, ``100 Continue`` ...), the edge's own where it differs (413's new name).
_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, text)
    for status, text in ({s.value: s.phrase.encode() for s in HTTPStatus} | REASONS).items()
}


def client_response(head: ResponseHead, keep_alive: bool) -> bytes:
    """The response head the phone receives (framing kept, connection fields ours): C's when
    it takes the head, else :func:`python_client_response`'s (the same bytes)."""
    return _c_client_response(head, keep_alive) or python_client_response(head, keep_alive)


def python_client_response(head: ResponseHead, keep_alive: bool) -> bytes:
    """:func:`client_response` in Python: the reference, and every case C declines."""
    # a status without a known phrase gets none (RFC 9112 4: the reason-phrase is optional)
    line = _STATUS_LINES.get(head.status) or b"HTTP/1.1 %d \r\n" % head.status
    close = b"Connection: close\r\n\r\n" if head.status >= 200 and not keep_alive else b"\r\n"
    if (
        head.status >= 200
        and head.status not in (204, 304)
        and (not head.connection_tokens or head.connection_tokens <= _PLAIN_TOKENS)
    ):  # framing fields pass as they are (a HEAD answer keeps its Content-Length)
        return line + _without_hop(head.section, head.hop, head.hop_at) + close
    parts = [line, *_forwardable(head.fields, head.connection_tokens)]
    if head.framing == F_CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.framing == F_LENGTH:
        parts.append(b"Content-Length: %d\r\n" % head.length)
    parts.append(close)
    return b"".join(parts)


def error_response(status: int, *, retry_after: int | None = None, close: bool = True) -> bytes:
    """A small plain-text answer the edge gives by itself."""
    reason = REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status,
        reason,
        len(body),
        extra,
        conn,
        body,
    )


def _no_c(head: object, other: object) -> None:
    return None


#: Set in the environment (to anything), the edge runs on the Python parsers alone.
PURE_PYTHON_ENV = "NATSYNC_PURE_PYTHON"

try:  # the C common case (optional: natsync/edge/_speedups.c, built by setup.py)
    from natsync.edge import _speedups
except ImportError:  # pragma: no cover - a build without a C compiler
    _speedups = None  # type: ignore[assignment]
#: The C module when it is built and not switched off, else None.
speedups = None if os.environ.get(PURE_PYTHON_ENV) else _speedups
#: The C parsers, or stand-ins answering "not mine" (then the Python parser takes every head).
_c_request_head: Callable[[bytes, int], RequestHead | None] = _no_c
_c_response_head: Callable[[bytes, bytes], ResponseHead | None] = _no_c
_c_take_request: Callable[[bytes, int], tuple[RequestHead, bytes] | None] = _no_c
_c_take_response: Callable[[bytes, bytes], tuple[ResponseHead, bytes] | None] = _no_c
_c_backend_request: Callable[[RequestHead, str], bytes | None] = _no_c
_c_client_response: Callable[[ResponseHead, bool], bytes | None] = _no_c
if speedups is not None:
    speedups.configure(
        RequestHead,
        ResponseHead,
        (F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE),
        (_NO_TOKENS, _COMMON_CONNECTION[b"keep-alive"], _COMMON_CONNECTION[b"close"],
         _COMMON_CONNECTION[b"upgrade"]),
        (MAX_HEAD_SIZE, MAX_HEADER_COUNT, MAX_LENGTH_DIGITS),
    )  # fmt: skip
    _c_request_head = speedups.request_head
    _c_response_head = speedups.response_head
    _c_take_request = speedups.take_request
    _c_take_response = speedups.take_response
    speedups.set_status_lines(_STATUS_LINES)
    _c_backend_request = speedups.backend_request
    _c_client_response = speedups.client_response

#: The C halves of :func:`take_request` and :func:`take_response` alone, for the connection
#: machines' per-request calls (one Python frame less each): the head and the rest, or None —
#: incomplete, declined or no C; the Python halves (python_take_*) decide then.
c_take_request = _c_take_request
c_take_response = _c_take_response
#: The C halves of the serialisers, the same way: the bytes, or None (the Python halves').
c_backend_request = _c_backend_request
c_client_response = _c_client_response


# ChunkedScanner states.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedScanner:
    """Checks a chunked body as it streams past and finds where it ends (RFC 9112 7.1).

    ``feed(data)`` returns how many bytes of *data* belong to the body (the rest is the next
    message); ``done`` turns True after the last chunk and trailers. Bytes are not changed:
    once they passed these checks, the receiver cannot read them differently.
    """

    __slots__ = ("_line", "_remaining", "_state", "_trailer", "done")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = bytearray()
        self._trailer = 0
        self.done = False

    def feed(self, data: bytes | memoryview) -> int:
        pos = 0
        n = len(data)
        while pos < n and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            end = bytes(data[pos : pos + MAX_CHUNK_LINE + 2]).find(b"\n")
            if end < 0:
                self._line += data[pos:n]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise EdgeHttpError(400, "chunk size line too long")
                return n
            self._line += data[pos : pos + end + 1]
            pos += end + 1
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                raise EdgeHttpError(400, "chunked body line without CRLF")
            line = line[:-2]
            if len(line) > MAX_CHUNK_LINE:
                raise EdgeHttpError(400, "chunk size line too long")
            if state == _DATA_END:
                if line:
                    raise EdgeHttpError(400, "chunk data longer than its size")
                self._state = _SIZE
            elif state == _SIZE:
                self._remaining = chunk_size(line)
                self._state = _DATA if self._remaining else _TRAILER
            else:  # trailer section
                if not line:
                    self.done = True
                    break
                self._trailer += len(line)
                if self._trailer > MAX_TRAILER_SIZE:
                    raise EdgeHttpError(400, "chunked trailers too large")
                _parse_fields([line])
        return pos


@dataclass(frozen=True, slots=True)
class EasFields:
    """What the access log records of an ActiveSync request."""

    user: str = ""
    device_id: str = ""
    device_type: str = ""
    cmd: str = ""


def _basic_user(authorization: bytes | None) -> str:
    if not authorization or authorization[:6].lower() != b"basic ":
        return ""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(b":")[0].decode("utf-8", "replace")


_NO_FIELDS = EasFields()
#: Distinct plain-form queries whose fields are kept (a device repeats its query per command).
QUERY_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=QUERY_CACHE_SIZE)
def _plain_query_fields(query: str) -> EasFields:
    params = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)[:32]}
    return EasFields(
        user=params.get("user", ""),
        device_id=params.get("deviceid", ""),
        device_type=params.get("devicetype", ""),
        cmd=params.get("cmd", ""),
    )


def eas_fields(head: RequestHead, with_user: bool = True) -> EasFields:
    """User, device and command of a request, from the query (either form) or Basic auth.

    *with_user* False skips the Authorization field (only the access log shows the user; the
    command is needed for the metrics either way)."""
    query = head.query
    user = _basic_user(head.get(b"authorization")) if with_user else ""
    if not query:
        return EasFields(user=user) if user else _NO_FIELDS
    if ("=" in query and "&" in query) or "Cmd=" in query:
        fields = _plain_query_fields(query)
        if user and user != fields.user:
            return EasFields(user, fields.device_id, fields.device_type, fields.cmd)
        return fields
    try:
        from natsync.eas.request import parse_request

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.fields}
        eas = parse_request(query, headers)
    except NatsyncError:
        return EasFields(user=user)
    return EasFields(user or eas.user, eas.device_id, eas.device_type, eas.cmd)
