"""The edge's pooled server connections when the server closes one (issue 27: a Sync through the
edge answered 502 during the 100,000-held-Ping bench).

A keep-alive server connection the server closed while it sat in the edge's pool can look
alive to the edge: the server's FIN is in the socket, not yet read by the event loop. A request
written on it gets only the close, and the phone a 502. These tests make exactly that window,
with real TLS and real sockets: the server (a blocking TLS server in a thread, so that it acts
while the edge's event loop is blocked) closes the pooled connection, and the edge must see it
before it writes a request there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from natsync.edge import start_edge
from tests.edge.conftest import PUBLIC_NAME, EdgeFactory, Pki, edge_config, status_of

EAS = b"/Microsoft-Server-ActiveSync"
SYNC = EAS + b"?Cmd=Sync&User=alice&DeviceId=D1&DeviceType=T"
#: Seconds the tests block the edge's event loop so that the server's FIN is in the socket
#: but not yet seen by the loop.
SETTLE = 0.2


def content_length(head: bytes) -> int:
    """A message head's Content-Length (0 without one)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@dataclass
class ClosingServer:
    """A TLS server that answers every request keep-alive and closes its connections on demand
    (as a server whose keep-alive ran out, or that restarts, does)."""

    context: ssl.SSLContext
    listener: socket.socket = field(default_factory=socket.socket)
    conns: list[ssl.SSLSocket] = field(default_factory=list)
    requests: int = 0
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set when a request head came (its body may still be arriving).
    head_seen: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            conn = self.context.wrap_socket(raw, server_side=True)
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.head_seen.set()
                length = content_length(head)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                with self.lock:
                    self.requests += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def wait_request_started(self) -> bool:
        return self.head_seen.wait(5.0)

    def close_all(self) -> None:
        """Close every connection now (a FIN; a request arriving later gets a reset)."""
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@pytest.fixture
def closing_server(pki: Pki) -> Iterator[ClosingServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server = ClosingServer(context)
    server.listener.bind(("127.0.0.1", 0))
    server.listener.listen(16)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.listener.close()
    server.close_all()


def block_loop() -> None:
    """Block the edge's event loop (the test's own) for SETTLE seconds: what the sockets get
    meanwhile waits for the loop, in the order it came."""
    time.sleep(SETTLE)  # on purpose: the loop must not run


def phone(pki: Pki, port: int) -> ssl.SSLSocket:
    """A blocking TLS connection to the edge (made in a thread: the edge's loop must run)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return pki.client_context().wrap_socket(raw, server_hostname=PUBLIC_NAME)


def read_response(conn: ssl.SSLSocket) -> bytes:
    """One response with a Content-Length body (or what came before the edge closed)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return buf
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    length = content_length(head)
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            break
        body += data
    return head + b"\r\n\r\n" + body


def sync(body: bytes = b"x") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
        SYNC,
        len(body),
        body,
    )


async def test_a_pooled_connection_the_server_closed_is_not_handed_out(
    pki: Pki, closing_server: ClosingServer, make_edge: EdgeFactory
) -> None:
    running = await make_edge(edge_config(pki, closing_server.port))
    conn = await asyncio.to_thread(phone, pki, running.port)
    with conn:
        await asyncio.to_thread(conn.sendall, sync())
        assert status_of(await asyncio.to_thread(read_response, conn)) == 200
        pool = running.edge.pool
        server = running.edge.balancer.servers[0]
        assert pool.pooled == 1
        closing_server.close_all()
        block_loop()  # the FIN is in the socket, unread by the edge
        assert pool.take(server) is None
        assert running.edge.metrics.backend_errors.get("closed_idle") == 1


async def sync_racing_a_close(pki: Pki, closing_server: ClosingServer) -> bytes:
    """The bench's race: the phone's Sync is read by the edge before the server's close of the
    pooled connection it would reuse. The phone's response."""
    running = await start_edge(edge_config(pki, closing_server.port))
    try:
        conn = await asyncio.to_thread(phone, pki, running.port)
        with conn:
            await asyncio.to_thread(conn.sendall, sync())
            assert status_of(await asyncio.to_thread(read_response, conn)) == 200
            assert running.edge.pool.pooled == 1
            await asyncio.sleep(SETTLE)  # the phone's connection is idle at the edge again
            # with the edge's loop blocked: the phone's next Sync arrives first, then the
            # server closes the pooled connection; the loop then sees both in that order
            conn.sendall(sync(b"second"))
            block_loop()
            closing_server.close_all()
            block_loop()
            return await asyncio.to_thread(read_response, conn)
    finally:
        await running.close()


async def test_a_sync_racing_the_servers_close_of_its_pooled_connection_gets_its_answer(
    pki: Pki, closing_server: ClosingServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The edge must open a new connection (nothing of the Sync was written anywhere, so that
    is safe for a POST) and the phone gets the server's 200, not a 502."""
    with caplog.at_level(logging.ERROR, logger="natsync.edge"):
        response = await sync_racing_a_close(pki, closing_server)
    assert status_of(response) == 200, response
    assert closing_server.requests == 2
    assert closing_server.accepted == 2
    assert "mid-request" not in caplog.text


def test_the_same_race_on_uvloop(pki: Pki, closing_server: ClosingServer) -> None:
    """As above on uvloop, which the edge runs on (its SSL transport is not asyncio's)."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is natsync's [uvloop] extra")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        response = runner.run(sync_racing_a_close(pki, closing_server))
    assert status_of(response) == 200, response
    assert closing_server.accepted == 2


async def test_a_502_log_line_says_which_connection_and_how_it_ended(
    pki: Pki,
    closing_server: ClosingServer,
    make_edge: EdgeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the server closes a connection with the request on it (here: a new one, closed as
    the request arrives), the phone gets 502 and the edge's log line names the case."""
    running = await make_edge(edge_config(pki, closing_server.port))
    conn = await asyncio.to_thread(phone, pki, running.port)
    with conn, caplog.at_level(logging.ERROR, logger="natsync.edge"):
        # a body that never ends: the server reads the head and waits; then it closes
        conn.sendall(b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab" % SYNC)
        assert await asyncio.to_thread(closing_server.wait_request_started)
        await asyncio.sleep(SETTLE)
        closing_server.close_all()
        response = await asyncio.to_thread(read_response, conn)
    assert status_of(response) == 502
    assert running.edge.metrics.backend_errors.get("reset") == 1
    assert "the server closed the connection mid-request, before any answer" in caplog.text
    assert "a new connection" in caplog.text


@pytest.mark.parametrize("name", ["python", "c"])
def test_the_readable_check_sees_bytes_and_a_close(name: str) -> None:
    """The one poll(2) behind it, in Python and in C (natsync.edge._speedups; CI builds it)."""
    from natsync.edge import _speedups, pool

    readable = pool._python_readable if name == "python" else _speedups.readable
    left, right = socket.socketpair()
    with left, right:
        assert not readable(left.fileno())
        right.sendall(b"x")
        assert readable(left.fileno())
        left.recv(1)
        assert not readable(left.fileno())
        right.close()
        assert readable(left.fileno())  # the peer's FIN
