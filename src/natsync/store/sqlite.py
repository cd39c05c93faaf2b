"""The embedded store: one SQLite file (WAL), one worker thread, one transaction per call.

Why this shape:

* sqlite3 connections are bound to the thread that made them, and SQLite allows one writer at a
  time anyway; so one dedicated thread owns the connection and runs jobs from a queue, each as
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` and re-raise on any exception). Taking the
  write lock up front means a transaction never fails half-way with SQLITE_BUSY when another
  process (the CLI) writes too; the busy timeout makes it wait instead.
* ``journal_mode=WAL`` + ``synchronous=NORMAL``: a commit is appended to the WAL and is durable
  against a crash of the process (SIGKILL, an exception, OOM) — the old or the new state, never
  half, which is what the crash test checks. Only a power cut or kernel crash may lose the last
  few commits (never corrupt the file); FULL would fsync every commit and cap ingest at the
  disk's fsync rate, for a guarantee a mail server retried by SMTP does not need.
* Every content change bumps its folder's ``modseq`` once per transaction and records the folder
  as changed; after COMMIT the worker publishes the changed ids on the change feed.
* Group commit: jobs that queue up while a transaction runs are run together in the next one,
  each inside its own SAVEPOINT (a job that raises is rolled back alone), and share its COMMIT.
  Each job is still all-or-nothing and sees the jobs before it; results are handed out only
  after the COMMIT, so nobody acts on a change a crash could still take back.
"""

# S608: every SQL string here is built from this module's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import queue
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from natsync.store import migrations, modes
from natsync.store.api import (
    STANDARD_FOLDERS,
    AccessState,
    Attachment,
    ChangeFeed,
    Conflict,
    Device,
    Flag,
    Folder,
    FolderType,
    Item,
    Message,
    MirrorFolder,
    MirrorMessage,
    NewMessage,
    NotFound,
    OutboundMail,
    StoreError,
    Txn,
    User,
    WipeState,
)
from natsync.store.feed import LocalChangeFeed, hierarchy_key
from natsync.store.mime import MAX_INDEXED_TEXT_CHARS, part_bytes, plain_text
from natsync.store.worker import STOP, WorkerJobs

T = TypeVar("T")

#: How long a transaction waits for another process's write lock before failing. Long enough to
#: ride out a CLI command or a WAL checkpoint, short enough that a wedged lock surfaces as an error.
BUSY_TIMEOUT_MS = 10_000

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


def _fts_query(query: str) -> str:
    """A user's words as a safe FTS5 expression: every word must match, as a prefix."""
    terms = [t.replace('"', '""') for t in query.split()[:MAX_SEARCH_TERMS]]
    return " ".join(f'"{t}"*' for t in terms if t)


# -- the transaction ----------------------------------------------------------------------------


