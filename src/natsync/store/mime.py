"""The little MIME reading the store itself needs: search text and attachment bytes.

Everything else about MIME (EAS bodies, addresses, charsets) is natsync.mail's. The store reads
the raw message only to index its plain text once at delivery and to cut out one attachment
part by its position in ``email``'s walk order (the ``part_index`` natsync.mail recorded).
The compat32 parser is used on purpose: it is several times faster than ``policy.default``
and walks the same tree, and neither job needs header decoding.
"""

from __future__ import annotations

import email
import html
import re
from email.message import Message

#: How much body text is indexed per message. Search looks for words, not whole documents; a
#: cap keeps a 20 MB newsletter from making the index (and every search) heavy.
MAX_INDEXED_TEXT_CHARS = 64 * 1024

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def plain_text(raw: bytes) -> str:
    """The readable text of a message, for the search index ("" when there is none)."""
    try:
        message = _parse(raw)
        plain: str | None = None
        rich: str | None = None
        for part in message.walk():
            if part.is_multipart() or part.get_content_disposition() == "attachment":
                continue
            content_type = part.get_content_type()
            if content_type == "text/plain" and plain is None:
                plain = _decoded_text(part)
            elif content_type == "text/html" and rich is None:
                rich = html.unescape(_TAG.sub(" ", _decoded_text(part)))
        text = plain if plain is not None else (rich or "")
    except Exception:  # a message we cannot read is still stored, unindexed
        return ""
    return _SPACE.sub(" ", text).strip()[:MAX_INDEXED_TEXT_CHARS]


def part_bytes(raw: bytes, part_index: int) -> bytes:
    """The decoded content of the part at *part_index* in walk order (b"" if there is none)."""
    for index, part in enumerate(_parse(raw).walk()):
        if index == part_index:
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload(0)
                return inner.as_bytes() if isinstance(inner, Message) else b""
            if part.is_multipart():
                return b""
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    return b""
