"""HTTP/1.1 pieces both of natsync's readers use (RFC 9112): the edge's strict parser and its
chunked-body scanner (``natsync.edge.http``), and the server's front, which removes a body's
framing itself (``natsync.server.connection``). One error, the field-value check, the bounds of
a chunked body and the reading of a chunk-size line are here once, so the two cannot drift
apart on where a chunked body ends (request smuggling, RFC 9112 11.2).
"""

from __future__ import annotations

import re

from natsync.errors import NatsyncError

#: Longest chunk-size line (size + extensions): a real one is a few bytes.
MAX_CHUNK_LINE = 1024
#: Largest trailer section of a chunked body.
MAX_TRAILER_SIZE = 4096
#: Most hex digits of a chunk size: 16 keep the value inside a 64-bit int.
MAX_CHUNK_DIGITS = 16

#: A character a field value may not hold: field values are visible ASCII, obs-text, SP and HT
#: only (RFC 9110 5.5) — no CR, LF or NUL. Chunk extensions are held to the same.
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class Http1Error(NatsyncError):
    """A message cannot be read as HTTP/1.1 allows; it is answered with :attr:`http_status` and
    the connection ends (nothing after it can be trusted to start where it seems to)."""

    http_status = 400

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line (CRLF removed; RFC 9112 7.1: hex digits, then optional
    ``;extensions``) gives; 0 is the last chunk. Http1Error (400) when the size is not
    :data:`MAX_CHUNK_DIGITS` hex digits at most, or an extension holds a control character."""
    size, _, ext = line.partition(b";")
    if len(size) > MAX_CHUNK_DIGITS or _HEX.fullmatch(size) is None:
        raise Http1Error(400, "chunk size is not hexadecimal")
    if BAD_VALUE.search(ext) is not None:
        raise Http1Error(400, "control character in a chunk extension")
    return int(size, 16)
