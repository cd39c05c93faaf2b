"""The embedded store: one SQLite file (WAL), one worker thread, one transaction per call.

Why this shape:

* sqlite3 connections are bound to the thread that made them, and SQLite allows one writer at a
  time anyway; so one dedicated thread owns the connection and runs jobs from a queue, each as
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` and re-raise on any exception). Taking the
  write lock up front means a transaction never fails half-way with SQLITE_BUSY when another
  process (the CLI) writes too; the busy timeout makes it wait instead.
* ``journal_mode=WAL`` + ``synchronous=NORMAL``: a commit is appended to the WAL and is durable
  against a crash of the process (SIGKILL, an exception, OOM) — the old or the new state, never
  half, which is what the crash test checks. Only a power cut or kernel crash may lose the last
  few commits (never corrupt the file); FULL would fsync every commit and cap ingest at the
  disk's fsync rate, for a guarantee a mail server retried by SMTP does not need.
* Every content change bumps its folder's ``modseq`` once per transaction and records the folder
  as changed; after COMMIT the worker publishes the changed ids on the change feed. The
  transaction's statements live in natsync.store.sql (one module per area), shared with the
  PostgreSQL driver; this module is the file, the thread and the commit.
* Group commit: jobs that queue up while a transaction runs are run together in the next one,
  each inside its own SAVEPOINT (a job that raises is rolled back alone), and share its COMMIT.
  Each job is still all-or-nothing and sees the jobs before it; results are handed out only
  after the COMMIT, so nobody acts on a change a crash could still take back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from natsync.store import migrations, modes
from natsync.store.api import (
    ChangeFeed,
    StoreError,
    Txn,
)
from natsync.store.feed import LocalChangeFeed
from natsync.store.sql.base import VersionCache
from natsync.store.sql.txn import SqliteTxn
from natsync.store.worker import STOP, WorkerJobs

T = TypeVar("T")

#: How long a transaction waits for another process's write lock before failing. Long enough to
#: ride out a CLI command or a WAL checkpoint, short enough that a wedged lock surfaces as an error.
BUSY_TIMEOUT_MS = 10_000
#: Seconds between two tries of a switch to WAL that found the file busy (see _enter_wal).
WAL_SWITCH_RETRY = 0.01

# -- the store ----------------------------------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up the way the store needs it (autocommit: we issue BEGIN ourselves)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    try:
        mode = _enter_wal(conn)
    except BaseException:
        conn.close()
        raise
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: SQLite could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _enter_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL (once per file: a file in WAL stays in it) and say the mode.

    Switching needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, when another process is switching or opening the same new file at that
    moment (two ``natsync`` processes started together on a new store: 12 of 120 opens failed,
    three processes at a time). So the mode is read first, and a switch that finds the file busy
    is tried again until it succeeds, another process did it, or BUSY_TIMEOUT_MS passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            if mode.lower() == "wal":
                return mode
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY)


_Job = tuple[
    Callable[[Txn], Any],
    Callable[[Any, BaseException | None], None],
]


def _wrap(exc: BaseException) -> BaseException:
    """sqlite3's errors become StoreError (cause kept); everything else passes unchanged."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"store transaction failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


class SqliteStore(WorkerJobs):
    """A :class:`natsync.store.api.Store` on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.feed = LocalChangeFeed()
        self.changes: ChangeFeed = self.feed
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._versions = VersionCache()
        #: Transactions committed (a group commit counts once): for metrics and tests.
        self.commits = 0
        self._closed = False
        self._close_lock = threading.Lock()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._work, args=(ready,), name=f"natsync-store:{self.path.name}", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            raise

    # -- the worker

    def _work(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            modes.private_store_files(self.path)  # 0600, the directory 0700 if new
            conn = connect(self.path)
            try:
                migrations.migrate(conn)
                fts = migrations.search_uses_fts5(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            ready.set_exception(StoreError(f"{self.path}: cannot open the store: {exc}"))
            return
        except OSError as exc:  # creating or tightening the file or its directory
            ready.set_exception(StoreError(f"{self.path}: cannot open the store: {exc}"))
            return
        except BaseException as exc:  # handed to the opener
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                # Group commit: jobs that queued up while the last group ran share one COMMIT.
                group, stop = self._next_group()
                if group:
                    self._execute(conn, fts, group)
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, fts: bool, group: list[_Job]) -> None:
        """Run *group* in one transaction, each job inside its own savepoint.

        A job that raises is rolled back to its savepoint alone and gets its exception; the
        others commit together. Results are handed out only after COMMIT, so no caller sees a
        result that a crash could still take back.
        """
        outcomes: list[tuple[Any, BaseException | None]] = []
        changed: set[int] = set()
        try:
            conn.execute("BEGIN IMMEDIATE")
            # A lone job needs no savepoint: its failure rolls the whole transaction back.
            alone = len(group) == 1
            for fn, _ in group:
                txn = SqliteTxn(conn, fts, self._versions)
                if not alone:
                    conn.execute("SAVEPOINT job")
                try:
                    result = fn(txn)
                    if not alone:
                        conn.execute("RELEASE job")
                except BaseException as exc:  # handed to the caller, re-raised there
                    if alone or not conn.in_transaction:
                        # A lone job's failure, or SQLite gave up the whole transaction
                        # (I/O error, disk full): everything in it is rolled back below.
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, _wrap(exc)))
                    continue
                outcomes.append((result, None))
                changed |= txn.changed
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as exc:
            # The whole transaction is lost: every job in it fails.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # nothing more can be done about it
                    conn.execute("ROLLBACK")
            error = _wrap(exc)
            if len(group) == 1:
                outcomes = [(None, error)]
            else:
                # A job may have cached versions read from an earlier job's uncommitted state.
                self._versions.clear()
                lost = StoreError(f"store transaction failed: {error}")
                lost.__cause__ = error
                outcomes = [(None, lost)] * len(group)
            changed = set()
        if changed:
            self.feed.publish(changed)
        for (_, done), (result, failure) in zip(group, outcomes, strict=True):
            done(result, failure)

    # -- the Store interface (run / run_sync come from WorkerJobs)

    def close(self) -> None:
        """Finish the queued jobs, then close the connection (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._jobs.put(STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
