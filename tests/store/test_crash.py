"""Crash safety: a writer SIGKILLed mid-burst leaves the old state or the new one, never half.

A child process writes batches of messages (each with attachments) in a loop, one batch per
``store.run`` transaction, and prints each batch number after it committed. The parent kills it
with SIGKILL at a random moment, a few times over the same file, then checks: integrity_check is
ok (SQLite); every committed batch is there; every batch is either wholly there (messages, bodies,
attachment rows, search rows) or wholly absent; counters never went backwards. Run on both
drivers: on PostgreSQL the killed client's open transaction must be rolled back by the server.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from natsync.store import open_store

BATCH = 5  # messages per transaction
ATTACHMENTS = 2  # per message
ROUNDS = 3  # kills per test run: bounded, a few seconds in all

WRITER = """
import sys
from natsync.store import open_store
from natsync.store.api import FolderType, NewAttachment, NewMessage
from datetime import UTC, datetime
from email.message import EmailMessage

store = open_store(sys.argv[1])
start = int(sys.argv[2])
user = store.run_sync(lambda txn: txn.get_user("crash") or txn.add_user(
    "crash", "crash@example.test", "Crash", "h", datetime(2026, 1, 1, tzinfo=UTC)))
inbox = store.run_sync(lambda txn: txn.folder_by_type(user.id, FolderType.INBOX))

def message(batch, i):
    mime = EmailMessage()
    mime["Subject"] = f"b{batch}-{i}"
    mime.set_content("body " * 200)
    for n in range({attachments}):
        mime.add_attachment(bytes([n]) * 5000, maintype="application", subtype="octet-stream",
                            filename=f"a{{n}}.bin")
    parts = [i for i, p in enumerate(mime.walk()) if p.get_filename()]
    return NewMessage(
        raw=mime.as_bytes(), received_at=datetime.now(UTC), subject=mime["Subject"],
        from_addr="x@example.test", to_addrs="crash@example.test", cc_addrs="", reply_to="",
        message_id_header="", importance=1, message_class="IPM.Note", preview="body",
        attachments=tuple(NewAttachment(f"a{{n}}.bin", "application/octet-stream", "", False,
                                        5000, index) for n, index in enumerate(parts)))

batch = start
while True:
    store.run_sync(
        lambda txn: [txn.add_message(inbox.id, message(batch, i)) for i in range(BATCH_SIZE)]
    )
    print(batch, flush=True)
    batch += 1
""".replace("{attachments}", str(ATTACHMENTS)).replace("BATCH_SIZE", str(BATCH))


def run_and_kill(script: Path, db: str, start: int, rng: random.Random) -> list[int]:
    """Start the writer, let it commit a few batches, SIGKILL it; return the batches it saw."""
    child = subprocess.Popen(
        [sys.executable, str(script), db, str(start)],
        stdout=subprocess.PIPE,
        text=True,
    )
    committed: list[int] = []
    try:
        assert child.stdout is not None
        wanted = rng.randint(2, 8)
        deadline = time.monotonic() + 30
        while len(committed) < wanted and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed.append(int(line))
        time.sleep(rng.uniform(0, 0.03))  # land somewhere inside a later transaction
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
        committed.extend(int(line) for line in rest.split())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert committed, "the writer committed nothing before it was killed"
    return committed


Query = Callable[[str], list[tuple[Any, ...]]]

#: The number part of a message server id ("<folder>:<number>"), in each dialect.
TOP_NUMBER = {
    "sqlite": "max(CAST(substr(server_id, instr(server_id, ':') + 1) AS INT))",
    "postgres": "max(split_part(server_id, ':', 2)::bigint)",
}


@contextmanager
def connected(kind: str, db: str) -> Iterator[Query]:
    """Read the store's database directly, behind the driver's back."""
    if kind == "sqlite":
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            yield lambda sql: conn.execute(sql).fetchall()
        finally:
            conn.close()
    else:
        with psycopg.connect(db, autocommit=True) as pg:
            yield lambda sql: [tuple(row) for row in pg.execute(sql).fetchall()]


def check(kind: str, db: str, committed: set[int]) -> int:
    with connected(kind, db) as query:
        batches: dict[int, int] = {}
        for (subject,) in query("SELECT subject FROM messages"):
            number = int(subject[1:].split("-")[0])
            batches[number] = batches.get(number, 0) + 1
        assert all(count == BATCH for count in batches.values()), batches
        assert committed <= set(batches), "a committed batch is missing"
        messages = query("SELECT count(*) FROM messages")[0][0]
        for table, per_message in (
            ("message_bodies", 1),
            ("attachments", ATTACHMENTS),
            ("message_search", 1),
        ):
            count = query(f"SELECT count(*) FROM {table}")[0][0]
            assert count == messages * per_message, table
        # The folder's counters cover every message in it.
        modseq, next_number = query(
            "SELECT modseq, next_message_number FROM folders WHERE type = 2"
        )[0]
        top_modseq, top_number = query(f"SELECT max(modseq), {TOP_NUMBER[kind]} FROM messages")[0]
        assert modseq >= top_modseq
        assert next_number > top_number
        return len(batches)


@pytest.mark.slow
def test_sigkill_during_writes_leaves_whole_transactions(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    if store_kind == "postgres":
        server = request.getfixturevalue("pg_server")
        db = server.create_database()
        request.addfinalizer(lambda: server.drop_database(db))
    else:
        db = str(tmp_path / "natsync.db")
    rng = random.Random(os.environ.get("NATSYNC_CRASH_SEED"))
    committed: set[int] = set()
    start = 0
    for _ in range(ROUNDS):
        committed |= set(run_and_kill(script, db, start, rng))
        batches = check(store_kind, db, committed)
        start = max(committed) + 1000  # fresh batch numbers for the next round
    # The store still opens and works after the crashes.
    store = open_store(db)
    try:
        user = store.run_sync(lambda txn: txn.get_user("crash"))
        assert user is not None
        found = store.run_sync(lambda txn: txn.search_messages(user.id, "body", None, 10_000))
        assert len(found) == batches * BATCH
    finally:
        store.close()
