"""Balancing over several servers: the sans-I/O choice and health rules, then two real TLS
backends behind a real edge — one is stopped (requests still succeed, it is out within the
bound even without traffic) and started again (it comes back)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from natsync.edge import RunningEdge, start_edge
from natsync.edge.balance import Balancer
from natsync.edge.config import EdgeConfig
from natsync.edge.health import BOARD_POLL, BOARD_STALE_ROUNDS, HealthBoard, _address_key
from tests.edge.conftest import EdgeFactory, Pki, Target, edge_config, exchange, status_of
from tests.edge.test_render import free_port

# -- the rules, without sockets


def test_least_busy_healthy_server_first_ties_in_turn() -> None:
    balancer = Balancer(["a:1", "b:2", "c:3"], fall=2, rise=2)
    a, b, c = balancer.servers
    firsts = [balancer.choose() for _ in range(3)]
    assert firsts == [a, b, c]  # all idle: in turn
    a.active, b.active, c.active = 3, 1, 2
    assert balancer.choose() is b
    assert balancer.choose(tried=[b]) is c


def test_a_refused_connection_takes_a_server_out_at_once_and_an_answer_puts_it_back() -> None:
    balancer = Balancer(["a:1", "b:2"], fall=3, rise=2)
    a, b = balancer.servers
    assert balancer.unreachable(a, 10.0, "refused")
    assert (a.up, a.down_since) == (False, 10.0)
    assert [balancer.choose() for _ in range(4)] == [b, b, b, b]
    assert balancer.candidates() == [b, a]  # still offered, last
    assert balancer.answered(a)
    assert a.up


def test_active_checks_take_out_after_fall_and_back_after_rise() -> None:
    balancer = Balancer(["a:1", "b:2"], fall=2, rise=2)
    a, _ = balancer.servers
    assert not balancer.check_failed(a, 1.0, "timeout")
    assert a.up
    balancer.check_passed(a)  # a good check in between starts the count again
    assert not balancer.check_failed(a, 2.0, "timeout")
    assert balancer.check_failed(a, 3.0, "timeout")
    assert (a.up, a.reason) == (False, "timeout")
    assert not balancer.check_passed(a)
    assert (a.up, a.passes) == (False, 1)
    assert balancer.check_passed(a)
    assert (a.up, a.passes) == (True, 0)


def test_when_every_server_is_out_all_are_still_offered_longest_out_last() -> None:
    balancer = Balancer(["a:1", "b:2"], fall=1, rise=1)
    a, b = balancer.servers
    balancer.unreachable(a, 5.0, "refused")
    balancer.unreachable(b, 7.0, "refused")
    assert balancer.candidates() == [b, a]
    assert balancer.candidates() == [b, a]


# -- two real backends


@dataclass
class Backend:
    name: str
    port: int
    hits: int = 0
    runner: web.AppRunner | None = None
    #: The edge's checks: (the edge's port, whether its TLS session was resumed) per OPTIONS.
    checks: list[tuple[int, bool]] = field(default_factory=list)


StartBackend = Callable[[Backend], Awaitable[None]]


@pytest.fixture
async def backends(pki: Pki) -> AsyncIterator[tuple[Backend, Backend, StartBackend]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    async def start(backend: Backend) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            if request.method != "OPTIONS":
                backend.hits += 1
            elif request.transport is not None:
                sslobj = request.transport.get_extra_info("ssl_object")
                port = request.transport.get_extra_info("peername")[1]
                backend.checks.append((port, bool(sslobj.session_reused)))
            return web.Response(body=backend.name.encode())

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", backend.port, ssl_context=context)
        await site.start()
        backend.port = int(runner.addresses[0][1])
        backend.runner = runner

    a, b = Backend("A", 0), Backend("B", 0)
    await start(a)
    await start(b)
    yield a, b, start
    for backend in (a, b):
        if backend.runner is not None:
            await backend.runner.cleanup()


async def stop_backend(backend: Backend) -> None:
    assert backend.runner is not None
    await backend.runner.cleanup()
    backend.runner = None


REQUEST = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=D&DeviceType=T HTTP/1.1\r\n"
    b"Host: mail.example.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
)


async def ask(edge: RunningEdge, pki: Pki) -> bytes:
    answer = await exchange(Target(edge.host, edge.port), pki, REQUEST, timeout=3.0)
    assert status_of(answer) == 200, answer[:200]
    return answer.rpartition(b"\r\n\r\n")[2]


async def wait_for(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until *condition* held (polled); fails past *limit*."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, "not within the bound"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def metrics(edge: RunningEdge) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.admin_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    return text


@pytest.mark.slow
async def test_two_servers_one_stopped_requests_succeed_it_is_out_in_bound_and_comes_back(
    pki: Pki, make_edge: EdgeFactory, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    a, b, start = backends
    config = edge_config(
        pki, a.port, backends=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
        backend=f"127.0.0.1:{a.port}", health_interval=0.3, health_timeout=0.2,
        health_fall=2, health_rise=2,
    )  # fmt: skip
    edge = await make_edge(config)
    server_a, server_b = edge.edge.balancer.servers

    # spread: both get exchanges
    answers = [await ask(edge, pki) for _ in range(6)]
    assert set(answers) == {b"A", b"B"}
    assert (a.hits, b.hits) == (3, 3)  # idle servers in turn

    # B stops: the close of the edge's kept check connection is a check of B at once, whose
    # refused connection takes it out — long before the next periodic check (0.3 s)
    stopped = time.monotonic()
    await stop_backend(b)
    await wait_for(lambda: not server_b.up, 0.25)
    assert time.monotonic() - stopped < 0.25
    assert "refused" in server_b.reason or "failed" in server_b.reason, server_b.reason
    assert [await ask(edge, pki) for _ in range(6)] == [b"A"] * 6
    # a request that finds a server dead before the edge knows (as if not seen yet) goes on
    # to the next one: the refused connect takes B out and A answers
    server_b.up = True
    assert [await ask(edge, pki) for _ in range(4)] == [b"A"] * 4
    assert edge.edge.metrics.backend_errors["connect"] >= 1  # tried B, went on to A
    assert not server_b.up
    text = await metrics(edge)
    assert f'natsync_edge_backend_up{{backend="127.0.0.1:{b.port}"}} 0' in text
    assert f'natsync_edge_backend_up{{backend="127.0.0.1:{a.port}"}} 1' in text

    # B starts again on its port: the active checks put it back (rise = 2 good checks)
    await start(b)
    await wait_for(lambda: server_b.up, 0.3 * 2 + 0.2 + 1.0)
    hits = b.hits
    assert {await ask(edge, pki) for _ in range(6)} == {b"A", b"B"}
    assert b.hits > hits

    # B stops with no traffic at all: the checks alone take it out within the bound
    await stop_backend(b)
    await wait_for(lambda: not server_b.up, config.out_within + 0.5)
    assert server_a.up
    assert [await ask(edge, pki) for _ in range(3)] == [b"A"] * 3


async def test_checks_keep_one_connection_per_server_and_a_new_one_resumes_tls(
    pki: Pki, make_edge: EdgeFactory, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    """Each check is one request on a kept connection (no handshake per check); a new check
    connection, after the server restarted, resumes the TLS session (no full handshake)."""
    a, b, start = backends
    config = edge_config(
        pki, a.port, backends=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
        backend=f"127.0.0.1:{a.port}", health_interval=0.1, health_timeout=0.09,
        health_fall=2, health_rise=2,
    )  # fmt: skip
    edge = await make_edge(config)
    server_b = edge.edge.balancer.servers[1]
    await wait_for(lambda: len(a.checks) >= 6 and len(b.checks) >= 6, 3.0)
    for backend in (a, b):
        assert len({port for port, _ in backend.checks}) == 1, backend.checks  # one connection
        assert not backend.checks[0][1]  # the first: a full handshake
    await stop_backend(b)
    await wait_for(lambda: not server_b.up, 0.5)
    first = b.checks[0][0]
    b.checks.clear()
    await start(b)
    await wait_for(lambda: server_b.up, 2.0)
    assert b.checks, "B came back by the checks"
    port, resumed = b.checks[0]
    assert port != first  # a new connection ...
    assert resumed  # ... with the session of the one before
    assert all(p == port for p, _ in b.checks)


async def test_a_server_that_dies_is_out_at_once_whatever_the_check_interval(
    pki: Pki, make_edge: EdgeFactory, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    """The kept check connection's loss is a check at once: a stopped server is out in
    milliseconds with checks every 30 s (the periodic check is left with hung servers)."""
    a, b, _ = backends
    config = edge_config(
        pki, a.port, backends=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
        backend=f"127.0.0.1:{a.port}", health_interval=30.0, health_timeout=1.0,
    )  # fmt: skip
    edge = await make_edge(config)
    server_a, server_b = edge.edge.balancer.servers
    await wait_for(lambda: bool(a.checks and b.checks), 2.0)  # the first round
    await wait_for(lambda: len(edge.edge.health.kept) == 2, 1.0)
    await stop_backend(b)
    took = await wait_for(lambda: not server_b.up, 0.5)
    assert took < 0.5
    assert "refused" in server_b.reason or "failed" in server_b.reason, server_b.reason
    assert server_a.up
    assert [await ask(edge, pki) for _ in range(3)] == [b"A"] * 3


# -- one checker per server, shared by the workers


def test_the_board_is_shared_through_its_file_and_keyed_by_address(tmp_path: Path) -> None:
    one = HealthBoard.file(tmp_path / "board", 2)
    two = HealthBoard.file(tmp_path / "board", 2)  # another worker opens the same file
    key = _address_key("127.0.0.1:8443")
    assert two.read(1, key) is None  # never written
    one.write(1, key, 123.5, False)
    assert two.read(1, key) == (123.5, False)
    assert two.read(1, _address_key("127.0.0.1:8444")) is None  # another server's slot
    assert two.read(0, key) is None
    one.close()
    two.close()


def board_config(pki: Pki, a: Backend, b: Backend, workers: int) -> EdgeConfig:
    """*workers* workers in front of servers *a* and *b*, checked every 0.2 s (fall and rise
    2), on their own port (SO_REUSEPORT): the shape of the shared-board tests."""
    return edge_config(
        pki, a.port, backends=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
        backend=f"127.0.0.1:{a.port}", health_interval=0.2, health_timeout=0.15,
        health_fall=2, health_rise=2, workers=workers, listen=f"127.0.0.1:{free_port()}",
    )  # fmt: skip


async def test_workers_share_one_checker_and_follow_its_verdicts(
    pki: Pki, make_edge: EdgeFactory, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    """Two workers on one board: the servers are checked by the first only; a server out by
    its checker is out at the other's next choice; a checker that stops writing is stood in
    for."""
    a, b, start = backends
    config = board_config(pki, a, b, workers=2)
    board = HealthBoard.anonymous(2)
    first = await start_edge(config, reuse_port=True, board=board, worker=0)
    second = await start_edge(config, reuse_port=True, board=board, worker=1)
    try:
        await wait_for(lambda: len(a.checks) >= 8 and len(b.checks) >= 8, 4.0)
        # after the first round (each worker checks the servers with no verdict yet), only the
        # checker asks: one connection per server
        assert len({port for port, _ in a.checks[-6:]}) == 1
        assert len({port for port, _ in b.checks[-6:]}) == 1
        addresses = {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
        assert set(first.edge.health.kept) == addresses
        await wait_for(lambda: not second.edge.health.kept, BOARD_POLL + 0.5)

        # B stops: its checker has it out at once, the other at its next choice of server
        b_first, b_second = first.edge.balancer.servers[1], second.edge.balancer.servers[1]
        a_second = second.edge.balancer.servers[0]
        await stop_backend(b)
        await wait_for(lambda: not b_first.up, 0.5)
        await asyncio.sleep(BOARD_POLL)  # its last read of the board may be that recent
        assert [second.edge.health.choose() for _ in range(3)] == [a_second] * 3
        assert not b_second.up
        assert b_second.reason == "out by the check of another worker"

        # B is back: its checker puts it back (rise), and the other follows
        b.checks.clear()
        await start(b)
        await wait_for(lambda: b_first.up, 0.2 * 2 + 0.15 + 1.5)
        await asyncio.sleep(BOARD_POLL)
        second.edge.health.choose()
        assert second.edge.balancer.servers[1].up  # (b_second: mypy keeps it narrowed)

        # the checker stops: its verdicts go stale and the other checks the servers itself
        await first.close()
        b.checks.clear()
        stale = BOARD_STALE_ROUNDS * 0.2 + 0.15
        await wait_for(lambda: f"127.0.0.1:{b.port}" in second.edge.health.kept, stale + 1.5)
        assert b.checks
    finally:
        await first.close()
        await second.close()


async def test_a_worker_with_no_server_to_check_sleeps_and_reads_the_board_when_it_chooses(
    pki: Pki, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    """Three workers, two servers: the third checks nothing, so it is not woken each second
    for the board (issue 27: idle CPU) — only when a verdict can go stale — and still never
    chooses a server its checker took out (the board is read before a choice)."""
    a, b, _ = backends
    config = board_config(pki, a, b, workers=3)
    board = HealthBoard.anonymous(2)
    edges = [await start_edge(config, reuse_port=True, board=board, worker=k) for k in range(3)]
    checker, third = edges[0].edge.health, edges[2].edge.health
    try:
        # the first round: no verdict on the board yet, so every worker checks; then only the
        # checker does
        await wait_for(lambda: len(a.checks) >= 6 and len(b.checks) >= 6, 4.0)
        await wait_for(lambda: not third.kept, BOARD_POLL + 0.5)  # closed at its next wake
        wakes = (checker.wakes, third.wakes)
        await asyncio.sleep(2.0)
        assert checker.wakes - wakes[0] >= 6  # each round (0.2 s)
        assert third.wakes - wakes[1] <= 3  # each BOARD_POLL at most, not each round
        assert not third.kept
        assert third.wakes - wakes[1] >= 1  # awake to see whether a verdict went stale

        # B stops: its checker has it out at once; the third, asleep, chooses A only
        b_third = edges[2].edge.balancer.servers[1]
        await stop_backend(b)
        await wait_for(lambda: not edges[0].edge.balancer.servers[1].up, 0.5)
        await asyncio.sleep(BOARD_POLL)  # its last read of the board may be that recent
        assert [third.choose() for _ in range(4)] == [edges[2].edge.balancer.servers[0]] * 4
        assert not b_third.up
        assert b_third.reason == "out by the check of another worker"
    finally:
        for edge in edges:
            await edge.close()


async def test_a_server_not_started_yet_is_out_only_after_fall_periodic_checks(
    pki: Pki, make_edge: EdgeFactory, backends: tuple[Backend, Backend, StartBackend]
) -> None:
    """A refused periodic check (no kept connection was lost: e.g. a server starting after the
    edge) counts toward fall, as before; only a lost connection's check is out at once."""
    a, _, _ = backends
    silent = free_port()  # nothing listens there
    config = edge_config(
        pki, a.port, backends=(f"127.0.0.1:{a.port}", f"127.0.0.1:{silent}"),
        backend=f"127.0.0.1:{a.port}", health_interval=0.4, health_timeout=0.3, health_fall=2,
    )  # fmt: skip
    edge = await make_edge(config)
    later = edge.edge.balancer.servers[1]
    await wait_for(lambda: later.fails >= 1, 0.3)  # the first round
    assert later.up
    await wait_for(lambda: not later.up, 0.4 + 0.3 + 0.5)  # the second: fall = 2
