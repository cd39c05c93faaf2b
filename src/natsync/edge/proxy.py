"""The SSL-bridging proxy: phones' TLS ends here, a verified TLS session goes to the server.

I/O adapter around the sans-I/O rules of :mod:`natsync.edge.http` and :mod:`.rules`. It is
written as plain ``asyncio.Protocol`` callbacks, not streams and tasks, because the edge's job is
to *hold* thousands of Pings: a held Ping costs two protocol objects with slots, two TLS
transports and no coroutine, no StreamReader buffer and no timer handle (one sweeper checks all
deadlines once a second). Bodies are never buffered: request and response bytes are forwarded as
they arrive, with back-pressure (a full write buffer on one side pauses reading on the other).

Per request: head read (bounded size and time) → validated (400/413/431/501) → publishing rule
(404) → per-address rate limit (503 + Retry-After) → a pooled or new server connection (new:
TCP within :data:`~natsync.edge.tls.BACKEND_CONNECT_TIMEOUT`, TLS + pin check within
:data:`~natsync.edge.tls.BACKEND_HANDSHAKE_TIMEOUT`, else 503;
wrong certificate: 502 and one clear log line) → head re-serialised with ``X-Forwarded-*`` →
body streamed (chunked checked on the fly) → response streamed back → JSON access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from natsync.edge import http
from natsync.edge.balance import Balancer, Server
from natsync.edge.config import EdgeConfig
from natsync.edge.http import (
    F_CHUNKED,
    F_CLOSE,
    F_LENGTH,
    F_NONE,
    ChunkedScanner,
    EasFields,
    EdgeHttpError,
)  # fmt: skip
from natsync.edge.metrics import Metrics
from natsync.edge.rules import PublishRules
from natsync.edge.tls import BackendCertError, BackendTrust, SiteContexts, open_backend

log = logging.getLogger("natsync.edge")
access_log = logging.getLogger("natsync.edge.access")
_INFO = logging.INFO

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
#: Seconds an idle pooled server connection is kept: below aiohttp's keep-alive (75 s) so the
#: edge, not the server, closes it, and a request never races the server's close.
POOL_IDLE = 30.0
#: Seconds between sweeps of the connection deadlines.
SWEEP_INTERVAL = 1.0
#: Seconds a phone gets for the TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Retry-After (seconds) with a 503 for a client over its limits, or a server that is down.
RETRY_AFTER_LIMIT = 5
RETRY_AFTER_DOWN = 10
#: Seconds between two log lines about the same failing server (a down server is one message).
BACKEND_LOG_INTERVAL = 10.0

# Client connection states.
_HEAD, _CONNECTING, _BODY, _WAITING, _CLOSED = range(5)


class _RateLimiter:
    """Per-address connection counts and token buckets for requests."""

    def __init__(self, config: EdgeConfig) -> None:
        self.max_connections = config.max_connections_per_ip
        self.rate = config.requests_per_second_per_ip
        self.burst = float(config.request_burst_per_ip)
        self.connections: dict[str, int] = {}
        self.buckets: dict[str, list[float]] = {}

    def connect(self, ip: str) -> bool:
        count = self.connections.get(ip, 0) + 1
        self.connections[ip] = count
        return count <= self.max_connections

    def disconnect(self, ip: str) -> None:
        count = self.connections.get(ip, 1) - 1
        if count <= 0:
            self.connections.pop(ip, None)
        else:
            self.connections[ip] = count

    def allow_request(self, ip: str, now: float) -> bool:
        bucket = self.buckets.get(ip)
        if bucket is None:
            self.buckets[ip] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def prune(self, now: float) -> None:
        full = [ip for ip, (tokens, last) in self.buckets.items() if
                tokens + (now - last) * self.rate >= self.burst]  # fmt: skip
        for ip in full:
            del self.buckets[ip]


class Upstream:
    """One server as the I/O side sees it: its health record, trust (own session) and pool."""

    __slots__ = ("pool", "server", "trust")

    def __init__(self, server: Server, trust: BackendTrust) -> None:
        self.server = server
        self.trust = trust
        self.pool: list[BackendConn] = []


class Edge:
    """Shared state of one edge process: config, TLS, servers and pools, limits, metrics."""

    def __init__(self, config: EdgeConfig, sites: SiteContexts, trust: BackendTrust) -> None:
        self.config = config
        self.sites = sites
        self.trust = trust
        self.rules = PublishRules(config.paths)
        self.limits = _RateLimiter(config)
        self.metrics = Metrics()
        self.balancer = Balancer(config.servers, fall=config.health_fall, rise=config.health_rise)
        self.upstreams = {
            server.address: Upstream(
                server,
                trust if server.address == trust.backend else BackendTrust(config, server.address),
            )
            for server in self.balancer.servers
        }
        self.read_timeout = config.read_timeout
        #: The one server when there is one (no choice to make per request).
        self.single = self.balancer.servers[0] if len(self.balancer.servers) == 1 else None
        self.clients: set[ClientConn] = set()
        self.backends: set[BackendConn] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._last_backend_log = -BACKEND_LOG_INTERVAL
        self._last_prune = 0.0
        self.loop = asyncio.get_running_loop()

    # -- helpers

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Create a named task and keep a reference until it ends (STYLE 9)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def backend_failure(self, kind: str, message: str) -> None:
        self.metrics.backend_errors[kind] = self.metrics.backend_errors.get(kind, 0) + 1
        now = time.monotonic()
        if kind == "certificate" or now - self._last_backend_log >= BACKEND_LOG_INTERVAL:
            self._last_backend_log = now
            log.error("%s", message)

    def sweep(self, now: float) -> None:
        """Close what passed its deadline (idle phones, slow heads, silent servers)."""
        for conn in [c for c in self.clients if c.deadline and now > c.deadline]:
            conn.timed_out()
        for backend in [b for b in self.backends if b.deadline and now > b.deadline]:
            backend.timed_out()
        if now - self._last_prune > 60.0:
            self._last_prune = now
            self.limits.prune(now)

    async def sweeper(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep(loop.time())

    # -- server connections

    @property
    def pooled(self) -> int:
        return sum(len(up.pool) for up in self.upstreams.values())

    def acquire(self, client: ClientConn) -> None:
        """Attach a server connection to *client*: an idle pooled one of the server chosen, or a
        new one (to that server, then to the next ones should it fail)."""
        server = self.single or self.balancer.choose()
        assert server is not None
        pool = self.upstreams[server.address].pool
        while pool:
            backend = pool.pop()
            if backend.transport is not None and not backend.transport.is_closing():
                backend.attach(client)
                client.backend_ready(backend)
                return
        self.spawn(self._connect(client, server), "edge-backend-connect")

    async def _connect(self, client: ClientConn, server: Server | None) -> None:
        tried: list[Server] = []
        status = 503
        while server is not None and client.state == _CONNECTING:
            tried.append(server)
            opened = await self._open(self.upstreams[server.address])
            if isinstance(opened, BackendConn):
                if client.state != _CONNECTING:
                    self.release(opened)
                    return
                opened.attach(client)
                client.backend_ready(opened)
                return
            status = opened
            server = self.balancer.choose(tried)  # nothing of the request was sent yet
        client.backend_failed(status, RETRY_AFTER_DOWN if status == 503 else None)

    async def _open(self, upstream: Upstream) -> BackendConn | int:
        """A new verified connection to one server, or the status to answer when it fails."""
        trust = upstream.trust
        server = upstream.server
        try:
            transport, backend = await open_backend(
                lambda: BackendConn(self, upstream),
                server.host,
                server.port,
                trust.context,
                trust.server_name,
            )
        except ssl.SSLError as exc:
            self.backend_failure("certificate", trust.describe_error(exc))
            self.server_unreachable(server, "TLS or certificate failure")
            return 502
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self.backend_failure("connect", f"cannot reach the server at {trust.backend}: {reason}")
            self.server_unreachable(server, reason)
            return 503
        sslobj = transport.get_extra_info("ssl_object")
        try:
            trust.check(sslobj)
        except BackendCertError as exc:
            transport.abort()
            self.backend_failure("certificate", exc.message)
            self.server_unreachable(server, "wrong certificate")
            return 502
        self.metrics.backend_handshakes += 1
        if sslobj is not None and sslobj.session_reused:
            self.metrics.backend_resumed += 1
        if self.balancer.answered(server):
            self._log_health(server)
        return backend

    # -- health

    def server_unreachable(self, server: Server, reason: str) -> None:
        if self.balancer.unreachable(server, self.loop.time(), reason):
            self._log_health(server)

    def server_broke(self, server: Server, reason: str) -> None:
        """A server broke an exchange it had (counts as a failed check)."""
        if self.balancer.check_failed(server, self.loop.time(), reason):
            self._log_health(server)

    def _log_health(self, server: Server) -> None:
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
            for backend in self.upstreams[server.address].pool:
                if backend.transport is not None:
                    backend.transport.close()

    async def health_checks(self) -> None:
        """Check every server each health_interval (several servers only; see balance.py)."""
        interval = self.config.health_interval
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            await asyncio.gather(*(self._check(up) for up in self.upstreams.values()))
            next_round += interval
            await asyncio.sleep(max(0.0, next_round - loop.time()))

    async def _check(self, upstream: Upstream) -> None:
        """OPTIONS health_path over a verified TLS connection; below 500 in time is good."""
        server, trust = upstream.server, upstream.trust
        request = (
            f"OPTIONS {self.config.health_path} HTTP/1.1\r\nHost: {trust.server_name}\r\n"
            "User-Agent: natsync-edge-check\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        reason = ""
        try:
            async with asyncio.timeout(self.config.health_timeout):
                reader, writer = await asyncio.open_connection(
                    server.host, server.port, ssl=trust.context, server_hostname=trust.server_name
                )
                try:
                    trust.check(writer.get_extra_info("ssl_object"))
                    writer.write(request)
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
            status = int(line[9:12]) if line[:7] == b"HTTP/1." and line[9:12].isdigit() else 0
            if not 100 <= status < 500:
                reason = f"the check answered {line[:40]!r}"
        except TimeoutError:
            reason = f"no answer to the check within {self.config.health_timeout:g} s"
        except BackendCertError:
            reason = "wrong certificate"
        except (OSError, ssl.SSLError) as exc:
            reason = f"check failed: {exc}"
        if reason:
            if self.balancer.check_failed(server, self.loop.time(), reason):
                self._log_health(server)
        elif self.balancer.check_passed(server):
            self._log_health(server)

    def release(self, backend: BackendConn) -> None:
        """Return a server connection whose exchange ended cleanly to its pool (bounded)."""
        backend.client = None
        backend.uncount()
        transport = backend.transport
        if transport is None or transport.is_closing():
            return
        upstream = backend.upstream
        if not backend.remembered:  # reading .session serialises it (~1 ms): once per connection
            backend.remembered = True
            upstream.trust.remember(transport.get_extra_info("ssl_object"))
        if len(upstream.pool) >= self.config.pool_size or not upstream.server.up:
            transport.close()
            return
        backend.deadline = self.loop.time() + POOL_IDLE
        upstream.pool.append(backend)

    def close_all(self) -> None:
        for conn in list(self.clients):
            conn.abort()
        for backend in list(self.backends):
            if backend.transport is not None:
                backend.transport.abort()
        for upstream in self.upstreams.values():
            upstream.pool.clear()
        for task in list(self.tasks):
            task.cancel()


class _Buffered(asyncio.BufferedProtocol):
    """Reads into the process's shared buffer; ``buffer_updated`` takes the bytes out at once
    (each subclass handles them in its own ``buffer_updated``: one call less per read)."""

    __slots__ = ()

    # a plain function (C when built), not a method: uvloop and asyncio call it per TLS read
    get_buffer = staticmethod(_read_buffer)  # type: ignore[assignment]


class BackendConn(_Buffered):
    """One TLS connection to the server, serving one client exchange at a time."""

    __slots__ = (
        "buf", "chunks", "client", "counted", "deadline", "edge", "left", "remembered",
        "response", "transport", "upstream",
    )  # fmt: skip

    def __init__(self, edge: Edge, upstream: Upstream) -> None:
        self.edge = edge
        self.upstream = upstream
        self.counted = False
        self.transport: asyncio.Transport | None = None
        self.client: ClientConn | None = None
        self.buf = b""
        self.response: http.ResponseHead | None = None
        self.left = 0
        self.chunks: ChunkedScanner | None = None
        self.deadline = 0.0
        self.remembered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self.edge.backends.add(self)

    def attach(self, client: ClientConn) -> None:
        self.client = client
        if not self.counted:
            self.counted = True
            self.upstream.server.active += 1
        self.buf = b""
        self.response = None
        self.chunks = None
        self.deadline = self.edge.loop.time() + self.edge.read_timeout

    def buffer_updated(self, nbytes: int) -> None:
        data = _read_bytes(nbytes)
        client = self.client
        if client is None:  # bytes from an idle pooled connection: not trustworthy any more
            self.drop()
            return
        edge = self.edge
        self.deadline = edge.loop.time() + edge.read_timeout
        if self.response is None:
            self.buf = self.buf + data if self.buf else data
            while self.response is None:
                try:
                    taken = http.take_response(self.buf, client.method)
                except EdgeHttpError as exc:
                    self.edge.backend_failure("protocol", exc.message)
                    self.drop()
                    return
                if taken is None:
                    return
                head, rest = taken
                self.buf = b""
                if head.status < 200:  # interim (100 Continue): pass on, read the next head
                    client.send(http.client_response(head, True))
                    self.buf = rest
                    continue
                self.response = head
                self.left = head.length
                self.chunks = ChunkedScanner() if head.framing == F_CHUNKED else None
                self._body(rest, client.start_response(head))
                return
        self._body(data)

    def _body(self, data: bytes, prefix: bytes = b"") -> None:
        """Forward response body bytes (after *prefix*, the head, in the same TLS record)."""
        client = self.client
        response = self.response
        assert client is not None
        assert response is not None
        framing = response.framing
        size = len(data)
        if framing == F_LENGTH:
            used = self.left if self.left < size else size
            self.left -= used
            finished = self.left == 0
        elif framing == F_NONE:
            used = 0
            finished = True
        elif framing == F_CLOSE:
            if data or prefix:
                client.send(prefix + data)
            return
        else:
            assert self.chunks is not None
            try:
                used = self.chunks.feed(data)
            except EdgeHttpError as exc:
                self.edge.backend_failure("protocol", f"bad chunked body: {exc.message}")
                self.drop()
                return
            finished = self.chunks.done
        if used or prefix:
            client.send(prefix + (data if used == size else data[:used]))
        if finished:
            reusable = response.keep_alive and used == size
            self.upstream.server.fails = 0  # a whole answer: whatever failed before is past
            self.response = None
            self.deadline = 0.0
            client.response_done(self if reusable else None)
            if not reusable:
                self.drop()

    def uncount(self) -> None:
        """The exchange left this connection: one fewer in flight on its server."""
        if self.counted:
            self.counted = False
            self.upstream.server.active -= 1

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.backends.discard(self)
        pool = self.upstream.pool
        if self in pool:
            pool.remove(self)
        self.uncount()
        client = self.client
        self.client = None
        self.transport = None
        if client is None:
            return
        response = self.response
        if response is not None and response.framing == F_CLOSE:
            client.response_done(None)
        else:
            self.edge.server_broke(self.upstream.server, "closed a request it had")
            client.backend_lost()

    def timed_out(self) -> None:
        client = self.client
        self.client = None
        self.drop()
        if client is not None:
            self.edge.backend_failure(
                "timeout",
                f"the server sent nothing for {self.edge.read_timeout:g} s; closing the request",
            )
            client.backend_lost(504)

    def drop(self) -> None:
        self.deadline = 0.0
        self.uncount()
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause()

    def resume_writing(self) -> None:
        client = self.client
        if client is not None and client.state == _BODY:
            client.resume()


class ClientConn(_Buffered):
    """One phone's TLS connection: reads requests, one at a time, and bridges each."""

    __slots__ = (
        "backend", "buf", "bytes_out", "chunks", "deadline", "edge", "fields", "head",
        "ip", "keep_alive", "left", "over_limit", "paused", "ping", "started", "state", "status",
        "transport",
    )  # fmt: skip

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.buf = b""
        self.state = _HEAD
        self.head: http.RequestHead | None = None
        self.backend: BackendConn | None = None
        self.fields = EasFields()
        self.left = 0
        self.chunks: ChunkedScanner | None = None
        self.keep_alive = True
        self.started = 0.0
        self.status = 0
        self.bytes_out = 0
        self.deadline = 0.0
        self.over_limit = False
        self.paused = False
        #: The request in hand is a Ping (counted in the held-Pings gauge while it is open).
        self.ping = False

    @property
    def method(self) -> bytes:
        return self.head.method if self.head is not None else b"GET"

    def loop_time(self) -> float:
        return self.edge.loop.time()

    # -- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        if not self.ip:  # set beforehand when a trusted hop said who the client is (PROXY v2)
            peer = transport.get_extra_info("peername")
            self.ip = peer[0] if peer else "?"
        edge = self.edge
        edge.clients.add(self)
        edge.metrics.connections_total += 1
        self.over_limit = not edge.limits.connect(self.ip)
        self.deadline = self.loop_time() + edge.config.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        edge = self.edge
        if self.state == _CLOSED and self.transport is None:
            return
        if self.state in (_BODY, _WAITING, _CONNECTING):
            self._end_request(499 if not self.status else self.status)
            if self.backend is not None:
                self.backend.client = None
                self.backend.drop()
                self.backend = None
        self.state = _CLOSED
        self.transport = None
        edge.clients.discard(self)
        edge.limits.disconnect(self.ip)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self) -> None:
        self.deadline = 0.0
        if self.state == _HEAD and self.buf:  # a head that never completed
            self.keep_alive = False
            self._answer(408, error="the request head did not arrive in time")
        elif self.state == _BODY:
            self._body_stalled()
        else:
            self.abort()

    def _body_stalled(self) -> None:
        """No body byte for body_timeout: 408 and close (unless the edge itself paused the
        reading: then the server is slow to take the body, not the phone to send it)."""
        if self.paused:
            self.deadline = self.loop_time() + self.edge.config.body_timeout
            return
        backend = self.backend
        if backend is not None:
            backend.client = None
            backend.drop()
            self.backend = None
        log.info("a request body from %s stalled; answered 408", self.ip)
        if self.status:  # the server's answer already started: nothing more can be said
            self._end_request(self.status)
            self.state = _CLOSED
            self.abort()
            return
        self._end_ping()
        self.keep_alive = False
        self._answer(408, error="the request body stalled")

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.bytes_out += len(data)
            self.transport.write(data)

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()

    # -- reading requests

    def buffer_updated(self, nbytes: int) -> None:
        data = _read_bytes(nbytes)
        state = self.state
        if state == _BODY:
            self._body(data)
        elif state == _HEAD:
            if self.buf:  # more of a head: its deadline (from its first byte) stands
                self.buf += data
                self._next_request(False)
            else:
                self.buf = data
                self._next_request()
        else:  # body bytes before the server is there, or pipelined: hold them, read no more
            self.buf += data
            self.pause()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read again (once per pause: resuming costs the TLS layer a scheduled callback)."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _next_request(self, first: bool = True) -> None:
        """Take the request head in ``buf``; *first*: its first bytes arrived just now (the
        header deadline starts; later bytes do not restart it)."""
        edge = self.edge
        try:
            taken = http.take_request(self.buf, edge.config.max_body)
        except EdgeHttpError as exc:
            self.reject(exc.http_status, exc.message)
            return
        if taken is None:
            if first and self.buf:
                self.deadline = self.loop_time() + edge.config.header_timeout
            return
        head, body = taken
        self.buf = b""
        self.head = head
        logged = access_log.isEnabledFor(_INFO)
        self.fields = fields = http.eas_fields(head, logged)
        self.started = time.perf_counter() if logged else 0.0
        self.status = 0
        self.bytes_out = 0
        self.keep_alive = head.keep_alive
        self.deadline = 0.0
        if self.over_limit:
            self.keep_alive = False
            self._answer(503, retry_after=RETRY_AFTER_LIMIT)
            return
        if not edge.rules.allows(head.path):
            if head.framing != F_NONE:
                self.keep_alive = False
            self._answer(404)
            if self.keep_alive:
                self.buf = body
                self._ready_for_next()
            return
        if not edge.limits.allow_request(self.ip, edge.loop.time()):
            self.keep_alive = False
            self._answer(503, retry_after=RETRY_AFTER_LIMIT)
            return
        if fields.cmd and fields.cmd.lower() == "ping":
            self.ping = True
            edge.metrics.held_pings += 1
        self.buf = body
        self.state = _CONNECTING
        edge.acquire(self)

    def reject(self, status: int, message: str) -> None:
        """A request the edge refuses as malformed: answer and close."""
        self.fields = EasFields()
        self.started = time.perf_counter()
        self.keep_alive = False
        log.info("refused a request from %s: %s (%d)", self.ip, message, status)
        self._answer(status, error=message)

    def _answer(self, status: int, retry_after: int | None = None, error: str = "") -> None:
        self.status = status
        self.send(http.error_response(status, retry_after=retry_after, close=not self.keep_alive))
        self._log(status, error)
        if not self.keep_alive:
            self.state = _CLOSED
            if self.transport is not None:
                self.transport.close()

    # -- bridging

    def backend_ready(self, backend: BackendConn) -> None:
        head = self.head
        if self.transport is None or head is None:
            self.edge.release(backend)
            return
        self.backend = backend
        assert backend.transport is not None
        self.state = _BODY
        self.left = head.length
        self.chunks = ChunkedScanner() if head.framing == F_CHUNKED else None
        body, self.buf = self.buf, b""
        request = http.backend_request(head, self.ip)
        head.section = b""  # forwarded; a held Ping should not keep a copy of its head
        if head.framing == F_NONE and not body:  # the usual GET, OPTIONS or Ping: sent whole
            backend.transport.write(request)
            self.state = _WAITING
            return
        self._body(body, request)
        if self.state == _BODY:
            self.resume()

    def _body(self, data: bytes, prefix: bytes = b"") -> None:
        """Forward request body bytes (after *prefix*, the head, in the same TLS record)."""
        head = self.head
        backend = self.backend
        assert head is not None
        assert backend is not None
        assert backend.transport is not None
        framing = head.framing
        size = len(data)
        if framing == F_NONE:
            used = 0
            done = True
        elif framing == F_LENGTH:
            used = self.left if self.left < size else size
            self.left -= used
            done = self.left == 0
        else:
            assert self.chunks is not None
            try:
                used = self.chunks.feed(data)
            except EdgeHttpError as exc:
                log.info("refused a chunked body from %s: %s", self.ip, exc.message)
                backend.client = None
                backend.drop()
                self.backend = None
                if self.status == 0:
                    self._end_ping()
                    self.keep_alive = False
                    self._answer(400, error=exc.message)
                else:
                    self.abort()
                return
            done = self.chunks.done
        if used or prefix:
            backend.transport.write(prefix + (data if used == size else data[:used]))
        if done:
            self.deadline = 0.0
            if self.state == _BODY:
                self.state = _WAITING
            if used < size:
                self.buf += data[used:]
                self.pause()
        else:  # more to come: within body_timeout of this byte
            self.deadline = self.edge.loop.time() + self.edge.config.body_timeout

    def start_response(self, response: http.ResponseHead) -> bytes:
        """The response head to send (the caller sends it with the first body bytes)."""
        self.status = response.status
        self.keep_alive = self.keep_alive and response.keep_alive
        return http.client_response(response, self.keep_alive)

    def response_done(self, backend: BackendConn | None) -> None:
        """The whole response went out; reuse both sides when they may be reused."""
        request_sent = self.state == _WAITING
        self.backend = None
        if backend is not None:
            if request_sent:
                self.edge.release(backend)
            else:  # the server answered before the body was sent: this connection is spent
                backend.client = None
                backend.drop()
        self._end_request(self.status)
        if not request_sent:
            self.keep_alive = False
        if not self.keep_alive:
            self.state = _CLOSED
            if self.transport is not None:
                self.transport.close()
            return
        self._ready_for_next()

    def _ready_for_next(self) -> None:
        self.state = _HEAD
        self.head = None
        edge = self.edge
        if self.buf:  # a pipelined request came with the last one
            self.deadline = edge.loop.time() + edge.config.header_timeout
            self.resume()
            self._next_request()
            return
        self.deadline = edge.loop.time() + edge.config.client_idle_timeout
        if self.paused:
            self.resume()

    def backend_failed(self, status: int, retry_after: int | None = None) -> None:
        if self.state != _CONNECTING:
            return
        self._end_ping()
        self.keep_alive = False
        self._answer(status, retry_after=retry_after)

    def backend_lost(self, status: int = 502) -> None:
        """The server connection broke (502) or went silent (504) before the response ended."""
        self.backend = None
        if self.state == _CLOSED:
            return
        if self.status == 0:
            if status == 502:
                self.edge.backend_failure("reset", "the server closed the connection mid-request")
            self._end_ping()
            self.keep_alive = False
            self._answer(status)
        else:
            self._end_request(self.status)
            self.state = _CLOSED
            self.abort()

    def _end_ping(self) -> None:
        if self.ping:
            self.ping = False
            self.edge.metrics.held_pings -= 1

    def _end_request(self, status: int) -> None:
        if self.ping:
            self._end_ping()
        self.state = _HEAD
        self._log(status)

    def _log(self, status: int, error: str = "") -> None:
        fields = self.fields
        self.edge.metrics.count_request(fields.cmd or "-", status)
        if not access_log.isEnabledFor(_INFO):
            return
        head = self.head
        record: dict[str, Any] = {
            "client": self.ip,
            "method": head.method.decode("latin-1") if head else "",
            "path": head.path if head else "",
            "status": status,
            "bytes": self.bytes_out,
            "ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        if fields.cmd:
            record["cmd"] = fields.cmd
        if fields.user:
            record["user"] = fields.user
        if fields.device_id:
            record["device_id"] = fields.device_id
        if fields.device_type:
            record["device_type"] = fields.device_type
        if error:
            record["error"] = error
        access_log.info(json.dumps(record, separators=(",", ":")))
