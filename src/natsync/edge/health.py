"""The edge's I/O side of server health: the active ``OPTIONS`` check over one kept connection
per server, and what happens when a server goes out or comes back (the decisions are
:mod:`natsync.edge.balance`'s).

Runs only with several servers (issue 11). Cheap by design, the way a load balancer's checks
should be when many workers each check many servers while 100,000 phones are held (issue 27):

* **One kept connection per server.** Each check is an ``OPTIONS health_path`` over a verified
  TLS connection the check keeps open (HTTP/1.1 keep-alive), so a check costs one small request
  and answer, not a TCP and TLS handshake. A new check connection (the first, or after one was
  lost) offers the server's cached TLS session (:class:`~natsync.edge.tls.BackendTrust`), so it
  is a resumed handshake, not a full one.
* **Death is seen at once, not at the next check.** A server process that dies or stops closes
  its connections; the kept connection's loss triggers a check of that server right away, whose
  refused connection takes it out (:meth:`Health.unreachable`, as a refused real exchange
  does) — within milliseconds, whatever ``health_interval`` says. The periodic check is left
  with what only it can see: a server that hangs or answers errors (``fall`` failed checks in
  a row), and an out server coming back (``rise`` good ones).
* **One checker for the servers, shared by the workers.** With ``workers`` processes, the
  first :data:`CHECKING_WORKERS` (one) check the servers (worker *k* the servers *i* with
  *i* % CHECKING_WORKERS == *k*) and write what they found on a :class:`HealthBoard` (a few
  bytes per server in shared memory); the others take a server out or put it back as its
  checker found. So the servers get one check per interval, not one per worker, and one
  worker wakes for them, not one per server. A server whose checker stopped writing (its
  worker restarting) is checked by every worker until it writes again.
* **The board is read when a verdict is needed, not on a timer** (issue 27: idle CPU). A
  worker follows it before choosing a server for a request (:meth:`Health.choose`, at most
  every :data:`BOARD_POLL` seconds: no system call, a few struct reads), before its
  ``/metrics``, and whenever it wakes for its own checks; so a death seen by its checker
  reaches every worker's next choice within a second. A worker wakes for the board only when
  a verdict it follows can go stale (its checker stopped writing: time to stand in), about
  every ``BOARD_STALE_ROUNDS`` intervals, instead of each second.
* An answer below 500 within ``health_timeout`` is a good check. Exchanges report too: a refused
  or failed connection (:meth:`Health.unreachable`), a broken exchange (:meth:`Health.broke`),
  a whole answer (:meth:`Health.answered`). A server going out closes its idle pooled
  connections, so no new request is sent on a connection to a server known to be out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import os
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from natsync.edge import http
from natsync.edge.balance import Balancer, Server
from natsync.edge.config import EdgeConfig
from natsync.edge.tls import BackendCertError, BackendTrust, open_backend

log = logging.getLogger("natsync.edge")

#: Most bytes of a check's answer read (head and body): a natsync server answers in ~400, an
#: Exchange 401 in a few KB; anything longer is read to its end but the connection not kept.
MAX_CHECK_ANSWER = 64 * 1024
#: The method of the check (the server answers it without credentials: 401 or 200).
CHECK_METHOD = b"OPTIONS"


#: Least seconds between two reads of the board for a request's choice of server (a read is a
#: few struct unpacks; a worker whose own exchange with a dead server fails takes it out at
#: once anyway). Nothing reads it on a timer: an idle worker is not woken for it (issue 27).
BOARD_POLL = 1.0
#: Workers that check servers (the first ones; server *i* is checked by worker *i* % this).
#: A checking worker wakes each interval and again for the answers, whether it checks one
#: server or ten: with 14 workers and 10 servers, one checker wakes ~1.5 times a second where
#: ten woke 10 times (issue 27: idle CPU). The others stand in when it stops writing.
CHECKING_WORKERS = 1
#: Check intervals after which a server's verdict on the board is too old to follow (its
#: checker is not writing: the reader checks that server itself).
BOARD_STALE_ROUNDS = 3
#: One server on the board: a hash of its address, when it was checked (CLOCK_MONOTONIC: one
#: clock for every process of the machine) and whether it was up after that check.
_SLOT = struct.Struct("<QdB7x")


def _address_key(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "little")


class HealthBoard:
    """The checkers' verdicts, shared by an edge's worker processes (an mmap): one slot per
    server, in the order of ``EdgeConfig.servers``. A torn read (a slot written while read)
    costs at most one poll's wrong verdict, which the next poll corrects."""

    __slots__ = ("buffer", "servers")

    def __init__(self, buffer: mmap.mmap, servers: int) -> None:
        self.buffer = buffer
        self.servers = servers

    @classmethod
    def anonymous(cls, servers: int) -> HealthBoard:
        """Shared with the processes forked after it (``natsync edge`` with workers)."""
        return cls(mmap.mmap(-1, _SLOT.size * servers), servers)

    @classmethod
    def file(cls, path: Path, servers: int) -> HealthBoard:
        """A file every worker opens (``natsync run`` starts them as separate processes)."""
        size = _SLOT.size * servers
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            return cls(mmap.mmap(fd, size), servers)
        finally:
            os.close(fd)

    def write(self, index: int, key: int, checked_at: float, up: bool) -> None:
        _SLOT.pack_into(self.buffer, index * _SLOT.size, key, checked_at, up)

    def read(self, index: int, key: int) -> tuple[float, bool] | None:
        """(when it was checked, up) for the server at *index*, None if never (by this key)."""
        found, checked_at, up = _SLOT.unpack_from(self.buffer, index * _SLOT.size)
        return (checked_at, bool(up)) if found == key else None

    def close(self) -> None:
        self.buffer.close()


