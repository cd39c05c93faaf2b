"""The IMAP mirror's mapping (natsync.sources): mirrored folders and messages, and the flags
and categories it compares."""

from __future__ import annotations

import json
from collections.abc import Sequence

from natsync.store.api import MirrorFolder, MirrorMessage
from natsync.store.sql.base import TxnBase


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
