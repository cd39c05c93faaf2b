"""Contact records ⇄ vCard 3.0 (RFC 2426) and 4.0 (RFC 6350), for import and export.

Lines are unfolded by vobject (``getLogicalLines``, which also joins quoted-printable lines of
old 2.1 files); parameters are quoted with its ``dquoteEscape``. The rest of vobject is not
used: its value layer keeps only the first of comma-separated values (cutting 4.0 ``data:``
URIs and URLs short), and its line regular expression backtracks exponentially on a long
parameter list, so :func:`parse_line` splits a line in one pass. Values are decoded here per
RFC 6350 3.4 (``\\n``, ``\\,``, ``\\;``, ``\\\\``).

Which property carries which record key (see :mod:`natsync.classes.contacts` for the keys):

* ``FN`` ⇄ ``file_as`` (export writes the composed name when there is no ``file_as``, and
  marks a ``file_as`` with ``X-NATSYNC-FILE-AS=1``; import keeps an unmarked FN only when it
  differs from the name composed from ``N``); ``N`` ⇄ last, first, middle name, ``title``
  (prefix), ``suffix``; ``NICKNAME``; ``ORG`` ⇄ company; department; ``TITLE`` ⇄
  ``job_title``; ``BDAY``; ``ANNIVERSARY`` (4.0) / ``X-ANNIVERSARY`` (3.0); ``EMAIL`` ×3 and
  ``IMPP`` ×3 (the slot in ``X-NATSYNC-SLOT``, else in order); ``TEL`` by TYPE (work/home
  voice, fax, cell, car, pager, x- types for radio, assistant, company main and MMS; the
  second work/home number marked ``X-NATSYNC-SLOT=2``); ``ADR`` work/home/other; ``URL``;
  ``CATEGORIES``; ``NOTE`` (a non-plain body's type in ``X-NATSYNC-BODY-TYPE``); ``PHOTO``
  (3.0 ``ENCODING=b``, 4.0 ``data:`` URI); ``UID`` is the item's uid;
* Outlook's ``X-MS-MANAGER``, ``X-MS-ASSISTANT``, ``X-MS-SPOUSE``, ``X-MS-CHILD``; Apple's
  ``X-PHONETIC-FIRST-NAME`` / ``-LAST-NAME`` / ``X-PHONETIC-ORG`` for the yomi names; the
  EAS-only rest as ``X-NATSYNC-<ELEMENT>`` (office location, customer id, government id,
  account name, alias, weighted rank).

Bad input raises :class:`VCardError`, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from natsync.classes.body import format_eas_date
from natsync.classes.codec import PimError, Record
from natsync.classes.contacts import check_picture
from natsync.errors import NatsyncError

#: Cards one file may hold: an address book of 50,000 people is large; more is not one.
MAX_CARDS = 50_000
#: Content lines one card may hold (a real card has tens).
MAX_LINES_PER_CARD = 1000
VERSIONS = ("3.0", "4.0")
#: Octets of a content line before it is folded (RFC 6350 3.2).
FOLD_OCTETS = 75


class VCardError(NatsyncError):
    """The vCard file cannot be read; fix the named line or export it again."""

    http_status = 400


@dataclass(frozen=True, slots=True)
class Card:
    """One contact of a vCard file: its UID ("" when the card had none) and its record."""

    uid: str
    record: Record


# -- RFC 6350 3.4 value escaping ---------------------------------------------------------------

_UNESCAPE = {"n": "\n", "N": "\n", "\\": "\\", ",": ",", ";": ";", ":": ":"}


def split_value(value: str, separator: str) -> list[str]:
    """Split at unescaped *separator* and unescape each part."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            current.append(_UNESCAPE.get(nxt, nxt))
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """A single text value without its escapes."""
    return split_value(value, "")[0]


def escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace(",", "\\,")
        .replace(";", "\\;")
        .replace("\r\n", "\n")
        .replace("\n", "\\n")
    )


