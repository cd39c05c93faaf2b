"""Slow clients and small HTTP conformance points, on real TLS through the edge (issue 19):
a head trickled byte by byte is cut at header_timeout from its first byte, a stalled body gets
408, a held Ping is neither; empty lines before a request line, an oddly spelled chunked
coding and the reason phrase the phone sees."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.edge.conftest import (
    PUBLIC_NAME,
    EdgeFactory,
    Pki,
    Recorder,
    edge_config,
    exchange,
    serve_tls,
    status_of,
)

EAS = b"/Microsoft-Server-ActiveSync"
HOST = b"Host: " + PUBLIC_NAME.encode() + b"\r\n"


async def _open(edge: object, pki: Pki) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        edge.host,  # type: ignore[attr-defined]
        edge.port,  # type: ignore[attr-defined]
        ssl=pki.client_context(),
        server_hostname=PUBLIC_NAME,
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def test_a_trickled_head_is_cut_at_the_deadline_from_its_first_byte(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, header_timeout=1.0))
    reader, writer = await _open(edge, pki)
    head = b"GET " + EAS + b" HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"a" * 200
    start = time.monotonic()
    reading = asyncio.create_task(reader.read())
    try:
        for byte in head:  # one byte every 0.1 s: each would restart a per-byte timer
            if reading.done() or time.monotonic() - start > 6:
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reading, 2)
    finally:
        await _close(writer)
    elapsed = time.monotonic() - start
    # the deadline (1 s) plus one sweep interval (1 s), never the 20 s the bytes would take
    assert 0.9 <= elapsed < 3.5, elapsed
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:60]
    assert recorder.seen == []


async def test_a_stalled_body_gets_408_and_the_connection_closes(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, body_timeout=1.0))
    reader, writer = await _open(edge, pki)
    start = time.monotonic()
    writer.write(
        b"POST " + EAS + b"?Cmd=Sync&User=a&DeviceId=D&DeviceType=T HTTP/1.1\r\n" + HOST
        + b"Content-Length: 100\r\n\r\n" + b"x" * 10
    )  # fmt: skip
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        await _close(writer)
    assert status_of(answer) == 408
    assert b"Connection: close" in answer
    assert 0.9 <= time.monotonic() - start < 3.5
    assert recorder.seen == []  # the server never got a whole request
    assert edge.edge.metrics.requests.get(("Sync", 408)) == 1


async def test_a_body_trickled_within_the_timeout_passes(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, body_timeout=1.0))
    reader, writer = await _open(edge, pki)
    writer.write(
        b"POST " + EAS + b"?Cmd=Sync&User=a&DeviceId=D&DeviceType=T HTTP/1.1\r\n" + HOST
        + b"Content-Length: 6\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    try:
        for part in (b"ab", b"cd", b"ef"):  # 2.1 s in all, never 1 s without a byte
            await asyncio.sleep(0.7)
            writer.write(part)
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        await _close(writer)
    assert status_of(answer) == 200
    assert recorder.seen[0].body == b"abcdef"


async def test_a_held_ping_outlives_the_body_and_head_timeouts(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, body_timeout=0.5, header_timeout=0.5))
    ping = (
        b"POST " + EAS + b"?Cmd=Ping&User=a&DeviceId=D&DeviceType=T HTTP/1.1\r\n" + HOST
        + b"Content-Length: 4\r\nConnection: close\r\n\r\nping"
    )  # fmt: skip
    task = asyncio.create_task(exchange(edge, pki, ping, timeout=10))
    await asyncio.sleep(2.2)  # two sweeps past both timeouts
    assert not task.done()
    recorder.release.set()
    assert status_of(await task) == 200
    assert recorder.seen[0].body == b"ping"


async def test_empty_lines_before_the_request_line_are_ignored(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    request = b"GET " + EAS + b" HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    assert status_of(await exchange(edge, pki, b"\r\n" + request)) == 200
    assert status_of(await exchange(edge, pki, b"\r\n\r\n" + request)) == 200
    assert status_of(await exchange(edge, pki, b"\r\n" * 9 + request)) == 400
    assert len(recorder.seen) == 2


async def test_an_oddly_spelled_chunked_coding_is_forwarded_as_chunked(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    for spelling in (b"Chunked", b"CHUNKED", b"chunked  "):
        request = (
            b"POST " + EAS + b"?Cmd=Sync&User=a&DeviceId=D&DeviceType=T HTTP/1.1\r\n" + HOST
            + b"transfer-encoding: " + spelling + b"\r\nConnection: close\r\n\r\n"
            + b"3\r\nabc\r\n0\r\n\r\n"
        )  # fmt: skip
        assert status_of(await exchange(edge, pki, request)) == 200
    assert [seen.body for seen in recorder.seen] == [b"abc"] * 3
    assert {seen.headers.get("Transfer-Encoding") for seen in recorder.seen} == {"chunked"}


@pytest.fixture
async def unauthorized_backend(pki: Pki) -> AsyncIterator[int]:
    """A TLS backend answering 401 with an odd reason phrase, after a 100 Continue."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=401, reason="Go Away", headers={"WWW-Authenticate": "Basic"})

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    runner, port = await serve_tls(handle, context)
    yield port
    await runner.cleanup()


async def test_the_phone_sees_standard_reason_phrases(
    pki: Pki, unauthorized_backend: int, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, unauthorized_backend))
    request = (
        b"POST " + EAS + b"?Cmd=Sync&User=a&DeviceId=D&DeviceType=T HTTP/1.1\r\n" + HOST
        + b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhi"
    )  # fmt: skip
    answer = await exchange(edge, pki, request)
    lines = [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert lines[-1] == b"HTTP/1.1 401 Unauthorized"
    assert all(line in (b"HTTP/1.1 100 Continue", b"HTTP/1.1 401 Unauthorized") for line in lines)
