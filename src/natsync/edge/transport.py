"""The edge's own TLS transport: OpenSSL reads and writes the socket itself (issue 27).

uvloop's TLS transport runs every connection through two OpenSSL memory BIOs and a Python
``SSLProtocol``: per connection a 256 KiB read buffer (one page of it touched), the protocol and
app-transport objects, the BIOs and their capacity, and ~200 µs of Python per new connection
(docs/edge.md, "Speed"). Here each connection is a non-blocking socket with CPython's C TLS
object on it (:class:`TLSObject`; OpenSSL's socket BIO ``recv``\\ s and ``send``\\ s the
descriptor itself) driven by the loop's ``add_reader`` / ``add_writer``, and
:class:`TLSTransport` gives the edge's protocols what they use of an ``asyncio.Transport``:

* **reads**: OpenSSL decrypts straight into the protocol's ``get_buffer()``
  (``BufferedProtocol``; ``data_received`` protocols get bytes). One read per readiness event,
  more only while OpenSSL holds decrypted bytes (``pending()``): OpenSSL reads no further than
  the record it returns (``read_ahead`` off, CPython's default), and the loop's polling is
  level-triggered, so whatever else the kernel holds wakes the reader again.
* **writes**: written at once; what the socket does not take is kept, and the write OpenSSL
  began is retried with the same bytes (``SSL_ERROR_WANT_WRITE``: CPython sets
  ``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER``, not partial writes). ``pause_writing`` /
  ``resume_writing`` at the high / low water marks, as asyncio's transports.
* **close**: the buffer flushed, then ``close_notify`` sent and the peer's awaited (what it sends
  meanwhile is discarded), all within :data:`SHUTDOWN_TIMEOUT`; ``abort`` closes at once.
  ``connection_lost`` comes from the loop, never from inside a call into the transport.

:class:`TLSServer` accepts on listening sockets and hands each connection, once its handshake is
done within the timeout, to a new protocol; :func:`connect_tls` makes the server leg's TLS
connection over a connected socket (session resumption through ``session=``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from natsync.cert.client_hello import (
    INCOMPLETE,
    ClientHello,
    ClientHelloError,
    parse_client_hello,
)
from natsync.edge.http import PURE_PYTHON_ENV
from natsync.edge.tickets import _tickets

log = logging.getLogger("natsync.edge")

#: Seconds a closing connection gets to take its last bytes and exchange ``close_notify``
#: (asyncio's and uvloop's ``ssl_shutdown_timeout`` default); then it is closed regardless.
SHUTDOWN_TIMEOUT = 30.0
#: Connections accepted per readiness event of a listening socket: a burst of reconnecting
#: phones is taken in batches, with the loop's other work in between.
ACCEPT_BATCH = 64
#: Seconds before accepting again after the process ran out of descriptors (EMFILE and kin):
#: the kernel keeps the connections queued meanwhile.
ACCEPT_RETRY = 0.1
#: Bytes of a ClientHello peeked at for its ALPN offer (TLS-ALPN-01, RFC 8737 section 3); a
#: longer one is left to SNI alone (natsync.cert.client_hello.MAX_HELLO bounds the parse).
PEEK_LIMIT = 16 * 1024
#: Seconds between two peeks at a ClientHello that came in pieces (peeking leaves the bytes in
#: the kernel, so readiness would fire at once again: poll slowly instead).
PEEK_RETRY = 0.02
#: asyncio's default write-buffer high-water mark (its low-water mark is a quarter of it).
HIGH_WATER = 64 * 1024

_WantRead = ssl.SSLWantReadError
_WantWrite = ssl.SSLWantWriteError
_Buffered = asyncio.BufferedProtocol
_MSG_PEEK = socket.MSG_PEEK
_socket_recv = socket.socket.recv
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
#: Errors of accept() that mean "no descriptors or memory left", not "this one connection".
_ACCEPT_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

#: The C steps of a new connection (natsync/edge/_tickets.c), or None: not built, or
#: ``NATSYNC_PURE_PYTHON`` set (then new connections are accepted and handshaken by the
#: Python reference alone, as natsync.edge.http's parsers run without their C part).
_c_tls: Any = None if os.environ.get(PURE_PYTHON_ENV) else _tickets
# what _tickets.handshake_step answers
_STEP_DONE, _STEP_READ, _STEP_WRITE, _STEP_FAILED = 0, 1, 2, 3

# what the reader and writer are waiting for (TLSTransport._wait)
_OPEN, _CLOSING, _SHUTDOWN, _CLOSED = 0, 1, 2, 3


class TLSObject:
    """One connection's TLS state as the edge sees it: what ``get_extra_info("ssl_object")``
    gives and what the SNI callback gets (its ``context`` set there; ``client_hello`` when the
    ClientHello was peeked at). It holds the C ``_ssl._SSLSocket`` (``_sslobj``, as
    ``ssl.SSLSocket`` does, so natsync.edge.memory finds its ``SSL *`` the same way) made by
    the context's ``_wrap_socket`` on the plain socket: ``ssl.SSLSocket``'s Python constructor
    cost 37 µs per connection (it re-creates the socket object, asks the kernel whether it is
    connected, sets its timeout twice) and a ``__dict__``; this costs the C call alone."""

    __slots__ = ("__weakref__", "_sslobj", "client_hello")

    client_hello: ClientHello

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        if server_hostname is not None:  # as ssl.py does (IDNA, checked)
            server_hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined]
        self._sslobj: Any = context._wrap_socket(  # type: ignore[attr-defined]
            sock, server_side, server_hostname, owner=self, session=session
        )

    @property
    def context(self) -> ssl.SSLContext:
        return self._sslobj.context  # type: ignore[no-any-return]

    @context.setter
    def context(self, context: ssl.SSLContext) -> None:
        self._sslobj.context = context

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._sslobj.session if self._sslobj is not None else None

    @property
    def session_reused(self) -> bool:
        return bool(self._sslobj.session_reused)

    @property
    def server_side(self) -> bool:
        return bool(self._sslobj.server_side)

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._sslobj.getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return self._sslobj.cipher()  # type: ignore[no-any-return]

    def version(self) -> str | None:
        return self._sslobj.version()  # type: ignore[no-any-return]

    def selected_alpn_protocol(self) -> str | None:
        return self._sslobj.selected_alpn_protocol()  # type: ignore[no-any-return]


def _load_tlsio() -> Any:
    """natsync.edge._tlsio (the reads and writes in C, read_ahead on) when it is built, not
    switched off (``NATSYNC_PURE_PYTHON``) and it finds CPython's ``_ssl`` laid out as it reads
    it (checked on a real object); else None: the transport goes through ``_ssl`` alone."""
    if os.environ.get(PURE_PYTHON_ENV):
        return None
    try:
        from natsync.edge import _tlsio
    except ImportError:  # pragma: no cover - a build without a C compiler or libssl's headers
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="probe.invalid")
    raw = probe._sslobj  # type: ignore[attr-defined]
    configured = _tlsio.configure(type(raw), raw, context, ssl.SSLError, ssl.SSLEOFError)
    return _tlsio if configured else None


#: The C reads and writes, or None (see :func:`_load_tlsio`).
tlsio: Any = _load_tlsio()


class TLSTransport(asyncio.Transport):
    """One TLS connection whose handshake is done, as an ``asyncio.Transport`` to its protocol.

    With :data:`tlsio` (C), OpenSSL's ``read_ahead`` is on (a phone's from its ClientHello on,
    TLSServer.serve; a server leg's from here): one ``recv`` per readiness event instead of two
    per record (the record's 5-byte header, then its body), reads and writes without a Python
    exception for "want read", and what OpenSSL holds asked by ``SSL_has_pending`` (records read
    ahead count, not only the rest of the current one)."""

    __slots__ = (
        "_buffered",
        "_c",
        "_fd",
        "_half_closed",
        "_high",
        "_inflight",
        "_loop",
        "_low",
        "_paused",
        "_protocol",
        "_queue",
        "_raw",
        "_read_wants_write",
        "_sock",
        "_state",
        "_timer",
        "_tls",
        "_write_paused",
        "_write_wants_read",
        "_writing",
        "_wsize",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        tls: TLSObject,
        protocol: asyncio.BaseProtocol,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._tls = tls
        #: the ``_ssl._SSLSocket`` (its read/write/pending/shutdown, without ssl.py's frames)
        self._raw: Any = tls._sslobj
        self._protocol: Any = protocol
        self._buffered = isinstance(protocol, _Buffered)
        #: the C reads and writes (natsync.edge._tlsio), or None
        self._c: Any = tlsio
        if tlsio is not None:
            tlsio.set_read_ahead(self._raw)
        self._state = _OPEN
        #: reading paused by the protocol
        self._paused = False
        #: the protocol was told to pause writing
        self._write_paused = False
        #: the writer is registered
        self._writing = False
        #: the bytes of a write OpenSSL began and must finish with the same bytes
        self._inflight: bytes | None = None
        self._queue: list[bytes] = []
        self._wsize = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._read_wants_write = False
        self._write_wants_read = False
        self._timer: asyncio.TimerHandle | None = None
        #: the reader waits for the peer's close_notify (calls _shutdown)
        self._half_closed = False

    def start(self) -> None:
        """Tell the protocol, then read (also what OpenSSL may hold already)."""
        self._protocol.connection_made(self)
        if self._state == _OPEN and not self._paused:
            self._loop.add_reader(self._fd, self._read_ready)
            if self._pending():
                self._loop.call_soon(self._read_ready)

    def _pending(self) -> bool:
        """Whether OpenSSL holds bytes or records the kernel will not wake the reader for."""
        c = self._c
        return bool(c.pending(self._raw) if c is not None else self._raw.pending())

    # -- reading

    def _read_ready(self) -> None:
        if self._write_wants_read:
            self._write_wants_read = False
            self._write_ready()
        if self._state != _OPEN or self._paused:
            if self._paused and self._state == _OPEN:
                self._loop.remove_reader(self._fd)  # it was there for a write's sake only
            return
        raw = self._raw
        protocol = self._protocol
        c = self._c
        try:
            while True:
                if self._buffered:
                    buffer = protocol.get_buffer(-1)
                    if c is not None:
                        nbytes = c.read(raw, buffer)
                        if nbytes <= 0:  # 0: EOF; -1: want read; -2: want write
                            if nbytes == -2:
                                raise _WantWrite
                            if nbytes == 0:
                                self._eof()
                            return
                    else:
                        nbytes = raw.read(len(buffer), buffer)
                        if not nbytes:
                            self._eof()
                            return
                    protocol.buffer_updated(nbytes)
                else:
                    data = raw.read(HIGH_WATER)
                    if not data:
                        self._eof()
                        return
                    protocol.data_received(data)
                if self._state != _OPEN or self._paused:
                    return
                if not (c.pending(raw) if c is not None else raw.pending()):
                    return
        except Exception as exc:
            self._read_failed(exc)

    def _read_failed(self, exc: Exception) -> None:
        """How a read that raised ends (also C's: natsync.edge._steady reads the usual way
        itself and hands what raised to this)."""
        if isinstance(exc, _WantRead):
            return
        if isinstance(exc, _WantWrite):  # OpenSSL must send before it reads on (not in TLS 1.3)
            self._read_wants_write = True
            self._add_writer()
        elif isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):  # TCP closed without it
            self._eof()
        elif isinstance(exc, OSError):
            self._fatal(exc)
        else:  # the protocol's own failure: logged, the connection ends
            log.error("edge connection %d: the protocol failed on a read", self._fd, exc_info=exc)
            self._finish(exc)

    def _eof(self) -> None:
        if self._state == _OPEN:
            keep_open = self._protocol.eof_received()
            if self._state != _OPEN:  # the protocol closed it: close() has the reader now
                return
            if not keep_open:
                self.close()  # its shutdown ends at once: the peer is done
                return
        self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if self._paused:
            return
        self._paused = True
        if self._state == _OPEN:
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._state == _OPEN:
            self._loop.add_reader(self._fd, self._read_ready)
            if self._pending():
                self._loop.call_soon(self._read_ready)

    def is_reading(self) -> bool:
        return self._state == _OPEN and not self._paused

    # -- writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or not data:
            return
        if self._wsize:
            self._queue.append(bytes(data))
            self._wsize += len(data)
        else:
            c = self._c
            try:
                if c is None:
                    self._raw.write(data)
                    return
                done = c.write(self._raw, data)  # 1: written; -1 / -2: want read / write
                if done == 1:
                    return
            except _WantWrite:
                done = -2
            except _WantRead:
                done = -1
            except OSError as exc:
                self._fatal(exc)
                return
            self._unwritten(data, done)
            return
        if not self._write_paused and self._wsize > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _unwritten(self, data: bytes | bytearray | memoryview, done: int) -> None:
        """A write OpenSSL began and did not finish (*done*: -1 it wants to read first, -2 the
        socket is full): kept to be written again with the same bytes (also C's:
        natsync.edge._steady writes the usual answer itself and calls this when it did not go)."""
        if done == -2:
            self._add_writer()
        else:
            self._write_wants_read = True
            self._loop.add_reader(self._fd, self._read_ready)
        self._inflight = bytes(data)
        self._wsize = len(data)
        if not self._write_paused and self._wsize > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _add_writer(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _remove_writer(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _write_ready(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            self._loop.call_soon(self._read_ready)
        if self._state == _SHUTDOWN:
            self._shutdown()
            return
        raw = self._raw
        while self._inflight is not None:
            try:
                raw.write(self._inflight)
            except _WantWrite:
                self._add_writer()
                return
            except _WantRead:
                self._remove_writer()
                self._write_wants_read = True
                self._loop.add_reader(self._fd, self._read_ready)
                return
            except OSError as exc:
                self._fatal(exc)
                return
            self._wsize -= len(self._inflight)
            queue = self._queue
            if queue:
                self._inflight = queue[0] if len(queue) == 1 else b"".join(queue)
                queue.clear()
            else:
                self._inflight = None
        self._remove_writer()
        if self._write_paused and self._wsize <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._state == _CLOSING:
            self._shutdown()

    def get_write_buffer_size(self) -> int:
        return self._wsize

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close (as asyncio's and uvloop's TLS transports)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS transports cannot write EOF; close them")

    # -- closing

    def is_closing(self) -> bool:
        return self._state != _OPEN

    def close(self) -> None:
        """Send what is buffered, then close_notify, then close (bounded by SHUTDOWN_TIMEOUT)."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._timer = self._loop.call_later(SHUTDOWN_TIMEOUT, self._finish, None)
        if self._wsize:  # nothing read until the rest is written (then _shutdown)
            self._loop.remove_reader(self._fd)
            return
        # The reader stays, now for the peer's close_notify: uvloop drops a descriptor's poll
        # handle with its last callback and makes another on the next add (three epoll_ctl and
        # an ioctl more per connection). Should this run in the callback uvloop makes for an
        # error event, that handle is closed after it: _shutdown then fails on the error (its
        # _finish removes the reader), or at worst the timer above ends the connection.
        self._half_closed = True
        self._loop.add_reader(self._fd, self._shutdown)
        self._shutdown()

    def _shutdown(self) -> None:
        """Our close_notify out, the peer's in (OpenSSL discards data that comes before it)."""
        if self._state == _CLOSING:
            self._state = _SHUTDOWN
        try:
            self._raw.shutdown()
        except _WantRead:  # ours is out; the peer's is awaited (no FIN before it: a peer on
            # uvloop's TLS transport that has paused reading drops the last bytes on a FIN)
            self._remove_writer()
            if not self._half_closed:
                self._half_closed = True
                self._loop.add_reader(self._fd, self._shutdown)
            return
        except _WantWrite:
            self._add_writer()
            return
        except OSError:  # the peer is gone: nothing more to say
            pass
        self._finish(None)

    def abort(self) -> None:
        self._finish(None)

    def _fatal(self, exc: OSError) -> None:
        log.debug("TLS connection %d failed: %s", self._fd, exc)
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        loop = self._loop
        loop.remove_reader(self._fd)
        self._remove_writer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._inflight = None
        self._wsize = 0
        self._tls._sslobj = None  # OpenSSL's SSL goes with its last reference
        self._sock.close()
        loop.call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    # -- what the protocols ask

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._sock
        try:
            if name == "ssl_object":
                return self._tls
            if name == "peername":
                return sock.getpeername()
            if name == "sockname":
                return sock.getsockname()
            if name == "socket":
                return sock
            if name == "sslcontext":
                return self._tls.context
            if name == "peercert":
                return self._tls.getpeercert()
            if name == "cipher":
                return self._tls.cipher()
        except (OSError, ValueError, AttributeError):  # closed: no socket, no TLS object
            return default
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def __del__(self) -> None:  # asyncio's transports warn here; this one has nothing to say
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, _Buffered)


