"""The bridge over real TLS on loopback: what passes, what is refused before the server sees it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import time
from dataclasses import replace

import pytest

from natsync.edge import tls
from natsync.edge.tls import fingerprint
from natsync.errors import ConfigError
from tests.edge.conftest import (
    PUBLIC_NAME,
    SERVER_NAME,
    EdgeFactory,
    Pki,
    Recorder,
    edge_config,
    exchange,
    status_of,
)

EAS = b"/Microsoft-Server-ActiveSync"
#: Descriptors held open so a socket's number passes select()'s FD_SETSIZE (1024).
HIGH_FD = 1100


def post(path: bytes = EAS + b"?Cmd=Sync&User=alice&DeviceId=D1&DeviceType=T", body: bytes = b"x",
         extra: bytes = b"") -> bytes:  # fmt: skip
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: " + PUBLIC_NAME.encode() + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n" % len(body) + extra + b"\r\n" + body
    )


async def test_published_request_is_bridged_with_forwarded_headers_set_by_the_edge(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    extra = b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\nForwarded: for=6.6.6.6\r\n"
    response = await exchange(edge, pki, post(body=b"hello", extra=extra))
    assert status_of(response) == 200
    assert response.endswith(b"backend:hello")
    assert b"X-Backend: yes" in response
    (seen,) = recorder.seen
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "https"
    assert "Forwarded" not in seen.headers
    assert seen.headers["Host"] == PUBLIC_NAME  # the original Host, not the backend's address
    assert recorder.sni == [SERVER_NAME]  # SNI toward the server is the configured name


@pytest.mark.parametrize(
    "path",
    [
        b"/",
        b"/owa/",
        b"/ews/exchange.asmx",
        b"/Microsoft-Server-ActiveSync/../owa",
        b"/%4dicrosoft-Server-ActiveSync",
        b"//Microsoft-Server-ActiveSync",
        b"/.well-known/acme-challenge/",
    ],
)
async def test_unpublished_paths_get_404_and_never_reach_the_server(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, path: bytes
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    response = await exchange(edge, pki, post(path))
    assert status_of(response) == 404
    assert recorder.seen == []
    assert recorder.connections == 0


@pytest.mark.parametrize(
    "path", [b"/AUTODISCOVER/AutoDiscover.XML", b"/.well-known/acme-challenge/tok", EAS + b"/"]
)
async def test_published_paths_in_any_case(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, path: bytes
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    assert status_of(await exchange(edge, pki, post(path))) == 200
    assert len(recorder.seen) == 1


async def test_options_passes_through_to_the_server(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    request = b"OPTIONS " + EAS + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert status_of(await exchange(edge, pki, request)) == 200
    assert [s.method for s in recorder.seen] == ["OPTIONS"]


HEAD = b"POST " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\n"
SMUGGLING = {
    "cl-and-te": (HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "double-cl": (HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nxx", 400),
    "double-cl-differ": (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
    "cl-signed": (HEAD + b"Content-Length: +1\r\n\r\nx", 400),
    "cl-list": (HEAD + b"Content-Length: 1, 1\r\n\r\nx", 400),
    "te-not-chunked": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "te-space-colon": (HEAD + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    "te-double": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "obs-fold": (HEAD + b"Content-Length: 0\r\nX-A: a\r\n b\r\n\r\n", 400),
    "bare-lf": (b"POST " + EAS + b" HTTP/1.1\nHost: h\nContent-Length: 0\n\n", 400),
    "no-host": (b"POST " + EAS + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),
    "absolute-form": (b"POST http://evil/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 400),
    "huge-body": (HEAD + b"Content-Length: 999999999999\r\n\r\n", 413),
    "oversized-head": (HEAD + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    "too-many-fields": (HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
    "nul-in-value": (HEAD + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_smuggling_attempts_are_refused_before_the_server(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, name: str
) -> None:
    data, status = SMUGGLING[name]
    edge = await make_edge(edge_config(pki, recorder.port))
    response = await exchange(edge, pki, data)
    assert status_of(response) == status
    assert b"Connection: close" in response
    assert recorder.seen == []
    assert recorder.connections == 0


BAD_CHUNKING = [
    b"zz\r\nabc\r\n0\r\n\r\n",  # not hexadecimal
    b"3\r\nabcdef\r\n0\r\n\r\n",  # more data than the size said
    b"-1\r\nx\r\n0\r\n\r\n",  # negative
    b"3\nabc\n0\n\n",  # bare LF
    b"0x3\r\nabc\r\n0\r\n\r\n",  # C-style hex
]


@pytest.mark.parametrize("body", BAD_CHUNKING)
async def test_bad_chunking_is_refused_and_the_request_never_completes_upstream(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, body: bytes
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    data = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body
    response = await exchange(edge, pki, data)
    assert response == b"" or status_of(response) == 400
    assert recorder.seen == []  # the server never got a complete request


async def test_chunked_request_and_streamed_chunked_response_pass_through(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    data = (
        b"POST " + EAS + b"?Cmd=Sync&stream=50 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    response = await exchange(edge, pki, data)
    assert status_of(response) == 200
    assert b"Transfer-Encoding: chunked" in response
    assert response.count(b"chunk ") == 50
    assert response.endswith(b"0\r\n\r\n")
    assert recorder.seen[0].body == b"hello world"


async def test_keep_alive_reuses_one_server_connection(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    one = b"POST " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
    last = b"POST " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
    response = await exchange(edge, pki, one * 4 + last + b"Connection: close\r\n\r\ny")
    assert response.count(b"HTTP/1.1 200") == 5
    assert len(recorder.seen) == 5
    assert recorder.connections == 1
    assert edge.edge.metrics.backend_handshakes == 1


async def test_backend_down_answers_503_within_a_second(
    pki: Pki, make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    edge = await make_edge(edge_config(pki, port))
    started = time.monotonic()
    response = await exchange(edge, pki, post())
    assert status_of(response) == 503
    assert b"Retry-After: " in response
    assert time.monotonic() - started < 1.0
    assert "cannot reach the server" in caplog.text


async def test_backend_that_never_handshakes_answers_503_after_the_handshake_deadline(
    pki: Pki,
    make_edge: EdgeFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TCP is taken (by the kernel: the backlog) but TLS never starts: 503 once the handshake
    deadline passes (shortened here from its 5 s, to keep the test quick)."""
    monkeypatch.setattr(tls, "BACKEND_HANDSHAKE_TIMEOUT", 1.0)
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        edge = await make_edge(edge_config(pki, silent.getsockname()[1]))
        started = time.monotonic()
        response = await exchange(edge, pki, post())
        assert status_of(response) == 503
        assert 0.9 < time.monotonic() - started < 1.5
    assert "TCP connected but no TLS handshake within 1 s" in caplog.text


