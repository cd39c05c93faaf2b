"""Decoding the few IMAP response shapes the mirror reads, sans-I/O: bytes in, values out.

Python's imaplib frames responses (lines and literals) and sorts untagged ones by type; what it
leaves as bytes is decoded here: LIST lines (RFC 3501 §7.2.2, with RFC 6154 SPECIAL-USE
attributes), FETCH items (UID, FLAGS, MODSEQ of RFC 7162 §3.1.4, INTERNALDATE), VANISHED
(RFC 7162 §3.2.10), response codes (UIDVALIDITY, HIGHESTMODSEQ, APPENDUID/COPYUID of RFC 4315,
MODIFIED) and modified UTF-7 mailbox names (RFC 3501 §5.1.3). Everything decodes or raises
:class:`ImapWireError` (fuzzed in fuzz/fuzz_imap_wire.py).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from natsync.errors import NatsyncError

#: Longest UID set we expand (a VANISHED or COPYUID range): a hostile server must not make us
#: build a list of 2**32 numbers.
MAX_SET_MEMBERS = 1_000_000
#: UIDs and UIDVALIDITY are 32-bit (RFC 3501 §2.3.1.1); MODSEQ 63-bit (RFC 7162 §7).
MAX_UID = 2**32 - 1
MAX_MODSEQ = 2**63 - 1


class ImapWireError(NatsyncError):
    """The IMAP server sent a response the mirror cannot read; check the server's version."""

    http_status = 502


#: RFC 6154 §2 attributes, in the order that decides a mailbox's role.
SPECIAL_USE = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged")


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str  # decoded from modified UTF-7
    raw_name: str  # as the server spells it (what SELECT needs)
    delimiter: str  # "" when the server has no hierarchy
    attributes: frozenset[str]

    @property
    def special(self) -> str | None:
        lowered = {a.lower() for a in self.attributes}
        return next((s for s in SPECIAL_USE if s.lower() in lowered), None)

    @property
    def selectable(self) -> bool:
        lowered = {a.lower() for a in self.attributes}
        return "\\noselect" not in lowered and "\\nonexistent" not in lowered


@dataclass(frozen=True, slots=True)
class FetchItem:
    uid: int
    flags: frozenset[str] | None
    modseq: int | None
    internaldate: datetime | None
    body: bytes | None


