"""The edge side of one TLS connection read through natsync.edge._tlsio (C, read_ahead on) or
through CPython's ``_ssl`` (the Python reference), fed the same peer bytes: what each delivers
and how each ends. Shared by tests/edge/test_tlsio.py and fuzz/fuzz_edge_tlsio.py."""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any

from natsync.edge import transport
from natsync.edge.transport import TLSObject

NAME = "mail.example.test"
#: What the peer may send in one go without the socket pair blocking.
MAX_PEER_BYTES = 64 * 1024


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[socket.socket, socket.socket, TLSObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A finished handshake over a socket pair: (edge socket, peer socket, the edge's TLS
    object, the peer's SSLObject, the peer's incoming and outgoing BIOs)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    tls = TLSObject(ours, server, True)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer = client.wrap_bio(incoming, outgoing, server_hostname=NAME)
    peer_done = edge_done = False
    for _ in range(20):
        if not peer_done:
            with contextlib.suppress(ssl.SSLWantReadError):
                peer.do_handshake()
                peer_done = True
        theirs.sendall(outgoing.read())
        if not edge_done:
            with contextlib.suppress(ssl.SSLWantReadError):
                tls._sslobj.do_handshake()
                edge_done = True
        theirs.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            incoming.write(theirs.recv(MAX_PEER_BYTES))
        theirs.setblocking(True)
        if peer_done and edge_done:
            return ours, theirs, tls, peer, incoming, outgoing
    raise AssertionError("the handshake did not finish")


def read_all(raw: Any, use_c: bool) -> tuple[bytes, str]:
    """Read until OpenSSL wants more bytes: the plaintext and how it stopped ("want", "eof",
    or the exception's class name)."""
    buffer = bytearray(16 * 1024)
    got = bytearray()
    c = transport.tlsio
    while True:
        try:
            if use_c:
                n = c.read(raw, buffer)
                if n == -1:
                    return bytes(got), "want"
                if n == 0:
                    return bytes(got), "eof"
                assert n > 0, n
            else:
                n = raw.read(len(buffer), buffer)
                if n == 0:  # _ssl's word for the peer's close_notify
                    return bytes(got), "eof"
        except ssl.SSLWantReadError:
            return bytes(got), "want"
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return bytes(got), "eof"
        except OSError as exc:
            return bytes(got), type(exc).__name__
        got += buffer[:n]


def drive(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    use_c: bool,
    pieces: list[bytes],
    garbage: bytes,
    close_notify: bool,
    fin: bool,
) -> tuple[bytes, str]:
    """The peer writes *pieces* (one TLS record each), maybe its close_notify, then *garbage*
    as raw bytes, all in one send, maybe then FIN; what the edge side reads."""
    ours, theirs, tls, peer, _incoming, outgoing = handshake(server, client)
    try:
        if use_c:
            transport.tlsio.set_read_ahead(tls._sslobj)
        for piece in pieces:
            peer.write(piece)
        if close_notify:
            with contextlib.suppress(ssl.SSLWantReadError):
                peer.unwrap()
        theirs.sendall(outgoing.read() + garbage)
        if fin:
            theirs.shutdown(socket.SHUT_WR)
        return read_all(tls._sslobj, use_c)
    finally:
        tls._sslobj = None
        ours.close()
        theirs.close()