class _Handshake:
    """One TLS handshake in progress on a non-blocking socket, with its deadline: a timer of its
    own (*timeout*; connect_tls), or *deadline* (loop time) kept by its TLSServer, whose one
    timer serves every handshake in progress (a timer per connection cost a TimerHandle and a
    libuv timer started and stopped for each new phone)."""

    __slots__ = (
        "c_step",
        "deadline",
        "done",
        "fd",
        "keep_reader",
        "live",
        "loop",
        "peeked",
        "sock",
        "timer",
        "tls",
        "waiting",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        tls: TLSObject,
        timeout: float,
        done: Callable[[_Handshake, BaseException | None], None],
        peek: bool = False,
        deadline: float | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.tls = tls
        self.fd = sock.fileno()
        self.done = done
        #: not ended yet
        self.live = True
        #: 0: nothing registered, 1: the reader, 2: the writer
        self.waiting = 0
        #: the ClientHello still to be peeked at (TLS-ALPN-01), or not
        self.peeked = not peek
        self.deadline = deadline
        #: the C step (_tickets.handshake_step), set by TLSServer; None: the Python reference
        self.c_step: Callable[[Any], int] | None = None
        #: _tickets.hung_up when the reader may stay for the transport (TLSServer, C steps:
        #: its done starts the transport at once), else None: see _end
        self.keep_reader: Callable[[int], bool] | None = None
        self.timer: asyncio.TimerHandle | None = (
            loop.call_later(timeout, self.expire, timeout) if deadline is None else None
        )

    def wait_read(self) -> None:
        if self.waiting != 1:
            if self.waiting == 2:
                self.loop.remove_writer(self.fd)
            self.loop.add_reader(self.fd, self.step)
            self.waiting = 1

    def _wait_write(self) -> None:
        if self.waiting != 2:
            if self.waiting == 1:
                self.loop.remove_reader(self.fd)
            self.loop.add_writer(self.fd, self.step)
            self.waiting = 2

    def unwait(self) -> None:
        if self.waiting == 1:
            self.loop.remove_reader(self.fd)
        elif self.waiting == 2:
            self.loop.remove_writer(self.fd)
        self.waiting = 0

    def step(self) -> None:
        if not self.live:
            return
        if not self.peeked and not self._peek():
            return
        raw = self.tls._sslobj
        if self.c_step is not None:  # what to wait for, without an exception per "not yet"
            state = self.c_step(raw)
            if state == _STEP_READ:
                self.wait_read()
                return
            if state == _STEP_WRITE:
                self._wait_write()
                return
            if state == _STEP_DONE:
                self._done()
                return
            # failed: do_handshake() again raises CPython's error from OpenSSL's queue
        try:
            raw.do_handshake()
        except _WantRead:
            self.wait_read()
            return
        except _WantWrite:
            self._wait_write()
            return
        except OSError as exc:
            self._end(exc)
            return
        self._done()

    def _done(self) -> None:
        if hasattr(self.tls, "client_hello"):
            del self.tls.client_hello  # read by the SNI callback only
        self._end(None)

    def _peek(self) -> bool:
        """Read the ClientHello's ALPN offer without taking it from the kernel (the SNI callback
        asks ``offers_acme_tls``); False while it is not all there yet."""
        try:
            data = _socket_recv(self.sock, PEEK_LIMIT, _MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self.wait_read()
            return False
        except OSError as exc:
            self._end(exc)
            return False
        if not data:
            self._end(ConnectionResetError("the client closed before its ClientHello"))
            return False
        try:
            hello = parse_client_hello(data)
        except ClientHelloError as exc:
            log.debug("ClientHello not readable (%s): choosing by SNI alone", exc.message)
            hello = None
        if hello is INCOMPLETE and len(data) < PEEK_LIMIT:
            self.unwait()  # the bytes stay in the kernel: readiness would fire at once
            self.loop.call_later(PEEK_RETRY, self.step)
            return False
        self.peeked = True
        if isinstance(hello, ClientHello):
            self.tls.client_hello = hello
        return True

    def expire(self, timeout: float) -> None:
        self._end(TimeoutError(f"no TLS handshake within {timeout:g} s"))

    def abort(self) -> None:
        self._end(ConnectionAbortedError("closed during the TLS handshake"))

    def _end(self, exc: BaseException | None) -> None:
        if not self.live:
            return
        self.live = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # A phone's reader stays for its transport (keep_reader), which puts its own callback
        # on the same uvloop poll handle: removing it and adding another drops the handle and
        # makes a new one (three epoll_ctl calls and an ioctl more). Not when an error or
        # hang-up is pending: the callback uvloop runs for an error event (the phone's
        # Finished, then its RST) closes the handle after it, and a transport registered there
        # would never be read, leaving a dead handle for the next connection on its descriptor.
        # Then, and on failure, the reader goes and the transport makes a new handle.
        keep = self.keep_reader
        if exc is None and keep is not None and self.waiting == 1 and not keep(self.fd):
            self.waiting = 0  # the transport's add_reader replaces the callback
        else:
            self.unwait()
        if exc is not None:
            self.tls._sslobj = None
            self.sock.close()
        self.done(self, exc)


class TLSServer:
    """TLS connections accepted on *sockets* (listening, non-blocking), each handed to a new
    protocol once its handshake is done within *handshake_timeout*; what ``asyncio.Server``
    offers the edge (``sockets``, ``close``, ``wait_closed``)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        handshake_timeout: float,
        *,
        peek_hello: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sockets = sockets
        self.context = context
        self.protocol_factory = protocol_factory
        self.handshake_timeout = handshake_timeout
        self.peek_hello = peek_hello
        #: handshakes in progress, with the factory of each one's protocol, oldest first (one
        #: timeout for all: the first one's deadline is the earliest)
        self.handshakes: dict[_Handshake, Callable[[], asyncio.BaseProtocol]] = {}
        #: the one timer at the oldest handshake's deadline
        self._deadline_timer: asyncio.TimerHandle | None = None
        #: the C steps of a new connection (natsync.edge._tickets), or None: the Python ones
        self.c_accept: Callable[[int], int] | None = _c_tls.accept if _c_tls else None
        self.c_step: Callable[[Any], int] | None = _c_tls.handshake_step if _c_tls else None
        #: the reader kept from handshake to transport (C steps only; see _Handshake._end)
        self.keep_reader: Callable[[int], bool] | None = _c_tls.hung_up if _c_tls else None
        self.failed_handshakes = 0
        self.serving = False

    def start(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self.loop.add_reader(listener.fileno(), self._accept, listener)
        self.serving = True

    def _accept(self, listener: socket.socket) -> None:
        c_accept = self.c_accept
        fd = listener.fileno()
        family = listener.family
        for _ in range(ACCEPT_BATCH):
            try:
                if c_accept is None:
                    conn, _address = listener.accept()
                else:  # non-blocking from accept4 on: no ioctl, no exception at the end
                    new = c_accept(fd)
                    if new < 0:
                        return
                    conn = socket.socket(family, _NONBLOCKING_STREAM, 0, new)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:
                    log.error("cannot accept phone connections: %s; retrying shortly", exc)
                    self.loop.remove_reader(listener.fileno())
                    self.loop.call_later(ACCEPT_RETRY, self._resume_accepting, listener)
                    return
                continue  # that one connection (ECONNABORTED and the like)
            self.serve(conn, self.protocol_factory)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self.serving and listener.fileno() >= 0:
            self.loop.add_reader(listener.fileno(), self._accept, listener)

    def serve(self, conn: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        """Serve TLS on the accepted socket *conn* (also one accepted elsewhere: the relayed
        listener's, after its PROXY header) with a protocol from *factory*. The first step is
        taken at once: a phone sends its ClientHello with the connection, so it is usually
        there already (else OpenSSL's read finds nothing and the reader waits for it)."""
        try:
            if conn.gettimeout() != 0:
                conn.setblocking(False)
            tls = TLSObject(conn, self.context, True)
        except OSError as exc:  # the client already left
            log.debug("TLS connection not started: %s", exc)
            conn.close()
            return
        loop = self.loop
        deadline = loop.time() + self.handshake_timeout
        handshake = _Handshake(
            loop, conn, tls, self.handshake_timeout, self._handshaken, self.peek_hello, deadline
        )
        handshake.c_step = self.c_step
        handshake.keep_reader = self.keep_reader
        if self.c_step is not None and tlsio is not None:
            # one recv per flight, not two per record (header, body), as nginx reads; what
            # it reads past the Finished waits in OpenSSL for the transport (start: _pending)
            tlsio.set_read_ahead(tls._sslobj)
        self.handshakes[handshake] = factory
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._expire)
        handshake.step()

    def _expire(self) -> None:
        """End the handshakes past their deadline; the timer again for the oldest one left."""
        self._deadline_timer = None
        now = self.loop.time()
        while self.handshakes:
            oldest = next(iter(self.handshakes))
            deadline = oldest.deadline or now
            if deadline > now:
                self._deadline_timer = self.loop.call_at(deadline, self._expire)
                return
            oldest.expire(self.handshake_timeout)  # removes it (_handshaken)

    def _handshaken(self, handshake: _Handshake, exc: BaseException | None) -> None:
        factory = self.handshakes.pop(handshake)
        if exc is not None:
            self.failed_handshakes += 1
            log.debug("TLS handshake failed: %s", exc)
            return
        try:
            transport = TLSTransport(self.loop, handshake.sock, handshake.tls, factory())
        except Exception:  # no protocol: nothing may stay registered on the descriptor
            log.exception("edge: no protocol for a new TLS connection; closing it")
            self.loop.remove_reader(handshake.fd)
            handshake.sock.close()
            return
        transport.start()

    def close(self) -> None:
        """Stop accepting and drop the handshakes in progress (open connections stay)."""
        if not self.serving:
            return
        self.serving = False
        for listener in self.sockets:
            if listener.fileno() >= 0:
                self.loop.remove_reader(listener.fileno())
            listener.close()
        for handshake in list(self.handshakes):
            handshake.abort()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    async def wait_closed(self) -> None:
        return None


async def connect_tls(
    factory: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str | None,
    timeout: float,
    session: ssl.SSLSession | None = None,
) -> TLSTransport:
    """TLS as the client over the connected non-blocking *sock* (owned from here on: closed on
    failure), offering *session*; the transport, its protocol from *factory* told. Raises
    ``TimeoutError`` after *timeout* seconds, ``ssl.SSLError`` or ``OSError``."""
    loop = asyncio.get_running_loop()
    try:
        sock.getpeername()  # reset meanwhile: say so (OpenSSL would say "EOF")
        tls = TLSObject(sock, context, False, server_hostname, session)
    except OSError:
        sock.close()
        raise ConnectionResetError(
            "the server closed the connection before the TLS handshake"
        ) from None
    except BaseException:
        sock.close()
        raise
    finished: asyncio.Future[None] = loop.create_future()

    def done(_handshake: _Handshake, exc: BaseException | None) -> None:
        if not finished.done():
            if exc is None:
                finished.set_result(None)
            else:
                finished.set_exception(exc)

    handshake = _Handshake(loop, sock, tls, timeout, done)
    handshake.step()
    try:
        await finished
    except asyncio.CancelledError:
        handshake.abort()
        raise
    transport = TLSTransport(loop, sock, tls, factory())
    transport.start()
    return transport


def listen_sockets(
    host: str | None, port: int, backlog: int, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening sockets as asyncio's ``create_server`` makes them: one per address of *host*
    (None: every address of both families, on one port when *port* is 0), IPv6 ones IPv6 only,
    ``SO_REUSEADDR`` (and ``SO_REUSEPORT`` when asked: the workers share the port)."""
    from natsync.base.listen import listen_port

    port = listen_port(host, port)
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)  # fmt: skip
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
