"""The server's own HTTP/1.1 front: TLS over memory BIOs, keep-alive connections, and requests
that wait (held Pings) parked beside their connection without a task.

Why not aiohttp (which :func:`natsync.server.app.make_app` still serves): a push server holds
ten thousand Pings, and per held Ping aiohttp keeps its RequestHandler, parser, payload
StreamReader, Request, a task for the connection and one for the handler with their coroutine
frames (~21 KB), while uvloop's TLS transport keeps a 256 KiB read buffer per connection of
which the touched pages stay resident (~6 KB). Here a connection is one slotted protocol
object over a plain TCP transport, with its TLS state (``ssl.SSLObject`` over two
``MemoryBIO``s: OpenSSL's ~16.5 KB per connection, the floor), and, while a request is held,
the handler's small parked object. Bytes are read into one buffer that every connection shares
(each read is handled to completion before the next), decrypted into a second shared buffer,
and copied out only as far as a request needs them (docs/push.md has the figures).

Memory of a held request: once it is parked, what OpenSSL keeps without need is given back
(:func:`natsync.edge.memory.release_buffers`, as the edge does for its idle connections): its
record buffers, and the buffers of the two memory BIOs, which otherwise keep for the
connection's life the capacity of the largest flight they ever carried — the handshake's
certificate chain, a request, a Sync answer (OpenSSL's memory per connection measured with its
allocation hooks: 16.4 KB, 2.3 KB of it those two buffers after a handshake and three small
exchanges). They are allocated again by the next byte in or out.

The decisions — framing, keep-alive, pipelining, deadlines, what to refuse (RFC 9112) — are
:class:`natsync.server.connection.ServerConnection`'s, without I/O; :class:`Connection` is the
shell that feeds it bytes and the loop's time and carries out its actions: the TLS layer,
writes, one timer at the machine's deadline (moved earlier at once, later only when it fires),
the request's task (:class:`Request` collects its body for the handler, which reads it with
``await request.read(limit)`` and can refuse it — 401, 413 — before it came) or its parked
hold, pausing and resuming the transport. The peer going away (FIN, close_notify, reset)
cancels the request's task, or releases its parked request at once (what aiohttp's
``handler_cancellation`` did).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from email.message import Message
from email.parser import HeaderParser
from email.utils import formatdate
from typing import Any, cast

from multidict import CIMultiDict
from yarl import URL

from natsync.edge import http as h1
from natsync.edge.http import Framing
from natsync.edge.memory import release_buffers
from natsync.fdlimit import listener_budget
from natsync.server.connection import (
    CLOSED,
    HANDSHAKE,
    KEEPALIVE_TIMEOUT,
    MAX_PENDING,
    TLS_HANDSHAKE_TIMEOUT,
    Abort,
    Action,
    Body,
    BodyEnd,
    Cancel,
    Close,
    Limits,
    Log,
    Park,
    Parked,
    Pause,
    Reply,
    Resume,
    Send,
    Serve,
    ServerConnection,
)

__all__ = [
    "KEEPALIVE_TIMEOUT", "MAX_PENDING", "TLS_HANDSHAKE_TIMEOUT", "Connection", "Front", "Handler",
    "Parked", "Reply", "Request",
]  # fmt: skip

log = logging.getLogger("natsync.server.front")

#: Bytes read from a socket at once, into the buffer every connection shares (a TLS record is
#: at most 16 KiB + overhead; larger reads only serve bulk uploads).
READ_BUFFER_SIZE = 64 * 1024
_RAW = memoryview(bytearray(READ_BUFFER_SIZE))
#: The shared buffer TLS decrypts into; what a request needs is copied out at once.
_PLAIN_BYTES = bytearray(READ_BUFFER_SIZE)
_PLAIN = memoryview(_PLAIN_BYTES)
#: Connections queued in the kernel before accept (the kernel caps it at net.core.somaxconn,
#: 4096 on today's Linux). After an outage or a public-address change the edge reconnects
#: every phone at once: past a full queue the kernel drops the SYN and the edge's connect waits
#: for its retransmission, 1 s later (RFC 6298's initial RTO), past the edge's 0.9 s TCP deadline
#: (a 503). aiohttp's 128 was that small; the edge's own listener has 4096 too.
BACKLOG = 4096
#: Seconds from a request head's first byte to its end (nginx's client_header_timeout).
DEFAULT_HEADER_TIMEOUT = 30.0
#: Seconds a request body may go without a byte (nginx's client_body_timeout).
DEFAULT_BODY_TIMEOUT = 60.0
#: Share of the process's open-files limit the front's connections may take (SMTP in has its
#: own share; the store, logs and the relay keep the rest). Beyond it a connection is closed
#: as soon as it is accepted: the descriptor is back at once.
FRONT_DESCRIPTOR_SHARE = 0.75

Handler = Callable[["Request"], Awaitable["Reply | Parked"]]


class _OctetStream(Message):
    """A Content-Type that does not parse is application/octet-stream (RFC 9110 8.3)."""

    def get_default_type(self) -> str:
        return "application/octet-stream"


@functools.lru_cache(maxsize=256)
def _media_type(raw: str) -> str:
    """The media type of a Content-Type value, lower case, without parameters (what aiohttp's
    ``request.content_type`` says)."""
    return HeaderParser(_OctetStream).parsestr(f"Content-Type: {raw}").get_content_type()


_DATE: list[Any] = [0, b""]


def _http_date() -> bytes:
    """The HTTP Date of now (formatted once a second)."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[0], _DATE[1] = now, formatdate(now, usegmt=True).encode()
    date: bytes = _DATE[1]
    return date


