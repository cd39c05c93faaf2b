"""Schema migrations of the stores: numbered steps, applied in order, one transaction each.

The schema version lives in ``PRAGMA user_version`` (part of the database header, so it commits
or rolls back with the step that sets it). Opening a file runs every step it has not seen yet;
a file written by a newer natsync (a version above the last step here) is refused rather than
guessed at. Steps are append-only: once released, a step is never edited; a change to the schema
is a new step.
"""

# S608: SQL here is built from this module's constants only.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from natsync.store.api import StoreError

# -- step 1: the first release's schema -------------------------------------------------------

_V1 = (
    # Users. ``next_folder_number`` hands out folder server ids ("1", "2" ...) that are never
    # reused, so a device holding a stale id never meets a different folder under it.
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        hierarchy_modseq INTEGER NOT NULL DEFAULT 0,
        next_folder_number INTEGER NOT NULL DEFAULT 1
    )
    """,
    """
    CREATE TABLE user_settings (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL COLLATE NOCASE,
        device_type TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        os TEXT NOT NULL DEFAULT '',
        user_agent TEXT NOT NULL DEFAULT '',
        protocol_version TEXT NOT NULL DEFAULT '',
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        access_state TEXT NOT NULL DEFAULT 'allowed',
        policy_key INTEGER NOT NULL DEFAULT 0,
        pending_policy_key INTEGER NOT NULL DEFAULT 0,
        wipe_state TEXT NOT NULL DEFAULT 'none',
        wipe_requested_at INTEGER,
        wipe_acknowledged_at INTEGER,
        UNIQUE (user_id, device_id)
    )
    """,
    """
    CREATE TABLE device_settings (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (device_id, key)
    ) WITHOUT ROWID
    """,
    # Folders. ``next_message_number`` hands out message numbers (never reused) for the
    # "<folder>:<number>" server ids. AUTOINCREMENT: a folder id is never reused, so
    # (folder id, modseq) names one state of one folder forever (the version cache relies on it).
    """
    CREATE TABLE folders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        parent_server_id TEXT NOT NULL,
        display_name TEXT NOT NULL COLLATE NOCASE,
        type INTEGER NOT NULL,
        modseq INTEGER NOT NULL DEFAULT 0,
        next_message_number INTEGER NOT NULL DEFAULT 1,
        UNIQUE (user_id, server_id),
        UNIQUE (user_id, parent_server_id, display_name)
    )
    """,
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        modseq INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        subject TEXT NOT NULL,
        from_addr TEXT NOT NULL,
        to_addrs TEXT NOT NULL,
        cc_addrs TEXT NOT NULL,
        reply_to TEXT NOT NULL,
        message_id_header TEXT NOT NULL,
        size INTEGER NOT NULL,
        read INTEGER NOT NULL,
        flag_status INTEGER NOT NULL DEFAULT 0,
        flag_type TEXT NOT NULL DEFAULT '',
        flag_start INTEGER,
        flag_due INTEGER,
        flag_complete INTEGER,
        categories TEXT NOT NULL DEFAULT '[]',
        importance INTEGER NOT NULL,
        message_class TEXT NOT NULL,
        has_attachments INTEGER NOT NULL,
        preview TEXT NOT NULL,
        UNIQUE (user_id, server_id)
    )
    """,
    # Covers message_versions (folder scan, optionally by date) without touching the table.
    "CREATE INDEX messages_by_folder ON messages (folder_id, received_at, server_id, modseq)",
    "CREATE INDEX messages_by_message_id ON messages (user_id, message_id_header)",
    # The raw MIME apart from the indexed row: scans of messages never page through blobs.
    """
    CREATE TABLE message_bodies (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        raw BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        file_reference TEXT NOT NULL,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        content_id TEXT NOT NULL,
        is_inline INTEGER NOT NULL,
        size INTEGER NOT NULL,
        part_index INTEGER NOT NULL,
        UNIQUE (user_id, file_reference)
    )
    """,
    "CREATE INDEX attachments_by_message ON attachments (message_id)",
    # Sync state: ``seq`` orders the keys of one (device, collection), newest highest.
    """
    CREATE TABLE sync_state (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        collection TEXT NOT NULL,
        sync_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (device_id, collection, sync_key)
    )
    """,
    """
    CREATE TABLE outbound (
        id INTEGER PRIMARY KEY,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        raw BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    )
    """,
    "CREATE INDEX outbound_due ON outbound (next_attempt_at)",
)


def _step1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


# -- step 2: full-text search -----------------------------------------------------------------

#: The search table; rowid = messages.id. FTS5 when this SQLite has it, a plain table otherwise
#: (searched with LIKE). The body text lives only here: it is extracted once, at delivery.
SEARCH_TABLE = "message_search"


