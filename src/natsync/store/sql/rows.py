"""Rows and values as both SQL drivers store them: columns, row → record, and time as integers.

Times are microseconds since the epoch and flags 0/1 in both dialects, so ``natsync store copy``
moves rows between them unchanged and compares checksums.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from natsync.store.api import (
    AccessState,
    Attachment,
    Device,
    Flag,
    Folder,
    FolderType,
    Item,
    Message,
    OutboundMail,
    StoreError,
    User,
    WipeState,
)

#: The parent id of top-level folders (MS-ASCMD 2.2.3.134 ParentId: "0" is the root).
ROOT_PARENT = "0"

#: Search queries are cut to this many words: enough for any human query, and it bounds the
#: FTS expression a client can make us build.
MAX_SEARCH_TERMS = 16

#: SQLite's default limit on bound parameters is 32766; IN lists are passed as one JSON array
#: instead, so a long list of server ids is still one query.

#: How many (server id, modseq) entries the message-version cache may hold in all. A Sync of a
#: large folder asks for the folder's versions once per window; rebuilding 10,000 Python tuples
#: costs ~15 ms each time, a cached copy ~0.3 ms. ~100 bytes per entry: about 20 MB at most.
MAX_CACHED_VERSIONS = 200_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else _from_us(value)


_OUTBOUND_COLS = (
    "id, sender, recipients, raw, attempts, next_attempt_at, last_error, claimed_by, lease_until"
)


def _outbound(row: Sequence[Any]) -> OutboundMail:
    return OutboundMail(
        id=row[0],
        sender=row[1],
        recipients=tuple(json.loads(row[2])),
        raw=bytes(row[3]),
        attempts=row[4],
        next_attempt_at=_from_us(row[5]),
        last_error=row[6],
        claimed_by=row[7],
        lease_until=_from_us(row[8]) if row[8] else None,
    )


def _opt_to_us(value: datetime | None) -> int | None:
    return None if value is None else _to_us(value)


# -- row mapping --------------------------------------------------------------------------------

_USER_COLS = "id, name, email, display_name, created_at"
_DEVICE_COLS = (
    "id, user_id, device_id, device_type, model, os, user_agent, protocol_version, first_seen, "
    "last_seen, access_state, policy_key, pending_policy_key, wipe_state, wipe_requested_at, "
    "wipe_acknowledged_at"
)
_FOLDER_COLS = "id, user_id, server_id, parent_server_id, display_name, type, modseq"
_MESSAGE_COLS = (
    "m.id, m.folder_id, m.server_id, m.modseq, m.received_at, m.subject, m.from_addr, m.to_addrs, "
    "m.cc_addrs, m.reply_to, m.message_id_header, m.size, m.read, m.flag_status, m.flag_type, "
    "m.flag_start, m.flag_due, m.flag_complete, m.categories, m.importance, m.message_class, "
    "m.has_attachments, m.preview"
)
_ATTACHMENT_COLS = (
    "id, message_id, file_reference, filename, content_type, content_id, is_inline, size"
)
_ITEM_COLS = "id, folder_id, server_id, uid, data, modseq"

#: The longest class uid kept: real ones (iCalendar UID, vCard UID) are a few dozen characters;
#: the bound keeps a client from making the (folder, uid) index hold kilobyte keys.
MAX_ITEM_UID_CHARS = 1024


def _user(row: Sequence[Any]) -> User:
    return User(
        id=row[0], name=row[1], email=row[2], display_name=row[3], created_at=_from_us(row[4])
    )


def _device(row: Sequence[Any]) -> Device:
    return Device(
        id=row[0],
        user_id=row[1],
        device_id=row[2],
        device_type=row[3],
        model=row[4],
        os=row[5],
        user_agent=row[6],
        protocol_version=row[7],
        first_seen=_from_us(row[8]),
        last_seen=_from_us(row[9]),
        access_state=AccessState(row[10]),
        policy_key=row[11],
        pending_policy_key=row[12],
        wipe_state=WipeState(row[13]),
        wipe_requested_at=_opt_from_us(row[14]),
        wipe_acknowledged_at=_opt_from_us(row[15]),
    )


def _folder(row: Sequence[Any]) -> Folder:
    return Folder(
        id=row[0],
        user_id=row[1],
        server_id=row[2],
        parent_server_id=row[3],
        display_name=row[4],
        type=FolderType(row[5]),
        modseq=row[6],
    )


def _attachment(row: Sequence[Any]) -> Attachment:
    return Attachment(
        id=row[0],
        message_id=row[1],
        file_reference=row[2],
        filename=row[3],
        content_type=row[4],
        content_id=row[5],
        is_inline=bool(row[6]),
        size=row[7],
    )


def _message(row: Sequence[Any], attachments: tuple[Attachment, ...] = ()) -> Message:
    return Message(
        id=row[0],
        folder_id=row[1],
        server_id=row[2],
        modseq=row[3],
        received_at=_from_us(row[4]),
        subject=row[5],
        from_addr=row[6],
        to_addrs=row[7],
        cc_addrs=row[8],
        reply_to=row[9],
        message_id_header=row[10],
        size=row[11],
        read=bool(row[12]),
        flag=Flag(
            status=row[13],
            flag_type=row[14],
            start_date=_opt_from_us(row[15]),
            due_date=_opt_from_us(row[16]),
            complete_time=_opt_from_us(row[17]),
        ),
        # Most mail has no categories: "[]" needs no JSON parser (a Sync window reads 100 rows).
        categories=() if row[18] == "[]" else tuple(json.loads(row[18])),
        importance=row[19],
        message_class=row[20],
        has_attachments=bool(row[21]),
        preview=row[22],
        attachments=attachments,
    )


def _item(row: Sequence[Any]) -> Item:
    return Item(
        id=row[0],
        folder_id=row[1],
        server_id=row[2],
        uid=row[3],
        data=json.loads(row[4]),
        modseq=row[5],
    )


def _item_json(data: Mapping[str, Any]) -> str:
    """A record as the store keeps it: canonical JSON (sorted keys), so equal records compare
    equal as text and ``natsync store copy`` checksums agree on both drivers."""
    try:
        return json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"an item record must be plain JSON data: {exc}") from exc
