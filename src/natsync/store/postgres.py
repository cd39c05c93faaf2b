"""The shared store: PostgreSQL, for several server processes on one or many machines.

Why this shape:

* **psycopg 3, synchronous, in one worker thread per store** (not asyncpg). The store interface
  runs plain synchronous ``fn(txn)`` code in a worker thread (see :mod:`natsync.store.api`); a
  synchronous driver fits that exactly: the transaction code of the SQLite driver
  (natsync.store.sql) runs unchanged on a psycopg connection (:class:`PostgresTxn` overrides
  only the statements whose meaning differs: an ``IN`` list as one bound array, full-text
  search, one snapshot for a folder's versions), and the event loop never waits on the
  database. asyncpg would force every Txn method to be a coroutine or a bridge back into a
  loop from the worker thread, for no gain. The price of sharing: a new statement in
  SQLite-only SQL (``json_each``, ``?1``) must go through a hook (``_any``) or be overridden
  here; the store fixtures run every test on both drivers to catch it.
* Each call is one transaction (``BEGIN`` ... ``COMMIT``, READ COMMITTED); queued calls share a
  group commit, each in its own SAVEPOINT, exactly as in the SQLite driver. Row locks taken by
  the modseq bumps (``UPDATE folders SET modseq = modseq + 1``) order concurrent writers of one
  folder across processes.
* **Push across processes**: a transaction that changed folders sends
  ``NOTIFY natsync_changes, '<ids>'`` before COMMIT; PostgreSQL delivers it to every listener
  only if and when the transaction commits. Each store keeps ONE extra connection that
  ``LISTEN``s and feeds the in-process :class:`natsync.store.feed.LocalChangeFeed`, so a change
  committed by any process wakes the local Pings; its own notifications (from its worker's
  backend) are skipped, because the worker publishes them itself right after COMMIT. The
  listener sleeps in ``poll`` on the connection's socket: no polling of the database. (``poll``,
  not ``select``: a server holding thousands of Pings has descriptors above select's 1024.)
* Times are stored as microseconds since the epoch (BIGINT) and flags as 0/1, as in SQLite, so
  ``natsync store copy`` can move rows between the two and compare checksums.
"""

# S608: every SQL string here is built from this module's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import re
import select
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg import pq

from natsync.store import migrations
from natsync.store.api import (
    ChangeFeed,
    Conflict,
    Message,
    StoreError,
    Txn,
)
from natsync.store.feed import LocalChangeFeed
from natsync.store.sql.base import VersionCache
from natsync.store.sql.rows import _MESSAGE_COLS, MAX_SEARCH_TERMS, _to_us
from natsync.store.sql.txn import SqliteTxn
from natsync.store.worker import STOP, WorkerJobs

T = TypeVar("T")

log = logging.getLogger(__name__)

#: The NOTIFY channel every natsync process listens on.
CHANNEL = "natsync_changes"

#: A NOTIFY payload must stay under 8000 bytes (PostgreSQL's limit); changed ids are sent in
#: chunks of at most this many characters ("12,-3,45").
MAX_NOTIFY_PAYLOAD = 7000

#: How long a transaction waits for a row lock another process holds before failing: the same
#: bound as SQLite's busy timeout, for the same reason.
LOCK_TIMEOUT_MS = 10_000

#: Waits between attempts to get the listening connection back after it broke (the server
#: restarted, the network blinked): short first, then capped, so a dead server is not hammered.
LISTEN_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)

#: How long opening a connection may take before the store gives up with an error.
CONNECT_TIMEOUT_SECONDS = 10

_WORD = re.compile(r"[^\W_]+")


def _search_query(query: str) -> str:
    """A user's words as a safe tsquery: every word must match, as a prefix.

    Words are cut into runs of letters and digits, as the indexed text is (see migrations), so
    the query holds nothing but quoted alphanumeric lexemes: it can never be parsed as syntax.
    """
    words: list[str] = []
    for term in query.split()[:MAX_SEARCH_TERMS]:
        words.extend(_WORD.findall(term))
    return " & ".join(f"'{word.lower()}':*" for word in words[: MAX_SEARCH_TERMS * 4])