def fts5_available(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite build has FTS5 (Debian's and python.org's do; some builds don't)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp._fts5_probe")
    return True


def search_uses_fts5(conn: sqlite3.Connection) -> bool:
    """Whether this file's search table is FTS5 (else the plain table searched with LIKE)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (SEARCH_TABLE,)).fetchone()
    return row is not None and "fts5" in str(row[0]).lower()


def _step2(conn: sqlite3.Connection) -> None:
    if fts5_available(conn):
        conn.execute(
            f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5("
            "subject, from_addr, to_addrs, body, tokenize = 'unicode61 remove_diacritics 2')"
        )
    else:
        conn.execute(
            f"CREATE TABLE {SEARCH_TABLE} (rowid INTEGER PRIMARY KEY, "
            "subject TEXT, from_addr TEXT, to_addrs TEXT, body TEXT)"
        )
    # Deleting a message (directly, or by cascade from its folder or user) drops its text.
    conn.execute(
        f"CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN "
        f"DELETE FROM {SEARCH_TABLE} WHERE rowid = old.id; END"
    )
    # Backfill what step 1 files already hold.
    from natsync.store.mime import plain_text

    rows = conn.execute(
        "SELECT m.id, m.subject, m.from_addr, m.to_addrs, b.raw "
        "FROM messages m JOIN message_bodies b ON b.message_id = m.id"
    ).fetchall()
    for message_id, subject, from_addr, to_addrs, raw in rows:
        conn.execute(
            f"INSERT INTO {SEARCH_TABLE} (rowid, subject, from_addr, to_addrs, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (message_id, subject, from_addr, to_addrs, plain_text(raw)),
        )


# -- step 3: items of the other data classes, and their standard folders ---------------------

#: The folders step 3 gives every existing user (new users get them from STANDARD_FOLDERS).
#: Written out here, not read from the api: a released step must never change its result.
_PIM_FOLDERS = (("Calendar", 8), ("Contacts", 9), ("Tasks", 7), ("Notes", 10))

#: Names tried for a standard folder whose name a user's own folder already holds:
#: "Calendar", "Calendar (2)" ... A bound, so the step always ends.
_MAX_NAME_TRIES = 100

# ``data`` is the class record as canonical JSON text (TEXT in both dialects, so rows compare
# equal across drivers); ``uid`` is the class's own id (iCalendar / vCard UID). The index covers
# item_versions (a folder scan) without touching the JSON.
_V3 = (
    """
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        data TEXT NOT NULL,
        modseq INTEGER NOT NULL,
        UNIQUE (user_id, server_id),
        UNIQUE (folder_id, uid)
    )
    """,
    "CREATE INDEX items_by_folder ON items (folder_id, server_id, modseq)",
)

_PG_V3 = (
    """
    CREATE TABLE items (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        folder_id BIGINT NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        data TEXT NOT NULL,
        modseq BIGINT NOT NULL,
        UNIQUE (user_id, server_id),
        UNIQUE (folder_id, uid)
    )
    """,
    "CREATE INDEX items_by_folder ON items (folder_id, server_id, modseq)",
)


def _next_free_folder_number(conn: Any, mark: str, user_id: int) -> int:
    """The user's next folder number, skipping any a folder holds already (a hand-edited
    file may lag behind); bounded by the user's folder count, since each skip passes one."""
    held = {
        str(row[0])
        for row in conn.execute(
            f"SELECT server_id FROM folders WHERE user_id = {mark}", (user_id,)
        ).fetchall()
    }
    for _ in range(len(held) + 1):
        number: int = conn.execute(
            "UPDATE users SET next_folder_number = next_folder_number + 1 "
            f"WHERE id = {mark} RETURNING next_folder_number - 1",
            (user_id,),
        ).fetchone()[0]
        if str(number) not in held:
            return number
    raise StoreError(f"user {user_id}: no free folder number found; the file is damaged")


