"""The server's own HTTP/1.1 front (natsync.server.front) byte for byte over real sockets:
keep-alive and pipelining, chunked bodies, Expect: 100-continue, HTTP/1.0, heads it refuses, a
reply sent before the body closes the connection; held Pings parked without a task (on uvloop
and TLS too, as deployed); and the same handlers served by aiohttp (make_app)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from natsync.edge import memory
from natsync.server.app import EAS_APP, make_app, start_server
from natsync.server.front import MAX_PENDING
from natsync.store.api import FolderType, Store
from natsync.wbxml import E, decode, encode
from tests.eas.helpers import folder_id
from tests.server.conftest import BASE_CONFIG, PASSWORD, Client, ServerFactory, self_signed
from tests.server.test_http import _deliver_in
from tests.server.test_ping import ping_body, synced, until

AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
#: An authenticated OPTIONS (an anonymous one is answered 401, as Exchange does).
OPTIONS = (
    b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\nAuthorization: "
    + AUTH.encode()
    + b"\r\n\r\n"
)
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
AUTODISCOVER = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/'
    b'requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress>'
    b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/"
    b"mobilesync/responseschema/2006</AcceptableResponseSchema></Request></Autodiscover>"
)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """(status line, headers with lower-case names, body) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0].encode(), headers, body


