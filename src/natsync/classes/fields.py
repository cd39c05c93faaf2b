"""Value codecs the Contacts, Tasks and Notes classes share (MS-ASDTYPE 2.3 dates, 2.6 integers,
MS-ASAIRS 2.2.2.9 Body): reading one ApplicationData child into a record value, and back.

Every reader raises :class:`~natsync.classes.codec.PimError` for a value it cannot take, so a codec
built from them "decodes or raises PimError" (the Sync command answers that item with Status 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from natsync.classes.body import (
    BodyPreference,
    BodyType,
    build_body,
    format_eas_date,
    parse_eas_date,
)
from natsync.classes.codec import PimError, Record
from natsync.classes.versions import Version
from natsync.mime import html_to_text
from natsync.mime.errors import EmailChangeError
from natsync.wbxml import E, Element

#: Longest text one property may hold. Real names and addresses are short; a body may be long,
#: but a megabyte of note is a broken client, not a note.
MAX_TEXT_CHARS = 1024 * 1024
#: Categories (or Children) one item may carry (MS-ASEMAIL's 300 for email, kept for all).
MAX_LIST_ITEMS = 300
#: Body types a PIM item keeps as sent (MS-ASAIRS 2.2.2.41 Type): plain, HTML, RTF.
BODY_TYPES = (BodyType.PLAIN, BodyType.HTML, BodyType.RTF)


def text_of(element: Element) -> str:
    """The element's text, refused when it is a container or absurdly long."""
    if element.children:
        raise PimError(f"{element.namespace}:{element.tag} must hold a value, not elements")
    text = element.text()
    if len(text) > MAX_TEXT_CHARS:
        raise PimError(f"{element.tag} is longer than {MAX_TEXT_CHARS} characters")
    return text


def int_of(element: Element, low: int, high: int) -> int:
    """An unsigned decimal in [low, high] (MS-ASDTYPE 2.6)."""
    text = text_of(element).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise PimError(f"{element.tag} must be a number, not {text[:20]!r}")
    value = int(text)
    if not low <= value <= high:
        raise PimError(f"{element.tag} must be between {low} and {high}, not {value}")
    return value


def bool_of(element: Element) -> bool:
    """An MS-ASDTYPE 2.1 boolean: 0 or 1."""
    return int_of(element, 0, 1) == 1


def date_of(element: Element) -> str:
    """An EAS date-time, kept as its normalised text (``2026-11-25T09:49:53.000Z``)."""
    try:
        return format_eas_date(parse_eas_date(text_of(element)))
    except EmailChangeError as exc:
        raise PimError(f"{element.tag}: {exc.message}") from exc


def list_of(element: Element, child_tag: str) -> list[str]:
    """The texts of a container's children named *child_tag* (Categories, Children)."""
    if element.value not in (None, "", b""):
        raise PimError(f"{element.tag} must hold {child_tag} elements, not text")
    items = [text_of(c) for c in element.children if c.tag == child_tag]
    if len(items) > MAX_LIST_ITEMS:
        raise PimError(f"{element.tag} holds more than {MAX_LIST_ITEMS} {child_tag} elements")
    return items


def list_element(namespace: str, tag: str, child_tag: str, items: Sequence[str]) -> Element:
    return E(namespace, tag, *(E(namespace, child_tag, item) for item in items))


# -- AirSyncBase Body ---------------------------------------------------------------------------


def read_body(element: Element, record: Record) -> None:
    """A client's airsyncbase:Body into ``record["body"]`` (text) and ``record["body_type"]``."""
    kind = element.find("Type", "AirSyncBase")
    body_type = int_of(kind, 1, 4) if kind is not None else int(BodyType.PLAIN)
    if body_type not in BODY_TYPES:
        raise PimError("a PIM item's Body must be plain text, HTML or RTF (Type 1, 2 or 3)")
    data = element.find("Data", "AirSyncBase")
    text = text_of(data) if data is not None else ""
    if text:
        record["body"] = text
        record["body_type"] = body_type
    else:
        record.pop("body", None)
        record.pop("body_type", None)


def body_element(
    record: Mapping[str, Any], version: Version, prefs: Sequence[BodyPreference]
) -> Element:
    """The airsyncbase:Body of a record for the client's BodyPreference (MS-ASAIRS 2.2.2.9).

    Plain and HTML bodies go through the email body chooser (truncation, AllOrNone, Preview);
    an RTF body is sent as stored (Type 3), since we convert from RTF to nothing."""
    text = str(record.get("body") or "")
    body_type = int(record.get("body_type") or BodyType.PLAIN)
    usable = [p for p in prefs if p.type in (BodyType.PLAIN, BodyType.HTML)]
    if body_type == BodyType.RTF:
        pref = next((p for p in prefs if p.type == BodyType.RTF), BodyPreference(BodyType.RTF))
        data = text if pref.truncation_size is None else text[: pref.truncation_size]
        truncated = len(data) < len(text)
        return E(
            "AirSyncBase",
            "Body",
            E("AirSyncBase", "Type", int(BodyType.RTF)),
            E("AirSyncBase", "EstimatedDataSize", len(text)),
            E("AirSyncBase", "Truncated", truncated),
            E("AirSyncBase", "Data", data),
        )
    rich = text if body_type == BodyType.HTML else None
    plain = html_to_text(text) if rich is not None else text
    return build_body(b"", plain, rich, "", str(version), usable)


def keep_absent_body(old: Mapping[str, Any], appdata: Element, new: Record) -> Record:
    """*new* with *old*'s body when the Change left Body out (phones send Change without the
    body they only hold truncated); Tasks and Notes otherwise replace the whole item."""
    if appdata.find("Body", "AirSyncBase") is None and "body" in old:
        new["body"], new["body_type"] = old["body"], old.get("body_type", BodyType.PLAIN)
    return new