class CheckLost(ConnectionError):
    """The kept check connection closed before a whole answer."""


class CheckConn(asyncio.Protocol):
    """The check's kept connection to one server: reads one answer at a time and reports its
    loss (the server closed it, or died) to *on_lost*."""

    __slots__ = ("answered", "buf", "closing", "on_lost", "remembered", "transport", "waiter")

    def __init__(self, on_lost: Callable[[CheckConn], None]) -> None:
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None
        #: Whether it carried a good answer (only then does its loss trigger a check).
        self.answered = False
        #: Closed by the edge itself (no loss to report).
        self.closing = False
        #: Its TLS session is cached for the next connection (or it was itself resumed).
        self.remembered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def ask(self, request: bytes) -> asyncio.Future[tuple[int, bool]]:
        """Send *request*; the future gives (status, whether the connection may be kept)."""
        assert self.transport is not None
        assert self.waiter is None
        self.buf = b""
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            if self.transport is not None:  # bytes nobody asked for: not a connection to keep
                self.transport.close()
            return
        try:
            taken = http.take_response(self.buf, CHECK_METHOD)
        except http.EdgeHttpError as exc:
            waiter.set_exception(exc)
            return
        if taken is None:
            if len(self.buf) > MAX_CHECK_ANSWER:
                waiter.set_exception(http.EdgeHttpError(502, "the check's answer is too long"))
            return
        head, rest = taken
        if head.framing is http.F_LENGTH:
            if len(rest) < head.length:
                if head.length > MAX_CHECK_ANSWER:  # the status is all the check needs
                    waiter.set_result((head.status, False))
                return
            keep = head.keep_alive and len(rest) == head.length
        else:  # no body (1xx, 204, 304), chunked or until close: the status is enough
            keep = head.keep_alive and head.framing is http.F_NONE and head.status >= 200
        self.waiter = None
        waiter.set_result((head.status, keep))

    def eof_received(self) -> bool | None:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(CheckLost("the server closed the check's connection"))
        if not self.closing:
            self.on_lost(self)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class Health:
    """Reports on the servers' health to the balancer and logs their changes."""

    __slots__ = (
        "balancer", "board", "clock", "config", "index", "kept", "keys", "next_follow", "on_out",
        "out_at", "probing", "targets", "tasks", "wakes", "worker", "workers",
    )  # fmt: skip

    def __init__(
        self,
        config: EdgeConfig,
        balancer: Balancer,
        clock: Callable[[], float],
        on_out: Callable[[Server], None],
    ) -> None:
        self.config = config
        self.balancer = balancer
        self.clock = clock
        #: Called when a server goes out (closes its pooled connections).
        self.on_out = on_out
        #: The kept check connection of each server (by address), while open.
        self.kept: dict[str, CheckConn] = {}
        #: Servers (by address) with a check running now (one at a time each).
        self.probing: set[str] = set()
        #: The servers checked, by address (set by :meth:`run`).
        self.targets: dict[str, tuple[Server, BackendTrust]] = {}
        #: Checks started by a lost connection (kept referenced until they end).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Each server's place in the config (its slot on the board) and its board key.
        self.index = {server.address: i for i, server in enumerate(balancer.servers)}
        self.keys = {server.address: _address_key(server.address) for server in balancer.servers}
        #: When (board clock) each server last went out here.
        self.out_at: dict[str, float] = {}
        #: Shared with the other workers (see :meth:`share`); None: this worker checks all.
        self.board: HealthBoard | None = None
        self.worker = 0
        self.workers = 1
        #: When (``clock``) the board is next read for a request's choice (:meth:`choose`).
        self.next_follow = 0.0
        #: Times :meth:`run` woke (what an idle worker costs; tests read it).
        self.wakes = 0

    def share(self, board: HealthBoard, worker: int, workers: int) -> None:
        """Check only this worker's share of the servers and follow *board* for the rest."""
        self.board, self.worker, self.workers = board, worker, max(1, workers)

    def unreachable(self, server: Server, reason: str) -> None:
        """Connecting to *server* failed (refused, timed out, TLS or certificate)."""
        if self.balancer.unreachable(server, self.clock(), reason):
            self._log(server)

    def broke(self, server: Server, reason: str) -> None:
        """A server broke an exchange it had (counts as a failed check)."""
        if self.balancer.check_failed(server, self.clock(), reason):
            self._log(server)

    def answered(self, server: Server) -> None:
        """A new connection to *server* was made and verified."""
        if self.balancer.answered(server):
            self._log(server)

    def _log(self, server: Server) -> None:
        if len(self.balancer.servers) == 1:
            return  # one server: the per-request errors say it all
        up = sum(s.up for s in self.balancer.servers)
        total = len(self.balancer.servers)
        if server.up:
            log.warning("server %s is back (%d of %d up)", server.address, up, total)
        else:
            self.out_at[server.address] = time.monotonic()
            log.error(
                "server %s is out: %s (%d of %d up)", server.address, server.reason, up, total
            )
            self.on_out(server)

    def choose(self, tried: Iterable[Server] = ()) -> Server | None:
        """The balancer's choice of server for a request, the board followed first when its
        last read is :data:`BOARD_POLL` old (several servers only)."""
        if self.board is not None:
            self.follow()
        return self.balancer.choose(tried)

    def follow(self) -> None:
        """Follow the board unless it was read less than :data:`BOARD_POLL` ago."""
        now = self.clock()
        if now >= self.next_follow:
            self.next_follow = now + BOARD_POLL
            self._follow()

    async def run(self, servers: Iterable[tuple[Server, BackendTrust]]) -> None:
        """Check this worker's servers each health_interval; between rounds, sleep until the
        next round or until a verdict followed can go stale, whichever comes first (a worker
        with no server of its own wakes every few intervals, not each second)."""
        self.targets = {server.address: (server, trust) for server, trust in servers}
        interval = self.config.health_interval
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        try:
            while True:
                self.wakes += 1
                mine = [t for t in self.targets.values() if self._checks(t[0])]
                for address in set(self.kept) - {s.address for s, _ in mine}:
                    self.kept.pop(address).close()  # its checker writes: not ours to keep
                if mine and loop.time() >= next_round:
                    next_round = max(next_round + interval, loop.time())
                    if len(mine) == 1:
                        await self.check(*mine[0])  # no task for the usual single one
                    else:
                        await asyncio.gather(*(self.check(s, t) for s, t in mine))
                    mine = [t for t in self.targets.values() if self._checks(t[0])]
                self._follow()
                self.next_follow = self.clock() + BOARD_POLL
                wait = self._until_stale()
                if mine:
                    wait = min(wait, next_round - loop.time())
                await asyncio.sleep(max(0.0, wait))
        finally:
            self.close()

    def _until_stale(self) -> float:
        """Seconds until the first verdict this worker follows can go stale (then it stands
        in for that server's checker); at least :data:`BOARD_POLL`, at most one stale span."""
        stale = self._stale_span()
        if self.board is None:
            return stale
        now = time.monotonic()
        soonest = stale
        for server, _ in self.targets.values():
            if self._own(server):
                continue
            found = self.board.read(self.index[server.address], self.keys[server.address])
            if found is not None:
                soonest = min(soonest, found[0] + stale - now)
        return max(BOARD_POLL, soonest)

    def _verdict(self, server: Server) -> tuple[float, bool] | None:
        """The board's fresh verdict on *server*, None when there is none to follow."""
        if self.board is None:
            return None
        found = self.board.read(self.index[server.address], self.keys[server.address])
        if found is None:
            return None
        now = time.monotonic()
        stale = self._stale_span()
        return found if now - stale <= found[0] <= now + 1.0 else None

    def _stale_span(self) -> float:
        """Seconds after which a verdict on the board is too old to follow."""
        return BOARD_STALE_ROUNDS * self.config.health_interval + self.config.health_timeout

    def _own(self, server: Server) -> bool:
        """Whether *server* is this worker's to check (see :data:`CHECKING_WORKERS`)."""
        return self.index[server.address] % min(self.workers, CHECKING_WORKERS) == self.worker

    def _checks(self, server: Server) -> bool:
        """Whether this worker checks *server* this round: its own share, or one whose
        checker is not writing."""
        if self.board is None or self._own(server):
            return True
        return self._verdict(server) is None

    def _follow(self) -> None:
        """Take the servers other workers check out or back as the board says."""
        if self.board is None:
            return
        for server, _ in self.targets.values():
            if self._own(server):
                continue
            verdict = self._verdict(server)
            if verdict is None or verdict[1] == server.up:
                continue
            if not verdict[1]:
                self.unreachable(server, "out by the check of another worker")
            elif verdict[0] > self.out_at.get(server.address, 0.0) and self.balancer.answered(
                server
            ):
                self._log(server)

    def _post(self, server: Server) -> None:
        """Write what this check found for the other workers."""
        if self.board is not None:
            self.board.write(
                self.index[server.address], self.keys[server.address], time.monotonic(), server.up
            )

    def close(self) -> None:
        """Close the kept check connections and stop the checks a loss started."""
        for conn in self.kept.values():
            conn.close()
        self.kept.clear()
        for task in self.tasks:
            task.cancel()

    def _lost(self, server: Server, conn: CheckConn) -> None:
        """A kept check connection closed: check that server now (a dead one is out at once).
        Only a connection that carried a good answer triggers it, so a server that accepts and
        closes at once is checked at the interval, not in a loop."""
        if self.kept.get(server.address) is conn:
            del self.kept[server.address]
        target = self.targets.get(server.address)
        if not conn.answered or target is None or server.address in self.probing:
            return
        task = asyncio.get_running_loop().create_task(
            self.check(*target, lost=True), name="edge-health-check-lost"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, server: Server, trust: BackendTrust) -> CheckConn:
        """A new verified check connection (the cached TLS session offered: resumed)."""
        transport, conn = await open_backend(
            lambda: CheckConn(lambda lost: self._lost(server, lost)),
            server.host,
            server.port,
            trust.context,
            trust.server_name,
        )
        sslobj = transport.get_extra_info("ssl_object")
        try:
            trust.check(sslobj)
        except BackendCertError:
            conn.close()
            raise
        conn.remembered = sslobj is None or sslobj.session_reused
        return conn

    def _request(self, trust: BackendTrust) -> bytes:
        return (
            f"OPTIONS {self.config.health_path} HTTP/1.1\r\nHost: {trust.server_name}\r\n"
            "User-Agent: natsync-edge-check\r\n\r\n"
        ).encode("latin-1")

    async def _ask(self, server: Server, trust: BackendTrust) -> int:
        """The status of one check's answer, over the kept connection or a new one. A kept
        connection the server closed just before the check is tried once more on a new one
        (as a client retries an idempotent request on a stale keep-alive connection)."""
        conn = self.kept.pop(server.address, None)
        if conn is not None and conn.open:
            try:
                return await self._exchange(server, trust, conn)
            except CheckLost:
                pass
        return await self._exchange(server, trust, await self._connect(server, trust))

    async def _exchange(self, server: Server, trust: BackendTrust, conn: CheckConn) -> int:
        """One check on *conn*: kept for the next one when the answer allows it."""
        try:
            status, keep = await conn.ask(self._request(trust))
        except BaseException:
            conn.close()
            raise
        if not conn.remembered and conn.transport is not None:
            # after an answer, when TLS 1.3's session tickets have come: the next check
            # connection (and pooled ones) resume it
            conn.remembered = True
            trust.remember(conn.transport.get_extra_info("ssl_object"))
        if keep and 100 <= status < 500:
            conn.answered = True
            self.kept[server.address] = conn
        else:
            conn.close()
        return status

    async def check(self, server: Server, trust: BackendTrust, *, lost: bool = False) -> None:
        """OPTIONS health_path over the kept (or a new, verified) TLS connection; below 500 in
        time is good, anything else counts toward ``fall``. *lost*: the check a lost kept
        connection started, whose refused connection or failed handshake takes the server out
        at once (it closed its connections and stopped listening: it is gone; a periodic check
        refused, e.g. a server not started yet, waits for ``fall``). What it found goes on the
        board."""
        if server.address in self.probing:
            return
        self.probing.add(server.address)
        reason, at_once = "", False
        try:
            async with asyncio.timeout(self.config.health_timeout):
                status = await self._ask(server, trust)
            if not 100 <= status < 500:
                reason = f"the check answered {status}"
        except TimeoutError:
            reason = f"no answer to the check within {self.config.health_timeout:g} s"
        except BackendCertError:
            reason, at_once = "wrong certificate", True
        except CheckLost as exc:
            reason = f"check failed: {exc}"
        except (OSError, ssl.SSLError) as exc:  # refused, reset, handshake: as an exchange's
            reason, at_once = f"check failed: {exc}", True
        except http.EdgeHttpError as exc:
            reason = f"the check's answer is not HTTP: {exc.message}"
        finally:
            self.probing.discard(server.address)
        if at_once and lost:
            self.unreachable(server, reason)
        elif reason:
            self.broke(server, reason)
        elif self.balancer.check_passed(server):
            self._log(server)
        self._post(server)
