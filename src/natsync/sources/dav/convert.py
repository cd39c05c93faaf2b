"""Resources of a CalDAV/CardDAV collection ⇄ store item records, through the class codecs
(natsync.classes.ical for VEVENT, .vtodo for VTODO, .vcard for vCard). Pure: bytes in, records
out, and back. One resource holds one item (RFC 4791 4.1: one UID per calendar object
resource; RFC 6352 5.1: one vCard per address object resource)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from natsync.classes.codec import Record
from natsync.classes.ical import IcsError, records_from_ics, records_to_ics
from natsync.classes.vcard import VCardError, read_vcards, write_vcard
from natsync.classes.vtodo import Todo, todos_from_ics, todos_to_ics
from natsync.sources.dav.xml import DavError

#: What an item is, as the mirror names it: the iCalendar component or "VCARD".
EVENT, TODO, CARD = "VEVENT", "VTODO", "VCARD"
#: Content types a PUT carries (RFC 4791 4.1, RFC 6352 5.1).
CONTENT_TYPES = {
    EVENT: "text/calendar; charset=utf-8",
    TODO: "text/calendar; charset=utf-8",
    CARD: "text/vcard; charset=utf-8",
}
_SAFE = re.compile(r"^[A-Za-z0-9._@-]{1,120}$")


def read_resource(body: bytes, is_calendar: bool) -> tuple[str, str, Record]:
    """(kind, uid, record) of one resource; DavError when the codecs refuse it."""
    try:
        if not is_calendar:
            cards = read_vcards(body)
            card = cards[0]
            uid = card.uid or "vcard-" + hashlib.sha256(body).hexdigest()[:32]
            return CARD, uid, card.record
        events = records_from_ics(body)
        if events:
            record = {k: v for k, v in events[0].items() if k != "instance_of"}
            return EVENT, str(record["uid"]), record
        todos = todos_from_ics(body)
        if todos:
            return TODO, todos[0].uid, todos[0].record
    except (IcsError, VCardError) as exc:
        raise DavError(f"a resource the class codecs cannot read: {exc.message}") from exc
    raise DavError("a calendar resource with neither VEVENT nor VTODO")


def write_resource(kind: str, uid: str, record: Mapping[str, Any]) -> bytes:
    """The resource body of an item of *kind*."""
    if kind == EVENT:
        return records_to_ics([{**record, "uid": uid}])
    if kind == TODO:
        return todos_to_ics([Todo(uid, dict(record))])
    return write_vcard(uid, record, "3.0").encode("utf-8")


def resource_name(uid: str, kind: str) -> str:
    """The last path segment of a new resource: the UID when it is URL-safe, else its hash."""
    stem = uid if _SAFE.match(uid) else hashlib.sha256(uid.encode()).hexdigest()[:40]
    return stem + (".vcf" if kind == CARD else ".ics")
