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

The rules (RFC 9112):

* Request heads are checked by the edge's strict parser (:mod:`natsync.edge.http`: CRLF line
  ends, no obs-fold, token names, one Content-Length or ``Transfer-Encoding: chunked``, never
  both, one Host, at most 16 KiB); a bad head is answered with its 400/431/501 and the
  connection closes.
* Bodies (Content-Length or chunked) are kept as they arrive, up to the front's body limit;
  the handler reads them with ``await request.read(limit)``, so it can refuse a request (401,
  413) before the body came. ``Expect: 100-continue`` is answered when the handler first waits
  for the body. A reply sent before the body was read to its end closes the connection.
* One request at a time per connection; the bytes of a pipelined next request wait (at most
  :data:`MAX_PENDING`, beyond which the connection is dropped).
* Keep-alive as HTTP/1.1 says (HTTP/1.0: only with ``Connection: keep-alive``); a connection
  idle between requests for :data:`KEEPALIVE_TIMEOUT` seconds is closed; the TLS handshake
  must end within :data:`TLS_HANDSHAKE_TIMEOUT` seconds.
* Slow clients: a request head must be whole within ``header_timeout`` seconds of its first
  byte (later bytes do not restart the clock), a body may not go ``body_timeout`` seconds
  without a byte; either is answered 408 and the connection closes. A held request (Ping) has
  sent its body: waiting for its answer is neither. Empty lines before a request line are
  ignored (RFC 9112 2.2).