class Request:
    """One request as the handlers read it (the attributes of :class:`natsync.server.app.
    HttpRequest`); its body arrives (framing removed, by the connection) while the handler
    runs."""

    __slots__ = (
        "_conn", "_parts", "_size", "_waiter", "_want", "complete", "content_length",
        "content_type", "headers", "host", "http10", "keep_alive", "method", "over", "path",
        "query_string", "remote",
    )  # fmt: skip

    def __init__(self, conn: Connection, head: h1.RequestHead, remote: str) -> None:
        self._conn = conn
        self.method = head.method.decode("ascii")
        target = head.target.decode("latin-1")
        path, _, query = target.partition("?")
        url = URL.build(path=path, query_string=query, encoded=True) if target != "*" else None
        # Decoded as aiohttp decodes them (yarl), so both fronts hand the handlers the same text.
        self.path = url.path if url is not None else "*"
        self.query_string = url.query_string if url is not None else ""
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in head.fields:
            headers.add(name.decode("ascii"), value.decode("utf-8", "surrogateescape"))
        self.headers = headers
        self.remote = remote
        self.host = headers.get("Host", "")
        self.http10 = head.version == b"HTTP/1.0"
        self.keep_alive = head.keep_alive
        raw_type = headers.get("Content-Type")
        self.content_type = (
            "application/octet-stream" if raw_type is None else _media_type(raw_type)
        )
        self.content_length = head.length if head.framing == Framing.LENGTH else (
            0 if "Content-Length" in headers else None)  # fmt: skip
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = head.framing == Framing.NONE
        self.over = False
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0

    def forwarded_for(self) -> str:
        return ",".join(self.headers.getall("X-Forwarded-For", ()))

    async def read(self, limit: int) -> bytes:
        """The body, or its first ``limit + 1`` bytes when it is longer than *limit*."""
        if not (self.complete or self._size > limit):
            self._conn.want_body()
            self._want = limit
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._parts)
        self._parts = [data]
        return data[: limit + 1]

    # -- fed by the connection

    def add(self, data: bytes) -> None:
        if self.over:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._conn._front.body_limit:
            self.over = True  # enough to answer 413: the rest is not kept
        if self._waiter is not None and self._size > self._want and not self._waiter.done():
            self._waiter.set_result(None)

    def finish(self) -> None:
        self.complete = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Connection(asyncio.BufferedProtocol):
    """The asyncio shell of one client connection: TLS over memory BIOs, a timer, the request
    being served (its task) or parked (its :class:`Parked`); every decision is its
    :class:`~natsync.server.connection.ServerConnection`'s, whose actions :meth:`_do` carries
    out."""

    __slots__ = (
        "_front", "_in", "_machine", "_out", "_parked", "_remote", "_request", "_task",
        "_timer", "_tls", "_transport",
    )  # fmt: skip

    def __init__(self, front: Front) -> None:
        self._front = front
        now = asyncio.get_running_loop().time()
        self._machine = ServerConnection(front.limits, now, tls=front.context is not None)
        self._transport: asyncio.Transport | None = None
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._remote = ""
        #: The request whose body is still arriving (None once it is whole).
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._parked: Parked | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not registered as an asyncio.Transport subclass.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        # Interned: behind the edge every connection comes from the same address.
        self._remote = sys.intern(str(peer[0])) if isinstance(peer, tuple) else ""
        if len(self._front.connections) >= self._front.max_connections:
            self._front.over_budget()
            self._machine.lost()
            transport.abort()
            return
        self._front.connections.add(self)
        context = self._front.context
        if context is not None:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._tls = context.wrap_bio(self._in, self._out, server_side=True)
        self._rearm()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RAW

    def buffer_updated(self, nbytes: int) -> None:
        machine = self._machine
        if machine.state is CLOSED:
            return  # closing: what the client still sends is not read
        tls = self._tls
        if tls is None:
            self._do(machine.receive(_RAW[:nbytes], _loop_time(), _http_date()))
            return
        assert self._in is not None
        self._in.write(_RAW[:nbytes])
        if machine.state is HANDSHAKE:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", self._remote, exc)
                self._flush()
                self._do(machine.broken())
                return
            self._flush()
            self._do(machine.handshake_done(_loop_time()))
        while machine.state is not CLOSED:
            try:
                # With a buffer, read returns the byte count (typeshed says bytes).
                count = cast(int, tls.read(READ_BUFFER_SIZE, _PLAIN_BYTES))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the client is done
                self._do(machine.peer_closed())
                return
            except ssl.SSLError as exc:
                log.debug("TLS error from %s: %s", self._remote, exc)
                self._do(machine.broken())
                return
            if not count:
                # CPython's SSLObject.read returns 0 (it does not raise SSLZeroReturnError)
                # once the peer's close_notify arrived: answer it with ours and close, or the
                # client waits out its TLS shutdown timeout (30 s in asyncio).
                self._do(machine.peer_closed())
                return
            self._do(machine.receive(_PLAIN[:count], _loop_time(), _http_date()))
        self._flush()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost releases what the request held

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._front.connections.discard(self)
        self._do(self._machine.peer_closed())
        self._machine.lost()
        self._request = None
        self._cancel()  # whatever the machine said: nothing outlives the transport

    # -- the machine's actions

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(data):
                    self._write(data)
                case Serve(head):
                    self._serve(head)
                case Body(data):
                    assert self._request is not None
                    self._request.add(data)
                case BodyEnd():
                    assert self._request is not None
                    self._request.finish()
                    self._request = None
                case Park(parked):
                    self._parked = parked
                    parked.park(self._unpark)
                case Cancel():
                    self._cancel()
                case Pause():
                    if self._transport is not None:
                        self._transport.pause_reading()
                case Resume():
                    if self._transport is not None:
                        self._transport.resume_reading()
                case Close():
                    self._close()
                case Abort():
                    self._abort()
                case Log(level, message):
                    log.log(level, "%s (client %s)", message, self._remote)
        self._rearm()

    def _serve(self, head: h1.RequestHead) -> None:
        request = Request(self, head, self._remote)
        if not request.complete:
            self._request = request
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(request), name="natsync-request")

    async def _run(self, request: Request) -> None:
        try:
            result = await self._front.handler(request)
        except Exception:
            log.exception("request handler failed")
            result = Reply(500)
        self._task = None
        self._do(self._machine.answer(result, _loop_time(), _http_date()))
        self._flush()
        if self._parked is not None and self._tls is not None:
            # Held: what OpenSSL keeps without need goes back (module docstring, Memory).
            release_buffers(self._tls)

    def _unpark(self, reply: Reply) -> None:
        self._parked = None
        self._do(self._machine.answer(reply, _loop_time(), _http_date()))
        self._flush()

    def want_body(self) -> None:
        """The handler waits for the body (Expect: 100-continue is answered now)."""
        self._do(self._machine.want_body())
        self._flush()

    def shutdown(self) -> None:
        """The listener closes (close now if idle, else after the answer in flight)."""
        self._do(self._machine.shutdown())

    def abort(self) -> None:
        """The listener's last call: drop the connection (its request is void)."""
        self._do(self._machine.broken())

    @property
    def busy(self) -> bool:
        return self._machine.busy

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._parked is not None:
            parked, self._parked = self._parked, None
            parked.cancel()

    def _rearm(self) -> None:
        """The timer, at the machine's deadline: moved earlier at once, later only when it
        fires (the machine then says the deadline moved), so a body's every read does not
        re-arm it."""
        deadline = self._machine.deadline
        timer = self._timer
        if deadline is None or self._transport is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
        elif timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self._do(self._machine.timer(_loop_time(), _http_date()))
        self._flush()

    # -- bytes out

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._tls is None:
            transport.write(data)
            return
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            log.debug("TLS write to %s failed: %s", self._remote, exc)
            self._do(self._machine.broken())
            return
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if out is not None and out.pending and self._transport is not None:
            self._transport.write(out.read())

    def _close(self) -> None:
        """Close after what was written (with a TLS close_notify)."""
        self._request = None
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._tls.unwrap()
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        self._request = None
        if self._transport is not None:
            self._transport.abort()


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Front:
    """One listening socket and its connections, serving *handler*."""

    def __init__(
        self,
        handler: Handler,
        context: ssl.SSLContext | None,
        body_limit: int,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.context = context
        #: Bytes of one request body kept at most (the handlers' largest limit).
        self.body_limit = body_limit
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.limits = Limits(header_timeout, body_timeout, KEEPALIVE_TIMEOUT, TLS_HANDSHAKE_TIMEOUT)
        #: Connections held at most (this listener's descriptor budget).
        self.max_connections = listener_budget(FRONT_DESCRIPTOR_SHARE)
        self.refused = 0
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(
        cls,
        handler: Handler,
        host: str | None,
        port: int,
        context: ssl.SSLContext | None,
        body_limit: int,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> Front:
        front = cls(handler, context, body_limit, header_timeout, body_timeout)
        loop = asyncio.get_running_loop()
        front._server = await loop.create_server(
            lambda: Connection(front), host or None, port, backlog=BACKLOG
        )
        return front

    def over_budget(self) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "%d connection(s) closed at accept: the front holds its budget of %d",
                self.refused, self.max_connections,
            )  # fmt: skip

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace: float) -> None:
        """Stop listening, close idle connections, give busy ones (held Pings included) up to
        *grace* seconds to answer, then drop what is left (their tasks are cancelled)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A bounded wait for answers in flight at shutdown (not a polling loop of the service).
        while any(conn.busy for conn in self.connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)  # let connection_lost run (tasks cancelled, holds released)
        if self._server is not None:
            await self._server.wait_closed()