# -- the mapping -------------------------------------------------------------------------------

_NAME_PARTS = ("last_name", "first_name", "middle_name", "title", "suffix")
_ADR_KINDS = {"work": "business_address", "home": "home_address", "other": "other_address"}
_ADR_PARTS = ("", "", "street", "city", "state", "postal_code", "country")
#: TEL types written for each record key, in export order (the order decides "2" numbers).
_TEL: dict[str, tuple[str, ...]] = {
    "business_phone_number": ("work", "voice"),
    "business2_phone_number": ("work", "voice"),
    "business_fax_number": ("work", "fax"),
    "home_phone_number": ("home", "voice"),
    "home2_phone_number": ("home", "voice"),
    "home_fax_number": ("home", "fax"),
    "mobile_phone_number": ("cell",),
    "car_phone_number": ("car",),
    "pager_number": ("pager",),
    "radio_phone_number": ("x-radio",),
    "assistant_phone_number": ("x-assistant",),
    "company_main_phone": ("x-company-main",),
    "mms": ("x-mms",),
}
_SECOND_NUMBERS = frozenset({"business2_phone_number", "home2_phone_number"})
_SIMPLE: dict[str, str] = {
    "NICKNAME": "nick_name",
    "TITLE": "job_title",
    "URL": "web_page",
    "X-MS-MANAGER": "manager_name",
    "X-MS-ASSISTANT": "assistant_name",
    "X-MS-SPOUSE": "spouse",
    "X-PHONETIC-FIRST-NAME": "yomi_first_name",
    "X-PHONETIC-LAST-NAME": "yomi_last_name",
    "X-PHONETIC-ORG": "yomi_company_name",
    "X-NATSYNC-OFFICELOCATION": "office_location",
    "X-NATSYNC-CUSTOMERID": "customer_id",
    "X-NATSYNC-GOVERNMENTID": "government_id",
    "X-NATSYNC-ACCOUNTNAME": "account_name",
    "X-NATSYNC-ALIAS": "alias",
    "X-NATSYNC-WEIGHTEDRANK": "weighted_rank",
}
_UNESCAPED = frozenset({"URL"})  # URI values: no text escaping (RFC 6350 6.7.8)
_EMAILS = ("email1_address", "email2_address", "email3_address")
_IMS = ("im_address", "im_address2", "im_address3")
_PHOTO_TYPES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF"}
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,(?P<data>.*)", re.S)
_DATE = re.compile(r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})$", re.A)
_DATE_TIME = re.compile(
    r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})T(?P<H>\d{2}):?(?P<M>\d{2})(?::?(?P<S>\d{2}))?"
    r"(?:\.\d+)?(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?$",
    re.A,
)


def composed_name(record: Mapping[str, Any]) -> str:
    """The display name of a contact: its names, else its company, else its first address."""
    parts = [record.get(k) for k in ("title", "first_name", "middle_name", "last_name", "suffix")]
    name = " ".join(str(p) for p in parts if p)
    return name or str(record.get("company_name") or record.get("email1_address") or "")


def _types(params: list[list[str]]) -> set[str]:
    """Every TYPE value (and 2.1-style bare parameter) of a line, lower-cased."""
    found: set[str] = set()
    for param in params:
        name, values = param[0].upper(), param[1:]
        if name == "TYPE":
            for v in values:
                found.update(t.strip().lower() for t in v.split(","))
        elif not values:
            found.add(name.lower())
    return found


def _param(params: list[list[str]], wanted: str) -> str | None:
    for param in params:
        if param[0].upper() == wanted and len(param) > 1:
            return param[1]
    return None


