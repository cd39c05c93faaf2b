"""Moving a deployment between stores (SQLite ⇄ PostgreSQL), verified by counts and checksums.

Both drivers hold the same tables with the same columns and the same value encoding (times as
microseconds, flags as 0/1, raw MIME as bytes, item records as canonical JSON text), so a copy
is rows in, rows out, ids kept: sync state blobs name server ids and the folder/message ids
inside them stay valid. The whole copy is ONE transaction on the target, so a failed copy
leaves the target as it was.

Verification does not trust the copy loop: afterwards each table is read back from both stores
and compared by row count and by a SHA-256 over its rows in a canonical order (by key; keys
holding text are sorted in Python, because SQLite and PostgreSQL collate text differently).
"""

# S608: table and column names come from this module's constants only.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from natsync.store import migrations
from natsync.store.api import Store, StoreError, Txn

#: Rows read and written per round trip: large enough to amortise it, small enough that a
#: batch of raw messages (up to a few MB each) stays a modest amount of memory.
BATCH_ROWS = 200


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    #: The leading integer key to page by (rows come in this order from both drivers).
    key: str
    #: Whether the rest of the key is text: then a table is sorted again in Python.
    text_key: bool = False


#: Every table of the schema, parents before children (foreign keys hold at every row).
TABLES: tuple[Table, ...] = (
    Table(
        "users",
        (
            "id",
            "name",
            "email",
            "display_name",
            "password_hash",
            "created_at",
            "hierarchy_modseq",
            "next_folder_number",
        ),
        "id",
    ),
    Table("user_settings", ("user_id", "key", "value"), "user_id", text_key=True),
    Table(
        "devices",
        (
            "id",
            "user_id",
            "device_id",
            "device_type",
            "model",
            "os",
            "user_agent",
            "protocol_version",
            "first_seen",
            "last_seen",
            "access_state",
            "policy_key",
            "pending_policy_key",
            "wipe_state",
            "wipe_requested_at",
            "wipe_acknowledged_at",
            "holding",
        ),
        "id",
    ),
    Table("device_settings", ("device_id", "key", "value"), "device_id", text_key=True),
    Table(
        "folders",
        (
            "id",
            "user_id",
            "server_id",
            "parent_server_id",
            "display_name",
            "type",
            "modseq",
            "next_message_number",
        ),
        "id",
    ),
    Table(
        "messages",
        (
            "id",
            "user_id",
            "folder_id",
            "server_id",
            "modseq",
            "received_at",
            "subject",
            "from_addr",
            "to_addrs",
            "cc_addrs",
            "reply_to",
            "message_id_header",
            "size",
            "read",
            "flag_status",
            "flag_type",
            "flag_start",
            "flag_due",
            "flag_complete",
            "categories",
            "importance",
            "message_class",
            "has_attachments",
            "preview",
        ),
        "id",
    ),
    Table("message_bodies", ("message_id", "raw", "parts"), "message_id"),
    Table(migrations.SEARCH_TABLE, ("rowid", "subject", "from_addr", "to_addrs", "body"), "rowid"),
    Table(
        "attachments",
        (
            "id",
            "message_id",
            "user_id",
            "file_reference",
            "filename",
            "content_type",
            "content_id",
            "is_inline",
            "size",
            "part_index",
        ),
        "id",
    ),
    Table("items", ("id", "user_id", "folder_id", "server_id", "uid", "data", "modseq"), "id"),
    Table(
        "sync_state",
        ("device_id", "collection", "sync_key", "seq", "state"),
        "device_id",
        text_key=True,
    ),
    Table(
        "outbound",
        (
            "id",
            "sender",
            "recipients",
            "raw",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "claimed_by",
            "lease_until",
        ),
        "id",
    ),
    Table(
        "mirror_folders",
        ("folder_id", "user_id", "mailbox", "uidvalidity", "highestmodseq", "backfill_below"),
        "folder_id",
    ),
    Table(
        "mirror_messages",
        ("message_id", "folder_id", "uid", "seen", "flagged", "keywords"),
        "message_id",
    ),
    Table("source_leases", ("user_id", "source", "owner", "lease_until"), "user_id", text_key=True),
)

#: Tables whose ids come from a sequence the target must continue after the copy.
_IDENTITY_TABLES = (
    "users",
    "devices",
    "folders",
    "messages",
    "attachments",
    "items",
    "outbound",
)


@dataclass(frozen=True, slots=True)
class TableSummary:
    name: str
    rows: int
    sha256: str


def _conn(txn: Txn) -> Any:
    """The driver connection under *txn* (both speak ``?`` placeholders)."""
    return txn._conn  # type: ignore[attr-defined]


def _is_postgres(txn: Txn) -> bool:
    try:
        from natsync.store.postgres import PostgresTxn
    except ImportError:  # psycopg is not installed: no store can be PostgreSQL
        return False
    return isinstance(txn, PostgresTxn)


def _canonical(value: Any) -> bytes:
    """One value as bytes that mean the same whichever driver returned it."""
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%d;" % value
    if isinstance(value, str):
        data = value.encode()
        return b"s%d:" % len(data) + data
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return b"b%d:" % len(data) + data
    raise StoreError(f"cannot checksum a value of type {type(value).__name__}")