Connect = Callable[[Client], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Raw connections to a test server, all closed at teardown."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writers.append(writer)
        return reader, writer

    yield open_one
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_keep_alive_and_pipelined_requests_answer_in_order(
    client: Client, connect: Connect
) -> None:
    reader, writer = await connect(client)
    writer.write(OPTIONS + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + OPTIONS)
    statuses = [(await read_response(reader))[0] for _ in range(3)]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    writer.write(OPTIONS)  # the connection is still open
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK"
    assert "connection" not in headers


async def test_pipelined_requests_past_max_pending_wait_their_turn(
    client: Client, connect: Connect
) -> None:
    """Past MAX_PENDING bytes of next requests while one is served, reading pauses (it used to
    drop the connection), and resumes after each answer: every request is answered, in order."""
    reader, writer = await connect(client)
    count = 3 * MAX_PENDING // len(OPTIONS)
    writer.write(OPTIONS * count)
    for _ in range(count):
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        assert status == b"HTTP/1.1 200 OK"
    writer.write(OPTIONS)
    assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"


async def test_chunked_body_is_decoded(client: Client, connect: Connect) -> None:
    reader, writer = await connect(client)
    chunks = [AUTODISCOVER[:50], AUTODISCOVER[50:51], AUTODISCOVER[51:]]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-T: 1\r\n\r\n"
    writer.write(
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for i in range(0, len(body), 7):  # byte by byte, nearly: framing split anywhere
        writer.write(body[i : i + 7])
        await writer.drain()
    status, _, answer = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK"
    assert b"<Type>MobileSync</Type>" in answer
    writer.write(OPTIONS)
    assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"


async def test_bad_chunked_body_is_400_and_closes(client: Client, connect: Connect) -> None:
    reader, writer = await connect(client)
    writer.write(
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n"
    )
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["connection"] == "close"
    assert await reader.read() == b""


async def test_expect_100_continue_is_answered_when_the_body_is_wanted(
    client: Client, connect: Connect
) -> None:
    reader, writer = await connect(client)
    writer.write(
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(AUTODISCOVER)
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(AUTODISCOVER)
    status, _, answer = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK"
    assert b"MobileSync" in answer


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\nHost: x\n\n", b"400"),  # bare LF
        (b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n" + CHUNKED, b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (
            b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nX: " + b"a" * 17000 + b"\r\n\r\n",
            b"431",
        ),
    ],
)
async def test_heads_that_cannot_be_trusted_are_refused_and_closed(
    client: Client, connect: Connect, head: bytes, status: bytes
) -> None:
    reader, writer = await connect(client)
    writer.write(head)
    line, headers, _ = await read_response(reader)
    assert line.split(b" ")[1] == status
    assert headers["connection"] == "close"
    assert await reader.read() == b""


async def test_http_1_0_is_answered_in_kind_and_closed(client: Client, connect: Connect) -> None:
    reader, writer = await connect(client)
    writer.write(OPTIONS.replace(b"HTTP/1.1\r\nHost: x", b"HTTP/1.0"))
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.0 200 OK"
    assert headers["ms-asprotocolversions"]
    assert await reader.read() == b""
    reader, writer = await connect(client)
    writer.write(OPTIONS.replace(b"HTTP/1.1\r\nHost: x", b"HTTP/1.0\r\nConnection: keep-alive"))
    status, headers, _ = await read_response(reader)
    assert headers["connection"] == "keep-alive"
    writer.write(OPTIONS)
    assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"


async def test_a_reply_before_the_body_arrived_closes_the_connection(
    client: Client, connect: Connect
) -> None:
    reader, writer = await connect(client)
    # No credentials: 401 at once, without waiting for the 100 bytes announced.
    writer.write(
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=d&DeviceType=t "
        b"HTTP/1.1\r\nHost: x\r\nMS-ASProtocolVersion: 16.1\r\nContent-Length: 100\r\n\r\n"
    )
    status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers["connection"] == "close"
    assert await reader.read() == b""


async def test_held_pings_are_parked_without_a_task(
    make_client: ServerFactory, store: Store
) -> None:
    clients = []
    for n in range(4):
        client = await make_client() if n == 0 else Client(clients[0].session, clients[0].server)
        client.device = f"parked{n}"
        inbox = await synced(client, store)
        clients.append(client)
    tasks_before = len(asyncio.all_tasks())
    held = [asyncio.ensure_future(c.cmd("Ping", ping_body(600, inbox))) for c in clients]
    await until(lambda: store.feed.waiting() == 4)  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    # Only the test's own client tasks were added: the server keeps none per held Ping.
    assert len(asyncio.all_tasks()) == tasks_before + len(held)
    assert len(clients[0].server.eas._holds) == 4
    await store.run(_deliver_in)
    for answer in await asyncio.wait_for(asyncio.gather(*held), 5):
        assert answer.tree().child_text("Status") == "2"
    assert store.feed.waiting() == 0  # type: ignore[attr-defined]
    assert not clients[0].server.eas._holds


def _ping_request(device: str, body: bytes, auth: str = AUTH) -> bytes:
    return (
        b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId="
        + device.encode()
        + b"&DeviceType=t HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth.encode()
        + b"\r\nMS-ASProtocolVersion: 16.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def _bio_capacity(sslobj: Any) -> tuple[int, int]:
    """Bytes allocated by the read and the write memory BIO of an ``ssl.SSLObject`` (BUF_MEM's
    ``max``, read with BIO_C_GET_BUF_MEM_PTR), (1, 1) where natsync.edge.memory cannot look."""
    import ctypes

    openssl = memory._bind()
    if openssl is None:
        return (1, 1)
    pointer = memory._ssl_pointer(sslobj)
    sizes = []
    for bio in (openssl.rbio(pointer), openssl.wbio(pointer)):
        buf = ctypes.c_void_p()
        openssl.bio_ctrl(bio, 115, 0, ctypes.addressof(buf))  # BIO_C_GET_BUF_MEM_PTR
        # struct buf_mem_st: size_t length; char *data; size_t max; unsigned long flags
        sizes.append(ctypes.c_size_t.from_address(buf.value + 16).value if buf.value else 0)
    return (sizes[0], sizes[1])


def test_on_uvloop_over_tls_a_dropped_phone_releases_its_parked_ping(
    tmp_path: Path, store: Store
) -> None:
    """As deployed (uvloop, TLS through the front's memory BIOs): a held Ping keeps no TLS
    buffer and answers a delivery, and a phone that goes away mid-Ping leaves no subscription
    and no hold."""
    uvloop = pytest.importorskip("uvloop")
    cert, key = self_signed(tmp_path)
    inbox = folder_id(store, FolderType.INBOX)
    config = replace(
        BASE_CONFIG, tls_cert=cert, tls_key=key, require_provisioning=False, heartbeat_min=1
    )
    context = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        server = await start_server(config, store)
        try:

            async def open_tls() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection(
                    "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
                )

            reader, writer = await open_tls()
            ns = "AirSync"
            key = "0"

            async def sync() -> None:
                nonlocal key
                coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", inbox))
                body = encode(E(ns, "Sync", E(ns, "Collections", coll)))
                writer.write(_ping_request("tlsphone", body).replace(b"Cmd=Ping", b"Cmd=Sync"))
                _, _, answer = await read_response(reader)
                for el in decode(answer).iter():
                    if el.tag == "SyncKey":
                        key = el.text()

            await sync()  # SyncKey 0, then the real key: the inbox counts as seen
            await sync()
            (conn,) = server.front.connections
            assert all(_bio_capacity(conn._tls))  # idle: the BIOs keep the flights' capacity
            writer.write(_ping_request("tlsphone", encode(ping_body(600, inbox))))
            await until(lambda: conn._parked is not None)
            if memory.available():  # held: OpenSSL's memory BIOs gave their buffers back
                assert _bio_capacity(conn._tls) == (0, 0)
            await store.run(_deliver_in)
            status, _, answer = await asyncio.wait_for(read_response(reader), 5)
            assert status == b"HTTP/1.1 200 OK"
            assert decode(answer).child_text("Status") == "2"
            await sync()  # the new mail is seen: the next Ping waits
            writer.write(_ping_request("tlsphone", encode(ping_body(600, inbox))))
            await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
            assert server.eas._holds
            writer.transport.abort()  # the phone goes away mid-Ping
            await until(lambda: store.feed.waiting() == 0)  # type: ignore[attr-defined]
            assert not server.eas._holds
            assert not server.front.connections or all(not c.busy for c in server.front.connections)
        finally:
            await server.close()

    uvloop.run(main())


def test_over_tls_a_close_notify_is_answered_at_once(tmp_path: Path, store: Store) -> None:
    """A client that ends its TLS session (close_notify) gets the server's at once, not after
    its own shutdown timeout (CPython's SSLObject.read returns 0 there instead of raising)."""
    uvloop = pytest.importorskip("uvloop")
    cert, key = self_signed(tmp_path)
    config = replace(BASE_CONFIG, tls_cert=cert, tls_key=key)
    context = ssl.create_default_context(cafile=str(cert))

    async def main() -> float:
        server = await start_server(config, store)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost",
                ssl_shutdown_timeout=10,
            )  # fmt: skip
            writer.write(OPTIONS)
            status, _, _ = await read_response(reader)
            assert status == b"HTTP/1.1 200 OK"
            started = asyncio.get_running_loop().time()
            writer.close()
            await writer.wait_closed()  # returns when the server's close_notify came back
            return asyncio.get_running_loop().time() - started
        finally:
            await server.close()

    assert uvloop.run(main()) < 2.0


async def test_the_aiohttp_app_serves_the_same_handlers(store: Store) -> None:
    import aiohttp

    config = replace(BASE_CONFIG, require_provisioning=False)
    app = make_app(config, store)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    eas = app[EAS_APP]
    inbox = folder_id(store, FolderType.INBOX)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/Microsoft-Server-ActiveSync"
            server: Any = type("Served", (), {"url": url})
            client = Client(session, server)
            assert (await client.raw("", method="OPTIONS")).status == 200
            await synced(client, store)
            held = asyncio.ensure_future(client.cmd("Ping", ping_body(600, inbox)))
            await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
            await store.run(_deliver_in)
            assert (await asyncio.wait_for(held, 5)).tree().child_text("Status") == "2"
            # A dropped phone releases its Ping at once (handler_cancellation).
            async with aiohttp.ClientSession() as other:
                phone = Client(other, server)
                await synced(phone, store)
                gone = asyncio.ensure_future(phone.cmd("Ping", ping_body(600, inbox)))
                await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
                assert eas._holds
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
            await until(lambda: store.feed.waiting() == 0)  # type: ignore[attr-defined]
            assert not eas._holds
    finally:
        await runner.cleanup()