def _date_in(value: str, what: str) -> str:
    """An RFC 6350 4.3 date or date-time as EAS text. A date without a year (``--0203``) gets
    1604, the year address books use for "no year"; a time without a zone is taken as UTC."""
    text = value.strip()
    if text.startswith("--") and len(text) == 6 and text[2:].isdigit():
        text = "1604" + text[2:]
    match = _DATE.match(text) or _DATE_TIME.match(text)
    if match is None:
        raise VCardError(f"{what} {text[:40]!r} is not a date (write YYYY-MM-DD)")
    parts = match.groupdict()
    try:
        moment = datetime(
            int(parts["y"]),
            int(parts["m"]),
            int(parts["d"]),
            int(parts.get("H") or 0),
            int(parts.get("M") or 0),
            int(parts.get("S") or 0),
            tzinfo=UTC,
        )
        zone = parts.get("zone") or "Z"
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    except (ValueError, OverflowError) as exc:
        raise VCardError(f"{what} {text[:40]!r} is not a valid date") from exc
    return format_eas_date(moment)


def _date_out(value: str) -> str:
    return value[:10] if value.endswith("T00:00:00.000Z") else value.replace(".000Z", "Z")


def _tel_key(types: set[str], slot: int, record: Record) -> str | None:
    for key, wanted in _TEL.items():
        if wanted[0].startswith("x-") and wanted[0] in types:
            return key
    if slot == 2 and "fax" not in types and ("work" in types or "home" in types):
        second = "business2_phone_number" if "work" in types else "home2_phone_number"
        if second not in record:
            return second
    if "cell" in types:
        order: tuple[str, ...] = ("mobile_phone_number",)
    elif "car" in types:
        order = ("car_phone_number",)
    elif "pager" in types:
        order = ("pager_number",)
    elif "fax" in types:
        order = ("home_fax_number",) if "home" in types else ("business_fax_number",)
    elif "work" in types:
        order = ("business_phone_number", "business2_phone_number")
    elif "home" in types:
        order = ("home_phone_number", "home2_phone_number")
    else:
        order = (
            "home_phone_number",
            "business_phone_number",
            "home2_phone_number",
            "business2_phone_number",
        )
    return next((k for k in order if k not in record), None)


def _photo_in(value: str, params: list[list[str]]) -> str | None:
    match = _DATA_URI.match(value.strip())
    if match:
        data = match["data"]
    elif (_param(params, "ENCODING") or "").lower() in ("b", "base64") or "base64" in _types(
        params
    ):
        data = value
    else:
        return None  # a PHOTO by URL: nothing to store
    try:
        return check_picture(data)
    except PimError as exc:
        raise VCardError(f"PHOTO: {exc.message}") from exc


def _slot(params: list[list[str]]) -> int:
    """Which of the three EAS slots an EMAIL or IMPP names (X-NATSYNC-SLOT); 0: the next free."""
    text = _param(params, "X-NATSYNC-SLOT") or ""
    return int(text) if text in ("1", "2", "3") else 0


def _fill_slots(record: Record, keys: tuple[str, ...], values: list[tuple[int, str]]) -> None:
    for slot, value in sorted(values, key=lambda sv: sv[0] == 0):  # named slots first
        if not value:
            continue
        if slot and keys[slot - 1] not in record:
            record[keys[slot - 1]] = value
            continue
        free = next((k for k in keys if k not in record), None)
        if free is not None:
            record[free] = value


def _set(record: Record, key: str, value: str) -> None:
    if value:
        record[key] = value


