"""The edge process's memory: glibc's mmap threshold fixed, so a held Ping costs what it writes.

Both `natsync edge run` and `natsync run`'s edge part call :func:`tune_malloc` before their event
loop starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: glibc mallopt() parameter number of M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Allocations at least this large are mmapped. uvloop gives every connection of its own TLS
#: transport (the edge ran on it before issue 27; the server still does) a 256 KiB read
#: buffer of which a held connection touches a page or two; glibc's *dynamic* threshold moves
#: such buffers onto the heap after the first one is freed, where reused pages are resident.
#: A fixed threshold keeps each one mmapped, so only the pages really written count (measured:
#: about 7 KB less per held Ping).
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> None:
    """Fix glibc's mmap threshold (see MMAP_THRESHOLD); a no-op elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        return


# -- what OpenSSL keeps per idle connection, given back once the handshake is over

#: CPython's _ssl objects (Modules/_ssl.c, the same in 3.11-3.13): after the 16-byte object
#: header a ``PySSLContext`` holds its ``SSL_CTX *``; a ``PySSLSocket`` (what an ``SSLObject``
#: wraps) holds a weak reference to its socket, then its ``SSL *`` (the C modules' view of the
#: same: natsync/edge/_ssl_layout.h).
_CTX_OFFSET = 16
_SSL_OFFSET = 24
#: Python versions whose layout that is (checked again at run time on a real object: _bind).
_LAYOUT_VERSIONS = ((3, 11), (3, 12), (3, 13))
#: The first OpenSSL release of each line whose SSL_free_buffers cannot free a buffer still in
#: use (CVE-2024-4741); with an older one nothing is called at all.
_FIXED = {(3, 0): (3, 0, 14), (3, 1): (3, 1, 6), (3, 2): (3, 2, 2), (3, 3): (3, 3, 1)}
#: OpenSSL constants (bio.h): BIO_CTRL_PENDING, BIO_C_SET_BUF_MEM, BIO_CLOSE, BIO_TYPE_MEM.
_BIO_CTRL_PENDING = 10
_BIO_C_SET_BUF_MEM = 114
_BIO_CLOSE = 1
_BIO_TYPE_MEM = 1 | 0x0400


class _OpenSSL:
    """The few libssl/libcrypto calls used here, from the libraries CPython's _ssl uses."""

    def __init__(self, lib: Any) -> None:
        import ctypes

        pointer, integer, long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        for name, args, result in (
            ("SSL_free_buffers", [pointer], integer),
            ("SSL_get_SSL_CTX", [pointer], pointer),
            ("SSL_get_rbio", [pointer], pointer),
            ("SSL_get_wbio", [pointer], pointer),
            ("BIO_method_type", [pointer], integer),
            ("BIO_ctrl", [pointer, integer, long, pointer], long),
            ("BUF_MEM_new", [], pointer),
        ):
            function = getattr(lib, name)
            function.argtypes, function.restype = args, result
        self.free_buffers = lib.SSL_free_buffers
        self.get_ctx = lib.SSL_get_SSL_CTX
        self.rbio = lib.SSL_get_rbio
        self.wbio = lib.SSL_get_wbio
        self.bio_type = lib.BIO_method_type
        self.bio_ctrl = lib.BIO_ctrl
        self.buf_mem_new = lib.BUF_MEM_new

    def shrink(self, bio: int | None) -> bool:
        """An empty memory BIO's buffer swapped for a new empty one (BIO_set_mem_buf): it keeps
        the capacity of the largest flight it ever held (the certificate chain), 1-4 KB."""
        if not bio or self.bio_type(bio) != _BIO_TYPE_MEM:
            return False
        if self.bio_ctrl(bio, _BIO_CTRL_PENDING, 0, None) != 0:
            return False
        fresh = self.buf_mem_new()
        return bool(fresh) and self.bio_ctrl(bio, _BIO_C_SET_BUF_MEM, _BIO_CLOSE, fresh) == 1


@functools.cache
def _bind() -> _OpenSSL | None:
    """The calls, once the layout above is confirmed on a real object (the SSL's context is
    the context's SSL_CTX) and OpenSSL is recent enough; else None (nothing is done)."""
    import _ssl
    import ctypes
    import ssl
    import sys

    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _LAYOUT_VERSIONS:
        return None
    # (major, minor, 0, patch, status) for OpenSSL 3 (its version number's layout)
    major, minor, _, patch, _ = ssl.OPENSSL_VERSION_INFO
    if major < 3 or (major, minor, patch) < _FIXED.get((major, minor), (3, 4, 0)):
        return None
    try:  # dlsym on _ssl's own handle searches its dependencies: its libssl and libcrypto
        openssl = _OpenSSL(ctypes.CDLL(_ssl.__file__))
    except (OSError, AttributeError):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="probe.invalid")
    ctx_pointer = ctypes.c_void_p.from_address(id(context) + _CTX_OFFSET).value
    ssl_pointer = _ssl_pointer(probe)
    if not ctx_pointer or not ssl_pointer or openssl.get_ctx(ssl_pointer) != ctx_pointer:
        return None
    return openssl


