"""What every area of the SQL transaction stands on: the connection, the modseq bumps that
wake Pings, and the few statements whose SQL differs between the dialects.

A change to a folder's content bumps its modseq once per transaction (``_bump``) and records the
folder as changed; the store publishes ``changed`` after COMMIT. The areas of the transaction
(natsync.store.sql.users, .devices, .folders, .messages, .items, .outbound, .mirror) are mixins
of :class:`TxnBase`, joined in natsync.store.sql.txn.
"""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from natsync.store.api import NotFound, Txn
from natsync.store.feed import hierarchy_key

#: How many (server id, modseq) entries the message-version cache may hold in all. A Sync of a
#: large folder asks for the folder's versions once per window; rebuilding 10,000 Python tuples
#: costs ~15 ms each time, a cached copy ~0.3 ms. ~100 bytes per entry: about 20 MB at most.
MAX_CACHED_VERSIONS = 200_000


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


#: The settings tables (the same shape: owner, key, value) and their owner columns.
_SettingsTable = Literal["user_settings", "device_settings"]
_Owner = Literal["user_id", "device_id"]


class TxnBase(Txn):
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
        #: Users and devices this transaction wrote a device row for (``touch_device``): on
        #: PostgreSQL that row's lock, and its foreign key's on the user, keep both from being
        #: deleted by another process until COMMIT; SQLite's writer is alone. So their
        #: existence checks need no statement; this transaction's own removals forget them.
        self._present_users: set[int] = set()
        self._present_devices: set[int] = set()
        #: Settings read or written in this transaction, by (table, owner, key): a second read
        #: costs no statement, and writing the value a setting already holds costs none either.
        self._settings: dict[tuple[str, int, str], str | None] = {}
        #: Devices' ``holding`` flag as this transaction read (in touch_device) or wrote it.
        self._holding: dict[int, bool] = {}

    def _any(self, values: Sequence[Any]) -> tuple[str, Any]:
        """``IN`` a list, bound as ONE parameter: (the SQL after the column, the value to bind).

        SQLite's default limit on bound parameters is 32766; a JSON array read by json_each is
        one parameter however long the list (PostgreSQL binds an array: ``= ANY(?)``)."""
        return "IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    def _setting(
        self, table: _SettingsTable, owner_column: _Owner, owner: int, key: str
    ) -> str | None:
        """A user's or a device's setting (*table*: user_settings / device_settings)."""
        cached = (table, owner, key)
        if cached in self._settings:
            return self._settings[cached]
        row = self._one(
            f"SELECT value FROM {table} WHERE {owner_column} = ? AND key = ?", (owner, key)
        )
        value = self._settings[cached] = None if row is None else str(row[0])
        return value

    def _set_setting(self, table: str, owner_column: str, owner: int, key: str, value: str) -> None:
        cached = (table, owner, key)
        if cached in self._settings and self._settings[cached] == value:
            return  # it holds that value already (a Sync repeating its collections' options)
        self._conn.execute(
            f"INSERT INTO {table} ({owner_column}, key, value) VALUES (?, ?, ?) "
            f"ON CONFLICT ({owner_column}, key) DO UPDATE SET value = excluded.value",
            (owner, key, value),
        )
        self._settings[cached] = value

    def _forget_rows(self) -> None:
        """This transaction deleted users or devices: what it knew of them is void."""
        self._present_users.clear()
        self._present_devices.clear()
        self._settings.clear()
        self._holding.clear()

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
        if user_id in self._present_users:
            return
        if self._one("SELECT 1 FROM users WHERE id = ?", (user_id,)) is None:
            raise NotFound(f"user {user_id} does not exist")

    def _require_device(self, device: int) -> None:
        if device in self._present_devices:
            return
        if self._one("SELECT 1 FROM devices WHERE id = ?", (device,)) is None:
            raise NotFound(f"device {device} does not exist")

    def _next_server_id(self, folder_id: int, info: _FolderInfo) -> str:
        """A new "<folder>:<number>" id; messages and items of a folder share the numbers."""
        number = self._one(
            "UPDATE folders SET next_message_number = next_message_number + 1 WHERE id = ? "
            "RETURNING next_message_number - 1",
            (folder_id,),
        )[0]
        return f"{info.server_id}:{number}"