def _card(lines: list[tuple[str, list[list[str]], str]]) -> Card:
    record: Record = {}
    uid = ""
    fn = ""
    fn_is_file_as = False
    emails: list[tuple[int, str]] = []
    ims: list[tuple[int, str]] = []
    categories: list[str] = []
    children: list[str] = []
    for name, params, raw_value in lines:
        # A bare CR inside a line is a line break to us, as an escaped \n is (RFC 6350 3.4).
        value = raw_value.replace("\r\n", "\n").replace("\r", "\n")
        if name in ("URL", "IMPP", "UID"):  # these hold no line breaks: a stray one is a space
            value = value.replace("\n", " ")
        if name in _SIMPLE:
            text = value if name in _UNESCAPED else unescape(value)
            _set(record, _SIMPLE[name], text)
        elif name == "FN":
            fn = unescape(value)
            fn_is_file_as = _param(params, "X-NATSYNC-FILE-AS") == "1"
        elif name == "N":
            parts = split_value(value, ";")
            for key, part in zip(_NAME_PARTS, parts, strict=False):
                _set(record, key, part)
        elif name == "ORG":
            parts = split_value(value, ";")
            _set(record, "company_name", parts[0])
            if len(parts) > 1:
                _set(record, "department", parts[1])
        elif name == "UID":
            uid = value.strip()
        elif name == "BDAY":
            record["birthday"] = _date_in(value, "BDAY")
        elif name in ("ANNIVERSARY", "X-ANNIVERSARY"):
            record["anniversary"] = _date_in(value, name)
        elif name == "EMAIL":
            emails.append((_slot(params), unescape(value)))
        elif name == "IMPP":
            ims.append((_slot(params), value))
        elif name == "TEL":
            tel_key = _tel_key(_types(params), _slot(params), record)
            if tel_key is not None:
                _set(record, tel_key, unescape(value))
        elif name == "ADR":
            kinds = _types(params)
            kind = next((k for k in ("work", "home") if k in kinds), "other")
            prefix = _ADR_KINDS[kind]
            for part_key, part in zip(_ADR_PARTS, split_value(value, ";"), strict=False):
                if part_key:
                    _set(record, f"{prefix}_{part_key}", part)
        elif name == "CATEGORIES":
            categories.extend(c for c in split_value(value, ",") if c)
        elif name == "X-MS-CHILD":
            children.append(unescape(value))
        elif name == "NOTE":
            record["body"] = unescape(value)
            kind_text = _param(params, "X-NATSYNC-BODY-TYPE") or "1"
            record["body_type"] = int(kind_text) if kind_text in ("1", "2", "3") else 1
        elif name == "PHOTO":
            picture = _photo_in(value, params)
            if picture:
                record["picture"] = picture
    _fill_slots(record, _EMAILS, emails)
    _fill_slots(record, _IMS, ims)
    if categories:
        record["categories"] = categories
    if children:
        record["children"] = children
    if not record.get("body"):
        record.pop("body", None)
        record.pop("body_type", None)
    if fn and (fn_is_file_as or fn != composed_name(record)):
        record["file_as"] = fn
    return Card(uid=uid, record=record)


_NAME = re.compile(r"(?:[A-Za-z0-9-]+\.)?(?P<name>[A-Za-z0-9_-]+)")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_-]+")


def parse_line(line: str, number: int) -> tuple[str, list[list[str]], str]:
    """(NAME, parameters as [name, value ...] lists, raw value) of one unfolded content line
    (RFC 6350 3.3), in one pass: vobject's own line regular expression backtracks
    exponentially on a long parameter list (30 commas take minutes), so it is not used."""
    match = _NAME.match(line)
    if match is None:
        raise VCardError(f"line {number}: not a vCard line: {line[:40]!r}")
    name, i, end = match["name"].replace("_", "-").upper(), match.end(), len(line)
    params: list[list[str]] = []
    while i < end and line[i] == ";":
        found = _PARAM_NAME.match(line, i + 1)
        if found is None:
            raise VCardError(f"line {number}: a parameter of {name} has no name")
        param, i = [found.group()], found.end()
        if i < end and line[i] == "=":
            i += 1
            while True:
                if i < end and line[i] == '"':
                    close = line.find('"', i + 1)
                    if close < 0:
                        raise VCardError(f"line {number}: a quoted parameter of {name} never ends")
                    param.append(line[i + 1 : close])
                    i = close + 1
                else:
                    start = i
                    while i < end and line[i] not in ';:,"':
                        i += 1
                    param.append(line[start:i])
                if i < end and line[i] == ",":
                    i += 1
                    continue
                break
        params.append(param)
    if i >= end or line[i] != ":":
        raise VCardError(f"line {number}: not a vCard line ({name} has no ':' before its value)")
    return name, params, line[i + 1 :]


