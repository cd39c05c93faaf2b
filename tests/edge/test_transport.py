"""The edge's own TLS transport (natsync.edge.transport) over real TLS on loopback, on uvloop (the
loop the edge runs on): flow control with a slow reader, the peer leaving mid-record,
close_notify both ways, handshakes that never finish, SNI, resumption — and a hypothesis
property: any exchange, cut anyhow, carries the same bytes and ends the same way as over
uvloop's own TLS transport."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsync.cert import policy
from natsync.edge.config import SiteCert
from natsync.edge.memory import release_buffers
from natsync.edge.tls import SiteContexts
from natsync.edge.transport import (
    TLSServer,
    TLSTransport,
    _c_tls,
    connect_tls,
    listen_sockets,
)
from tests.edge.conftest import PUBLIC_NAME, Pki
from tests.edge.handshake_steps import c_step, python_step

T = TypeVar("T")
HOST = "127.0.0.1"


@pytest.fixture
def uv() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    with contextlib.suppress(OSError):  # handles a failed test left open
        loop.close()


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def server_context(pki: Pki) -> ssl.SSLContext:
    context = policy.server_context()
    context.load_cert_chain(str(pki.edge_cert), str(pki.edge_key))
    return context


class Peer(asyncio.BufferedProtocol):
    """Records what arrives and how the connection ends; *on_data* sees each read."""

    def __init__(self, on_data: Callable[[Peer], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.buffer = bytearray(64 * 1024)
        self.transport: asyncio.Transport | None = None
        self.made = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.eof = 0
        self.paused = 0
        self.resumed = 0
        self.on_data = on_data
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.made.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]
        self.arrived.set()
        if self.on_data is not None:
            self.on_data(self)

    def eof_received(self) -> bool | None:
        self.eof += 1
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    async def until(self, size: int) -> None:
        while len(self.data) < size:
            self.arrived.clear()
            await self.arrived.wait()


class Ours:
    """A TLSServer on loopback whose protocols are kept."""

    def __init__(
        self,
        context: ssl.SSLContext,
        timeout: float = 5.0,
        peek: bool = False,
        python_steps: bool = False,
    ) -> None:
        self.peers: list[Peer] = []
        self.server = TLSServer(
            listen_sockets(HOST, 0, 64), context, self._peer, timeout, peek_hello=peek
        )
        if python_steps:  # the Python reference of the C accept and handshake steps
            self.server.c_accept = self.server.c_step = self.server.keep_reader = None
        self.server.start()
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.on_data: Callable[[Peer], None] | None = None
        self.accepted = asyncio.Event()

    def _peer(self) -> Peer:
        peer = Peer(self.on_data)
        self.peers.append(peer)
        self.accepted.set()
        return peer

    async def first(self) -> Peer:
        await self.accepted.wait()
        await self.peers[0].made
        return self.peers[0]


async def raw_tls(
    port: int, context: ssl.SSLContext, name: str = PUBLIC_NAME
) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A client whose every TLS byte goes through the test's hands (SSLObject + memory BIOs)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await loop.sock_sendall(sock, outgoing.read())
            data = await loop.sock_recv(sock, 65536)
            assert data, "the server closed during the handshake"
            incoming.write(data)
    await loop.sock_sendall(sock, outgoing.read())
    return sock, tls, incoming, outgoing


async def read_until_closed(sock: socket.socket, tls: ssl.SSLObject, bio: ssl.MemoryBIO) -> bytes:
    """Plaintext until the server's close_notify (SSLZeroReturnError), which must come."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLZeroReturnError:
            return bytes(got)
        except ssl.SSLWantReadError:
            chunk = None
        if chunk == b"":  # close_notify (SSLObject.read says it so)
            return bytes(got)
        if chunk:
            got += chunk
            continue
        data = await loop.sock_recv(sock, 65536)
        assert data, "TCP closed before close_notify"
        bio.write(data)