def _int(text: bytes | str, limit: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ImapWireError(f"not a number in {what}: {text!r}") from None
    if not 0 <= value <= limit:
        raise ImapWireError(f"{what} out of range: {value}")
    return value


def quote(name: str) -> str:
    """*name* as an IMAP quoted string (RFC 3501 §4.3), after modified UTF-7 encoding."""
    encoded = encode_mutf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_raw(name: str) -> str:
    """A mailbox name as the server spells it (LIST's, already modified UTF-7) quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_mutf7(text: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        end = text.find("-", amp)
        if end < 0:
            raise ImapWireError(f"unterminated modified UTF-7 in mailbox name {text!r}")
        chunk = text[amp + 1 : end]
        if not chunk:
            out.append("&")
        else:
            data = chunk.replace(",", "/")
            try:
                raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                raise ImapWireError(f"bad modified UTF-7 in mailbox name {text!r}") from None
        pos = end + 1
    return "".join(out)


_LIST = re.compile(rb'^\(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.*)$', re.S)


def _unquote(token: bytes) -> str:
    if token.startswith(b'"'):
        if len(token) < 2 or not token.endswith(b'"'):
            raise ImapWireError(f"unterminated quoted string {token[:80]!r}")
        token = re.sub(rb"\\(.)", rb"\1", token[1:-1])
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        raise ImapWireError(f"mailbox name is not UTF-8: {token[:80]!r}") from None


def parse_list(line: bytes | tuple[bytes, bytes]) -> ListEntry:
    """One LIST response (imaplib gives a tuple when the name came as a literal)."""
    if isinstance(line, tuple):
        head, literal = line
        match = _LIST.match(re.sub(rb"\{\d+\}$", b'""', head))
        raw_name_bytes = literal
    else:
        match = _LIST.match(line)
        raw_name_bytes = b""
    if match is None:
        raise ImapWireError(f"not a LIST response: {line!r}"[:200])
    attributes = frozenset(a.decode("ascii", "replace") for a in match.group(1).split())
    delimiter = "" if match.group(2) == b"NIL" else _unquote(match.group(2))
    raw_name = (
        raw_name_bytes.decode("utf-8", "replace") if raw_name_bytes else _unquote(match.group(3))
    )
    if not raw_name:
        raise ImapWireError("LIST response without a mailbox name")
    return ListEntry(decode_mutf7(raw_name), raw_name, delimiter, attributes)


def expand_set(text: bytes | str) -> list[int]:
    """The UIDs of a sequence set such as ``1:3,7`` (RFC 3501 §9 sequence-set, no ``*``)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    members: list[int] = []
    for part in text.strip().split(","):
        low, sep, high = part.partition(":")
        first = _int(low, MAX_UID, "a UID set")
        last = _int(high, MAX_UID, "a UID set") if sep else first
        if first > last:
            first, last = last, first
        if len(members) + last - first + 1 > MAX_SET_MEMBERS:
            raise ImapWireError(f"UID set too large (over {MAX_SET_MEMBERS} members)")
        members.extend(range(first, last + 1))
    return members


def compress_set(uids: list[int]) -> str:
    """A sorted sequence set for *uids* (``1:3,7``)."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ImapWireError("an empty UID set cannot be sent")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def parse_vanished(line: bytes) -> list[int]:
    """A VANISHED response's UIDs (``(EARLIER) 1:3`` or ``4,9``)."""
    text = line.decode("ascii", "replace").strip()
    if text.upper().startswith("(EARLIER)"):
        text = text[len("(EARLIER)") :]
    return expand_set(text)


_CODE = re.compile(rb"\[([A-Z-]+)(?: ([^\]]*))?\]")


def response_codes(lines: list[Any]) -> dict[str, str]:
    """Response codes in untagged/tagged text (``[UIDVALIDITY 7]`` -> {"UIDVALIDITY": "7"})."""
    found: dict[str, str] = {}
    for line in lines:
        if not isinstance(line, bytes):
            continue
        for match in _CODE.finditer(line):
            found[match.group(1).decode()] = (match.group(2) or b"").decode("ascii", "replace")
    return found


def code_number(codes: dict[str, str], name: str, limit: int) -> int | None:
    value = codes.get(name)
    return None if value is None else _int(value.split()[0] if value else "", limit, name)


def appended_uid(codes: dict[str, str]) -> int | None:
    """APPENDUID's new UID (``uidvalidity uid``, RFC 4315 3), or None. One that is not a UID
    tells the client no more than a server without UIDPLUS does, which sends none."""
    parts = codes.get("APPENDUID", "").split()
    if len(parts) != 2:
        return None
    try:
        return _int(parts[1], MAX_UID, "APPENDUID")
    except ImapWireError:
        return None


def copy_uids(value: str) -> dict[int, int]:
    """COPYUID's ``uidvalidity src-set dst-set`` as old UID -> new UID (RFC 4315 §3)."""
    parts = value.split()
    if len(parts) != 3:
        raise ImapWireError(f"not a COPYUID code: {value!r}")
    source, target = expand_set(parts[1]), expand_set(parts[2])
    if len(source) != len(target):
        raise ImapWireError(f"COPYUID sets differ in length: {value!r}")
    return dict(zip(source, target, strict=True))


_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_MODSEQ = re.compile(rb"\bMODSEQ \((\d+)\)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


def parse_fetch(item: bytes | tuple[bytes, bytes]) -> FetchItem:
    """One FETCH response as imaplib gives it: a line, or (head, literal) with a body."""
    if isinstance(item, tuple):
        head, body = item[0], item[1]
    else:
        head, body = item, None
    uid_match = _UID.search(head)
    if uid_match is None:
        raise ImapWireError(f"FETCH response without UID: {head[:120]!r}")
    uid = _int(uid_match.group(1), MAX_UID, "UID")
    flags_match = _FLAGS.search(head)
    flags = (
        frozenset(f.decode("ascii", "replace") for f in flags_match.group(1).split())
        if flags_match
        else None
    )
    modseq_match = _MODSEQ.search(head)
    modseq = _int(modseq_match.group(1), MAX_MODSEQ, "MODSEQ") if modseq_match else None
    date_match = _DATE.search(head)
    internaldate = None
    if date_match:
        try:
            internaldate = datetime.strptime(
                date_match.group(1).decode("ascii", "replace").strip(), "%d-%b-%Y %H:%M:%S %z"
            ).astimezone(UTC)
        except ValueError:
            raise ImapWireError(f"bad INTERNALDATE {date_match.group(1)!r}") from None
    return FetchItem(uid, flags, modseq, internaldate, body)


def fetch_items(data: list[bytes | tuple[bytes, bytes] | None]) -> list[FetchItem]:
    """Every FETCH response of an imaplib answer (it interleaves ``b')'`` closers)."""
    items: list[FetchItem] = []
    for entry in data:
        if entry is None or (isinstance(entry, bytes) and entry.strip() in (b")", b"")):
            continue
        items.append(parse_fetch(entry))
    return items
