"""What is PostgreSQL's own in the store: the URL, migrations, errors, and push across processes.

Everything the two drivers share (every Txn method) runs on both through the parametrised
``store`` fixture (tests/store/test_sqlite.py ...). Here: two Store objects on one database stand
for two server processes (and once, a real second process): a commit in one wakes the waiters
of the other through LISTEN/NOTIFY, with no polling.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from natsync.store import migrations, open_store
from natsync.store.api import Conflict, FolderType, Message, StoreError, Txn, User
from natsync.store.feed import hierarchy_key
from natsync.store.postgres import (
    MAX_NOTIFY_PAYLOAD,
    PostgresStore,
    _payloads,
    _reads_only,
    safe_url,
)
from tests.conftest import ALICE_EMAIL, ALICE_NAME, CREATED_AT
from tests.pg import PgServer
from tests.store.helpers import new_message
from tests.store.test_sqlite import hold_the_worker

ROOT = Path(__file__).resolve().parents[2]

#: A descriptor number beyond select()'s reach (FD_SETSIZE is 1024).
HIGH_FD = 1100

#: A wake through another process must arrive well within this (it takes milliseconds).
WAKE_TIMEOUT = 5.0


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.acquire()
    yield url
    pg_server.release(url)


@pytest.fixture
def bare_url(pg_server: PgServer) -> Iterator[str]:
    """A database natsync never ran in (no schema at all)."""
    url = pg_server.create_database(migrated=False)
    yield url
    pg_server.drop_database(url)


#: How long the other store may take to hear of the fixture's setup (a loaded machine).
SETUP_NOTIFY_SECONDS = 10


@pytest.fixture
def two(pg_url: str, alice_password_hash: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database: two server processes, as far as the store can tell."""
    a = PostgresStore(pg_url)
    b = PostgresStore(pg_url)
    a.run_sync(
        lambda txn: txn.add_user(ALICE_NAME, ALICE_EMAIL, "Alice", alice_password_hash, CREATED_AT)
    )
    # The tests count b's notifications from here: the one of this setup must be in first (on a
    # loaded machine it can arrive after the test has read the count).
    deadline = time.monotonic() + SETUP_NOTIFY_SECONDS
    while b.notifications == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.notifications == 1, "the setup's change never reached the other store"
    yield a, b
    a.close()
    b.close()


def _alice_inbox(store: PostgresStore) -> tuple[User, int]:
    def find(txn: Txn) -> tuple[User, int]:
        user = txn.get_user(ALICE_NAME)
        assert user is not None
        return user, txn.folder_by_type(user.id, FolderType.INBOX).id

    return store.run_sync(find)


def test_open_store_takes_a_postgresql_url_and_migrates(bare_url: str) -> None:
    pg_url = bare_url
    store = open_store(pg_url)
    try:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(pg_url) as conn:
            assert migrations.pg_schema_version(conn) == migrations.LATEST
    finally:
        store.close()
    again = open_store(pg_url.replace("postgresql://", "postgres://"))  # both spellings
    again.close()


def test_two_processes_opening_a_new_database_together_migrate_it_once(bare_url: str) -> None:
    pg_url = bare_url
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresStore(pg_url), range(4)))
    for store in stores:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM natsync_schema").fetchone() == (1,)


def test_a_database_from_a_newer_natsync_is_refused(bare_url: str) -> None:
    pg_url = bare_url
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE natsync_schema SET version = %s", (migrations.LATEST + 1,))
    with pytest.raises(StoreError, match="newer natsync"):
        PostgresStore(pg_url)


def test_an_unreachable_server_is_a_store_error_without_the_password(
    pg_server: PgServer,
) -> None:
    url = f"postgresql://natsync:s3cret@127.0.0.1:{pg_server.port}/no_such_database"
    with pytest.raises(StoreError, match="cannot") as info:
        PostgresStore(url)
    assert "s3cret" not in str(info.value)
    assert safe_url(url) == f"postgresql://natsync:***@127.0.0.1:{pg_server.port}/no_such_database"