def _add_pim_folders(conn: Any, mark: str) -> None:
    """Give every user the standard folders of each class they lack (*mark*: "?" or "%s")."""
    users = [row[0] for row in conn.execute("SELECT id FROM users ORDER BY id").fetchall()]
    for user_id in users:
        added = False
        for name, folder_type in _PIM_FOLDERS:
            have = conn.execute(
                f"SELECT 1 FROM folders WHERE user_id = {mark} AND type = {mark}",
                (user_id, folder_type),
            ).fetchone()
            if have is not None:
                continue
            taken = {
                str(row[0]).casefold()
                for row in conn.execute(
                    f"SELECT display_name FROM folders WHERE user_id = {mark} "
                    "AND parent_server_id = '0'",
                    (user_id,),
                ).fetchall()
            }
            candidates = [name, *(f"{name} ({n})" for n in range(2, _MAX_NAME_TRIES))]
            free = next((c for c in candidates if c.casefold() not in taken), None)
            if free is None:
                raise StoreError(
                    f"user {user_id} has folders named {name} up to ({_MAX_NAME_TRIES - 1}): "
                    "rename some of them, then open the store again"
                )
            number = _next_free_folder_number(conn, mark, user_id)
            conn.execute(
                "INSERT INTO folders (user_id, server_id, parent_server_id, display_name, type) "
                f"VALUES ({mark}, {mark}, '0', {mark}, {mark})",
                (user_id, str(number), free, folder_type),
            )
            added = True
        if added:  # devices see the new folders at their next FolderSync
            conn.execute(
                f"UPDATE users SET hierarchy_modseq = hierarchy_modseq + 1 WHERE id = {mark}",
                (user_id,),
            )


def _step3(conn: sqlite3.Connection) -> None:
    for statement in _V3:
        conn.execute(statement)
    _add_pim_folders(conn, "?")


# -- step 4: claims on the outbound queue -----------------------------------------------------

# Several server processes may each run a relay worker on one queue. A worker claims an entry
# (``claimed_by`` = its owner name, ``lease_until`` = microseconds since the epoch) before it
# sends it; only the holder of a live claim sends it and marks it sent or retried. A claim whose
# lease ran out (its worker died) can be taken by another worker. '' / 0: not claimed.
_V4 = (
    "ALTER TABLE outbound ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE outbound ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0",
)

_PG_V4 = (
    "ALTER TABLE outbound ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '', "
    "ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0",
)


def _step4(conn: sqlite3.Connection) -> None:
    for statement in _V4:
        conn.execute(statement)


# -- step 5: the IMAP mirror's mapping (natsync.sources) ----------------------------------------

# A folder mirrored from an IMAP mailbox: which mailbox, its UIDVALIDITY and the HIGHESTMODSEQ
# the mirror has caught up to (RFC 7162 §3.1: changes are asked for "since" it), and
# ``backfill_below``: UIDs under it are not fetched yet (newest first; 0 = all fetched).
# A message's mapping row names its IMAP UID and the flags last seen on either side, so the
# mirror can tell a phone's change from the server's. ``message_id`` has no foreign key on
# purpose: the row outlives a message the phone deleted until the deletion is written back.
_V5 = (
    """
    CREATE TABLE mirror_folders (
        folder_id INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        highestmodseq INTEGER NOT NULL,
        backfill_below INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE mirror_messages (
        message_id INTEGER PRIMARY KEY,
        folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        seen INTEGER NOT NULL,
        flagged INTEGER NOT NULL,
        UNIQUE (folder_id, uid)
    )
    """,
)

_PG_V5 = (
    """
    CREATE TABLE mirror_folders (
        folder_id BIGINT PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        uidvalidity BIGINT NOT NULL,
        highestmodseq BIGINT NOT NULL,
        backfill_below BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE mirror_messages (
        message_id BIGINT PRIMARY KEY,
        folder_id BIGINT NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        uid BIGINT NOT NULL,
        seen INTEGER NOT NULL,
        flagged INTEGER NOT NULL,
        UNIQUE (folder_id, uid)
    )
    """,
)


def _step5(conn: sqlite3.Connection) -> None:
    for statement in _V5:
        conn.execute(statement)


# -- step 6: the categories a mirrored message's IMAP keywords carry (natsync.sources) ---------

# The keywords (as category names, JSON list) both sides last agreed on, so the mirror tells a
# phone's category change from an IMAP client's as it does for \\Seen and \\Flagged.
_V6 = ("ALTER TABLE mirror_messages ADD COLUMN keywords TEXT NOT NULL DEFAULT '[]'",)


def _step6(conn: sqlite3.Connection) -> None:
    for statement in _V6:
        conn.execute(statement)


Step = Callable[[sqlite3.Connection], None]

#: The numbered steps; the schema version of a file is the number of steps applied to it.
STEPS: Sequence[Step] = (_step1, _step2, _step3, _step4, _step5, _step6)

