"""The server's own front against slow clients, on real sockets (issue 19): a trickled head
is cut at header_timeout from its first byte, a stalled body gets 408, a held Ping is
neither; empty lines before a request line are ignored (RFC 9112 2.2)."""

from __future__ import annotations

import asyncio
import time

from natsync.store.api import Store
from tests.server.conftest import Client, ServerFactory
from tests.server.test_front import AUTH, OPTIONS, Connect, connect, read_response  # noqa: F401
from tests.server.test_http import _deliver_in
from tests.server.test_ping import ping_body, synced, until


async def test_a_trickled_head_is_cut_at_the_deadline(
    make_client: ServerFactory,
    connect: Connect,  # noqa: F811
) -> None:
    client = await make_client(header_timeout=1.0)
    reader, writer = await connect(client)
    reading = asyncio.create_task(reader.read())
    start = time.monotonic()
    for byte in b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        if reading.done() or time.monotonic() - start > 6:
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
    answer = await asyncio.wait_for(reading, 2)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:40]
    assert 0.9 <= time.monotonic() - start < 2.5


async def test_a_stalled_body_gets_408(make_client: ServerFactory, connect: Connect) -> None:  # noqa: F811
    client = await make_client(body_timeout=1.0)
    reader, writer = await connect(client)
    start = time.monotonic()
    writer.write(
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=D&DeviceType=T "
        b"HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() + b"\r\nMS-ASProtocolVersion: "
        b"14.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 100\r\n\r\n"
        + b"x"
        * 10
    )
    for _ in range(3):  # bytes within the timeout keep it alive
        await asyncio.sleep(0.6)
        writer.write(b"y")
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:40]
    assert 2.5 <= time.monotonic() - start < 4.5


async def test_a_held_ping_is_not_a_stalled_body(make_client: ServerFactory, store: Store) -> None:
    client: Client = await make_client(body_timeout=0.5, header_timeout=0.5)
    client.device = "slowping"
    inbox = await synced(client, store)
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    await asyncio.sleep(1.5)
    assert not held.done()
    await store.run(_deliver_in)
    answer = await asyncio.wait_for(held, 5)
    assert answer.tree().child_text("Status") == "2"


async def test_empty_lines_before_the_request_line_are_ignored(
    client: Client,
    connect: Connect,  # noqa: F811
) -> None:
    reader, writer = await connect(client)
    writer.write(b"\r\n" + OPTIONS)
    assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
    writer.write(b"\r\n")
    await asyncio.sleep(0.05)
    writer.write(b"\r\n" + OPTIONS)  # in two reads
    assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
    writer.write(b"\r\n" * 9 + OPTIONS)
    assert (await read_response(reader))[0] == b"HTTP/1.1 400 Bad Request"
