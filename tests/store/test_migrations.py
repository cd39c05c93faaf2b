"""Schema migrations: old files are upgraded in place, newer files are refused."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natsync.mime import SyncParts, parse_message, sync_parts
from natsync.store import migrations
from natsync.store.api import StoreError
from natsync.store.sqlite import SqliteStore, connect


def test_a_new_file_gets_the_latest_schema(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "n.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "n.db")
    try:
        assert migrations.schema_version(conn) == migrations.LATEST
    finally:
        conn.close()


def test_a_version_1_file_is_upgraded_and_its_mail_becomes_searchable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = connect(path)
    assert migrations.migrate(conn, upto=1) == 1
    # What the first release would have written: a user, a folder, a message with its body.
    conn.execute(
        "INSERT INTO users (id, name, email, display_name, password_hash, created_at) "
        "VALUES (1, 'alice', 'alice@example.test', 'Alice', 'h', 0)"
    )
    conn.execute(
        "INSERT INTO folders (id, user_id, server_id, parent_server_id, display_name, type) "
        "VALUES (1, 1, '1', '0', 'Inbox', 2)"
    )
    conn.execute(
        "INSERT INTO messages (id, user_id, folder_id, server_id, modseq, received_at, subject, "
        "from_addr, to_addrs, cc_addrs, reply_to, message_id_header, size, read, importance, "
        "message_class, has_attachments, preview) VALUES (1, 1, 1, '1:1', 1, 0, 'Old news', "
        "'bob@example.test', 'alice@example.test', '', '', '<x@y>', 10, 0, 1, 'IPM.Note', 0, '')"
    )
    conn.execute(
        "INSERT INTO message_bodies (message_id, raw) VALUES "
        "(1, CAST('Subject: Old news' || char(13, 10, 13, 10) || 'archaeology' AS BLOB))"
    )
    conn.close()

    store = SqliteStore(path)
    try:
        found = store.run_sync(lambda txn: txn.search_messages(1, "archaeology", None, 10))
        assert [m.server_id for m in found] == ["1:1"]
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert migrations.schema_version(conn) == migrations.LATEST
    finally:
        conn.close()


def test_a_failing_step_leaves_the_file_at_the_last_good_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "half.db"

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("step 2 fails")

    monkeypatch.setattr(migrations, "STEPS", (migrations.STEPS[0], broken))
    conn = connect(path)
    with pytest.raises(RuntimeError, match="step 2 fails"):
        migrations.migrate(conn, upto=2)
    assert migrations.schema_version(conn) == 1
    assert (
        conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None
    )
    conn.close()


def test_a_file_from_a_newer_natsync_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer natsync"):
        SqliteStore(path)


def test_a_version_3_queue_is_upgraded_with_its_entries_unclaimed(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = connect(path)
    assert migrations.migrate(conn, upto=3) == 3
    conn.execute(
        "INSERT INTO outbound (sender, recipients, raw, next_attempt_at, created_at) "
        "VALUES ('a@x', '[\"b@remote.test\"]', X'00', 0, 0)"
    )
    conn.close()
    store = SqliteStore(path)
    try:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        [entry] = store.run_sync(lambda txn: txn.claim_outbound(now, 10, "w1", now))
        assert (entry.recipients, entry.claimed_by) == (("b@remote.test",), "w1")
    finally:
        store.close()


def test_messages_stored_before_step_7_sync_from_their_mime(tmp_path: Path) -> None:
    """Step 7 keeps the parts a Sync renders (``message_bodies.parts``); rows written before
    it have none (NULL) and are read from the raw MIME, which stays there unchanged."""
    path = tmp_path / "v6.db"
    conn = connect(path)
    assert migrations.migrate(conn, upto=6) == 6
    conn.execute(
        "INSERT INTO users (id, name, email, display_name, password_hash, created_at) "
        "VALUES (1, 'alice', 'alice@example.test', 'Alice', 'h', 0)"
    )
    conn.execute(
        "INSERT INTO folders (id, user_id, server_id, parent_server_id, display_name, type, "
        "next_message_number) VALUES (1, 1, '1', '0', 'Inbox', 2, 2)"
    )
    conn.execute(
        "INSERT INTO messages (id, user_id, folder_id, server_id, modseq, received_at, subject, "
        "from_addr, to_addrs, cc_addrs, reply_to, message_id_header, size, read, importance, "
        "message_class, has_attachments, preview) VALUES (1, 1, 1, '1:1', 1, 0, 'Old news', "
        "'bob@example.test', 'alice@example.test', '', '', '<x@y>', 10, 0, 1, 'IPM.Note', 0, '')"
    )
    raw = b"Subject: Old news\r\nThread-Topic: news\r\n\r\narchaeology"
    conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (1, ?)", (raw,))
    conn.commit()
    conn.close()

    store = SqliteStore(path)
    try:
        bodies = store.run_sync(lambda txn: txn.message_bodies([1, 99]))
        assert bodies == {1: (raw, None)}
        assert sync_parts(raw, bodies[1][1]) == SyncParts("archaeology", None, "news", "")
        # A message delivered after the step keeps its parts.
        new = store.run_sync(
            lambda txn: txn.add_message(1, parse_message(raw, datetime(2026, 12, 1, tzinfo=UTC)))
        )
        kept = store.run_sync(lambda txn: txn.message_bodies([new.id]))[new.id][1]
        assert kept is not None
        assert sync_parts(b"", kept) == SyncParts("archaeology", None, "news", "")
    finally:
        store.close()
