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
* An answer below 500 within ``health_timeout`` is a good check. Exchanges report too: a refused
  or failed connection (:meth:`Health.unreachable`), a broken exchange (:meth:`Health.broke`),
  a whole answer (:meth:`Health.answered`). A server going out closes its idle pooled
  connections, so no new request is sent on a connection to a server known to be out.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable

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

    __slots__ = ("balancer", "clock", "config", "kept", "on_out", "probing", "targets", "tasks")

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
            log.error(
                "server %s is out: %s (%d of %d up)", server.address, server.reason, up, total
            )
            self.on_out(server)

    async def run(self, servers: Iterable[tuple[Server, BackendTrust]]) -> None:
        """Check every server each health_interval (several servers only; see balance.py)."""
        self.targets = {server.address: (server, trust) for server, trust in servers}
        interval = self.config.health_interval
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        try:
            while True:
                await asyncio.gather(*(self.check(s, t) for s, t in self.targets.values()))
                next_round += interval
                await asyncio.sleep(max(0.0, next_round - loop.time()))
        finally:
            self.close()

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
            self.check(*target), name="edge-health-check-lost"
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

    async def check(self, server: Server, trust: BackendTrust) -> None:
        """OPTIONS health_path over the kept (or a new, verified) TLS connection; below 500 in
        time is good. A refused connection or a failed handshake takes the server out at
        once, as for a real exchange; a late or bad answer counts toward ``fall``."""
        if server.address in self.probing:
            return
        self.probing.add(server.address)
        reason = ""
        try:
            async with asyncio.timeout(self.config.health_timeout):
                status = await self._ask(server, trust)
            if not 100 <= status < 500:
                reason = f"the check answered {status}"
        except TimeoutError:
            reason = f"no answer to the check within {self.config.health_timeout:g} s"
        except BackendCertError:
            self.unreachable(server, "wrong certificate")
            return
        except CheckLost as exc:
            reason = f"check failed: {exc}"
        except ssl.SSLError as exc:
            self.unreachable(server, f"check failed: {exc}")
            return
        except OSError as exc:  # refused, reset, unreachable: as a real exchange's connect
            self.unreachable(server, f"check failed: {exc}")
            return
        except http.EdgeHttpError as exc:
            reason = f"the check's answer is not HTTP: {exc.message}"
        finally:
            self.probing.discard(server.address)
        if reason:
            self.broke(server, reason)
        elif self.balancer.check_passed(server):
            self._log(server)