async def test_backend_whose_tcp_does_not_answer_gets_503_within_a_second(
    pki: Pki, make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A server whose address takes no TCP connection (here: its accept queue is full, so the
    kernel drops the SYN, as it does for a host that is gone) is down: 503 within a second."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        try:
            for _ in range(8):  # until a connect no longer completes: the queue is full
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.3)
                try:
                    filler.connect(full.getsockname())
                except TimeoutError:
                    break
            else:
                pytest.fail("the accept queue never filled up")
            edge = await make_edge(edge_config(pki, full.getsockname()[1]))
            started = time.monotonic()
            response = await exchange(edge, pki, post())
            assert status_of(response) == 503
            assert time.monotonic() - started < 1.2
        finally:
            for filler in fillers:
                filler.close()
    assert f"no TCP connection within {tls.BACKEND_CONNECT_TIMEOUT:g} s" in caplog.text


async def test_a_connection_made_in_time_is_used_though_the_edge_looked_late() -> None:
    """The 503 of the soak's 2,000-phone address change: the edge's own loop was busy past the
    0.9 s TCP deadline (thousands of phone handshakes at once), so the timer fired in the same
    turn as the connection's completion, before it. A socket found connected is used."""
    loop = asyncio.get_running_loop()
    # The edge holds thousands of descriptors: the socket's number is past select()'s 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HIGH_FD + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    placeholders = [os.open(os.devnull, os.O_RDONLY) for _ in range(HIGH_FD)]
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            port = server.getsockname()[1]
            connecting = asyncio.ensure_future(
                tls._tcp_connect(loop, "127.0.0.1", port, loop.time() + 0.2)
            )
            await asyncio.sleep(0)  # the connect is under way (the kernel completes it at once)
            time.sleep(0.5)  # noqa: ASYNC251  (the edge's loop, busy past the deadline)
            sock = await connecting
            try:
                assert sock.fileno() > 1024
                assert sock.getpeername() == ("127.0.0.1", port)
            finally:
                sock.close()
    finally:
        for fd in placeholders:
            os.close(fd)
        # A connection that really does not complete still times out (the accept queue of
        # a listen(0) socket holding one connection drops the next SYN).
    with socket.socket() as full, socket.socket() as filler:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        filler.connect(full.getsockname())
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no TCP connection within"):
            await tls._tcp_connect(loop, "127.0.0.1", full.getsockname()[1], loop.time() + 0.3)
        assert time.monotonic() - started < 1.0