#: A card's VERSION line saying 2.1 (a folded value cannot look like it: continuations start
#: with a blank).
_VERSION_21 = re.compile(r"(?im)^VERSION[ \t]*:[ \t]*2\.1[ \t]*$")


def read_vcards(data: bytes) -> list[Card]:
    """Every card of a .vcf file; raises VCardError for anything that is not vCard."""
    from vobject.base import VObjectError, getLogicalLines

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VCardError(
            f"the vCard file is not UTF-8 (byte {exc.start}): save it as UTF-8"
        ) from exc
    cards: list[Card] = []
    current: list[tuple[str, list[list[str]], str]] | None = None
    try:
        # vobject joins a line ending in "=" to the next (a quoted-printable soft break) when
        # the text so far mentions quoted-printable anywhere, values included: only 2.1 cards
        # are quoted-printable, so 3.0 and 4.0 files (what natsync writes) are read without it.
        quoted_printable = _VERSION_21.search(text) is not None
        for line, counted in getLogicalLines(io.StringIO(text), allowQP=quoted_printable):
            if not line.strip():
                continue
            number = max(counted, 1)  # vobject counts the first line as 0, the others from 1
            name, params, value = parse_line(line, number)
            if name == "BEGIN" and value.strip().upper() == "VCARD":
                if current is not None:
                    raise VCardError(
                        f"line {number}: BEGIN:VCARD inside a card (END:VCARD missing)"
                    )
                current = []
            elif name == "END" and value.strip().upper() == "VCARD":
                if current is None:
                    raise VCardError(f"line {number}: END:VCARD without BEGIN:VCARD")
                cards.append(_card(current))
                current = None
                if len(cards) > MAX_CARDS:
                    raise VCardError(f"more than {MAX_CARDS} cards: split the file")
            elif current is None:
                raise VCardError(f"line {number}: {name} outside BEGIN:VCARD ... END:VCARD")
            else:
                current.append((name, params, value))
                if len(current) > MAX_LINES_PER_CARD:
                    raise VCardError(
                        f"line {number}: a card of more than {MAX_LINES_PER_CARD} lines"
                    )
    except VObjectError as exc:
        raise VCardError(f"not a vCard file: {exc}") from exc
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise VCardError(f"not a vCard file: {exc}") from exc
    if current is not None:
        raise VCardError("the last card has no END:VCARD: the file is cut short")
    if not cards:
        raise VCardError("no BEGIN:VCARD in the file: is it a vCard (.vcf) file?")
    return cards


# -- writing -----------------------------------------------------------------------------------


def fold(line: str) -> str:
    """*line* folded at 75 octets (RFC 6350 3.2), never inside a UTF-8 character, and never
    leaving a continuation of only blanks: readers (vobject among them) take such a line for
    an empty one and drop it, so a run of blanks stays on the line before."""
    chunks: list[str] = []
    current, size = "", 0
    limit = FOLD_OCTETS
    for ch in line:
        width = len(ch.encode("utf-8"))
        if size + width > limit and current.strip():
            chunks.append(current)
            current, size, limit = "", 0, FOLD_OCTETS - 1  # the leading space counts
        current += ch
        size += width
    if current and not current.strip() and chunks:
        chunks[-1] += current
    elif current or not chunks:
        chunks.append(current)
    return "\r\n ".join(chunks) + "\r\n"


def _line(name: str, value: str, params: Iterable[tuple[str, str]] = ()) -> str:
    from vobject.base import dquoteEscape

    head = name + "".join(f";{k}={dquoteEscape(v)}" for k, v in params)
    return fold(f"{head}:{value}")


