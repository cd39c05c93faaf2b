"""Items of the data classes other than email (calendar, contacts, tasks, notes) as JSON records."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from natsync.store.api import Conflict, Item, NotFound
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _ITEM_COLS, MAX_ITEM_UID_CHARS, _item, _item_json


class ItemsMixin(TxnBase):
    """Items: see the module docstring."""

    def _item_row(self, item_id: int) -> Item:
        row = self._one(f"SELECT {_ITEM_COLS} FROM items WHERE id = ?", (item_id,))
        if row is None:
            raise NotFound(f"item {item_id} does not exist")
        return _item(row)

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