* The peer going away (FIN, close_notify, reset) cancels the request's task, or releases its
  parked request at once (what aiohttp's ``handler_cancellation`` did).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast

from multidict import CIMultiDict
from yarl import URL

from natsync.edge import http as h1
from natsync.edge.http import EdgeHttpError, Framing
from natsync.fdlimit import listener_budget

log = logging.getLogger("natsync.server.front")

#: Bytes read from a socket at once, into the buffer every connection shares (a TLS record is
#: at most 16 KiB + overhead; larger reads only serve bulk uploads).
READ_BUFFER_SIZE = 64 * 1024
_RAW = memoryview(bytearray(READ_BUFFER_SIZE))
#: The shared buffer TLS decrypts into; what a request needs is copied out at once.
_PLAIN_BYTES = bytearray(READ_BUFFER_SIZE)
_PLAIN = memoryview(_PLAIN_BYTES)
#: Seconds a client gets for the TLS handshake (asyncio's and uvloop's default).
TLS_HANDSHAKE_TIMEOUT = 60.0
#: Seconds an idle keep-alive connection is kept between requests (aiohttp's default, above the
#: edge's pool idle time, so the edge closes its pooled connections first).
KEEPALIVE_TIMEOUT = 75.0
#: Bytes of a next (pipelined) request kept while one is served: one largest head.
MAX_PENDING = h1.MAX_HEAD_SIZE + 4
#: Largest declared body the head parser lets through: the handlers check their own limits
#: (413 with a log line); the front keeps at most its body limit of any body.
_NO_LIMIT = 1 << 62
#: Connections queued in the kernel before accept (aiohttp's default).
BACKLOG = 128
#: Seconds from a request head's first byte to its end (nginx's client_header_timeout).
DEFAULT_HEADER_TIMEOUT = 30.0
#: Seconds a request body may go without a byte (nginx's client_body_timeout).
DEFAULT_BODY_TIMEOUT = 60.0
#: Share of the process's open-files limit the front's connections may take (SMTP in has its
#: own share; the store, logs and the relay keep the rest). Beyond it a connection is closed
#: as soon as it is accepted: the descriptor is back at once.
FRONT_DESCRIPTOR_SHARE = 0.75

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

# Connection states.
_HANDSHAKE, _IDLE, _BODY, _BUSY, _CLOSED = range(5)


@dataclass(slots=True)
class Reply:
    """A complete response: status, headers, body (Content-Length and Date are the front's)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Parked(Protocol):
    """A request that waits without a task: :meth:`park` it with the callback that writes its
    answer (called once, on the loop), or :meth:`cancel` it when its connection went away."""

    def park(self, done: Callable[[Reply], object]) -> None: ...
    def cancel(self) -> None: ...


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
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[0], _DATE[1] = now, formatdate(now, usegmt=True).encode()
    date: bytes = _DATE[1]
    return date


def _response_head(reply: Reply, http10: bool, close: bool) -> bytes:
    status = reply.status
    parts = [b"HTTP/1.0 " if http10 else b"HTTP/1.1 ", b"%d " % status, _REASONS.get(status, b"")]
    parts.append(b"\r\n")
    for name, value in reply.headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"a line break in response header {name!r}")
        parts.append(f"{name}: {value}\r\n".encode())
    parts.append(b"Content-Length: %d\r\nDate: %s\r\nServer: natsync\r\n" % (
        len(reply.body), _http_date()))  # fmt: skip
    if close and not http10:
        parts.append(b"Connection: close\r\n")
    elif not close and http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Request:
    """One request as the handlers read it (the attributes of :class:`natsync.server.app.
    HttpRequest`); its body arrives while the handler runs."""

    __slots__ = (
        "_chunk", "_conn", "_parts", "_remaining", "_size", "_trailer", "_waiter", "_want",
        "complete", "content_length", "content_type", "expect_continue", "headers", "host",
        "http10", "keep_alive", "method", "over", "path", "query_string", "remote",
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
        self.expect_continue = (
            not self.http10 and headers.get("Expect", "").lower() == "100-continue"
        )
        self._parts: list[bytes] = []
        self._size = 0
        #: Framing state: LENGTH bytes still to come; CHUNKED: >0 data left in the chunk,
        #: 0 a size line is next, -1 the CRLF after a chunk's data, -2 the trailer section.
        self._remaining = head.length
        self._chunk = 0 if head.framing == Framing.CHUNKED else None
        self._trailer = 0
        self.complete = head.framing == Framing.NONE
        self.over = False
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0

    def forwarded_for(self) -> str:
        return ",".join(self.headers.getall("X-Forwarded-For", ()))

    async def read(self, limit: int) -> bytes:
        """The body, or its first ``limit + 1`` bytes when it is longer than *limit*."""
        if not (self.complete or self._size > limit):
            if self.expect_continue:
                self.expect_continue = False
                self._conn._write(b"HTTP/1.1 100 Continue\r\n\r\n")
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

    def feed(self, buf: bytearray) -> int:
        """Take the body bytes at the start of *buf*; how many were taken (EdgeHttpError when
        a chunked body is malformed)."""
        if self._chunk is None:
            take = min(self._remaining, len(buf))
            self._add(bytes(buf[:take]))
            self._remaining -= take
            if not self._remaining:
                self._finish()
            return take
        return self._feed_chunked(buf)

    def _feed_chunked(self, buf: bytearray) -> int:
        pos, n = 0, len(buf)
        while pos < n and not self.complete:
            chunk = self._chunk
            assert chunk is not None
            if chunk > 0:
                take = min(chunk, n - pos)
                self._add(bytes(buf[pos : pos + take]))
                pos += take
                self._chunk = chunk - take or -1
                continue
            end = buf.find(b"\r\n", pos, pos + h1.MAX_CHUNK_LINE + 2)
            if end < 0:
                if n - pos > h1.MAX_CHUNK_LINE:
                    raise EdgeHttpError(400, "chunk size line too long")
                break
            line = bytes(buf[pos:end])
            pos = end + 2
            if b"\r" in line or b"\n" in line:
                raise EdgeHttpError(400, "chunked body line without CRLF")
            if chunk == -1:
                if line:
                    raise EdgeHttpError(400, "chunk data longer than its size")
                self._chunk = 0
            elif chunk == 0:
                size, _, ext = line.partition(b";")
                if _HEX.fullmatch(size) is None or h1._BAD_VALUE.search(ext) is not None:
                    raise EdgeHttpError(400, "chunk size is not hexadecimal")
                self._chunk = int(size, 16) or -2
            elif line:
                self._trailer += len(line)
                if self._trailer > h1.MAX_TRAILER_SIZE:
                    raise EdgeHttpError(400, "chunked trailers too large")
            else:
                self._finish()
        return pos

    def _add(self, data: bytes) -> None:
        if self.over or not data:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._conn._front.body_limit:
            self.over = True  # enough to answer 413: the rest is not kept
        if self._waiter is not None and self._size > self._want and not self._waiter.done():
            self._waiter.set_result(None)

    def _finish(self) -> None:
        self.complete = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Connection(asyncio.BufferedProtocol):
    """One client connection: TLS (when the front has a context), HTTP/1.1 framing, the
    request being served (its task) or parked (its :class:`Parked`)."""

    __slots__ = (
        "_activity", "_buf", "_front", "_http10", "_in", "_keep_alive", "_out", "_parked",
        "_remote", "_request", "_state", "_task", "_timer", "_tls", "_transport",
    )  # fmt: skip

    def __init__(self, front: Front) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._buf: bytearray | None = None
        self._state = _CLOSED
        self._remote = ""
        #: The request whose body is still arriving (None once it is complete).
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._parked: Parked | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._http10 = False
        self._keep_alive = True
        #: time.monotonic() of the last body byte (the body timeout counts from it).
        self._activity = 0.0

    # -- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not registered as an asyncio.Transport subclass.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) else ""
        if len(self._front.connections) >= self._front.max_connections:
            self._front.over_budget()
            self._abort()
            return
        self._front.connections.add(self)
        context = self._front.context
        if context is None:
            self._idle()
            return
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=True)
        self._state = _HANDSHAKE
        self._timer = asyncio.get_running_loop().call_later(TLS_HANDSHAKE_TIMEOUT, self._expired)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RAW

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == _CLOSED:
            return
        tls = self._tls
        if tls is None:
            self._received(_RAW[:nbytes])
            return
        assert self._in is not None
        self._in.write(_RAW[:nbytes])
        if self._state == _HANDSHAKE:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", self._remote, exc)
                self._flush()
                self._abort()
                return
            self._flush()
            self._idle()
        while self._state != _CLOSED:
            try:
                # With a buffer, read returns the byte count (typeshed says bytes).
                count = cast(int, tls.read(READ_BUFFER_SIZE, _PLAIN_BYTES))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the client is done
                self._close()
                return
            except ssl.SSLError as exc:
                log.debug("TLS error from %s: %s", self._remote, exc)
                self._abort()
                return
            if not count:
                # CPython's SSLObject.read returns 0 (it does not raise SSLZeroReturnError)
                # once the peer's close_notify arrived: answer it with ours and close, or the
                # client waits out its TLS shutdown timeout (30 s in asyncio).
                self._close()
                return
            self._received(_PLAIN[:count])
        self._flush()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost releases what the request held

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._transport = None
        self._front.connections.discard(self)
        self._cancel_timer()
        self._buf = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._parked is not None:
            parked, self._parked = self._parked, None
            parked.cancel()
        self._request = None

    # -- requests

    def _received(self, data: memoryview) -> None:
        first = self._buf is None
        if self._buf is None:
            self._buf = bytearray(data)
        else:
            self._buf += data
        self._process()
        if first and self._state == _IDLE and self._buf:  # a head begun: its deadline starts
            self._arm(self._front.header_timeout)

    def _process(self) -> None:
        buf = self._buf
        while buf and self._state != _CLOSED:
            if self._state == _IDLE:
                try:
                    skip = h1.empty_lines(buf) if buf[:2] == b"\r\n" else 0
                    if skip:
                        if skip == len(buf):
                            break
                        del buf[:skip]
                    end = h1.head_end(buf)
                    if end < 0:
                        break
                    head = h1.parse_request_head(bytes(buf[:end]), _NO_LIMIT)
                except EdgeHttpError as exc:
                    self._refuse(exc.http_status)
                    return
                del buf[:end]
                self._start(Request(self, head, self._remote))
            elif self._state == _BODY:
                request = self._request
                assert request is not None
                try:
                    used = request.feed(buf)
                except EdgeHttpError as exc:
                    self._refuse(exc.http_status)
                    return
                del buf[:used]
                if not request.complete:
                    self._activity = time.monotonic()
                    break
                self._request = None
                self._state = _BUSY
                self._cancel_timer()
            else:  # a request is being served: what follows is the next one, kept for later
                if len(buf) > MAX_PENDING:
                    self._abort()
                    return
                break
        if self._buf is not None and not self._buf:
            self._buf = None  # an idle or held connection keeps no buffer

    def _start(self, request: Request) -> None:
        self._cancel_timer()
        self._http10 = request.http10
        self._keep_alive = request.keep_alive
        if request.complete:
            self._state = _BUSY
        else:
            self._state = _BODY
            self._request = request
            self._activity = time.monotonic()
            self._arm(self._front.body_timeout)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._serve(request), name="natsync-request")

    async def _serve(self, request: Request) -> None:
        try:
            result = await self._front.handler(request)
        except Exception:
            log.exception("request handler failed")
            result = Reply(500)
        self._task = None
        if self._state == _CLOSED:
            if not isinstance(result, Reply):
                result.cancel()
            return
        if isinstance(result, Reply):
            self._respond(result)
        else:
            self._parked = result
            result.park(self._unpark)

    def _unpark(self, reply: Reply) -> None:
        self._parked = None
        if self._state != _CLOSED:
            self._respond(reply)

    def _respond(self, reply: Reply) -> None:
        close = not self._keep_alive or self._request is not None or self._front.closing
        self._write(_response_head(reply, self._http10, close) + reply.body)
        if close:
            self._close()
            return
        self._idle()
        if self._buf:
            self._process()

    def _refuse(self, status: int) -> None:
        """Answer a request that cannot be read (its head or body framing) and close."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._write(_response_head(Reply(status), False, True))
        self._close()

    # -- connection state

    def _idle(self) -> None:
        self._state = _IDLE
        self._request = None
        self._arm(KEEPALIVE_TIMEOUT)
        if self._front.closing:
            self._close()

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._abort()
        elif self._state == _IDLE:
            if self._buf:  # a head that did not end within header_timeout
                log.info("request head from %s not whole in time; answered 408", self._remote)
                self._refuse(408)
            else:
                self._close()
        elif self._state == _BODY:
            left = self._activity + self._front.body_timeout - time.monotonic()
            if left > 0:
                self._arm(left)
                return
            log.info("request body from %s stalled; answered 408", self._remote)
            self._refuse(408)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def busy(self) -> bool:
        return self._state in (_BODY, _BUSY)

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
            self._abort()
            return
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if out is not None and out.pending and self._transport is not None:
            self._transport.write(out.read())

    def _close(self) -> None:
        """Close after what was written (with a TLS close_notify)."""
        if self._state == _CLOSED and self._transport is None:
            return
        self._state = _CLOSED
        self._cancel_timer()
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._tls.unwrap()
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        self._state = _CLOSED
        if self._transport is not None:
            self._transport.abort()


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
            if not conn.busy:
                conn._close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A bounded wait for answers in flight at shutdown (not a polling loop of the service).
        while any(conn.busy for conn in self.connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._abort()
        await asyncio.sleep(0)  # let connection_lost run (tasks cancelled, holds released)
        if self._server is not None:
            await self._server.wait_closed()
