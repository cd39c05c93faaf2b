"""The IMAP mirror's mapping (natsync.sources): mirrored folders and messages, and the flags
and categories it compares; a lazily mirrored message's whole MIME put in place; the lease on
mirroring a user's source (one process at a time)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from natsync.store.api import MirrorFolder, MirrorMessage, NotFound
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _from_us, _to_us


class MirrorMixin(TxnBase):
    """Mirror: see the module docstring."""

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

    def replace_message_body(self, message_id: int, raw: bytes, size: int) -> None:
        if (
            self._conn.execute(
                "UPDATE message_bodies SET raw = ? WHERE message_id = ?", (raw, message_id)
            ).rowcount
            == 0
        ):
            raise NotFound(f"message {message_id} does not exist")
        self._conn.execute("UPDATE messages SET size = ? WHERE id = ?", (size, message_id))

    def take_source_lease(
        self, user_id: int, source: str, owner: str, now: datetime, until: datetime
    ) -> bool:
        # One statement: the conflicting row is locked (PostgreSQL) or the file is (SQLite's
        # BEGIN IMMEDIATE) while the WHERE is checked, so two processes never both win.
        row = self._conn.execute(
            "INSERT INTO source_leases (user_id, source, owner, lease_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, source) DO UPDATE SET owner = excluded.owner, "
            "lease_until = excluded.lease_until "
            "WHERE source_leases.owner = excluded.owner OR source_leases.lease_until <= ? "
            "RETURNING owner",
            (user_id, source, owner, _to_us(until), _to_us(now)),
        ).fetchone()
        return row is not None

    def release_source_lease(self, user_id: int, source: str, owner: str) -> None:
        self._conn.execute(
            "DELETE FROM source_leases WHERE user_id = ? AND source = ? AND owner = ?",
            (user_id, source, owner),
        )

    def source_lease(self, user_id: int, source: str) -> tuple[str, datetime] | None:
        row = self._one(
            "SELECT owner, lease_until FROM source_leases WHERE user_id = ? AND source = ?",
            (user_id, source),
        )
        return None if row is None else (str(row[0]), _from_us(row[1]))

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