#: The schema version this code writes and reads.
LATEST = len(STEPS)


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection, upto: int = LATEST) -> int:
    """Bring the file up to version *upto*, one transaction per step; return the version.

    The connection must be in autocommit mode (``isolation_level=None``): each step is wrapped
    in its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` so a crash mid-upgrade leaves the file at the
    last completed step, and the next open continues from there.
    """
    current = schema_version(conn)
    if current > LATEST:
        raise StoreError(
            f"the store file has schema version {current}, but this natsync knows only up to "
            f"{LATEST}: it was written by a newer natsync; upgrade natsync to open it"
        )
    for number in range(current + 1, upto + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have upgraded the file while we waited for the lock.
            if schema_version(conn) >= number:
                conn.execute("COMMIT")
                continue
            STEPS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


# -- the same steps for PostgreSQL ------------------------------------------------------------
#
# Step N here builds what step N above builds, in PostgreSQL's dialect: the PostgreSQL driver
# (natsync.store.postgres) runs the same Python transaction code on it, so names and meanings of
# tables and columns are identical. Differences, each for a reason:
# * ``COLLATE NOCASE`` becomes a nondeterministic ICU collation (case-insensitive equality and
#   uniqueness, like NOCASE, and for every script rather than ASCII only).
# * ``INTEGER PRIMARY KEY`` becomes an identity column: its sequence never hands a number out
#   twice, which is what AUTOINCREMENT promises for folders (the version cache relies on it).
# * Times stay integers (microseconds since the epoch, BIGINT) and flags stay 0/1 integers, so
#   rows compare equal across the two drivers (``natsync store copy`` checks it).
# * The version lives in the one-row table ``natsync_schema`` (SQLite keeps it in the header);
#   steps are serialised across processes by a transaction-scoped advisory lock.

#: The advisory lock key that serialises migrations of one database across processes.
PG_MIGRATION_LOCK = 0x6E617473  # "nats"

_PG_V1 = (
    "CREATE COLLATION IF NOT EXISTS natsync_nocase "
    "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    """
    CREATE TABLE users (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT COLLATE natsync_nocase NOT NULL UNIQUE,
        email TEXT COLLATE natsync_nocase NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        hierarchy_modseq BIGINT NOT NULL DEFAULT 0,
        next_folder_number BIGINT NOT NULL DEFAULT 1
    )
    """,
    """
    CREATE TABLE user_settings (
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    )
    """,
    """
    CREATE TABLE devices (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        device_id TEXT COLLATE natsync_nocase NOT NULL,
        device_type TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        os TEXT NOT NULL DEFAULT '',
        user_agent TEXT NOT NULL DEFAULT '',
        protocol_version TEXT NOT NULL DEFAULT '',
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        access_state TEXT NOT NULL DEFAULT 'allowed',
        policy_key BIGINT NOT NULL DEFAULT 0,
        pending_policy_key BIGINT NOT NULL DEFAULT 0,
        wipe_state TEXT NOT NULL DEFAULT 'none',
        wipe_requested_at BIGINT,
        wipe_acknowledged_at BIGINT,
        UNIQUE (user_id, device_id)
    )
    """,
    """
    CREATE TABLE device_settings (
        device_id BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (device_id, key)
    )
    """,
    """
    CREATE TABLE folders (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        parent_server_id TEXT NOT NULL,
        display_name TEXT COLLATE natsync_nocase NOT NULL,
        type INTEGER NOT NULL,
        modseq BIGINT NOT NULL DEFAULT 0,
        next_message_number BIGINT NOT NULL DEFAULT 1,
        UNIQUE (user_id, server_id),
        UNIQUE (user_id, parent_server_id, display_name)
    )
    """,
    """
    CREATE TABLE messages (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        folder_id BIGINT NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL,
        modseq BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        subject TEXT NOT NULL,
        from_addr TEXT NOT NULL,
        to_addrs TEXT NOT NULL,
        cc_addrs TEXT NOT NULL,
        reply_to TEXT NOT NULL,
        message_id_header TEXT NOT NULL,
        size BIGINT NOT NULL,
        read INTEGER NOT NULL,
        flag_status INTEGER NOT NULL DEFAULT 0,
        flag_type TEXT NOT NULL DEFAULT '',
        flag_start BIGINT,
        flag_due BIGINT,
        flag_complete BIGINT,
        categories TEXT NOT NULL DEFAULT '[]',
        importance INTEGER NOT NULL,
        message_class TEXT NOT NULL,
        has_attachments INTEGER NOT NULL,
        preview TEXT NOT NULL,
        UNIQUE (user_id, server_id)
    )
    """,
    "CREATE INDEX messages_by_folder ON messages (folder_id, received_at, server_id, modseq)",
    "CREATE INDEX messages_by_message_id ON messages (user_id, message_id_header)",
    """
    CREATE TABLE message_bodies (
        message_id BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        raw BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE attachments (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        file_reference TEXT NOT NULL,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        content_id TEXT NOT NULL,
        is_inline INTEGER NOT NULL,
        size BIGINT NOT NULL,
        part_index INTEGER NOT NULL,
        UNIQUE (user_id, file_reference)
    )
    """,
    "CREATE INDEX attachments_by_message ON attachments (message_id)",
    """
    CREATE TABLE sync_state (
        device_id BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        collection TEXT NOT NULL,
        sync_key TEXT NOT NULL,
        seq BIGINT NOT NULL,
        state BYTEA NOT NULL,
        PRIMARY KEY (device_id, collection, sync_key)
    )
    """,
    """
    CREATE TABLE outbound (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        raw BYTEA NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    )
    """,
    "CREATE INDEX outbound_due ON outbound (next_attempt_at)",
)


def _pg_step1(conn: Any) -> None:
    for statement in _PG_V1:
        conn.execute(statement)


#: The text search configuration: ``simple`` (no stemming, no stop words) indexes words as
#: written, which is what SQLite's unicode61 tokenizer does; the body is cut into runs of
#: letters and digits first, so an address "carol@example.test" is three words, as there.
PG_TEXT_CONFIG = "simple"


def _pg_step2(conn: Any) -> None:
    words = "regexp_replace(coalesce({}, ''), '[^[:alnum:]]+', ' ', 'g')"
    document = " || ' ' || ".join(
        words.format(column) for column in ("subject", "from_addr", "to_addrs", "body")
    )
    # Deleting a message drops its text through the foreign key (SQLite needs a trigger).
    conn.execute(
        f"CREATE TABLE {SEARCH_TABLE} ("
        "rowid BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE, "
        "subject TEXT, from_addr TEXT, to_addrs TEXT, body TEXT, "
        f"document tsvector GENERATED ALWAYS AS (to_tsvector('{PG_TEXT_CONFIG}', {document})) "
        "STORED)"
    )
    conn.execute(f"CREATE INDEX {SEARCH_TABLE}_document ON {SEARCH_TABLE} USING gin (document)")
    from natsync.store.mime import plain_text

    rows = conn.execute(
        "SELECT m.id, m.subject, m.from_addr, m.to_addrs, b.raw "
        "FROM messages m JOIN message_bodies b ON b.message_id = m.id"
    ).fetchall()
    for message_id, subject, from_addr, to_addrs, raw in rows:
        conn.execute(
            f"INSERT INTO {SEARCH_TABLE} (rowid, subject, from_addr, to_addrs, body) "
            "VALUES (%s, %s, %s, %s, %s)",
            (message_id, subject, from_addr, to_addrs, plain_text(bytes(raw)).replace("\0", "")),
        )


def _pg_step3(conn: Any) -> None:
    for statement in _PG_V3:
        conn.execute(statement)
    _add_pim_folders(conn, "%s")


def _pg_step4(conn: Any) -> None:
    for statement in _PG_V4:
        conn.execute(statement)


def _pg_step5(conn: Any) -> None:
    for statement in _PG_V5:
        conn.execute(statement)


def _pg_step6(conn: Any) -> None:
    for statement in _V6:  # the same SQL in both dialects
        conn.execute(statement)


#: The PostgreSQL steps, one for each SQLite step (same number, same result).
PG_STEPS: Sequence[Callable[[Any], None]] = (
    _pg_step1,
    _pg_step2,
    _pg_step3,
    _pg_step4,
    _pg_step5,
    _pg_step6,
)
assert len(PG_STEPS) == LATEST, "every schema step needs its PostgreSQL form"


def pg_schema_version(conn: Any) -> int:
    """The schema version of a PostgreSQL database (0: natsync never ran there)."""
    conn.execute("CREATE TABLE IF NOT EXISTS natsync_schema (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM natsync_schema").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def pg_migrate(conn: Any, upto: int = LATEST) -> int:
    """Bring a PostgreSQL database up to version *upto*, one transaction per step.

    *conn* is a psycopg connection in autocommit mode. Each step takes an advisory lock first, so
    two server processes starting together upgrade the database once, one after the other.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (PG_MIGRATION_LOCK,))
    try:
        current = pg_schema_version(conn)
        if current > LATEST:
            raise StoreError(
                f"the store database has schema version {current}, but this natsync knows only "
                f"up to {LATEST}: it was written by a newer natsync; upgrade natsync to open it"
            )
        for number in range(current + 1, upto + 1):
            conn.execute("BEGIN")
            try:
                PG_STEPS[number - 1](conn)
                conn.execute("DELETE FROM natsync_schema")
                conn.execute("INSERT INTO natsync_schema (version) VALUES (%s)", (number,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return pg_schema_version(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (PG_MIGRATION_LOCK,))