def _rows(store: Store, table: Table) -> Iterator[tuple[Any, ...]]:
    """Every row of *table*, in key order, a batch per transaction."""
    columns = ", ".join(table.columns)
    after: int | None = None
    while True:
        where = "" if after is None else f" WHERE {table.key} > ?"
        params: tuple[Any, ...] = () if after is None else (after,)
        if table.text_key:
            # Page by the integer key only, and take every row of the last key in full.
            def fetch(txn: Txn, where: str = where, params: tuple[Any, ...] = params) -> list[Any]:
                first = (
                    _conn(txn)
                    .execute(f"SELECT min({table.key}) FROM {table.name}{where}", params)
                    .fetchone()
                )
                if first is None or first[0] is None:
                    return []
                rows = (
                    _conn(txn)
                    .execute(
                        f"SELECT {columns} FROM {table.name} WHERE {table.key} = ?", (first[0],)
                    )
                    .fetchall()
                )
                return sorted((tuple(r) for r in rows), key=_sort_key)

        else:

            def fetch(txn: Txn, where: str = where, params: tuple[Any, ...] = params) -> list[Any]:
                rows = (
                    _conn(txn)
                    .execute(
                        f"SELECT {columns} FROM {table.name}{where} "
                        f"ORDER BY {table.key} LIMIT {BATCH_ROWS:d}",
                        params,
                    )
                    .fetchall()
                )
                return [tuple(r) for r in rows]

        batch = store.run_sync(fetch)
        if not batch:
            return
        yield from batch
        after = batch[-1][table.columns.index(table.key)]


def _sort_key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(repr(v) for v in row)


def count(store: Store, table: Table) -> int:
    def counting(txn: Txn) -> int:
        n: int = _conn(txn).execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
        return n

    return store.run_sync(counting)


def summarize(
    store: Store, progress: Callable[[str, int], None] | None = None
) -> list[TableSummary]:
    """Row count and SHA-256 of every table of *store* (the verification of a copy)."""
    summaries = []
    for table in TABLES:
        digest = hashlib.sha256()
        rows = 0
        for row in _rows(store, table):
            for value in row:
                digest.update(_canonical(value))
            digest.update(b"\n")
            rows += 1
            if progress is not None:
                progress(table.name, 1)
        summaries.append(TableSummary(table.name, rows, digest.hexdigest()))
    return summaries


def is_empty(store: Store) -> bool:
    """Whether *store* holds no users, no mail and no queued mail (safe to copy into)."""
    return all(count(store, t) == 0 for t in TABLES if t.name in ("users", "outbound"))


def _high_water(txn: Txn, table: str) -> int:
    """The highest id *table* ever handed out (ids of deleted rows are never reused)."""
    conn = _conn(txn)
    top = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
    if _is_postgres(txn):
        row = conn.execute(
            "SELECT last_value FROM pg_sequences "
            "WHERE sequencename = ? AND schemaname = current_schema()",
            (f"{table}_id_seq",),
        ).fetchone()
        if row is not None and row[0] is not None:  # None: the sequence was never used
            top = max(top, row[0])
    else:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        if row is not None:
            top = max(top, row[0])
    return int(top)


def _set_high_water(txn: Txn, table: str, value: int) -> None:
    conn = _conn(txn)
    if _is_postgres(txn):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?, ?)",
            (max(value, 1), value > 0),
        )
    elif table == "folders":  # the one AUTOINCREMENT table (see migrations)
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, value))


def copy(
    source: Store,
    target: Store,
    *,
    force: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> None:
    """Copy every row of *source* into *target* in one target transaction.

    *target* must be empty unless *force*, which empties it first (in the same transaction).
    """
    if not force and not is_empty(target):
        raise StoreError(
            "the target store is not empty: copying would mix two deployments "
            "(pass --force to replace what it holds)"
        )
    high_water = source.run_sync(lambda txn: {t: _high_water(txn, t) for t in _IDENTITY_TABLES})

    def fill(txn: Txn) -> None:
        conn = _conn(txn)
        for table in reversed(TABLES):
            conn.execute(f"DELETE FROM {table.name}")
        for table in TABLES:
            marks = ", ".join("?" for _ in table.columns)
            statement = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"
            batch: list[tuple[Any, ...]] = []
            for row in _rows(source, table):
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    conn.executemany(statement, batch)
                    if progress is not None:
                        progress(table.name, len(batch))
                    batch = []
            if batch:
                conn.executemany(statement, batch)
                if progress is not None:
                    progress(table.name, len(batch))
        for name, value in high_water.items():
            _set_high_water(txn, name, value)

    target.run_sync(fill)


def verify(
    source: Store, target: Store, progress: Callable[[str, int], None] | None = None
) -> list[tuple[TableSummary, TableSummary]]:
    """Both stores' summaries, table by table; raises StoreError naming any table that differs."""
    pairs = list(zip(summarize(source, progress), summarize(target, progress), strict=True))
    differing = [a.name for a, b in pairs if (a.rows, a.sha256) != (b.rows, b.sha256)]
    if differing:
        raise StoreError(f"the copy differs from the source in: {', '.join(differing)}")
    return pairs


def schema_version(store: Store) -> int:
    """The schema version *store*'s database is at."""

    def read(txn: Txn) -> int:
        if _is_postgres(txn):
            row = _conn(txn).execute("SELECT max(version) FROM natsync_schema").fetchone()
            return int(row[0] or 0)
        return migrations.schema_version(_conn(txn))

    return store.run_sync(read)