def test_postgres_errors_become_store_errors(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, _ = two

    def bad(txn: Txn) -> None:
        txn._conn.execute("SELECT * FROM no_such_table")  # type: ignore[attr-defined]

    with pytest.raises(StoreError, match="no_such_table") as info:
        a.run_sync(bad)
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    assert a.run_sync(lambda txn: txn.get_user(ALICE_NAME)) is not None  # still usable


def test_names_compare_without_case_as_in_sqlite(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, _ = two
    user = a.run_sync(lambda txn: txn.get_user("ALICE"))
    assert user is not None
    assert a.run_sync(lambda txn: txn.get_user_by_email("Alice@Example.TEST")) == user


def test_nul_characters_are_dropped_not_fatal(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, _ = two
    alice, inbox = _alice_inbox(a)
    added = a.run_sync(lambda txn: txn.add_message(inbox, new_message("bad\0subject")))
    assert added.id > 0
    found = a.run_sync(lambda txn: txn.search_messages(alice.id, "badsubject", None, 10))
    assert [m.id for m in found] == [added.id]


async def test_a_commit_in_one_process_wakes_a_waiter_in_the_other(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    _, inbox = _alice_inbox(a)
    before = b.notifications
    with b.changes.subscribe([inbox]) as subscription:
        waiting = asyncio.create_task(subscription.wait(WAKE_TIMEOUT))
        await asyncio.sleep(0)
        started = time.monotonic()
        await a.run(lambda txn: txn.add_message(inbox, new_message()))
        assert await waiting == {inbox}
        assert time.monotonic() - started < WAKE_TIMEOUT / 2
    assert b.notifications == before + 1
    assert a.notifications == 0  # its own commit is published by its worker, not echoed back


async def test_hierarchy_changes_reach_the_other_process(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    alice, _ = _alice_inbox(a)
    with b.changes.subscribe([hierarchy_key(alice.id)]) as subscription:
        await a.run(lambda txn: txn.create_folder(alice.id, "0", "Projects", FolderType.USER_MAIL))
        assert await subscription.wait(WAKE_TIMEOUT) == {hierarchy_key(alice.id)}


async def test_a_rollback_wakes_no_other_process(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    _, inbox = _alice_inbox(a)

    def fail(txn: Txn) -> None:
        txn.add_message(inbox, new_message())
        raise RuntimeError("no")

    before = b.notifications
    with b.changes.subscribe([inbox]) as subscription:
        with pytest.raises(RuntimeError):
            await a.run(fail)
        assert await subscription.wait(0.3) == set()
    assert b.notifications == before


def test_waiting_costs_no_queries(two: tuple[PostgresStore, PostgresStore]) -> None:
    """No polling: while nothing changes, no connection of either store runs a statement."""
    a, b = two
    _, inbox = _alice_inbox(a)

    def activity() -> list[tuple[object, ...]]:
        with psycopg.connect(a.url, autocommit=True) as conn:
            return conn.execute(
                "SELECT pid, state_change, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid"
            ).fetchall()

    with b.changes.subscribe([inbox]):
        first = activity()
        time.sleep(1.0)
        second = activity()
    assert len(first) == 4  # two stores: a worker and a listener each
    assert sum(1 for row in first if str(row[2]).startswith("LISTEN")) == 2
    assert second == first  # nobody's last statement or state changed while waiting


def test_many_changed_ids_are_split_under_the_notify_limit() -> None:
    changed = set(range(-500, 20_000))
    payloads = _payloads(changed)
    assert len(payloads) > 1
    assert all(len(p) <= MAX_NOTIFY_PAYLOAD for p in payloads)
    assert {int(x) for p in payloads for x in p.split(",")} == changed


async def test_a_transaction_changing_many_folders_reaches_the_other_process(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """More changed ids than one NOTIFY payload holds: all of them arrive, in several."""
    a, b = two
    ids = set(range(1_000_000, 1_003_000))  # ~24 KB of ids: four payloads

    def change_many(txn: Txn) -> None:
        txn.changed.update(ids)  # type: ignore[attr-defined]

    with b.changes.subscribe(ids) as subscription:
        await a.run(change_many)
        woken: set[int] = set()
        while woken != ids:
            more = await subscription.wait(WAKE_TIMEOUT)
            assert more, f"{len(ids - woken)} folders never announced"
            woken |= more


async def test_the_listener_comes_back_after_its_connection_is_killed(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    _, inbox = _alice_inbox(a)
    with b.changes.subscribe([inbox]) as subscription:
        with psycopg.connect(a.url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%%' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        assert len(killed) == 2  # one listener per store, whatever the number of waiters
        # Whatever was committed while it was deaf is unknown: every waiter is woken once.
        assert await subscription.wait(WAKE_TIMEOUT) == {inbox}
        await a.run(lambda txn: txn.add_message(inbox, new_message()))
        assert await subscription.wait(WAKE_TIMEOUT) == {inbox}


_WRITER = """
import sys
from natsync.store.postgres import PostgresStore
from natsync.store.api import FolderType
from tests.store.helpers import new_message

store = PostgresStore(sys.argv[1])
def add(txn):
    user = txn.get_user("alice")
    inbox = txn.folder_by_type(user.id, FolderType.INBOX)
    txn.add_message(inbox.id, new_message("from another process"))
store.run_sync(add)
store.close()
"""


async def test_a_commit_by_a_real_other_process_wakes_a_local_waiter(
    two: tuple[PostgresStore, PostgresStore], tmp_path: Path
) -> None:
    _, b = two
    alice, inbox = _alice_inbox(b)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    root = ROOT
    with b.changes.subscribe([inbox]) as subscription:
        waiting = asyncio.create_task(subscription.wait(30))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            b.url,
            cwd=root,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert await waiting == {inbox}
    found = b.run_sync(lambda txn: txn.search_messages(alice.id, "another", None, 10))
    assert [m.subject for m in found] == ["from another process"]


def test_close_ends_the_listener_thread_at_once(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 1.0
    assert not store._listener.is_alive()
    assert not store._thread.is_alive()


def test_a_step_that_fails_leaves_the_database_at_the_step_before(
    bare_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_url = bare_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrations.pg_migrate(conn, upto=1) == 1

        def broken(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            conn.execute("CREATE TABLE half_done (x INTEGER)")
            raise RuntimeError("step 2 broke")

        monkeypatch.setattr(migrations, "PG_STEPS", (migrations.PG_STEPS[0], broken))
        with pytest.raises(RuntimeError, match="step 2 broke"):
            migrations.pg_migrate(conn)
        assert migrations.pg_schema_version(conn) == 1
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
    monkeypatch.undo()
    store = PostgresStore(pg_url)  # the next open continues from step 1
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrations.pg_schema_version(conn) == migrations.LATEST


def test_the_version_cache_sees_changes_made_by_the_other_process(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    _, inbox = _alice_inbox(a)
    first = a.run_sync(lambda txn: txn.add_message(inbox, new_message("one")))
    assert a.run_sync(lambda txn: txn.message_versions(inbox)) == {first.server_id: 1}  # cached
    second = b.run_sync(lambda txn: txn.add_message(inbox, new_message("two")))
    b.run_sync(lambda txn: txn.set_read(first.id, True))
    assert a.run_sync(lambda txn: txn.message_versions(inbox)) == {
        first.server_id: 3,
        second.server_id: 2,
    }


async def test_a_store_whose_sockets_are_above_1024_still_hears_other_processes(
    pg_url: str, alice_password_hash: str
) -> None:
    """A server holding thousands of Pings opens its store late: select() would fail there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HIGH_FD + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HIGH_FD + 256), hard))
    fillers = []
    try:
        while (fd := os.open(os.devnull, os.O_RDONLY)) < HIGH_FD:
            fillers.append(fd)
        fillers.append(fd)
        late = PostgresStore(pg_url)
    finally:
        for fd in fillers:
            os.close(fd)
    writer = PostgresStore(pg_url)
    try:
        assert late._stop_r > 1024
        writer.run_sync(
            lambda txn: txn.add_user(
                ALICE_NAME, ALICE_EMAIL, "Alice", alice_password_hash, CREATED_AT
            )
        )
        _, inbox = _alice_inbox(writer)
        with late.changes.subscribe([inbox]) as subscription:
            await writer.run(lambda txn: txn.add_message(inbox, new_message()))
            assert await subscription.wait(WAKE_TIMEOUT) == {inbox}
    finally:
        writer.close()
        late.close()


def test_losing_a_race_to_a_unique_name_is_a_conflict(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """The check-then-insert race of two processes ends in Conflict, as SQLite's check would."""
    a, _ = two

    def duplicate(txn: Txn) -> None:
        txn._conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO users (name, email, display_name, password_hash, created_at) "
            "VALUES ('ALICE', 'other@example.test', 'x', 'h', 0)"
        )

    with pytest.raises(Conflict) as info:
        a.run_sync(duplicate)
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


def test_a_version_3_queue_is_upgraded_with_its_entries_unclaimed(bare_url: str) -> None:
    with psycopg.connect(bare_url, autocommit=True) as conn:
        assert migrations.pg_migrate(conn, upto=3) == 3
        conn.execute(
            "INSERT INTO outbound (sender, recipients, raw, next_attempt_at, created_at) "
            "VALUES ('a@x', '[\"b@remote.test\"]', '\\x00', 0, 0)"
        )
    store = PostgresStore(bare_url)
    try:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        [entry] = store.run_sync(lambda txn: txn.claim_outbound(now, 10, "w1", now))
        assert (entry.recipients, entry.raw, entry.claimed_by) == (("b@remote.test",), b"\0", "w1")
    finally:
        store.close()


async def test_a_group_with_a_failed_statement_commits_the_rest_and_notifies_it(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """A job whose statement fails (the transaction is aborted until its savepoint is rolled
    back) fails alone; the jobs around it commit together and the other process hears of their
    changes in the one COMMIT's notifications, not of the failed job's."""
    a, b = two
    alice, inbox = _alice_inbox(a)
    other = a.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Other", FolderType.USER_MAIL)
    ).id
    gate = threading.Event()
    blocker = await hold_the_worker(a, gate)

    def clash(txn: Txn) -> None:
        txn.add_message(other, new_message("rolled back"))
        txn._conn.execute("SELECT 1 / 0")  # type: ignore[attr-defined]  # aborts the txn

    def bad_read(txn: Txn) -> None:  # fails before anything began: nothing to roll back
        txn._conn.execute("SELECT 1 / 0")  # type: ignore[attr-defined]

    with b.changes.subscribe([inbox, other]) as subscription:
        jobs = [
            asyncio.ensure_future(a.run(bad_read)),
            asyncio.ensure_future(a.run(lambda txn: txn.add_message(inbox, new_message("one")))),
            asyncio.ensure_future(a.run(clash)),
            asyncio.ensure_future(a.run(lambda txn: txn.add_message(inbox, new_message("two")))),
        ]
        await asyncio.sleep(0.05)
        commits = a.commits
        gate.set()
        await blocker
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert a.commits - commits == 2  # the blocker's, then the group's
        assert isinstance(results[0], StoreError)
        assert isinstance(results[2], StoreError)
        assert isinstance(results[1], Message)
        assert isinstance(results[3], Message)
        assert await subscription.wait(WAKE_TIMEOUT) == {inbox}
    assert len(a.run_sync(lambda txn: txn.message_versions(inbox))) == 2
    assert a.run_sync(lambda txn: txn.message_versions(other)) == {}


def test_a_transaction_begins_at_its_first_write(two: tuple[PostgresStore, PostgresStore]) -> None:
    """Reads before the first write run outside a transaction (READ COMMITTED gives each
    statement its own snapshot either way): a job that only reads costs no BEGIN, no COMMIT."""
    a, _ = two
    alice, _ = _alice_inbox(a)

    def job(txn: Txn) -> list[pq.TransactionStatus]:
        raw = txn._conn.raw  # type: ignore[attr-defined]
        seen = [raw.info.transaction_status]
        txn.get_user(ALICE_NAME)
        txn.get_user_setting(alice.id, "k")
        seen.append(raw.info.transaction_status)
        txn.set_user_setting(alice.id, "k", "v")
        seen.append(raw.info.transaction_status)
        return seen

    idle, inside = pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS
    assert a.run_sync(job) == [idle, idle, inside]
    assert a.run_sync(lambda txn: txn.get_user_setting(alice.id, "k")) == "v"


@pytest.mark.parametrize(
    ("sql", "reads"),
    [
        ("SELECT 1 FROM users WHERE id = ?", True),
        ("  select value FROM device_settings", True),
        ("SELECT id FROM outbound WHERE due <= ? FOR UPDATE SKIP LOCKED", False),
        ("SELECT setval(pg_get_serial_sequence('users', 'id'), ?, ?)", False),
        ("INSERT INTO users (name) VALUES (?)", False),
        ("WITH RECURSIVE below(id) AS (SELECT 1) SELECT id FROM below", False),
    ],
)
def test_only_plain_selects_run_before_the_transaction(sql: str, reads: bool) -> None:
    assert _reads_only(sql) is reads
