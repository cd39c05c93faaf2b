"""Server connections of the edge: opening a verified one, and the idle ones kept per server.

A new server connection is TCP within :data:`~natsync.edge.tls.BACKEND_CONNECT_TIMEOUT`, then
TLS + the pin check within :data:`~natsync.edge.tls.BACKEND_HANDSHAKE_TIMEOUT` (else 503; a wrong
certificate: 502 and one clear log line). One whose exchange ended cleanly goes back to its
server's pool — at most ``pool_size`` per server, for
:data:`~natsync.edge.connection.POOL_IDLE` seconds, and only while the server is up — so a
keep-alive phone's next request skips the handshake. The decisions per connection are
:class:`~natsync.edge.connection.BackendMachine`'s; this module is their I/O.
"""

from __future__ import annotations

import functools
import select
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from natsync.edge import http
from natsync.edge.balance import Server
from natsync.edge.config import EdgeConfig
from natsync.edge.health import Health
from natsync.edge.memory import BufferTrim
from natsync.edge.metrics import Metrics
from natsync.edge.tls import BackendCertError, BackendTrust, open_backend

if TYPE_CHECKING:
    from natsync.edge.proxy import BackendConn


class Upstream:
    """One server as the I/O side sees it: its health record, trust (own session) and pool."""

    __slots__ = ("pool", "server", "trust")

    def __init__(self, server: Server, trust: BackendTrust) -> None:
        self.server = server
        self.trust = trust
        #: Idle verified connections, the most recently used last.
        self.pool: list[BackendConn] = []


class Pool:
    """Every server's :class:`Upstream`: take an idle connection, open a new one, release one."""

    __slots__ = ("config", "failure", "health", "metrics", "trim", "upstreams")

    def __init__(
        self,
        config: EdgeConfig,
        servers: list[Server],
        trust: BackendTrust,
        health: Health,
        metrics: Metrics,
        failure: Callable[[str, str], None],
    ) -> None:
        self.config = config
        self.health = health
        self.metrics = metrics
        #: Counts and logs a server-side failure (kind, message).
        self.failure = failure
        #: New connections (both legs), whose idle OpenSSL buffers are freed once their
        #: handshake's last messages are in (natsync.edge.memory).
        self.trim = BufferTrim()
        self.upstreams = {
            server.address: Upstream(
                server,
                trust if server.address == trust.backend else BackendTrust(config, server.address),
            )
            for server in servers
        }

    @property
    def pooled(self) -> int:
        return sum(len(up.pool) for up in self.upstreams.values())

    def take(self, server: Server) -> BackendConn | None:
        """An idle connection to *server* still open, or None.

        One the server already closed (or spoke on unasked) is not handed out: its FIN or
        close_notify may sit unread in the socket, not yet seen by the event loop, and a request
        written on it would get only the close (a 502 the phone sees; the server may have
        closed it for its own reasons: keep-alive, restart, a limit). So, as urllib3's
        ``is_connection_dropped``, the socket is polled before reuse (one poll(2), no wait):
        readable means closed or untrustworthy, and the connection is closed instead. Nothing
        of a request was written on it yet, so a new connection is safe for any method
        (RFC 9110 section 9.2.2). One past its idle time is not handed out either."""
        pool = self.upstreams[server.address].pool
        now = time.monotonic()
        while pool:
            backend = pool.pop()
            transport = backend.transport
            if transport is None or transport.is_closing():
                continue
            deadline = backend.machine.deadline
            fd = backend.fd  # polled directly: per keep-alive request (see _readable)
            if (deadline and now > deadline) or (
                _poll_readable(fd) if fd >= 0 else _readable(transport)
            ):
                errors = self.metrics.backend_errors  # counted, not logged: nothing was lost
                errors["closed_idle"] = errors.get("closed_idle", 0) + 1
                backend.drop()
                continue
            return backend
        return None

    async def open(
        self, server: Server, factory: Callable[[Upstream], BackendConn]
    ) -> BackendConn | int:
        """A new verified connection to *server*, or the status to answer when it fails."""
        upstream = self.upstreams[server.address]
        trust = upstream.trust
        try:
            transport, backend = await open_backend(
                lambda: factory(upstream),
                server.host,
                server.port,
                trust.context,
                trust.server_name,
            )
        except ssl.SSLError as exc:
            self.failure("certificate", trust.describe_error(exc))
            self.health.unreachable(server, "TLS or certificate failure")
            return 502
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self.failure("connect", f"cannot reach the server at {trust.backend}: {reason}")
            self.health.unreachable(server, reason)
            return 503
        sslobj = transport.get_extra_info("ssl_object")
        try:
            trust.check(sslobj)
        except BackendCertError as exc:
            transport.abort()
            self.failure("certificate", exc.message)
            self.health.unreachable(server, "wrong certificate")
            return 502
        self.metrics.backend_handshakes += 1
        if sslobj is not None and sslobj.session_reused:
            self.metrics.backend_resumed += 1
        self.health.answered(server)
        # with no session to offer yet, this one's (tickets in by its trim) serves the next ones
        first = upstream.trust.context.cached_session is None
        self.trim.add(sslobj, functools.partial(_remember_first, trust) if first else None)
        return backend

    def release(self, backend: BackendConn, now: float) -> None:
        """Return a server connection whose exchange ended cleanly to its pool (bounded)."""
        backend.client = None
        transport = backend.transport
        if transport is None or transport.is_closing():
            backend.machine.closed()
            return
        upstream = backend.upstream
        machine = backend.machine
        if not machine.remembered:  # reading .session serialises it (~1 ms): once per connection
            machine.remembered = True
            upstream.trust.remember(transport.get_extra_info("ssl_object"))
        if machine.release(now, len(upstream.pool), self.config.pool_size):
            upstream.pool.append(backend)
        else:
            transport.close()

    def forget(self, backend: BackendConn) -> None:
        """A connection is gone: out of its pool if it was there."""
        pool = backend.upstream.pool
        if backend in pool:
            pool.remove(backend)

    def close_idle(self, server: Server) -> None:
        """Close the idle connections to *server* (it went out)."""
        for backend in self.upstreams[server.address].pool:
            if backend.transport is not None:
                backend.transport.close()

    def clear(self) -> None:
        for upstream in self.upstreams.values():
            upstream.pool.clear()


def _readable(transport: object) -> bool:
    """Whether the socket under *transport* has something to read (or its peer's FIN) now."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    if sock is None:
        return False
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return True
    if fd < 0:
        return True
    return _poll_readable(fd)


def _python_readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


#: One poll(2) on a descriptor: C when natsync.edge._speedups is built (about 1 µs; in Python
#: a poll object costs 3-4 µs, and this runs per reused connection: per keep-alive request).
_poll_readable: Callable[[int], bool] = getattr(http.speedups, "readable", _python_readable)


def _remember_first(trust: BackendTrust, sslobj: ssl.SSLObject) -> None:
    """*sslobj*'s session for the next connections, unless one was remembered meanwhile (its
    connection was verified when it opened; reading a session costs ~1 ms: only once)."""
    if trust.context.cached_session is None:
        trust.remember(sslobj)
