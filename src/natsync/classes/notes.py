"""The Notes class (MS-ASNOTE 2.2.2, protocol 14.0+): a note's ApplicationData ⇄ a note record.

Record keys:

* ``subject`` (text), ``body`` / ``body_type`` (airsyncbase:Body, as in every PIM class);
* ``message_class``: ``IPM.StickyNote`` unless the client named another (MS-ASNOTE 2.2.2.5);
* ``categories``: list of text;
* ``last_modified_date``: EAS date-time text, as the client sent it.

Change: the note is replaced by what the client sent, except the body, which a client that
leaves Body out keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from natsync.classes.body import BodyPreference
from natsync.classes.codec import ClassCodec, Record
from natsync.classes.fields import (
    body_element,
    date_of,
    keep_absent_body,
    list_element,
    list_of,
    read_body,
    text_of,
)
from natsync.classes.versions import Version
from natsync.store.api import FolderType
from natsync.wbxml import E, Element

NS = "Notes"
#: MS-ASNOTE 2.2.2.5: the message class of a note.
DEFAULT_MESSAGE_CLASS = "IPM.StickyNote"


def decode(appdata: Element, version: Version) -> Record:
    """A client's Add: the whole note."""
    record: Record = {"message_class": DEFAULT_MESSAGE_CLASS}
    for child in appdata.children:
        if child.namespace == "AirSyncBase" and child.tag == "Body":
            read_body(child, record)
        elif child.namespace != NS:
            continue
        elif child.tag == "Subject":
            record["subject"] = text_of(child)
        elif child.tag == "MessageClass":
            record["message_class"] = text_of(child).strip() or DEFAULT_MESSAGE_CLASS
        elif child.tag == "Categories":
            record["categories"] = list_of(child, "Category")
        elif child.tag == "LastModifiedDate":
            record["last_modified_date"] = date_of(child)
    for key in ("subject", "categories"):
        if not record.get(key):
            record.pop(key, None)
    return record


def apply_change(old: Mapping[str, Any], appdata: Element, version: Version) -> Record:
    """A client's Change: the note as sent, the body kept when left out."""
    return keep_absent_body(old, appdata, decode(appdata, version))


def encode(
    record: Mapping[str, Any], version: Version, body_preferences: Sequence[BodyPreference]
) -> list[Element]:
    """The note's ApplicationData children."""
    out: list[Element] = []
    if record.get("subject"):
        out.append(E(NS, "Subject", str(record["subject"])))
    if record.get("body"):
        out.append(body_element(record, version, body_preferences))
    out.append(E(NS, "MessageClass", str(record.get("message_class") or DEFAULT_MESSAGE_CLASS)))
    if record.get("categories"):
        out.append(list_element(NS, "Categories", "Category", list(record["categories"])))
    if record.get("last_modified_date"):
        out.append(E(NS, "LastModifiedDate", str(record["last_modified_date"])))
    return out


CODEC = ClassCodec(
    eas_class="Notes",
    folder_types=frozenset({FolderType.NOTES, FolderType.USER_NOTES}),
    decode=decode,
    apply_change=apply_change,
    encode=encode,
)