def _ssl_pointer(sslobj: Any) -> int:
    import ctypes

    raw = sslobj._sslobj  # the _ssl._SSLSocket inside an ssl.SSLObject or ssl.SSLSocket
    if type(raw) is not _ssl_socket_type():  # None: the SSLSocket was closed (its SSL freed)
        return 0
    pointer: int | None = ctypes.c_void_p.from_address(id(raw) + _SSL_OFFSET).value
    return pointer or 0


@functools.cache
def _ssl_socket_type() -> type:
    import _ssl

    return _ssl._SSLSocket  # type: ignore[attr-defined,no-any-return]


def available() -> bool:
    """Whether :func:`release_buffers` can do anything here."""
    return _bind() is not None


def release_buffers(sslobj: Any) -> int:
    """Give back what an idle TLS connection keeps without need: OpenSSL's record buffers
    (SSL_free_buffers) and, for an ``ssl.SSLObject`` (asyncio's and uvloop's TLS transports),
    the capacity of its two memory BIOs; how many of those were freed. On the edge's own
    transport (natsync.edge.transport's ``TLSObject``, or an ``ssl.SSLSocket``) OpenSSL reads
    the socket: no BIO to shrink, and a closed one has no SSL any more (0). Each is freed only
    when empty (OpenSSL declines while a record is partly read or written; a BIO with bytes
    pending is left alone) and allocated again on the next read or write, so this is safe at
    any moment between two calls into the object. 0 where it cannot be done (see _bind)."""
    openssl = _bind()
    pointer = _ssl_pointer(sslobj) if openssl is not None else 0
    if openssl is None or not pointer:
        return 0
    freed = int(openssl.free_buffers(pointer) == 1)
    return freed + openssl.shrink(openssl.rbio(pointer)) + openssl.shrink(openssl.wbio(pointer))


#: Seconds between two sweeps of BufferTrim while it holds connections: a new connection's buffers
#: are freed 1-2 s after it opened (its session tickets and the phone's request are in by then).
TRIM_INTERVAL = 1.0


class BufferTrim:
    """TLS connections whose idle buffers are given back one to two sweeps after they came.

    OpenSSL frees a connection's 17 KB read buffer when a read empties it
    (SSL_MODE_RELEASE_BUFFERS, which CPython sets) — but only after application data. A TLS
    1.3 server sends its session tickets just after the handshake; reading them fills the buffer
    and nothing frees it, so a server connection holding a Ping kept it for hours. (Memory BIOs,
    where a transport reads and writes through them, keep the capacity of the largest flight:
    the certificate chain.) Tickets arrive within a round trip of the handshake, a phone's request
    right after it: a connection added here is trimmed at the second sweep after, once, and
    then handed to its *then* (if any): its tickets are in by then.

    With *schedule* (the loop's ``call_later``) it sweeps itself every :data:`TRIM_INTERVAL`
    seconds while it holds connections, and not at all otherwise (an idle edge is not woken).
    """

    __slots__ = ("older", "schedule", "timer", "young")

    def __init__(self, schedule: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.young: list[tuple[Any, Callable[[Any], object] | None]] = []
        self.older: list[tuple[Any, Callable[[Any], object] | None]] = []
        self.schedule = schedule
        self.timer: Any = None

    def add(self, sslobj: Any, then: Callable[[Any], object] | None = None) -> None:
        if sslobj is not None:
            self.young.append((sslobj, then))
            if self.timer is None and self.schedule is not None:
                self.timer = self.schedule(TRIM_INTERVAL, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.sweep()
        if (self.young or self.older) and self.schedule is not None:
            self.timer = self.schedule(TRIM_INTERVAL, self._tick)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def sweep(self) -> int:
        """Trim the connections added before the last sweep; how many buffers were freed."""
        freed = 0
        for sslobj, then in self.older:
            freed += release_buffers(sslobj)
            if then is not None:
                then(sslobj)
        self.older, self.young = self.young, []
        if freed:
            trim_heap()
        return freed


def trim_heap() -> None:
    """glibc's malloc_trim(0): whole free pages inside the heap go back to the kernel."""
    _malloc_trim()(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int]:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else _no_trim
    except (OSError, AttributeError):  # not glibc
        return _no_trim


def _no_trim(pad: int) -> int:
    return 0