async def test_a_busy_server_that_handshakes_late_is_waited_for(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    """The soak's one 5xx (issue 19): a loaded server took the TCP connection at once but
    reached the TLS handshake after more than the 0.9 s TCP deadline. Its handshake has its own,
    longer deadline: here the server starts TLS 1.5 s late and the phone gets its answer."""
    delay = 1.5

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)  # busy: the bytes wait in the socket meanwhile
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", recorder.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    slow = await asyncio.start_server(late, "127.0.0.1", 0)
    try:
        edge = await make_edge(edge_config(pki, slow.sockets[0].getsockname()[1]))
        started = time.monotonic()
        response = await exchange(edge, pki, post(body=b"late"))
        assert status_of(response) == 200
        assert response.endswith(b"backend:late")
        assert delay <= time.monotonic() - started < tls.BACKEND_HANDSHAKE_TIMEOUT
    finally:
        slow.close()


async def test_wrong_pin_gets_502_and_a_clear_log_line(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = fingerprint(b"some other certificate")
    edge = await make_edge(edge_config(pki, recorder.port, backend_pin=wrong))
    with caplog.at_level(logging.ERROR, logger="natsync.edge"):
        response = await exchange(edge, pki, post())
    assert status_of(response) == 502
    assert recorder.seen == []  # no request byte went to an unverified server
    assert f"presented certificate {pki.server_pin}, not the pinned {wrong}" in caplog.text
    assert "natsync edge trust-backend" in caplog.text


async def test_ca_verification_checks_the_name(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    good = edge_config(pki, recorder.port, backend_pin="", backend_ca=pki.ca_file)
    edge = await make_edge(good)
    assert status_of(await exchange(edge, pki, post())) == 200
    bad = replace(good, backend_name="someone-else.internal")
    edge2 = await make_edge(bad)
    with caplog.at_level(logging.ERROR, logger="natsync.edge"):
        assert status_of(await exchange(edge2, pki, post())) == 502
    assert "failed certificate verification" in caplog.text
    assert len(recorder.seen) == 1


async def test_edge_refuses_to_start_without_a_way_to_verify_the_server(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    config = edge_config(pki, recorder.port, backend_pin="")
    with pytest.raises(ConfigError, match="cannot verify the server"):
        await make_edge(config)
    edge = await make_edge(replace(config, insecure_backend=True))  # said in so many words
    assert status_of(await exchange(edge, pki, post())) == 200


async def test_per_address_connection_limit_gives_503_with_retry_after(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, max_connections_per_ip=2))
    held = [
        await asyncio.open_connection(
            edge.host, edge.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        for _ in range(2)
    ]
    try:
        response = await exchange(edge, pki, post())
        assert status_of(response) == 503
        assert b"Retry-After: 5" in response
        # another address is not affected
        other = await exchange(edge, pki, post(), source="127.0.0.2")
        assert status_of(other) == 200
    finally:
        for _, writer in held:
            writer.close()
    assert len(recorder.seen) == 1


async def test_per_address_request_rate_gives_503_with_retry_after(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    config = edge_config(
        pki, recorder.port, requests_per_second_per_ip=0.001, request_burst_per_ip=3
    )
    edge = await make_edge(config)
    statuses = [status_of(await exchange(edge, pki, post())) for _ in range(5)]
    assert statuses == [200, 200, 200, 503, 503]
    assert len(recorder.seen) == 3


async def test_admin_metrics_and_access_log(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    basic = b"Authorization: Basic YWxpY2U6cHc=\r\n"  # alice:pw
    with caplog.at_level(logging.INFO, logger="natsync.edge.access"):
        await exchange(edge, pki, post(extra=basic))
        await exchange(edge, pki, post(b"/nope"))
    lines = [json.loads(r.message) for r in caplog.records if r.name == "natsync.edge.access"]
    assert lines[0]["user"] == "alice"
    assert lines[0]["device_id"] == "D1"
    assert lines[0]["device_type"] == "T"
    assert lines[0]["cmd"] == "Sync"
    assert lines[0]["status"] == 200
    assert lines[0]["client"] == "127.0.0.1"
    assert lines[0]["bytes"] > 0
    assert "ms" in lines[0]
    assert lines[1]["status"] == 404
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.admin_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    metrics = (await reader.read()).decode()
    writer.close()
    assert 'natsync_edge_requests_total{cmd="Sync",status="200"} 1' in metrics
    assert 'natsync_edge_requests_total{cmd="-",status="404"} 1' in metrics
    assert "natsync_edge_tls_handshakes_total 2" in metrics
    assert "natsync_edge_held_pings 0" in metrics
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.admin_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_held_ping_is_counted_and_survives_past_the_client_idle_timeout(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port, client_idle_timeout=0.5))
    ping = post(EAS + b"?Cmd=Ping&User=alice&DeviceId=D1&DeviceType=T")
    task = asyncio.create_task(exchange(edge, pki, ping, timeout=10))
    for _ in range(100):
        if edge.edge.metrics.held_pings == 1:
            break
        await asyncio.sleep(0.02)
    assert edge.edge.metrics.held_pings == 1
    await asyncio.sleep(1.6)  # sweeps run; an idle timeout must not cut a held request
    recorder.release.set()
    assert status_of(await task) == 200
    assert edge.edge.metrics.held_pings == 0


def test_timeout_shorter_than_the_heartbeat_warns(pki: Pki) -> None:
    config = edge_config(pki, 1, heartbeat_max=900, backend_timeout=600)
    (warning,) = config.timeout_warnings()
    assert "900" in warning
    assert edge_config(pki, 1, heartbeat_max=900).read_timeout == 960
    assert edge_config(pki, 1).timeout_warnings() == []


async def test_a_silent_server_gets_504_after_the_backend_timeout(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    config = edge_config(pki, recorder.port, heartbeat_max=1, backend_timeout=1.5)
    edge = await make_edge(config)
    started = time.monotonic()
    ping = post(EAS + b"?Cmd=Ping&User=alice&DeviceId=D1&DeviceType=T")
    response = await exchange(edge, pki, ping, timeout=10)
    assert status_of(response) == 504
    assert 1.5 <= time.monotonic() - started < 4.0
    assert edge.edge.metrics.backend_errors["timeout"] == 1
    assert edge.edge.metrics.held_pings == 0


async def test_a_long_run_of_pipelined_refusals_is_answered_in_full(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    """600 kept-alive 404s in one write (about 19 KB, one or two TLS reads): each is answered
    in turn (they were answered by recursion once, two frames each, past the stack's limit)."""
    edge = await make_edge(edge_config(pki, recorder.port))
    nope = b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
    last = b"GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    response = await exchange(edge, pki, nope * 600 + last, timeout=10)
    assert response.count(b"HTTP/1.1 404 ") == 601
    assert recorder.seen == []


async def test_the_sweeper_scans_again_only_when_a_deadline_can_have_passed(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    """Every deadline is now + one of the configured timeouts, so after a sweep at T nothing can
    pass before min(the deadlines set, T + the shortest): held connections are not scanned
    each second (issue 27), and a slow head is still closed at its deadline."""
    from natsync.edge.connection import shortest_deadline

    config = edge_config(pki, recorder.port, header_timeout=1.5, client_idle_timeout=40.0)
    edge = await make_edge(config)
    assert shortest_deadline(config) == 1.5
    now = time.monotonic()
    edge.edge.sweep(now)
    assert edge.edge.next_sweep == pytest.approx(now + 1.5)  # nothing set: the shortest ahead
    reader, writer = await asyncio.open_connection(
        edge.host, edge.port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
    )
    try:
        writer.write(b"POST / HTTP/1.1\r\n")  # a head that never ends
        await writer.drain()
        await asyncio.sleep(0.1)
        (conn,) = edge.edge.clients
        deadline = conn.machine.deadline
        assert deadline > 0
        edge.edge.sweep(deadline - 1.0)
        assert edge.edge.next_sweep == deadline  # that connection's deadline is the next look
        answer = await asyncio.wait_for(reader.read(), 4.0)  # the sweeper closed it in time
        assert answer == b"" or status_of(answer) == 408, answer[:80]
        assert time.monotonic() < deadline + 2.5
    finally:
        writer.close()
