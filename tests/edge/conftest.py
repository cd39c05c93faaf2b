"""Real TLS on loopback for the edge tests: a private CA, the server's own certificate (names what
the server *is*), the edge's certificate (the public name), a recording TLS backend, and helpers
that talk raw bytes to the edge."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from natsync.cert import init_ca
from natsync.cert.ca import CA
from natsync.edge import EdgeConfig, RunningEdge, start_edge
from natsync.edge.config import SiteCert
from natsync.edge.tls import fingerprint

PUBLIC_NAME = "mail.example.test"
SERVER_NAME = "natsync-server.internal"


@dataclass
class Pki:
    ca: CA
    ca_file: Path
    server_cert: Path
    server_key: Path
    edge_cert: Path
    edge_key: Path

    @property
    def server_pin(self) -> str:
        return pem_fingerprint(self.server_cert)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def pem_fingerprint(path: Path) -> str:
    leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return fingerprint(leaf.public_bytes(serialization.Encoding.DER))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("edge-pki")
    ca = init_ca(base / "ca")
    server_cert, server_key = ca.issue_server_cert(
        [SERVER_NAME], ["127.0.0.1"], base / "server", basename="server"
    )
    edge_cert, edge_key = ca.issue_server_cert(
        [PUBLIC_NAME], ["127.0.0.1"], base / "edge", basename="edge"
    )
    return Pki(ca, ca.cert_path, server_cert, server_key, edge_cert, edge_key)


def edge_config(pki: Pki, backend_port: int, **overrides: Any) -> EdgeConfig:
    base = EdgeConfig(
        listen="127.0.0.1:0",
        certificates=(SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key),),
        backend=f"127.0.0.1:{backend_port}",
        backend_name=SERVER_NAME,
        backend_pin=pki.server_pin,
        admin_listen="127.0.0.1:0",
        forwards=(),
    )
    return replace(base, **overrides)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    sni: str | None = None


@dataclass
class Recorder:
    """A TLS backend (aiohttp) that records every request it gets."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    #: Held requests (path contains "hold") wait for this event.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    sni: list[str | None] = field(default_factory=list)


@pytest.fixture
async def recorder(pki: Pki) -> AsyncIterator[Recorder]:
    state = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append(
            Seen(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        if "Cmd=Ping" in request.query_string:
            await state.release.wait()
        if request.query.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(int(request.query["stream"])):
                await response.write(b"chunk %d\n" % i)
            await response.write_eof()
            return response
        return web.Response(body=b"backend:" + body, headers={"X-Backend": "yes"})

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    def sni(sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        state.connections += 1
        state.sni.append(name)

    context.sni_callback = sni
    runner, state.port = await serve_tls(handle, context)
    yield state
    state.release.set()
    await runner.cleanup()


async def serve_tls(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]], context: ssl.SSLContext
) -> tuple[web.AppRunner, int]:
    """An aiohttp backend answering every path with *handle*, over TLS on a free port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, int(runner.addresses[0][1])


EdgeFactory = Callable[..., Awaitable[RunningEdge]]


@pytest.fixture
async def make_edge() -> AsyncIterator[EdgeFactory]:
    started: list[RunningEdge] = []

    async def make(config: EdgeConfig) -> RunningEdge:
        running = await start_edge(config)
        started.append(running)
        return running

    yield make
    for running in started:
        await running.close()


class Address(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass
class Target:
    host: str
    port: int


async def exchange(
    edge: Address,
    pki: Pki,
    data: bytes,
    *,
    timeout: float = 5.0,
    source: str | None = None,
) -> bytes:
    """Send raw bytes over TLS to the edge and read until it closes (or *timeout*)."""
    reader, writer = await asyncio.open_connection(
        edge.host,
        edge.port,
        ssl=pki.client_context(),
        server_hostname=PUBLIC_NAME,
        local_addr=(source, 0) if source else None,
    )
    try:
        writer.write(data)
        chunks = []
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


def bio_handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A whole TLS handshake between a client and a server context over memory BIOs (no
    sockets), then the client reads a byte the server sent after it (TLS 1.3 tickets come
    then); returns (client, server) SSLObjects."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    phone = client_ctx.wrap_bio(c_in, c_out, server_hostname=PUBLIC_NAME, session=session)
    edge = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(10):
        for index, (obj, out, into) in enumerate(((phone, c_out, s_in), (edge, s_out, c_in))):
            if not done[index]:
                try:
                    obj.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    pass
            into.write(out.read())
        if all(done):
            break
    assert all(done), "the handshake did not finish"
    edge.write(b"x")
    c_in.write(s_out.read())
    assert phone.read(1) == b"x"
    return phone, edge