class VersionCache:
    """Recent ``message_versions`` answers, keyed by (folder id, since) and valid for one modseq.

    Sound because every content change bumps the folder's modseq in its transaction (whichever
    process makes it) and folder ids are never reused (AUTOINCREMENT). Only answers read from
    committed state are stored: a transaction that changed the folder itself neither reads nor
    fills the cache, so a rollback can never leave an answer for a modseq that did not happen.
    Used by the worker thread only.
    """

    def __init__(self, limit: int = MAX_CACHED_VERSIONS) -> None:
        self._limit = limit
        self._size = 0
        self._entries: OrderedDict[tuple[int, int | None], tuple[int, dict[str, int]]] = (
            OrderedDict()
        )

    def get(self, key: tuple[int, int | None], modseq: int) -> dict[str, int] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != modseq:
            return None
        self._entries.move_to_end(key)
        return dict(entry[1])

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0

    def put(self, key: tuple[int, int | None], modseq: int, versions: dict[str, int]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= len(old[1])
        if len(versions) > self._limit:
            return
        self._entries[key] = (modseq, dict(versions))
        self._size += len(versions)
        while self._size > self._limit:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._size -= len(evicted)


@dataclass(slots=True)
class _FolderInfo:
    user_id: int
    server_id: str


class SqliteTxn(Txn):
    """One open transaction on the worker's connection; valid only inside ``Store.run``."""

    #: What the outbound claim's subquery locks its rows with (SQLite: nothing, its writer is
    #: alone; PostgreSQL overrides it).
    _CLAIM_LOCK = ""

    def __init__(
        self, conn: sqlite3.Connection, fts: bool, versions: VersionCache | None = None
    ) -> None:
        self._conn = conn
        self._fts = fts
        self._versions = versions
        #: Folders whose content or existence changed in this transaction, and the
        #: ``hierarchy_key`` of users whose hierarchy changed (published after commit).
        self.changed: set[int] = set()
        self._bumped: dict[int, int] = {}  # folder id -> its modseq in this transaction
        self._hierarchy_bumped: set[int] = set()
        self._folders: dict[int, _FolderInfo] = {}

    # -- helpers

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params).fetchone()

    def _bump(self, folder_id: int) -> int:
        """The folder's modseq for this transaction: bumped once, at the first change."""
        modseq = self._bumped.get(folder_id)
        if modseq is None:
            row = self._one(
                "UPDATE folders SET modseq = modseq + 1 WHERE id = ? RETURNING modseq",
                (folder_id,),
            )
            if row is None:
                raise NotFound(f"folder {folder_id} does not exist")
            modseq = self._bumped[folder_id] = row[0]
        self.changed.add(folder_id)
        return modseq

    def _bump_hierarchy(self, user_id: int) -> None:
        if user_id not in self._hierarchy_bumped:
            self._conn.execute(
                "UPDATE users SET hierarchy_modseq = hierarchy_modseq + 1 WHERE id = ?",
                (user_id,),
            )
            self._hierarchy_bumped.add(user_id)
            self.changed.add(hierarchy_key(user_id))

    def _folder_info(self, folder_id: int) -> _FolderInfo:
        info = self._folders.get(folder_id)
        if info is None:
            row = self._one("SELECT user_id, server_id FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                raise NotFound(f"folder {folder_id} does not exist")
            info = self._folders[folder_id] = _FolderInfo(row[0], row[1])
        return info

    def _require_user(self, user_id: int) -> None:
        if self._one("SELECT 1 FROM users WHERE id = ?", (user_id,)) is None:
            raise NotFound(f"user {user_id} does not exist")

    def _require_device(self, device: int) -> None:
        if self._one("SELECT 1 FROM devices WHERE id = ?", (device,)) is None:
            raise NotFound(f"device {device} does not exist")

    def _attachments_of(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
        found: dict[int, list[Attachment]] = {}
        if not message_ids:
            return found
        rows = self._conn.execute(
            f"SELECT {_ATTACHMENT_COLS} FROM attachments "
            "WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY message_id, id",
            (json.dumps(list(message_ids)),),
        )
        for row in rows:
            found.setdefault(row[1], []).append(_attachment(row))
        return found

    def _message_by_id(self, message_id: int) -> Message:
        row = self._one(f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.id = ?", (message_id,))
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        attachments = self._attachments_of([message_id]).get(message_id, []) if row[21] else []
        return _message(row, tuple(attachments))

    def _messages(self, sql: str, params: Sequence[Any]) -> list[Message]:
        rows = self._conn.execute(sql, params).fetchall()
        attachments = self._attachments_of([row[0] for row in rows if row[21]])
        return [_message(row, tuple(attachments.get(row[0], ()))) for row in rows]

    # -- users

    def add_user(
        self, name: str, email: str, display_name: str, password_hash: str, now: datetime
    ) -> User:
        taken = self._one(
            "SELECT name, email FROM users WHERE name = ? OR email = ?", (name, email)
        )
        if taken is not None:
            what = "name" if taken[0].casefold() == name.casefold() else "email address"
            raise Conflict(f"a user with the {what} {name if what == 'name' else email!r} exists")
        row = self._one(
            "INSERT INTO users (name, email, display_name, password_hash, created_at) "
            f"VALUES (?, ?, ?, ?, ?) RETURNING {_USER_COLS}",
            (name, email, display_name, password_hash, _to_us(now)),
        )
        user = _user(row)
        for folder_name, folder_type in STANDARD_FOLDERS:
            self.create_folder(user.id, ROOT_PARENT, folder_name, folder_type)
        return user

    def get_user(self, name: str) -> User | None:
        row = self._one(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,))
        return None if row is None else _user(row)

    def get_user_by_email(self, email: str) -> User | None:
        row = self._one(f"SELECT {_USER_COLS} FROM users WHERE email = ?", (email,))
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        rows = self._conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")
        return [_user(row) for row in rows]

    def password_hash(self, user_id: int) -> str:
        row = self._one("SELECT password_hash FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        value: str = row[0]
        return value

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        if (
            self._conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            ).rowcount
            == 0
        ):
            raise NotFound(f"user {user_id} does not exist")

    def remove_user(self, user_id: int) -> None:
        folder_ids = [
            row[0]
            for row in self._conn.execute("SELECT id FROM folders WHERE user_id = ?", (user_id,))
        ]
        if self._conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount == 0:
            raise NotFound(f"user {user_id} does not exist")
        # Waiting Pings of the removed user wake up and find their folders gone.
        self.changed.update(folder_ids)
        self.changed.add(hierarchy_key(user_id))

    def get_user_setting(self, user_id: int, key: str) -> str | None:
        row = self._one(
            "SELECT value FROM user_settings WHERE user_id = ? AND key = ?", (user_id, key)
        )
        return None if row is None else str(row[0])

    def set_user_setting(self, user_id: int, key: str, value: str) -> None:
        self._require_user(user_id)
        self._conn.execute(
            "INSERT INTO user_settings (user_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value",
            (user_id, key, value),
        )

    # -- devices

    def touch_device(
        self,
        user_id: int,
        device_id: str,
        device_type: str,
        protocol_version: str,
        user_agent: str,
        now: datetime,
    ) -> Device:
        self._require_user(user_id)
        at = _to_us(now)
        row = self._one(
            "INSERT INTO devices (user_id, device_id, device_type, protocol_version, user_agent, "
            "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id, device_id) DO UPDATE SET device_type = excluded.device_type, "
            "protocol_version = excluded.protocol_version, user_agent = excluded.user_agent, "
            f"last_seen = excluded.last_seen RETURNING {_DEVICE_COLS}",
            (user_id, device_id, device_type, protocol_version, user_agent, at, at),
        )
        return _device(row)

    def get_device(self, user_id: int, device_id: str) -> Device | None:
        row = self._one(
            f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return None if row is None else _device(row)

    def get_device_by_id(self, device: int) -> Device | None:
        """The device by the store's id (an addition to the Txn protocol, for the CLI)."""
        row = self._one(f"SELECT {_DEVICE_COLS} FROM devices WHERE id = ?", (device,))
        return None if row is None else _device(row)

    def list_devices(self, user_id: int | None = None) -> list[Device]:
        if user_id is None:
            rows = self._conn.execute(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY user_id, id")
        else:
            rows = self._conn.execute(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = ? ORDER BY id", (user_id,)
            )
        return [_device(row) for row in rows]

    def _update_device(self, device: int, sql: str, params: Sequence[Any]) -> None:
        if self._conn.execute(sql, (*params, device)).rowcount == 0:
            raise NotFound(f"device {device} does not exist")

    def update_device_info(
        self, device: int, *, model: str | None = None, os: str | None = None
    ) -> None:
        self._update_device(
            device,
            "UPDATE devices SET model = coalesce(?, model), os = coalesce(?, os) WHERE id = ?",
            (model, os),
        )

    def set_access_state(self, device: int, state: AccessState) -> None:
        self._update_device(
            device, "UPDATE devices SET access_state = ? WHERE id = ?", (AccessState(state).value,)
        )

    def set_policy_keys(self, device: int, *, policy_key: int, pending_policy_key: int) -> None:
        self._update_device(
            device,
            "UPDATE devices SET policy_key = ?, pending_policy_key = ? WHERE id = ?",
            (policy_key, pending_policy_key),
        )

    def set_wipe_state(self, device: int, state: WipeState, now: datetime) -> None:
        state = WipeState(state)
        at = _to_us(now)
        if state in (WipeState.PENDING, WipeState.ACCOUNT_ONLY_PENDING):
            sql = (
                "UPDATE devices SET wipe_state = ?, wipe_requested_at = ?, "
                "wipe_acknowledged_at = NULL WHERE id = ?"
            )
            params: tuple[Any, ...] = (state.value, at)
        elif state is WipeState.ACKNOWLEDGED:
            sql = "UPDATE devices SET wipe_state = ?, wipe_acknowledged_at = ? WHERE id = ?"
            params = (state.value, at)
        elif state is WipeState.NONE:
            sql = (
                "UPDATE devices SET wipe_state = ?, wipe_requested_at = NULL, "
                "wipe_acknowledged_at = NULL WHERE id = ?"
            )
            params = (state.value,)
        else:  # SENT: the request time stays, the acknowledgement is still awaited
            sql = "UPDATE devices SET wipe_state = ? WHERE id = ?"
            params = (state.value,)
        self._update_device(device, sql, params)

    def get_device_setting(self, device: int, key: str) -> str | None:
        row = self._one(
            "SELECT value FROM device_settings WHERE device_id = ? AND key = ?", (device, key)
        )
        return None if row is None else str(row[0])

    def set_device_setting(self, device: int, key: str, value: str) -> None:
        self._require_device(device)
        self._conn.execute(
            "INSERT INTO device_settings (device_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value",
            (device, key, value),
        )

    def remove_device(self, device: int) -> None:
        """Forget a device and its sync state (an addition to the Txn protocol, for the CLI)."""
        if self._conn.execute("DELETE FROM devices WHERE id = ?", (device,)).rowcount == 0:
            raise NotFound(f"device {device} does not exist")

    # -- folders

    def list_folders(self, user_id: int) -> list[Folder]:
        rows = self._conn.execute(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [_folder(row) for row in rows]

    def get_folder(self, user_id: int, server_id: str) -> Folder | None:
        row = self._one(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? AND server_id = ?",
            (user_id, server_id),
        )
        return None if row is None else _folder(row)

    def get_folder_by_id(self, folder_id: int) -> Folder | None:
        """The folder by the store's id (an addition to the Txn protocol)."""
        row = self._one(f"SELECT {_FOLDER_COLS} FROM folders WHERE id = ?", (folder_id,))
        return None if row is None else _folder(row)

    def folder_by_type(self, user_id: int, folder_type: FolderType) -> Folder:
        row = self._one(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE user_id = ? AND type = ? ORDER BY id",
            (user_id, int(folder_type)),
        )
        if row is None:
            raise NotFound(f"user {user_id} has no folder of type {FolderType(folder_type).name}")
        return _folder(row)

    def _check_parent(self, user_id: int, parent_server_id: str) -> None:
        if parent_server_id != ROOT_PARENT and self.get_folder(user_id, parent_server_id) is None:
            raise NotFound(f"parent folder {parent_server_id!r} does not exist")

    def _check_name_free(
        self, user_id: int, parent_server_id: str, name: str, except_id: int | None = None
    ) -> None:
        row = self._one(
            "SELECT id FROM folders WHERE user_id = ? AND parent_server_id = ? "
            "AND display_name = ?",
            (user_id, parent_server_id, name),
        )
        if row is not None and row[0] != except_id:
            raise Conflict(f"a folder named {name!r} already exists there")

    def create_folder(
        self, user_id: int, parent_server_id: str, name: str, folder_type: FolderType
    ) -> Folder:
        if not name.strip():
            raise Conflict("a folder needs a name")
        row = self._one(
            "UPDATE users SET next_folder_number = next_folder_number + 1 WHERE id = ? "
            "RETURNING next_folder_number - 1",
            (user_id,),
        )
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        self._check_parent(user_id, parent_server_id)
        self._check_name_free(user_id, parent_server_id, name)
        created = self._one(
            "INSERT INTO folders (user_id, server_id, parent_server_id, display_name, type) "
            f"VALUES (?, ?, ?, ?, ?) RETURNING {_FOLDER_COLS}",
            (user_id, str(row[0]), parent_server_id, name, int(folder_type)),
        )
        self._bump_hierarchy(user_id)
        return _folder(created)

    def _descendants(self, user_id: int, server_id: str) -> list[tuple[int, str]]:
        """(id, server id) of every folder below *server_id*, nearest first."""
        rows = self._conn.execute(
            "WITH RECURSIVE below(id, server_id) AS ("
            " SELECT id, server_id FROM folders WHERE user_id = ?1 AND parent_server_id = ?2"
            " UNION ALL SELECT f.id, f.server_id FROM folders f JOIN below b"
            " ON f.user_id = ?1 AND f.parent_server_id = b.server_id"
            ") SELECT id, server_id FROM below",
            (user_id, server_id),
        )
        return [(row[0], row[1]) for row in rows]

    def update_folder(
        self, user_id: int, server_id: str, parent_server_id: str, name: str
    ) -> Folder:
        folder = self.get_folder(user_id, server_id)
        if folder is None:
            raise NotFound(f"folder {server_id!r} does not exist")
        if folder.type in {t for _, t in STANDARD_FOLDERS}:
            raise Conflict(f"{folder.display_name} is a standard folder and cannot be changed")
        if not name.strip():
            raise Conflict("a folder needs a name")
        self._check_parent(user_id, parent_server_id)
        if parent_server_id == server_id or parent_server_id in {
            sid for _, sid in self._descendants(user_id, server_id)
        }:
            raise Conflict("a folder cannot be moved into itself or one of its subfolders")
        self._check_name_free(user_id, parent_server_id, name, except_id=folder.id)
        row = self._one(
            "UPDATE folders SET parent_server_id = ?, display_name = ? WHERE id = ? "
            f"RETURNING {_FOLDER_COLS}",
            (parent_server_id, name, folder.id),
        )
        self._bump_hierarchy(user_id)
        return _folder(row)

    def delete_folder(self, user_id: int, server_id: str) -> None:
        folder = self.get_folder(user_id, server_id)
        if folder is None:
            raise NotFound(f"folder {server_id!r} does not exist")
        if folder.type in {t for _, t in STANDARD_FOLDERS}:
            raise Conflict(f"{folder.display_name} is a standard folder and cannot be deleted")
        doomed = [folder.id, *(fid for fid, _ in self._descendants(user_id, server_id))]
        self._conn.execute(
            "DELETE FROM folders WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(doomed),),
        )
        for folder_id in doomed:
            self._folders.pop(folder_id, None)
            self._bumped.pop(folder_id, None)
        self.changed.update(doomed)
        self._bump_hierarchy(user_id)

    def hierarchy_modseq(self, user_id: int) -> int:
        row = self._one("SELECT hierarchy_modseq FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        value: int = row[0]
        return value

    # -- messages

    def add_message(self, folder_id: int, message: NewMessage) -> Message:
        info = self._folder_info(folder_id)
        modseq = self._bump(folder_id)
        server_id = self._next_server_id(folder_id, info)
        has_attachments = bool(message.attachments)
        message_id: int = self._one(
            "INSERT INTO messages (user_id, folder_id, server_id, modseq, received_at, subject, "
            "from_addr, to_addrs, cc_addrs, reply_to, message_id_header, size, read, importance, "
            "message_class, has_attachments, preview) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                info.user_id,
                folder_id,
                server_id,
                modseq,
                _to_us(message.received_at),
                message.subject,
                message.from_addr,
                message.to_addrs,
                message.cc_addrs,
                message.reply_to,
                message.message_id_header,
                len(message.raw),
                int(message.read),
                message.importance,
                message.message_class,
                int(has_attachments),
                message.preview,
            ),
        )[0]
        self._conn.execute(
            "INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (message_id, message.raw)
        )
        self._conn.execute(
            f"INSERT INTO {migrations.SEARCH_TABLE} (rowid, subject, from_addr, to_addrs, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                message_id,
                message.subject,
                message.from_addr,
                message.to_addrs,
                plain_text(message.raw)
                if message.body_text is None
                else message.body_text[:MAX_INDEXED_TEXT_CHARS],
            ),
        )
        attachments: list[Attachment] = []
        for n, new in enumerate(message.attachments, start=1):
            reference = f"{server_id}:{n}"
            attachment_id: int = self._one(
                "INSERT INTO attachments (message_id, user_id, file_reference, filename, "
                "content_type, content_id, is_inline, size, part_index) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    message_id,
                    info.user_id,
                    reference,
                    new.filename,
                    new.content_type,
                    new.content_id,
                    int(new.is_inline),
                    new.size,
                    new.part_index,
                ),
            )[0]
            attachments.append(
                Attachment(
                    id=attachment_id,
                    message_id=message_id,
                    file_reference=reference,
                    filename=new.filename,
                    content_type=new.content_type,
                    content_id=new.content_id,
                    is_inline=new.is_inline,
                    size=new.size,
                )
            )
        return Message(
            id=message_id,
            folder_id=folder_id,
            server_id=server_id,
            modseq=modseq,
            received_at=_from_us(_to_us(message.received_at)),
            subject=message.subject,
            from_addr=message.from_addr,
            to_addrs=message.to_addrs,
            cc_addrs=message.cc_addrs,
            reply_to=message.reply_to,
            message_id_header=message.message_id_header,
            size=len(message.raw),
            read=message.read,
            flag=Flag(),
            categories=(),
            importance=message.importance,
            message_class=message.message_class,
            has_attachments=has_attachments,
            preview=message.preview,
            attachments=tuple(attachments),
        )

    def get_message(self, user_id: int, server_id: str) -> Message | None:
        found = self._messages(
            f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.user_id = ? AND m.server_id = ?",
            (user_id, server_id),
        )
        return found[0] if found else None

    def get_message_by_id(self, message_id: int) -> Message | None:
        """The message by the store's id (an addition to the Txn protocol)."""
        try:
            return self._message_by_id(message_id)
        except NotFound:
            return None

    def message_versions(
        self, folder_id: int, received_since: datetime | None = None
    ) -> dict[str, int]:
        since = None if received_since is None else _to_us(received_since)
        cache = None if folder_id in self._bumped else self._versions
        modseq = -1
        if cache is not None:
            row = self._one("SELECT modseq FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return {}
            modseq = row[0]
            cached = cache.get((folder_id, since), modseq)
            if cached is not None:
                return cached
        if since is None:
            rows = self._conn.execute(
                "SELECT server_id, modseq FROM messages WHERE folder_id = ?", (folder_id,)
            )
        else:
            rows = self._conn.execute(
                "SELECT server_id, modseq FROM messages WHERE folder_id = ? AND received_at >= ?",
                (folder_id, since),
            )
        versions = dict(rows.fetchall())
        if cache is not None:
            cache.put((folder_id, since), modseq, versions)
        return versions

    def get_messages(self, user_id: int, server_ids: Sequence[str]) -> list[Message]:
        if not server_ids:
            return []
        found = self._messages(
            f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.user_id = ? "
            "AND m.server_id IN (SELECT value FROM json_each(?))",
            (user_id, json.dumps(list(server_ids))),
        )
        by_id = {message.server_id: message for message in found}
        return [by_id[sid] for sid in dict.fromkeys(server_ids) if sid in by_id]

    def raw_message(self, message_id: int) -> bytes:
        row = self._one("SELECT raw FROM message_bodies WHERE message_id = ?", (message_id,))
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        return bytes(row[0])

    def raw_messages(self, message_ids: Sequence[int]) -> dict[int, bytes]:
        """The raw MIME of each message of *message_ids* that exists, in one statement (a Sync
        window reads a hundred at a time: one query instead of one per message)."""
        if not message_ids:
            return {}
        rows = self._conn.execute(
            "SELECT message_id, raw FROM message_bodies "
            "WHERE message_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(message_ids)),),
        ).fetchall()
        return {row[0]: bytes(row[1]) for row in rows}

    def _change(self, message_id: int, sql: str, params: Sequence[Any]) -> Message:
        row = self._one("SELECT folder_id FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        modseq = self._bump(row[0])
        self._conn.execute(sql, (*params, modseq, message_id))
        return self._message_by_id(message_id)

    def set_read(self, message_id: int, read: bool) -> Message:
        current = self._message_by_id(message_id)
        if current.read == read:
            return current  # no change, no modseq bump, no Ping woken
        return self._change(
            message_id, "UPDATE messages SET read = ?, modseq = ? WHERE id = ?", (int(read),)
        )

    def set_flag(self, message_id: int, flag: Flag) -> Message:
        current = self._message_by_id(message_id)
        if current.flag == flag:
            return current
        return self._change(
            message_id,
            "UPDATE messages SET flag_status = ?, flag_type = ?, flag_start = ?, flag_due = ?, "
            "flag_complete = ?, modseq = ? WHERE id = ?",
            (
                flag.status,
                flag.flag_type,
                _opt_to_us(flag.start_date),
                _opt_to_us(flag.due_date),
                _opt_to_us(flag.complete_time),
            ),
        )

    def set_categories(self, message_id: int, categories: Iterable[str]) -> Message:
        current = self._message_by_id(message_id)
        wanted = tuple(dict.fromkeys(categories))
        if current.categories == wanted:
            return current
        return self._change(
            message_id,
            "UPDATE messages SET categories = ?, modseq = ? WHERE id = ?",
            (json.dumps(list(wanted)),),
        )

    def move_message(self, message_id: int, to_folder_id: int) -> Message:
        row = self._one("SELECT folder_id, user_id FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        from_folder_id, user_id = row
        target = self._folder_info(to_folder_id)
        if target.user_id != user_id:
            raise NotFound(f"folder {to_folder_id} does not exist in this mailbox")
        if from_folder_id == to_folder_id:
            return self._message_by_id(message_id)
        self._bump(from_folder_id)
        modseq = self._bump(to_folder_id)
        server_id = self._next_server_id(to_folder_id, target)
        self._conn.execute(
            "UPDATE messages SET folder_id = ?, server_id = ?, modseq = ? WHERE id = ?",
            (to_folder_id, server_id, modseq, message_id),
        )
        # File references follow the message's new server id: they are what Sync now sends.
        self._renumber_attachments(message_id, server_id)
        return self._message_by_id(message_id)

    def _renumber_attachments(self, message_id: int, server_id: str) -> None:
        rows = self._conn.execute(
            "SELECT id FROM attachments WHERE message_id = ? ORDER BY id", (message_id,)
        ).fetchall()
        for n, (attachment_id,) in enumerate(rows, start=1):
            self._conn.execute(
                "UPDATE attachments SET file_reference = ? WHERE id = ?",
                (f"{server_id}:{n}", attachment_id),
            )

    def delete_message(self, message_id: int) -> None:
        row = self._one("SELECT folder_id FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        self._bump(row[0])
        self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def empty_folder(self, folder_id: int) -> int:
        self._folder_info(folder_id)
        count: int = self._conn.execute(
            "DELETE FROM messages WHERE folder_id = ?", (folder_id,)
        ).rowcount
        count += self._conn.execute("DELETE FROM items WHERE folder_id = ?", (folder_id,)).rowcount
        if count:
            self._bump(folder_id)
        return count

    def get_attachment(self, user_id: int, file_reference: str) -> tuple[Attachment, bytes] | None:
        row = self._one(
            f"SELECT {_ATTACHMENT_COLS}, part_index FROM attachments "
            "WHERE user_id = ? AND file_reference = ?",
            (user_id, file_reference),
        )
        if row is None:
            return None
        attachment = _attachment(row)
        return attachment, part_bytes(self.raw_message(attachment.message_id), row[8])

    def search_messages(
        self, user_id: int, query: str, folder_ids: Sequence[int] | None, limit: int
    ) -> list[Message]:
        params: list[Any] = [user_id]
        folder_clause = ""
        if folder_ids is not None:
            folder_clause = " AND m.folder_id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(folder_ids)))
        table = migrations.SEARCH_TABLE
        if self._fts:
            expression = _fts_query(query)
            if not expression:
                return []
            match = f"m.id IN (SELECT rowid FROM {table} WHERE {table} MATCH ?)"
            params.append(expression)
        else:
            terms = query.split()[:MAX_SEARCH_TERMS]
            if not terms:
                return []
            clauses = []
            for term in terms:
                clauses.append(
                    "(s.subject LIKE ? ESCAPE '\\' OR s.from_addr LIKE ? ESCAPE '\\' OR "
                    "s.to_addrs LIKE ? ESCAPE '\\' OR s.body LIKE ? ESCAPE '\\')"
                )
                escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                params.extend([f"%{escaped}%"] * 4)
            match = f"m.id IN (SELECT s.rowid FROM {table} s WHERE {' AND '.join(clauses)})"
        params.append(limit)
        return self._messages(
            f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.user_id = ?{folder_clause} "
            f"AND {match} ORDER BY m.received_at DESC, m.id DESC LIMIT ?",
            params,
        )

    # -- items

    def _item_row(self, item_id: int) -> Item:
        row = self._one(f"SELECT {_ITEM_COLS} FROM items WHERE id = ?", (item_id,))
        if row is None:
            raise NotFound(f"item {item_id} does not exist")
        return _item(row)

    def _next_server_id(self, folder_id: int, info: _FolderInfo) -> str:
        """A new "<folder>:<number>" id; messages and items of a folder share the numbers."""
        number = self._one(
            "UPDATE folders SET next_message_number = next_message_number + 1 WHERE id = ? "
            "RETURNING next_message_number - 1",
            (folder_id,),
        )[0]
        return f"{info.server_id}:{number}"

    def _check_uid_free(self, folder_id: int, uid: str) -> None:
        if not uid or len(uid) > MAX_ITEM_UID_CHARS:
            raise Conflict(f"an item uid must be 1 to {MAX_ITEM_UID_CHARS} characters")
        if self.item_by_uid(folder_id, uid) is not None:
            raise Conflict(f"an item with the uid {uid!r} already exists in that folder")

    def add_item(self, folder_id: int, data: Mapping[str, Any], *, uid: str | None = None) -> Item:
        info = self._folder_info(folder_id)
        uid = str(uuid.uuid4()) if uid is None else uid
        self._check_uid_free(folder_id, uid)
        text = _item_json(data)
        modseq = self._bump(folder_id)
        server_id = self._next_server_id(folder_id, info)
        row = self._one(
            "INSERT INTO items (user_id, folder_id, server_id, uid, data, modseq) "
            f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_ITEM_COLS}",
            (info.user_id, folder_id, server_id, uid, text, modseq),
        )
        return _item(row)

    def get_item(self, user_id: int, server_id: str) -> Item | None:
        row = self._one(
            f"SELECT {_ITEM_COLS} FROM items WHERE user_id = ? AND server_id = ?",
            (user_id, server_id),
        )
        return None if row is None else _item(row)

    def item_by_uid(self, folder_id: int, uid: str) -> Item | None:
        row = self._one(
            f"SELECT {_ITEM_COLS} FROM items WHERE folder_id = ? AND uid = ?", (folder_id, uid)
        )
        return None if row is None else _item(row)

    def list_items(self, folder_id: int) -> list[Item]:
        rows = self._conn.execute(
            f"SELECT {_ITEM_COLS} FROM items WHERE folder_id = ? ORDER BY id", (folder_id,)
        )
        return [_item(row) for row in rows]

    def item_versions(self, folder_id: int) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT server_id, modseq FROM items WHERE folder_id = ?", (folder_id,)
        )
        return {row[0]: row[1] for row in rows}

    def update_item(self, item_id: int, data: Mapping[str, Any]) -> Item:
        current = self._item_row(item_id)
        text = _item_json(data)
        if text == _item_json(current.data):
            return current  # no change, no modseq bump, no Ping woken
        modseq = self._bump(current.folder_id)
        self._conn.execute(
            "UPDATE items SET data = ?, modseq = ? WHERE id = ?", (text, modseq, item_id)
        )
        return self._item_row(item_id)

    def move_item(self, item_id: int, to_folder_id: int) -> Item:
        current = self._item_row(item_id)
        source = self._folder_info(current.folder_id)
        target = self._folder_info(to_folder_id)
        if target.user_id != source.user_id:
            raise NotFound(f"folder {to_folder_id} does not exist in this mailbox")
        if current.folder_id == to_folder_id:
            return current
        self._check_uid_free(to_folder_id, current.uid)
        self._bump(current.folder_id)
        modseq = self._bump(to_folder_id)
        server_id = self._next_server_id(to_folder_id, target)
        self._conn.execute(
            "UPDATE items SET folder_id = ?, server_id = ?, modseq = ? WHERE id = ?",
            (to_folder_id, server_id, modseq, item_id),
        )
        return self._item_row(item_id)

    def delete_item(self, item_id: int) -> None:
        current = self._item_row(item_id)
        self._bump(current.folder_id)
        self._conn.execute("DELETE FROM items WHERE id = ?", (item_id,))

    # -- sync state

    def get_sync_state(self, device: int, collection: str, sync_key: str) -> bytes | None:
        row = self._one(
            "SELECT state FROM sync_state WHERE device_id = ? AND collection = ? AND sync_key = ?",
            (device, collection, sync_key),
        )
        return None if row is None else bytes(row[0])

    def put_sync_state(self, device: int, collection: str, sync_key: str, state: bytes) -> None:
        self._require_device(device)
        seq = self._one(
            "SELECT coalesce(max(seq), 0) + 1 FROM sync_state "
            "WHERE device_id = ? AND collection = ?",
            (device, collection),
        )[0]
        self._conn.execute(
            "INSERT INTO sync_state (device_id, collection, sync_key, seq, state) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, collection, sync_key) "
            "DO UPDATE SET seq = excluded.seq, state = excluded.state",
            (device, collection, sync_key, seq, state),
        )
        # Keep the new key and the one before it (a retransmitted request may still use it).
        self._conn.execute(
            "DELETE FROM sync_state WHERE device_id = ?1 AND collection = ?2 AND seq < ("
            " SELECT coalesce(max(seq), 0) FROM sync_state"
            " WHERE device_id = ?1 AND collection = ?2 AND seq < ?3)",
            (device, collection, seq),
        )

    def drop_sync_state(self, device: int, collection: str | None = None) -> None:
        if collection is None:
            self._conn.execute("DELETE FROM sync_state WHERE device_id = ?", (device,))
        else:
            self._conn.execute(
                "DELETE FROM sync_state WHERE device_id = ? AND collection = ?",
                (device, collection),
            )

    # -- outbound queue

    def enqueue_outbound(
        self, sender: str, recipients: Sequence[str], raw: bytes, now: datetime
    ) -> OutboundMail:
        at = _to_us(now)
        outbound_id: int = self._one(
            "INSERT INTO outbound (sender, recipients, raw, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (sender, json.dumps(list(recipients)), raw, at, at),
        )[0]
        return OutboundMail(
            id=outbound_id,
            sender=sender,
            recipients=tuple(recipients),
            raw=raw,
            attempts=0,
            next_attempt_at=_from_us(at),
            last_error="",
        )

    def due_outbound(self, now: datetime, limit: int) -> list[OutboundMail]:
        rows = self._conn.execute(
            f"SELECT {_OUTBOUND_COLS} FROM outbound WHERE next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (_to_us(now), limit),
        )
        return [_outbound(row) for row in rows]

    def claim_outbound(
        self, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        # One UPDATE. SQLite: inside BEGIN IMMEDIATE, one writer at a time, so two processes
        # on one file never both see an entry unclaimed. PostgreSQL: the subquery locks its
        # rows (_CLAIM_LOCK), and the outer conditions are checked again on each row as it is
        # when the lock is taken (READ COMMITTED re-reads an updated row but does not re-run
        # the subquery), so a claim committed in between is never taken twice.
        at = _to_us(now)
        rows = self._conn.execute(
            "UPDATE outbound SET claimed_by = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM outbound WHERE next_attempt_at <= ? AND lease_until <= ?"
            f" ORDER BY next_attempt_at, id LIMIT ?{self._CLAIM_LOCK}"
            f") AND next_attempt_at <= ? AND lease_until <= ? RETURNING {_OUTBOUND_COLS}",
            (owner, _to_us(lease_until), at, at, limit, at, at),
        ).fetchall()
        return sorted((_outbound(row) for row in rows), key=lambda m: (m.next_attempt_at, m.id))

    def renew_outbound(self, outbound_id: int, owner: str, lease_until: datetime) -> bool:
        updated: int = self._conn.execute(
            "UPDATE outbound SET lease_until = ? WHERE id = ? AND claimed_by = ?",
            (_to_us(lease_until), outbound_id, owner),
        ).rowcount
        return updated > 0

    def release_outbound(self, owner: str) -> int:
        released: int = self._conn.execute(
            "UPDATE outbound SET claimed_by = '', lease_until = 0 WHERE claimed_by = ?", (owner,)
        ).rowcount
        return released

    def _outbound_gone(self, outbound_id: int, owner: str | None) -> StoreError:
        """Why a sent/retry statement touched no row: the entry is gone, or not *owner*'s."""
        row = self._one("SELECT claimed_by FROM outbound WHERE id = ?", (outbound_id,))
        if row is None:
            return NotFound(f"outbound mail {outbound_id} does not exist")
        holder = row[0] or "nobody"
        return Conflict(
            f"outbound mail {outbound_id} is claimed by {holder}, not {owner}: its lease ran "
            "out and another relay worker took it over"
        )

    def outbound_sent(self, outbound_id: int, owner: str | None = None) -> None:
        sql = "DELETE FROM outbound WHERE id = ?"
        params: list[Any] = [outbound_id]
        if owner is not None:
            sql += " AND claimed_by = ?"
            params.append(owner)
        if self._conn.execute(sql, params).rowcount == 0:
            raise self._outbound_gone(outbound_id, owner)

    def outbound_retry(
        self, outbound_id: int, next_attempt_at: datetime, error: str, owner: str | None = None
    ) -> None:
        sql = (
            "UPDATE outbound SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            "claimed_by = '', lease_until = 0 WHERE id = ?"
        )
        params: list[Any] = [_to_us(next_attempt_at), error, outbound_id]
        if owner is not None:
            sql += " AND claimed_by = ?"
            params.append(owner)
        if self._conn.execute(sql, params).rowcount == 0:
            raise self._outbound_gone(outbound_id, owner)

    # -- the IMAP mirror's mapping (natsync.sources); portable SQL, PostgreSQL runs it as is

    def claim_outbound_from(
        self, sender: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        at = _to_us(now)  # the same claim as claim_outbound's, of one sender's entries
        rows = self._conn.execute(
            "UPDATE outbound SET claimed_by = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM outbound WHERE sender = ? AND next_attempt_at <= ?"
            f" AND lease_until <= ? ORDER BY next_attempt_at, id LIMIT ?{self._CLAIM_LOCK}"
            f") AND next_attempt_at <= ? AND lease_until <= ? RETURNING {_OUTBOUND_COLS}",
            (owner, _to_us(lease_until), sender, at, at, limit, at, at),
        ).fetchall()
        return sorted((_outbound(row) for row in rows), key=lambda m: (m.next_attempt_at, m.id))

    def list_mirror_folders(self, user_id: int) -> list[MirrorFolder]:
        rows = self._conn.execute(
            "SELECT folder_id, user_id, mailbox, uidvalidity, highestmodseq, backfill_below "
            "FROM mirror_folders WHERE user_id = ? ORDER BY folder_id",
            (user_id,),
        )
        return [MirrorFolder(*row) for row in rows]

    def put_mirror_folder(self, mirror: MirrorFolder) -> None:
        self._conn.execute(
            "INSERT INTO mirror_folders (folder_id, user_id, mailbox, uidvalidity, "
            "highestmodseq, backfill_below) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (folder_id) DO UPDATE SET mailbox = excluded.mailbox, "
            "uidvalidity = excluded.uidvalidity, highestmodseq = excluded.highestmodseq, "
            "backfill_below = excluded.backfill_below",
            (
                mirror.folder_id,
                mirror.user_id,
                mirror.mailbox,
                mirror.uidvalidity,
                mirror.highestmodseq,
                mirror.backfill_below,
            ),
        )

    def mirror_messages(self, folder_id: int) -> list[MirrorMessage]:
        rows = self._conn.execute(
            "SELECT message_id, folder_id, uid, seen, flagged, keywords FROM mirror_messages "
            "WHERE folder_id = ? ORDER BY uid",
            (folder_id,),
        )
        return [
            MirrorMessage(r[0], r[1], r[2], bool(r[3]), bool(r[4]), tuple(json.loads(r[5])))
            for r in rows
        ]

    def put_mirror_message(self, mirror: MirrorMessage) -> None:
        self._conn.execute(
            "DELETE FROM mirror_messages WHERE message_id = ? OR (folder_id = ? AND uid = ?)",
            (mirror.message_id, mirror.folder_id, mirror.uid),
        )
        self._conn.execute(
            "INSERT INTO mirror_messages (message_id, folder_id, uid, seen, flagged, keywords) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                mirror.message_id,
                mirror.folder_id,
                mirror.uid,
                int(mirror.seen),
                int(mirror.flagged),
                json.dumps(list(mirror.keywords)),
            ),
        )

    def drop_mirror_messages(self, message_ids: Sequence[int]) -> None:
        for message_id in message_ids:
            self._conn.execute("DELETE FROM mirror_messages WHERE message_id = ?", (message_id,))

    def message_flags(self, folder_id: int) -> dict[int, tuple[bool, bool]]:
        rows = self._conn.execute(
            "SELECT id, read, flag_status FROM messages WHERE folder_id = ?", (folder_id,)
        )
        return {row[0]: (bool(row[1]), row[2] == 2) for row in rows}

    def message_categories(self, folder_id: int) -> dict[int, tuple[str, ...]]:
        rows = self._conn.execute(
            "SELECT id, categories FROM messages WHERE folder_id = ?", (folder_id,)
        )
        found = {row[0]: tuple(json.loads(row[1])) for row in rows}
        return {message_id: names for message_id, names in found.items() if names}

    def message_folder(self, message_id: int) -> int | None:
        row = self._one("SELECT folder_id FROM messages WHERE id = ?", (message_id,))
        return None if row is None else int(row[0])


# -- the store ----------------------------------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up the way the store needs it (autocommit: we issue BEGIN ourselves)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: SQLite could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


_Job = tuple[
    Callable[[Txn], Any],
    Callable[[Any, BaseException | None], None],
]


def _wrap(exc: BaseException) -> BaseException:
    """sqlite3's errors become StoreError (cause kept); everything else passes unchanged."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"store transaction failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


class SqliteStore(WorkerJobs):
    """A :class:`natsync.store.api.Store` on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.feed = LocalChangeFeed()
        self.changes: ChangeFeed = self.feed
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._versions = VersionCache()
        #: Transactions committed (a group commit counts once): for metrics and tests.
        self.commits = 0
        self._closed = False
        self._close_lock = threading.Lock()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._work, args=(ready,), name=f"natsync-store:{self.path.name}", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            raise

    # -- the worker

    def _work(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            modes.private_store_files(self.path)  # 0600, the directory 0700 if new
            conn = connect(self.path)
            try:
                migrations.migrate(conn)
                fts = migrations.search_uses_fts5(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            ready.set_exception(StoreError(f"{self.path}: cannot open the store: {exc}"))
            return
        except OSError as exc:  # creating or tightening the file or its directory
            ready.set_exception(StoreError(f"{self.path}: cannot open the store: {exc}"))
            return
        except BaseException as exc:  # handed to the opener
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                # Group commit: jobs that queued up while the last group ran share one COMMIT.
                group, stop = self._next_group()
                if group:
                    self._execute(conn, fts, group)
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, fts: bool, group: list[_Job]) -> None:
        """Run *group* in one transaction, each job inside its own savepoint.

        A job that raises is rolled back to its savepoint alone and gets its exception; the
        others commit together. Results are handed out only after COMMIT, so no caller sees a
        result that a crash could still take back.
        """
        outcomes: list[tuple[Any, BaseException | None]] = []
        changed: set[int] = set()
        try:
            conn.execute("BEGIN IMMEDIATE")
            # A lone job needs no savepoint: its failure rolls the whole transaction back.
            alone = len(group) == 1
            for fn, _ in group:
                txn = SqliteTxn(conn, fts, self._versions)
                if not alone:
                    conn.execute("SAVEPOINT job")
                try:
                    result = fn(txn)
                    if not alone:
                        conn.execute("RELEASE job")
                except BaseException as exc:  # handed to the caller, re-raised there
                    if alone or not conn.in_transaction:
                        # A lone job's failure, or SQLite gave up the whole transaction
                        # (I/O error, disk full): everything in it is rolled back below.
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, _wrap(exc)))
                    continue
                outcomes.append((result, None))
                changed |= txn.changed
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as exc:
            # The whole transaction is lost: every job in it fails.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # nothing more can be done about it
                    conn.execute("ROLLBACK")
            error = _wrap(exc)
            if len(group) == 1:
                outcomes = [(None, error)]
            else:
                # A job may have cached versions read from an earlier job's uncommitted state.
                self._versions.clear()
                lost = StoreError(f"store transaction failed: {error}")
                lost.__cause__ = error
                outcomes = [(None, lost)] * len(group)
            changed = set()
        if changed:
            self.feed.publish(changed)
        for (_, done), (result, failure) in zip(group, outcomes, strict=True):
            done(result, failure)

    # -- the Store interface (run / run_sync come from WorkerJobs)

    def close(self) -> None:
        """Finish the queued jobs, then close the connection (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._jobs.put(STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