def test_a_slow_reader_pauses_the_writer_and_gets_every_byte_in_order(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    payload = random.Random(1).randbytes(3 * 1024 * 1024)

    async def main() -> None:
        ours = Ours(server_context(pki))
        reader, writer = await asyncio.open_connection(
            HOST, ours.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        peer = await ours.first()
        transport = peer.transport
        assert isinstance(transport, TLSTransport)
        # a small kernel buffer, so that the socket takes little of the payload at once
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        transport.write(payload[:10])  # taken at once
        transport.write(payload[10:])  # more than the socket takes: kept, the writer paused
        assert transport.get_write_buffer_size() > 64 * 1024
        assert peer.paused == 1
        assert peer.resumed == 0
        await asyncio.sleep(0.2)  # the reader reads nothing: still paused, nothing lost
        assert peer.paused == 1
        assert peer.resumed == 0
        got = await reader.readexactly(len(payload))
        assert got == payload
        assert transport.get_write_buffer_size() == 0
        assert peer.resumed == 1
        writer.close()
        await peer.lost
        ours.server.close()

    run(uv, main())


def test_paused_reading_holds_the_peers_bytes_until_resumed(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        ours = Ours(server_context(pki))
        _reader, writer = await asyncio.open_connection(
            HOST, ours.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        peer = await ours.first()
        assert peer.transport is not None
        peer.transport.pause_reading()
        writer.write(b"x" * 100_000)
        await writer.drain()
        await asyncio.sleep(0.2)
        assert not peer.data
        peer.transport.resume_reading()
        await peer.until(100_000)
        assert bytes(peer.data) == b"x" * 100_000
        writer.close()
        ours.server.close()

    run(uv, main())


def test_the_peer_leaving_mid_record_delivers_nothing_of_it_and_ends_the_connection(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        ours = Ours(server_context(pki))
        sock, tls, _incoming, outgoing = await raw_tls(ours.port, pki.client_context())
        peer = await ours.first()
        tls.write(b"whole")
        await asyncio.get_running_loop().sock_sendall(sock, outgoing.read())
        await peer.until(5)
        tls.write(b"cut short" * 100)
        record = outgoing.read()
        await asyncio.get_running_loop().sock_sendall(sock, record[: len(record) // 2])
        sock.close()
        assert await peer.lost is None
        assert bytes(peer.data) == b"whole"  # nothing of the half record
        assert peer.transport is not None
        assert peer.transport.is_closing()
        ours.server.close()

    run(uv, main())


def test_close_sends_close_notify_after_the_buffered_bytes(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        ours = Ours(server_context(pki))
        sock, tls, incoming, outgoing = await raw_tls(ours.port, pki.client_context())
        peer = await ours.first()
        assert peer.transport is not None
        peer.transport.write(b"last words " * 50_000)  # more than the socket takes at once
        peer.transport.close()
        peer.transport.write(b"ignored")  # nothing after close
        assert peer.transport.is_closing()
        assert not peer.lost.done()  # waits for the flush and the client's close_notify
        got = await read_until_closed(sock, tls, incoming)
        assert got == b"last words " * 50_000
        tls.unwrap()  # the server's close_notify is in: ours completes the exchange
        await asyncio.get_running_loop().sock_sendall(sock, outgoing.read())
        assert await peer.lost is None
        assert peer.eof == 0
        sock.close()
        ours.server.close()

    run(uv, main())


def test_the_peers_close_notify_is_an_eof_answered_with_ours(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki))
        sock, tls, incoming, outgoing = await raw_tls(ours.port, pki.client_context())
        peer = await ours.first()
        tls.write(b"bye")
        with pytest.raises(ssl.SSLWantReadError):
            tls.unwrap()  # our close_notify out, the server's awaited
        await loop.sock_sendall(sock, outgoing.read())
        assert await peer.lost is None
        assert peer.eof == 1
        assert bytes(peer.data) == b"bye"
        while True:  # the server's close_notify, then TCP EOF
            data = await loop.sock_recv(sock, 65536)
            if not data:
                break
            incoming.write(data)
        tls.unwrap()  # complete: the server answered with its close_notify
        sock.close()
        ours.server.close()

    run(uv, main())


def test_abort_closes_at_once_without_close_notify(uv: asyncio.AbstractEventLoop, pki: Pki) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki))
        sock, tls, incoming, _outgoing = await raw_tls(ours.port, pki.client_context())
        peer = await ours.first()
        assert peer.transport is not None
        peer.transport.write(b"unsent?")
        peer.transport.abort()
        assert await peer.lost is None
        got = b""
        while data := await loop.sock_recv(sock, 65536):
            got += data
        incoming.write(got)
        assert tls.read(100) == b"unsent?"  # what was written went out; no close_notify
        with pytest.raises(ssl.SSLWantReadError):
            tls.read(100)
        sock.close()
        ours.server.close()

    run(uv, main())


@pytest.mark.parametrize("peek", [False, True], ids=["sni", "peeking-for-tls-alpn-01"])
@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello"])
@pytest.mark.parametrize("python_steps", [False, True], ids=["C-steps", "Python-steps"])
def test_a_handshake_that_never_completes_is_closed_at_its_deadline(
    uv: asyncio.AbstractEventLoop, pki: Pki, sent: str, peek: bool, python_steps: bool
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki), timeout=0.4, peek=peek, python_steps=python_steps)
        hello = b""
        if sent != "nothing":
            probe = pki.client_context().wrap_bio(
                ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=PUBLIC_NAME
            )
            with pytest.raises(ssl.SSLWantReadError):
                probe.do_handshake()
            hello = out.read()
            hello = hello[: len(hello) // 2]
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, ours.port))
        await loop.sock_sendall(sock, hello)
        started = loop.time()
        try:  # closed by the server (reset when the peeked bytes were left unread)
            assert await loop.sock_recv(sock, 100) == b""
        except ConnectionResetError:
            assert peek
        assert 0.3 < loop.time() - started < 2.0
        assert ours.server.failed_handshakes == 1
        assert not ours.peers
        assert not ours.server.handshakes
        sock.close()
        ours.server.close()

    run(uv, main())


@pytest.mark.parametrize("python_steps", [False, True], ids=["C-steps", "Python-steps"])
def test_a_phone_resetting_right_after_its_finished_is_served_and_closed(
    uv: asyncio.AbstractEventLoop, pki: Pki, python_steps: bool
) -> None:
    """The handshake completes in the event that also reports the phone's RST (uvloop runs
    the reader for an error event, then closes that descriptor's poll handle): each such
    connection still ends (connection_lost), and the next ones on the same descriptor numbers
    are served. Found with s_time -reuse: a reader kept from handshake to transport was
    registered on the handle uvloop closed."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki), python_steps=python_steps)
        for _ in range(10):
            sock, _tls, _incoming, _outgoing = await raw_tls(ours.port, pki.client_context())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST right behind the Finished
            await asyncio.sleep(0.01)
        for peer in ours.peers:
            await asyncio.wait_for(peer.lost, 2)
        assert not ours.server.handshakes
        ours.accepted.clear()
        sock, tls, _incoming, outgoing = await raw_tls(ours.port, pki.client_context())
        tls.write(b"ping")
        await loop.sock_sendall(sock, outgoing.read())
        await asyncio.wait_for(ours.accepted.wait(), 2)
        served = ours.peers[-1]
        await asyncio.wait_for(served.until(4), 2)
        assert served.data == b"ping"
        sock.close()
        ours.server.close()

    run(uv, main())


@pytest.mark.parametrize("ending", ["reset", "close_notify", "tcp-fin"])
def test_a_closed_connection_ends_when_the_phone_goes_and_the_next_ones_are_served(
    uv: asyncio.AbstractEventLoop, pki: Pki, ending: str
) -> None:
    """close() from the protocol's read keeps the reader (now for the peer's close_notify)
    rather than dropping uvloop's poll handle and making another: however the phone leaves
    after the answer (RST, its close_notify, a bare FIN), the connection ends at once, not at
    SHUTDOWN_TIMEOUT, and new connections on the same descriptor numbers are served."""

    def answer_and_close(peer: Peer) -> None:
        assert peer.transport is not None
        peer.transport.write(b"answer:" + bytes(peer.data))
        peer.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki))
        ours.on_data = answer_and_close
        for number in range(8):
            sock, tls, incoming, outgoing = await raw_tls(ours.port, pki.client_context())
            tls.write(b"q%d" % number)
            await loop.sock_sendall(sock, outgoing.read())
            started = loop.time()
            if ending == "close_notify":
                assert await read_until_closed(sock, tls, incoming) == b"answer:q%d" % number
                tls.unwrap()
                await loop.sock_sendall(sock, outgoing.read())
            else:
                got = b""
                while not got:
                    incoming.write(await loop.sock_recv(sock, 65536))
                    with contextlib.suppress(ssl.SSLWantReadError):
                        got = tls.read(100)
                assert got == b"answer:q%d" % number
                if ending == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            peer = ours.peers[-1]
            assert await asyncio.wait_for(peer.lost, 2) is None
            assert loop.time() - started < 2
            assert peer.eof == 0
        assert len(ours.peers) == 8
        ours.server.close()

    run(uv, main())


@pytest.mark.skipif(_c_tls is None, reason="natsync.edge._tickets is not built (no compiler)")
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    version=st.sampled_from([ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    tail=st.binary(max_size=64),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
)
def test_the_c_handshake_step_agrees_with_do_handshake(
    pki: Pki,
    version: ssl.TLSVersion,
    flips: list[tuple[int, int]],
    cut: int,
    tail: bytes,
    sizes: list[int],
) -> None:
    """Whatever a client sends (a real ClientHello changed, cut, followed by more; in pieces),
    the C step and CPython's do_handshake reach the same outcome at every step; the C step
    never raises. A whole real handshake driven by C steps completes (the last part)."""
    server = server_context(pki)
    client = pki.client_context()
    client.maximum_version = version
    to_server = ssl.MemoryBIO()
    phone = client.wrap_bio(ssl.MemoryBIO(), to_server, server_hostname=PUBLIC_NAME)
    with pytest.raises(ssl.SSLWantReadError):
        phone.do_handshake()
    hello = bytearray(to_server.read())
    for at, mask in flips:
        hello[at % len(hello)] ^= mask
    sent = bytes(hello[: cut % (len(hello) + 1)]) + tail
    ours_in, reference_in = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = server.wrap_bio(ours_in, ssl.MemoryBIO(), server_side=True)
    reference = server.wrap_bio(reference_in, ssl.MemoryBIO(), server_side=True)
    for size in [*sizes, len(sent)]:
        chunk, sent = sent[:size], sent[size:]
        ours_in.write(chunk)
        reference_in.write(chunk)
        got = c_step(ours)
        assert got == python_step(reference)
        if got in ("done", "error") or not sent:
            break
    # a real handshake, every server step in C
    phone_in, phone_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    phone = client.wrap_bio(phone_in, phone_out, server_hostname=PUBLIC_NAME)
    ours = server.wrap_bio(server_in, server_out, server_side=True)
    steps = []
    for _ in range(4):
        with contextlib.suppress(ssl.SSLWantReadError):
            phone.do_handshake()
        server_in.write(phone_out.read())
        steps.append(c_step(ours))
        phone_in.write(server_out.read())
        if steps[-1] == "done":
            break
    assert steps[-1] == "done", steps
    phone.do_handshake()
    assert phone.version() == ours.version()


@pytest.mark.parametrize("python_steps", [False, True], ids=["C-steps", "Python-steps"])
def test_handshakes_started_apart_each_end_at_their_own_deadline_and_others_complete(
    uv: asyncio.AbstractEventLoop, pki: Pki, python_steps: bool
) -> None:
    """One timer serves every handshake in progress: silent clients that came 0.3 s apart are
    closed 0.6 s after each one's own start, and a phone handshaking meanwhile is served."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(server_context(pki), timeout=0.6, python_steps=python_steps)
        silent: list[tuple[socket.socket, float]] = []
        for _ in range(2):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, (HOST, ours.port))
            silent.append((sock, loop.time()))
            await asyncio.sleep(0.3)
        _reader, writer = await asyncio.open_connection(
            HOST, ours.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        peer = await ours.first()
        writer.write(b"ping")
        await peer.until(4)
        assert peer.data == b"ping"
        for sock, started in silent:
            assert await loop.sock_recv(sock, 100) == b""
            assert 0.5 < loop.time() - started < 1.5
            sock.close()
        assert ours.server.failed_handshakes == 2
        assert not ours.server.handshakes
        writer.close()
        ours.server.close()

    run(uv, main())


def test_sni_chooses_the_context_and_a_session_is_resumed_by_connect_tls(
    uv: asyncio.AbstractEventLoop, pki: Pki, tmp_path: Path
) -> None:
    other_cert, other_key = pki.ca.issue_server_cert(["other.test"], [], tmp_path, basename="o")
    sites = SiteContexts(
        [
            SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key),
            SiteCert(("other.test",), other_cert, other_key),
        ]
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours = Ours(sites.listening)
        client = pki.client_context()

        async def connect(name: str, session: ssl.SSLSession | None = None) -> TLSTransport:
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, (HOST, ours.port))
            return await connect_tls(Peer, sock, client, name, 5.0, session)

        first = await connect("other.test")
        sslsock = first.get_extra_info("ssl_object")
        assert "other.test" in str(sslsock.getpeercert()["subjectAltName"])
        second = await connect(PUBLIC_NAME)
        assert PUBLIC_NAME in str(second.get_extra_info("ssl_object").getpeercert())
        first.write(b"ping")  # the server's session tickets come back with the answer
        await (await ours.first()).until(4)
        ours.peers[0].transport.write(b"pong")  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
        session = second.get_extra_info("ssl_object").session
        assert session is not None
        third = await connect(PUBLIC_NAME, session)
        assert third.get_extra_info("ssl_object").session_reused
        assert not second.get_extra_info("ssl_object").session_reused
        assert sites.handshakes == 3
        for transport in (first, second, third):
            transport.abort()
        ours.server.close()

    run(uv, main())


def test_openssls_buffers_are_freed_on_the_transports_socket_and_not_after_it_closed(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        ours = Ours(server_context(pki))
        reader, writer = await asyncio.open_connection(
            HOST, ours.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        peer = await ours.first()
        assert peer.transport is not None
        sslsock = peer.transport.get_extra_info("ssl_object")
        writer.write(b"before")
        await peer.until(6)
        assert release_buffers(sslsock) in (0, 1)  # OpenSSL's read buffer, if it kept it
        writer.write(b" and after")
        await peer.until(16)
        peer.transport.write(b"answer")
        assert await reader.readexactly(6) == b"answer"
        assert bytes(peer.data) == b"before and after"
        peer.transport.abort()
        await peer.lost
        assert release_buffers(sslsock) == 0  # closed: its SSL is gone, nothing touched
        writer.close()
        ours.server.close()

    run(uv, main())


# -- the property: the same bytes as uvloop's own TLS transport


class Scripted(Peer):
    """Writes its *chunks* (each split into the given writes) once connected, pauses reading
    now and then, and closes once it has *expect* bytes."""

    def __init__(self, chunks: list[bytes], expect: int, pauses: list[bool]) -> None:
        super().__init__()
        self.chunks = chunks
        self.expect = expect
        self.pauses = pauses
        self.reads = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        for chunk in self.chunks:
            self.transport.write(chunk)  # type: ignore[union-attr]
        self._maybe_close()

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        transport = self.transport
        assert transport is not None
        if self.pauses and self.pauses[self.reads % len(self.pauses)]:
            transport.pause_reading()
            asyncio.get_running_loop().call_later(0.002, transport.resume_reading)
        self.reads += 1
        self._maybe_close()

    def _maybe_close(self) -> None:
        if len(self.data) >= self.expect and self.transport is not None:
            self.transport.close()


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    out.append(data[at:])
    return [piece for piece in out if piece]


async def exchange(
    pki: Pki, ours_server: bool, ours_client: bool, up: list[bytes], down: list[bytes],
    pauses: list[bool],
) -> tuple[bytes, bytes, tuple[int, int], tuple[Any, Any]]:  # fmt: skip
    """Client writes *up*, server writes *down*; each closes once it has the other's bytes."""
    loop = asyncio.get_running_loop()
    up_total, down_total = sum(map(len, up)), sum(map(len, down))
    servers: list[Scripted] = []
    accepted = asyncio.Event()

    def server_peer() -> Scripted:
        servers.append(Scripted(down, up_total, pauses))
        accepted.set()
        return servers[-1]

    if ours_server:
        listener: Any = TLSServer(listen_sockets(HOST, 0, 8), server_context(pki), server_peer, 5)
        listener.start()
    else:
        listener = await loop.create_server(server_peer, HOST, 0, ssl=server_context(pki))
    port = int(listener.sockets[0].getsockname()[1])
    client = Scripted(up, down_total, pauses[::-1])
    if ours_client:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, port))
        await connect_tls(lambda: client, sock, pki.client_context(), PUBLIC_NAME, 5)
    else:
        await loop.create_connection(
            lambda: client, HOST, port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
    client_lost = await client.lost
    await accepted.wait()
    server_lost = await servers[0].lost
    listener.close()
    return (
        bytes(servers[0].data), bytes(client.data), (client.eof, servers[0].eof),
        (client_lost, server_lost),
    )  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    up_size=st.integers(0, 200_000),
    down_size=st.integers(0, 400_000),
    up_cuts=st.lists(st.integers(1, 70_000), max_size=6),
    down_cuts=st.lists(st.integers(1, 70_000), max_size=6),
    pauses=st.lists(st.booleans(), max_size=5),
)
def test_any_exchange_carries_the_same_bytes_as_uvloops_tls_transport(
    uv: asyncio.AbstractEventLoop, pki: Pki, seed: int, up_size: int, down_size: int,
    up_cuts: list[int], down_cuts: list[int], pauses: list[bool],
) -> None:  # fmt: skip
    rng = random.Random(seed)
    up_data, down_data = rng.randbytes(up_size), rng.randbytes(down_size)
    up, down = cut(up_data, up_cuts), cut(down_data, down_cuts)
    outcomes = {
        (s, c): run(uv, exchange(pki, s, c, up, down, pauses))
        for s in (False, True)
        for c in (False, True)
    }
    reference = outcomes[(False, False)]  # uvloop on both ends
    assert reference[0] == up_data
    assert reference[1] == down_data
    for outcome in outcomes.values():
        assert outcome[:2] == reference[:2]
        assert outcome[3] == (None, None)  # both ends closed cleanly


def test_a_server_that_resets_before_the_handshake_is_a_connection_error(
    uv: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server((HOST, 0))
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, listener.getsockname())
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # RST
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionResetError):
            await connect_tls(Peer, sock, pki.client_context(), PUBLIC_NAME, 5.0)
        assert sock.fileno() == -1 or sock._closed  # type: ignore[attr-defined]
        listener.close()

    run(uv, main())
