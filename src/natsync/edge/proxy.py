"""The SSL-bridging proxy's I/O: phones' TLS ends here, a verified TLS session goes to the server.

A thin shell around the connection machines of :mod:`natsync.edge.connection` (every decision:
what to send, when to pause, close, pool or log) with the server connections of
:mod:`natsync.edge.pool`, the health checks of :mod:`natsync.edge.health` and the per-address
limits of :mod:`natsync.edge.limits`. It is written as plain ``asyncio`` protocol callbacks, not
streams and tasks, because the edge's job is to *hold* thousands of Pings: a held Ping costs two
protocol objects and their two machines (all with slots), two TLS transports and no coroutine,
no StreamReader buffer and no timer handle (one sweeper checks all deadlines once a second).
Bodies are never buffered: request and response bytes are forwarded as they arrive, with
back-pressure (a full write buffer on one side pauses reading on the other).

Per request: head read (bounded size and time) → validated (400/413/431/501) → publishing rule
(404) → per-address rate limit (503 + Retry-After) → a pooled or new server connection (else
503 or 502) → head re-serialised with ``X-Forwarded-*`` → body streamed (chunked checked on the
fly) → response streamed back → JSON access-log line.

Both protocols' ``buffer_updated`` are C's when ``natsync.edge._steady`` is built (issue 27):
the same steps as the Python methods here, with the usual commands (a pooled connection taken,
attached and sent to; the usual answer sent and its connection pooled) carried out in C and
everything else handed to the Python methods they would call (``Edge.acquire``,
``ClientConn.backend_ready``, ``ClientConn.run``, ``Pool.release``, ``BackendConn.drop``). The
Python methods are the reference: :func:`python_shell` switches C off, and
``tests/edge/test_steady.py`` compares the two over fake transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, cast

from natsync.edge import connection, http
from natsync.edge import pool as pool_module
from natsync.edge import transport as transport_module
from natsync.edge.balance import Balancer, Server
from natsync.edge.config import EdgeConfig
from natsync.edge.connection import (
    POOL_IDLE,
    RETRY_AFTER_DOWN,
    AbortClient,
    Backend,
    BackendAnswered,
    BackendBroke,
    BackendFailure,
    BackendMachine,
    ClientMachine,
    CloseClient,
    Command,
    DropBackend,
    EdgePolicy,
    LogAccess,
    LogNote,
    OpenBackend,
    PauseClient,
    ReleaseBackend,
    Request,
    ResumeClient,
    SendToBackend,
    SendToClient,
    shortest_deadline,
)
from natsync.edge.health import Health
from natsync.edge.limits import PRUNE_INTERVAL
from natsync.edge.pool import Pool, Upstream
from natsync.edge.tls import BackendTrust, SiteContexts
from natsync.edge.transport import TLSTransport

log = logging.getLogger("natsync.edge")
access_log = logging.getLogger("natsync.edge.access")
_INFO = logging.INFO

#: The one clock of the connection machines (their ``now``) and of the sweeper.
clock = time.monotonic

#: Bytes the TLS layer may decrypt into the shared read buffer at once (one TLS record is at most
#: 16 KiB; a larger buffer only serves bulk bodies, which are forwarded chunk by chunk anyway).
READ_BUFFER_SIZE = 64 * 1024
#: The one read buffer of the process. Both protocols are ``BufferedProtocol``s: the TLS layer
#: decrypts straight into it and ``buffer_updated`` copies out what arrived before anything else
#: runs. The alternative (``data_received``) makes uvloop allocate a 256 KiB bytes object per TLS
#: read and shrink it (mmap + mremap + munmap: a fifth of the edge's CPU under keep-alive load).
_READ_VIEW = memoryview(bytearray(READ_BUFFER_SIZE))


def _python_read_buffer(sizehint: int) -> memoryview:
    return _READ_VIEW


def _python_read_bytes(nbytes: int) -> bytes:
    return _READ_VIEW[:nbytes].tobytes()


#: The protocols' get_buffer, and what their buffer_updated copies out with: C functions when
#: natsync.edge._speedups is built (they run once per TLS read; a Python frame costs more).
_read_buffer: Callable[[int], memoryview] = _python_read_buffer
_read_bytes: Callable[[int], bytes] = _python_read_bytes
if http.speedups is not None:
    http.speedups.set_read_buffer(_READ_VIEW)
    _read_buffer = http.speedups.read_buffer
    _read_bytes = http.speedups.read_bytes

#: Write-buffer high-water mark per side: above it, the other side stops being read. Small, so a
#: slow phone cannot make the edge hold a large response in memory.
WRITE_HIGH_WATER = 64 * 1024
#: Least seconds between two wakes of the sweeper of the connection deadlines (it sleeps until
#: a sweep is due).
SWEEP_INTERVAL = 1.0
#: Seconds a phone gets for the TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Seconds between two log lines about the same failing server (a down server is one message).
BACKEND_LOG_INTERVAL = 10.0


#: Read per request: a module global costs a quarter of an enum class attribute.
_CONNECTING = Request.CONNECTING

#: Whether the access log is on (asked per request; a C partial, not a Python frame).
_access_logged = functools.partial(access_log.isEnabledFor, _INFO)


class Edge:
    """Shared state of one edge process: config, TLS, servers and pools, limits, metrics."""

    def __init__(self, config: EdgeConfig, sites: SiteContexts, trust: BackendTrust) -> None:
        self.config = config
        self.sites = sites
        self.trust = trust
        self.policy = EdgePolicy.of(config, _access_logged)
        self.rules = self.policy.rules
        self.limits = self.policy.limits
        self.metrics = self.policy.metrics
        self.balancer = Balancer(config.servers, fall=config.health_fall, rise=config.health_rise)
        self.loop = asyncio.get_running_loop()
        self.health = Health(config, self.balancer, self.loop.time, self._server_out)
        self.pool = Pool(
            config, self.balancer.servers, trust, self.health, self.metrics, self.backend_failure
        )
        self.upstreams = self.pool.upstreams
        #: new connections' OpenSSL buffers freed 1-2 s after they opened (natsync.edge.memory)
        self.pool.trim.schedule = self.loop.call_later
        self.read_timeout = config.read_timeout
        #: The one server when there is one (no choice to make per request).
        self.single = self.balancer.servers[0] if len(self.balancer.servers) == 1 else None
        self.clients: set[ClientConn] = set()
        self.backends: set[BackendConn] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._last_backend_log = -BACKEND_LOG_INTERVAL
        #: When the sweeper next scans every connection (see :meth:`sweep`).
        self.next_sweep = 0.0
        self.shortest = shortest_deadline(config)
        self._last_prune = 0.0

    # -- helpers

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Create a named task and keep a reference until it ends (STYLE 9)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def backend_failure(self, kind: str, message: str) -> None:
        self.metrics.backend_errors[kind] = self.metrics.backend_errors.get(kind, 0) + 1
        now = clock()
        if kind == "certificate" or now - self._last_backend_log >= BACKEND_LOG_INTERVAL:
            self._last_backend_log = now
            log.error("%s", message)

    def sweep(self, now: float) -> None:
        """Close what passed its deadline (idle phones, slow heads, silent servers).

        A deadline set from now on is at least now + shortest_deadline away: until then only
        the ones already set can pass (held Pings are not scanned every second: issue 27). One
        pass over each set finds both what passed and the next deadline (with 7,000 held Pings
        a worker's sweep walks 14,000 connections: half the time of four passes)."""
        due = now + self.shortest
        passed: list[ClientConn | BackendConn] = []
        for group in (self.clients, self.backends):
            for conn in group:
                deadline = conn.machine.deadline
                if deadline and deadline < due:
                    if now > deadline:
                        passed.append(conn)
                    else:
                        due = deadline
        self.next_sweep = due
        for conn in passed:  # clients first: a client's end can end its server's deadline
            deadline = conn.machine.deadline
            if deadline and now > deadline:
                conn.timed_out(now)

    async def sweeper(self) -> None:
        while True:
            # asleep until a sweep or a prune is due: a worker holding Pings wakes twice a
            # minute, not each second (issue 27: idle CPU); no deadline can come sooner (sweep)
            due = min(self.next_sweep, self._last_prune + PRUNE_INTERVAL)
            await asyncio.sleep(max(SWEEP_INTERVAL, due - clock()))
            now = clock()
            if now >= self.next_sweep:
                self.sweep(now)
            if now - self._last_prune > PRUNE_INTERVAL:
                self._last_prune = now
                self.limits.prune(now)

    async def health_checks(self) -> None:
        """Check every server each health_interval (several servers only; see balance.py)."""
        await self.health.run((up.server, up.trust) for up in self.upstreams.values())

    def _server_out(self, server: Server) -> None:
        self.pool.close_idle(server)

    # -- server connections

    @property
    def pooled(self) -> int:
        return self.pool.pooled

    def acquire(self, client: ClientConn) -> None:
        """Attach a server connection to *client*: an idle pooled one of the server chosen, or a
        new one (to that server, then to the next ones should it fail)."""
        server = self.single or self.health.choose()  # the board followed (health.py)
        assert server is not None
        backend = self.pool.take(server)
        if backend is not None:
            client.backend_ready(backend)
            return
        self.spawn(self._connect(client, server), "edge-backend-connect")

    async def _connect(self, client: ClientConn, server: Server | None) -> None:
        tried: list[Server] = []
        status = 503
        while server is not None and client.machine.request is _CONNECTING:
            tried.append(server)
            opened = await self.pool.open(server, self._backend)
            if isinstance(opened, BackendConn):
                client.backend_ready(opened)  # releases it if the phone left meanwhile
                return
            status = opened
            server = self.balancer.choose(tried)  # nothing of the request was sent yet
        client.backend_failed(status, RETRY_AFTER_DOWN if status == 503 else None)

    def _backend(self, upstream: Upstream) -> BackendConn:
        return BackendConn(self, upstream)

    def release(self, backend: BackendConn) -> None:
        self.pool.release(backend, clock())

    def close_all(self) -> None:
        for conn in list(self.clients):
            conn.abort()
        for backend in list(self.backends):
            if backend.transport is not None:
                backend.transport.abort()
        self.pool.clear()
        self.pool.trim.close()
        for task in list(self.tasks):
            task.cancel()


class _Buffered(asyncio.BufferedProtocol):
    """Reads into the process's shared buffer; ``buffer_updated`` takes the bytes out at once
    (each subclass handles them in its own ``buffer_updated``: one call less per read)."""

    __slots__ = ()

    # a plain function (C when built), not a method: uvloop and asyncio call it per TLS read
    get_buffer = staticmethod(_read_buffer)  # type: ignore[assignment]


class BackendConn(_Buffered):
    """One TLS connection to a server: the shell of a :class:`BackendMachine`."""

    __slots__ = ("client", "edge", "fd", "machine", "transport", "upstream")

    def __init__(self, edge: Edge, upstream: Upstream) -> None:
        self.edge = edge
        self.upstream = upstream
        self.machine = BackendMachine(upstream.server, edge.read_timeout)
        self.transport: asyncio.Transport | None = None
        self.client: ClientConn | None = None
        #: The socket's descriptor, polled before each reuse (natsync.edge.pool); -1: none.
        self.fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.edge.backends.add(self)

    def buffer_updated(self, nbytes: int) -> None:
        data = _read_bytes(nbytes)
        now = clock()
        client = self.client
        if client is None or not self.machine.received(now):
            self.drop()  # bytes from an idle pooled connection: not trustworthy any more
            return
        client.run(client.machine.backend_data(data, now))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.backends.discard(self)
        self.edge.pool.forget(self)
        self.machine.closed()
        self.transport = None
        client = self.client
        self.client = None
        if client is not None:  # still attached: the end of its answer, or a broken exchange
            # (BackendBroke names its server; the log line says which connection and how)
            client.run(client.machine.backend_closed(clock(), _lost_how(self.machine, exc)))
            if client.backend is self:
                client.backend = None

    def timed_out(self, now: float) -> None:
        client = self.client
        self.drop()
        if client is not None:  # silent while busy: 504; an idle one just closes
            client.run(client.machine.backend_silent(now))

    def drop(self) -> None:
        """Detach from the phone connection and abort."""
        client = self.client
        if client is not None:
            self.client = None
            client.backend = None
        self.machine.closed()
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.run(self.client.machine.backend_full())

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.run(self.client.machine.backend_writable())


def _lost_how(machine: BackendMachine, exc: Exception | None) -> str:
    """Which server connection was lost and how, for the edge's 502 log line: a reused one
    (it had been back in the pool) or a new one; closed (FIN or close_notify) or broken."""
    which = "a reused keep-alive connection" if machine.remembered else "a new connection"
    return f"{which}, {type(exc).__name__}: {exc}" if exc else f"{which}, closed by the server"


class ClientConn(_Buffered):
    """One phone's TLS connection: the shell of a :class:`ClientMachine`."""

    __slots__ = ("backend", "edge", "ip", "machine", "transport")

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        #: Set beforehand when a trusted hop said who the client is (PROXY v2).
        self.ip = ""
        self.machine = ClientMachine(edge.policy, "")
        self.backend: BackendConn | None = None

    # -- events in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        if not self.ip:
            peer = transport.get_extra_info("peername")
            self.ip = peer[0] if peer else "?"
        self.machine.ip = self.ip
        self.edge.clients.add(self)
        self.edge.pool.trim.add(transport.get_extra_info("ssl_object"))
        self.machine.connected(clock())

    def buffer_updated(self, nbytes: int) -> None:
        self.run(self.machine.client_data(_read_bytes(nbytes), clock()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.edge.clients.discard(self)
        self.run(self.machine.client_lost(clock()))

    def timed_out(self, now: float) -> None:
        self.run(self.machine.timer(now))

    def backend_ready(self, backend: BackendConn) -> None:
        """*backend* (idle, verified) is offered for the request in hand."""
        now = clock()
        if self.machine.request is _CONNECTING and self.transport is not None:
            self.backend = backend
            backend.client = self
            backend.machine.attach(now)
            self.run(self.machine.backend_ready(now))
        else:  # the phone left meanwhile
            self.edge.release(backend)

    def backend_failed(self, status: int, retry_after: int | None = None) -> None:
        self.run(self.machine.backend_failed(status, clock(), retry_after))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()

    # -- commands out

    def run(self, commands: list[Command]) -> None:
        """Carry out what the machine decided, in order. Dispatched on type identity, the usual
        commands first (no isinstance call: this runs two or three times per request; mypy
        cannot narrow on ``type(x) is``, hence the two ignores)."""
        for command in commands:
            transport = self.transport
            kind = type(command)
            if kind is SendToClient:
                if transport is not None:
                    transport.write(command.data)  # type: ignore[union-attr]
                continue
            if kind is SendToBackend:
                backend = self.backend
                if backend is not None and backend.transport is not None:
                    backend.transport.write(command.data)  # type: ignore[union-attr]
                continue
            if kind is OpenBackend:
                self.edge.acquire(self)
            elif kind is ReleaseBackend:
                backend = self.backend
                if backend is not None:
                    self.backend = None
                    self.edge.pool.release(backend, clock())
            elif kind is BackendAnswered:
                if self.backend is not None:
                    self.backend.upstream.server.fails = 0
            elif kind is PauseClient:
                if transport is not None:
                    transport.pause_reading()
            elif kind is ResumeClient:
                if transport is not None:
                    transport.resume_reading()
            elif kind is CloseClient:
                if transport is not None:
                    transport.close()
            elif kind is AbortClient:
                if transport is not None:
                    transport.abort()
            elif kind is DropBackend:
                if self.backend is not None:
                    self.backend.drop()
            elif isinstance(command, LogAccess):
                access_log.info(json.dumps(command.record, separators=(",", ":")))
            elif isinstance(command, LogNote):
                log.info("%s", command.message)
            elif isinstance(command, BackendFailure):
                self.edge.backend_failure(command.kind, command.message)
            elif isinstance(command, BackendBroke) and self.backend is not None:
                self.edge.health.broke(self.backend.upstream.server, command.reason)


# -- the steady path in C (natsync.edge._steady)

#: The protocols' buffer_updated and the transport's _read_ready in Python: the reference (and
#: what runs without C).
PYTHON_READS = (ClientConn.buffer_updated, BackendConn.buffer_updated, TLSTransport._read_ready)


def _c_reads() -> tuple[Any, Any, Any] | None:
    """ClientConn's and BackendConn's buffer_updated and TLSTransport's _read_ready in C
    (natsync.edge._steady: the same steps, the usual ones carried out there, the rest by the
    Python methods they would call), or None: not built, or NATSYNC_PURE_PYTHON."""
    if connection.steady is None:
        return None
    return cast(
        tuple[Any, Any, Any],
        connection.steady.configure_shell(
            (ClientConn, BackendConn, BackendMachine, Pool, Upstream, Server, TLSTransport),
            (sys.modules[__name__], pool_module._readable, pool_module._poll_readable,
             Backend.IDLE, Backend.BUSY, POOL_IDLE, _read_bytes, transport_module.tlsio,
             TLSTransport._read_ready),
        ),
    )  # fmt: skip


C_READS = _c_reads()


def use_c_reads(on: bool) -> None:
    """Read with C's buffer_updated and _read_ready (*on*, when built) or the Python ones."""
    reads = C_READS if on and C_READS is not None else PYTHON_READS
    ClientConn.buffer_updated, BackendConn.buffer_updated = reads[:2]  # type: ignore[method-assign]
    TLSTransport._read_ready = reads[2]  # type: ignore[method-assign]


@contextlib.contextmanager
def python_shell() -> Iterator[None]:
    """Within it, the shell's reads and the machine's moves are Python's alone (the reference
    the C path is compared with: tests/edge/test_steady.py)."""
    use_c_reads(False)
    try:
        with connection.python_moves():
            yield
    finally:
        use_c_reads(True)


use_c_reads(True)