def _photo_type(picture: str) -> str:
    try:
        raw = base64.b64decode(picture[:16], validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    return next((t for magic, t in _PHOTO_TYPES.items() if raw.startswith(magic)), "JPEG")


def write_vcard(uid: str, record: Mapping[str, Any], version: str = "3.0") -> str:
    """One card for the record (and its item uid), in vCard *version* 3.0 or 4.0."""
    if version not in VERSIONS:
        raise VCardError(f"vCard version {version!r} is not written: use 3.0 or 4.0")
    v4 = version == "4.0"
    out = [_line("BEGIN", "VCARD"), _line("VERSION", version)]
    if uid:
        out.append(_line("UID", uid))
    if record.get("file_as"):
        fn_params = [("X-NATSYNC-FILE-AS", "1")]
        out.append(_line("FN", escape(str(record["file_as"])), fn_params))
    else:
        out.append(_line("FN", escape(composed_name(record))))
    out.append(_line("N", ";".join(escape(str(record.get(k) or "")) for k in _NAME_PARTS)))
    for prop, key in _SIMPLE.items():
        if record.get(key):
            value = str(record[key])
            out.append(_line(prop, value if prop in _UNESCAPED else escape(value)))
    if record.get("company_name") or record.get("department"):
        org = [escape(str(record.get(k) or "")) for k in ("company_name", "department")]
        out.append(_line("ORG", ";".join(org)))
    if record.get("birthday"):
        out.append(_line("BDAY", _date_out(str(record["birthday"]))))
    if record.get("anniversary"):
        out.append(
            _line("ANNIVERSARY" if v4 else "X-ANNIVERSARY", _date_out(str(record["anniversary"])))
        )
    for slot, key in enumerate(_EMAILS, 1):
        if record.get(key):
            params = [("TYPE", "internet"), ("X-NATSYNC-SLOT", str(slot))]
            out.append(_line("EMAIL", escape(str(record[key])), params))
    for slot, key in enumerate(_IMS, 1):
        if record.get(key):
            out.append(_line("IMPP", str(record[key]), [("X-NATSYNC-SLOT", str(slot))]))
    for key, types in _TEL.items():
        if record.get(key):
            params = [("TYPE", ",".join(types))]
            if key in _SECOND_NUMBERS:
                params.append(("X-NATSYNC-SLOT", "2"))
            out.append(_line("TEL", escape(str(record[key])), params))
    for kind, prefix in _ADR_KINDS.items():
        parts = [str(record.get(f"{prefix}_{p}") or "") if p else "" for p in _ADR_PARTS]
        if any(parts):
            out.append(_line("ADR", ";".join(escape(p) for p in parts), [("TYPE", kind)]))
    if record.get("categories"):
        out.append(_line("CATEGORIES", ",".join(escape(str(c)) for c in record["categories"])))
    for child in record.get("children") or ():
        out.append(_line("X-MS-CHILD", escape(str(child))))
    if record.get("body"):
        body_type = int(record.get("body_type") or 1)
        params = [("X-NATSYNC-BODY-TYPE", str(body_type))] if body_type != 1 else []
        out.append(_line("NOTE", escape(str(record["body"])), params))
    if record.get("picture"):
        picture = str(record["picture"])
        kind = _photo_type(picture)
        if v4:
            out.append(_line("PHOTO", f"data:image/{kind.lower()};base64,{picture}"))
        else:
            out.append(_line("PHOTO", picture, [("ENCODING", "b"), ("TYPE", kind)]))
    out.append(_line("END", "VCARD"))
    return "".join(out)


def write_vcards(cards: Iterable[Card], version: str = "3.0") -> bytes:
    """A .vcf file of *cards*."""
    return "".join(write_vcard(c.uid, c.record, version) for c in cards).encode("utf-8")