def _clean(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters (SQLite can): they are dropped."""
    if isinstance(value, str) and "\0" in value:
        return value.replace("\0", "")
    return value


#: What makes a SELECT more than a read (a lock, a sequence or a session changed): such a
#: statement runs inside the transaction like any write.
_NOT_ONLY_READS = ("FOR UPDATE", "FOR SHARE", "FOR NO KEY", "FOR KEY SHARE", "VAL(", "PG_", "SET_")


def _reads_only(sql: str) -> bool:
    """Whether *sql* (this package's own) only reads: a SELECT without locks or side effects."""
    if sql.lstrip()[:6].upper() != "SELECT":
        return False
    upper = sql.upper()
    return not any(marker in upper for marker in _NOT_ONLY_READS)


class _Rows:
    """A statement's result, read whole: what the transaction code uses of a sqlite3 cursor."""

    __slots__ = ("_next", "_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Connection:
    """The worker's psycopg connection, speaking the sqlite3 placeholder style (``?``), and
    opening the group's transaction only when it first writes.

    The SQLite transaction code binds values with ``?``; here each becomes ``%s`` (and a
    literal ``%`` is escaped). SQL whose meaning differs is overridden in :class:`PostgresTxn`.

    Reads before the group's first write run outside any transaction (autocommit): under READ
    COMMITTED each statement reads its own snapshot inside a transaction too, so they see the
    same; a group that only reads (a login, a Ping's re-check) then costs no BEGIN and no COMMIT.
    The first write (or locking read) sends BEGIN, and the current job's SAVEPOINT in a group,
    in one simple query; from then on every statement runs in the transaction, each later job
    in its own savepoint. The worker calls :meth:`start`, :meth:`job`, :meth:`job_done`,
    :meth:`job_failed` and :meth:`finish` around the jobs of a group (``_execute``).
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        #: One cursor for every statement (a new psycopg cursor per statement costs about a
        #: third of a short statement's CPU); each result is read whole before the next.
        self._cursor = conn.cursor()
        #: Whether the group's transaction has begun (BEGIN sent).
        self.begun = False
        #: Simple statements due before the next statement in the transaction (savepoints).
        self._due: list[str] = []
        self._alone = True
        self._savepoint = False  # the current job runs in a savepoint of its own

    def start(self, jobs: int) -> None:
        self.begun, self._due, self._alone, self._savepoint = False, [], jobs == 1, False

    def job(self) -> None:
        """A job of the group starts (in its own savepoint, once the transaction has begun)."""
        self._savepoint = self.begun and not self._alone
        if self._savepoint:
            self._due.append("SAVEPOINT job")

    def job_done(self) -> None:
        if self._savepoint:
            self._due.append("RELEASE SAVEPOINT job")

    def job_failed(self) -> bool:
        """The current job raised: True when its work is undone alone (it wrote nothing, or its
        savepoint is rolled back), False when the whole transaction must be."""
        if self.raw.closed or self.raw.broken:
            return False
        if not self.begun:
            return True  # it only read
        if not self._savepoint or self.raw.info.transaction_status not in _IN_TRANSACTION:
            return False
        self._due += ["ROLLBACK TO SAVEPOINT job", "RELEASE SAVEPOINT job"]
        return True

    def finish(self, notify: list[str]) -> None:
        """COMMIT (with the NOTIFYs: delivered if, and only when, it succeeds) in one simple
        query; without a transaction, the NOTIFYs alone."""
        if self.begun:
            self.raw.execute("; ".join([*self._due, *notify, "COMMIT"]))
        elif notify:
            self.raw.execute("; ".join(notify))

    def _in_transaction(self) -> None:
        if not self.begun:
            self.begun = True
            self._savepoint = not self._alone
            self._due = ["BEGIN", "SAVEPOINT job"] if self._savepoint else ["BEGIN"]
        if self._due:
            self.raw.execute("; ".join(self._due))
            self._due = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        if self.begun or not _reads_only(sql):
            self._in_transaction()
        statement = sql.replace("%", "%%").replace("?", "%s")
        cursor = self._cursor
        cursor.execute(statement, [_clean(p) for p in params])
        rows = cursor.fetchall() if cursor.description is not None else []
        return _Rows(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._in_transaction()
        statement = sql.replace("%", "%%").replace("?", "%s")
        with self.raw.cursor() as cursor:
            cursor.executemany(statement, [[_clean(p) for p in row] for row in rows])


class PostgresTxn(SqliteTxn):
    """One open transaction on the worker's PostgreSQL connection; valid only inside ``run``."""

    #: Several processes claim outbound mail at once here: an entry another worker is
    #: claiming right now (its row locked until that transaction commits) is passed over, not
    #: waited for (see SqliteTxn.claim_outbound).
    _CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: _Connection, versions: VersionCache | None = None) -> None:
        super().__init__(conn, False, versions)  # type: ignore[arg-type]
        self._pg = conn

    def _any(self, values: Sequence[Any]) -> tuple[str, Any]:
        return "= ANY(?)", [_clean(value) for value in values]

    def message_versions(self, folder_id: int, received_since: Any = None) -> dict[str, int]:
        # One statement reads the folder's modseq and its messages, so both come from the same
        # snapshot even while other processes commit (READ COMMITTED takes one per statement).
        since = None if received_since is None else _to_us(received_since)
        cache = None if folder_id in self._bumped else self._versions
        if cache is not None:
            row = self._one("SELECT modseq FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return {}
            cached = cache.get((folder_id, since), row[0])
            if cached is not None:
                return cached
        condition = "" if since is None else " AND m.received_at >= ?"
        params: list[Any] = [] if since is None else [since]
        rows = self._pg.execute(
            "SELECT f.modseq, m.server_id, m.modseq FROM folders f "
            f"LEFT JOIN messages m ON m.folder_id = f.id{condition} WHERE f.id = ?",
            (*params, folder_id),
        ).fetchall()
        if not rows:
            return {}
        versions = {row[1]: row[2] for row in rows if row[1] is not None}
        if cache is not None:
            cache.put((folder_id, since), rows[0][0], versions)
        return versions

    def search_messages(
        self, user_id: int, query: str, folder_ids: Sequence[int] | None, limit: int
    ) -> list[Message]:
        expression = _search_query(query)
        if not expression:
            return []
        params: list[Any] = [user_id]
        folder_clause = self._in_folders(folder_ids, params)
        table = migrations.SEARCH_TABLE
        params.extend([expression, limit])
        return self._messages(
            f"SELECT {_MESSAGE_COLS} FROM messages m WHERE m.user_id = ?{folder_clause} "
            f"AND m.id IN (SELECT rowid FROM {table} WHERE document @@ "
            f"to_tsquery('{migrations.PG_TEXT_CONFIG}', ?)) "
            "ORDER BY m.received_at DESC, m.id DESC LIMIT ?",
            params,
        )


# -- the store ----------------------------------------------------------------------------------


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the store database (autocommit: the worker issues BEGIN itself)."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the PostgreSQL store: {exc}") from exc
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS:d}")
    return conn


def safe_url(url: str) -> str:
    """*url* without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


_Job = tuple[Callable[[Txn], Any], Callable[[Any, BaseException | None], None]]

#: Transaction states in which a failed job can be rolled back to its savepoint alone.
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


def _wrap(exc: BaseException) -> BaseException:
    """psycopg's errors become StoreError (cause kept); everything else passes unchanged.

    A unique violation becomes Conflict: under READ COMMITTED two processes can both pass a
    "name free?" check and race to the INSERT; the loser gets what SQLite (whose writers are
    serialised) would have answered from the check.
    """
    if isinstance(exc, psycopg.errors.UniqueViolation):
        conflict = Conflict(f"store transaction failed: {exc}")
        conflict.__cause__ = exc
        return conflict
    if isinstance(exc, psycopg.Error):
        error = StoreError(f"store transaction failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _payloads(changed: set[int]) -> list[str]:
    """The changed ids as NOTIFY payloads, each under PostgreSQL's size limit."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for folder_id in sorted(changed):
        text = str(folder_id)
        if current and size + len(text) + 1 > MAX_NOTIFY_PAYLOAD:
            payloads.append(",".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        payloads.append(",".join(current))
    return payloads


#: What a NOTIFY payload is made of (decimal ids, "-" and ","): safe to write as a literal.
_PAYLOAD = re.compile(r"[-0-9,]+")


def _notify_statements(changed: set[int]) -> list[str]:
    """``NOTIFY`` statements for the changed ids, sent in one simple-protocol query with the
    COMMIT (psycopg sends a query without parameters that way, several statements allowed), so
    the payload is written as a literal: it holds only what :data:`_PAYLOAD` allows, checked."""
    statements = []
    for payload in _payloads(changed):
        if not _PAYLOAD.fullmatch(payload):
            raise StoreError(f"a change notification payload is malformed: {payload[:40]!r}")
        statements.append(f"NOTIFY {CHANNEL}, '{payload}'")
    return statements


def _parse_payload(payload: str) -> set[int]:
    ids: set[int] = set()
    for part in payload.split(","):
        with contextlib.suppress(ValueError):
            ids.add(int(part))
    return ids


class PostgresStore(WorkerJobs):
    """A :class:`natsync.store.api.Store` on a PostgreSQL database shared by many processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.feed = LocalChangeFeed()
        self.changes: ChangeFeed = self.feed
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._versions = VersionCache()
        #: Transactions committed (a group commit counts once): for metrics and tests.
        self.commits = 0
        #: Notifications from other processes handed to the local feed: for metrics and tests.
        self.notifications = 0
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker_pids: set[int] = set()
        self._stop_r, self._stop_w = os.pipe()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._work, args=(ready,), name="natsync-store:postgres", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._close_pipe()
            raise
        self._listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name="natsync-store:listen", daemon=True
        )
        self._listener.start()
        # A store is fully open once it hears other processes: a commit made elsewhere after
        # the constructor returns wakes local waiters.
        self._listening.wait(CONNECT_TIMEOUT_SECONDS)

    def _close_pipe(self) -> None:
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the worker

    def _open(self) -> _Connection:
        conn = connect(self.url)
        self._worker_pids.add(conn.info.backend_pid)
        return _Connection(conn)

    def _work(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._open()
            try:
                migrations.pg_migrate(conn.raw)
            except BaseException:
                conn.raw.close()
                raise
        except psycopg.Error as exc:
            ready.set_exception(StoreError(f"{safe_url(self.url)}: cannot open the store: {exc}"))
            return
        except BaseException as exc:  # handed to the opener
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                group, stop = self._next_group()
                if group:
                    if conn.raw.closed or conn.raw.broken:
                        # The server restarted or the connection broke: the next group gets
                        # a fresh connection (the failed one's jobs were already answered).
                        with contextlib.suppress(StoreError):
                            conn = self._open()
                    self._execute(conn, group)
        finally:
            conn.raw.close()

    def _execute(self, conn: _Connection, group: list[_Job]) -> None:
        """Run *group* in one transaction, each job inside its own savepoint (see sqlite.py),
        the transaction begun at the first write (see :class:`_Connection`).

        The transaction's own statements travel as few simple queries as can be: BEGIN with
        the first savepoint; a job's RELEASE (or ROLLBACK TO) with the next one's SAVEPOINT;
        the last RELEASE, the NOTIFYs and COMMIT together."""
        raw = conn.raw
        outcomes: list[tuple[Any, BaseException | None]] = []
        changed: set[int] = set()
        try:
            conn.start(len(group))
            for fn, _ in group:
                txn = PostgresTxn(conn, self._versions)
                conn.job()
                try:
                    result = fn(txn)
                    conn.job_done()
                except BaseException as exc:  # handed to the caller, re-raised there
                    if len(group) == 1 or not conn.job_failed():
                        # A lone job's failure, or the connection broke: all is rolled back.
                        raise
                    outcomes.append((None, _wrap(exc)))
                    continue
                outcomes.append((result, None))
                changed |= txn.changed
            conn.finish(_notify_statements(changed))
            self.commits += 1
        except BaseException as exc:
            if not raw.closed and raw.info.transaction_status != pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
            error = _wrap(exc)
            if len(group) == 1:
                outcomes = [(None, error)]
            else:
                self._versions.clear()
                lost = StoreError(f"store transaction failed: {error}")
                lost.__cause__ = error
                outcomes = [(None, lost)] * len(group)
            changed = set()
        if changed:
            self.feed.publish(changed)
        for (_, done), (result, failure) in zip(group, outcomes, strict=True):
            done(result, failure)

    # -- the listener (one connection per store, whatever the number of waiters)

    def _listen(self) -> None:
        attempt = 0
        first = True
        while not self._closed:
            try:
                conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            except psycopg.Error as exc:
                log.warning("store listener cannot connect to %s: %s", safe_url(self.url), exc)
                self._listening.set()  # the constructor must not hang on a dead server
                delay = LISTEN_RETRY_SECONDS[min(attempt, len(LISTEN_RETRY_SECONDS) - 1)]
                attempt += 1
                if self._wait_readable(None, delay):
                    return
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                attempt = 0
                self._listening.set()
                if not first:
                    # Changes committed while we were deaf are unknown: wake every waiter,
                    # each re-checks its folders (a spurious wake costs one query).
                    self.feed.publish(self.feed.watched())
                first = False
                self._pump(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._closed:
                    log.warning("store listener lost its connection: %s", exc)
            finally:
                conn.close()

    def _wait_readable(self, fd: int | None, timeout: float | None) -> bool:
        """Sleep until *fd* is readable or *timeout* passed; True when the store is closing."""
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        if fd is not None:
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000)
        return any(ready_fd == self._stop_r for ready_fd, _ in events)

    def _pump(self, conn: psycopg.Connection[Any]) -> None:
        """Hand notifications to the local feed until the store closes (or the link breaks)."""
        pgconn = conn.pgconn
        fd = pgconn.socket
        while not self._closed:
            if self._wait_readable(fd, None):
                return
            pgconn.consume_input()
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the listening connection broke")
            changed: set[int] = set()
            while (notify := pgconn.notifies()) is not None:
                if notify.be_pid in self._worker_pids:
                    continue  # our own commit: the worker published it already
                changed |= _parse_payload(notify.extra.decode())
            if changed:
                self.notifications += 1
                self.feed.publish(changed)

    # -- the Store interface (run / run_sync come from WorkerJobs)

    def close(self) -> None:
        """Finish the queued jobs, stop listening, close both connections (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._jobs.put(STOP)
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if threading.current_thread() is not self._listener:
            self._listener.join()
        self._close_pipe()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
