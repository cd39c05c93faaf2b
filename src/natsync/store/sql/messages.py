"""Messages: delivery (with the search text and attachments), reads, changes, moves and search."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from natsync.store import migrations
from natsync.store.api import Attachment, Flag, Message, NewMessage, NotFound
from natsync.store.mime import MAX_INDEXED_TEXT_CHARS, part_bytes, plain_text
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import (
    _ATTACHMENT_COLS,
    _MESSAGE_COLS,
    MAX_SEARCH_TERMS,
    _attachment,
    _from_us,
    _message,
    _opt_to_us,
    _to_us,
)


def _fts_query(query: str) -> str:
    """A user's words as a safe FTS5 expression: every word must match, as a prefix."""
    terms = [t.replace('"', '""') for t in query.split()[:MAX_SEARCH_TERMS]]
    return " ".join(f'"{t}"*' for t in terms if t)


class MessagesMixin(TxnBase):
    """Messages: see the module docstring."""

    def _attachments_of(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
        found: dict[int, list[Attachment]] = {}
        if not message_ids:
            return found
        among, values = self._any(message_ids)
        rows = self._conn.execute(
            f"SELECT {_ATTACHMENT_COLS} FROM attachments "
            f"WHERE message_id {among} ORDER BY message_id, id",
            (values,),
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
            "INSERT INTO message_bodies (message_id, raw, parts) VALUES (?, ?, ?)",
            (message_id, message.raw, message.parts),
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
        among, values = self._any(server_ids)
        found = self._messages(
            f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.user_id = ? AND m.server_id {among}",
            (user_id, values),
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
        return {key: raw for key, (raw, _) in self.message_bodies(message_ids).items()}

    def message_bodies(self, message_ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]:
        """The raw MIME and the parts kept at delivery (``NewMessage.parts``; None for a
        message delivered before they were kept) of each message of *message_ids* that
        exists, in one statement: what a Sync window renders."""
        if not message_ids:
            return {}
        among, values = self._any(message_ids)
        rows = self._conn.execute(
            f"SELECT message_id, raw, parts FROM message_bodies WHERE message_id {among}",
            (values,),
        ).fetchall()
        return {row[0]: (bytes(row[1]), row[2]) for row in rows}

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

    def _in_folders(self, folder_ids: Sequence[int] | None, params: list[Any]) -> str:
        """The search's condition on the folders (none: all of them); its value joins *params*."""
        if folder_ids is None:
            return ""
        among, values = self._any(folder_ids)
        params.append(values)
        return f" AND m.folder_id {among}"

    def search_messages(
        self, user_id: int, query: str, folder_ids: Sequence[int] | None, limit: int
    ) -> list[Message]:
        params: list[Any] = [user_id]
        folder_clause = self._in_folders(folder_ids, params)
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
