"""natsync.edge._steady (C) against the Python methods of ClientMachine, the reference.

The C functions take the usual keep-alive moves (a whole head between requests, the server
ready for it, a whole answer in one read) and decline everything else. Any transcript played
to a machine with them and to one without must give the same commands, the same exceptions and
the same machine, rate limiter and counters after every event; and the usual exchange must
really be taken by C, or the module would be dead weight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.edge import connection, proxy
from natsync.edge import transport as transport_module
from natsync.edge.config import EdgeConfig
from natsync.edge.connection import (
    DropBackend,
    EdgeStateError,
    OpenBackend,
    ReleaseBackend,
    Request,
    python_moves,
)
from natsync.edge.transport import TLSTransport
from tests.edge.conftest import Pki
from tests.edge.playbook import (
    BackendCloses,
    BackendFails,
    BackendReady,
    BackendSends,
    BackendSilent,
    ClientGone,
    ClientSends,
    Playbook,
    Wait,
)
from tests.edge.steady_drive import POOLED, FakeTransport, Shell, compare, machine_state
from tests.edge.test_connection import _EVENTS, EAS, GET, OK, PING, post
from tests.edge.test_transport import (  # noqa: F401 (uv: the fixture)
    cut,
    exchange,
    run,
    server_context,
    uv,
)
from tests.edge.tlsio_drive import handshake

if connection.steady is None:  # pragma: no cover - CI builds it (make test installs gcc)
    pytest.fail(
        "natsync.edge._steady is not built (or NATSYNC_PURE_PYTHON is set): "
        "make test installs a C compiler and Python's headers and builds it",
        pytrace=False,
    )
C = connection.steady


def state(play: Playbook) -> tuple[Any, ...]:
    """Everything a move may change: the machine's slots but its policy, and the policy's
    counters, rate-limit buckets and connection counts."""
    return (*machine_state(play.machine, play.policy), play.policy.limits.connections)


class Logging:
    """The access log switched on or off between events (the policy asks per request)."""

    def __init__(self, on: bool) -> None:
        self.on = on


class Twins:
    """The same connection twice: one machine with the C moves, one without."""

    def __init__(self, config: EdgeConfig, logged: bool, over_limit: bool = False) -> None:
        self.logged = logged
        self.fast = Playbook(config, logged=logged)
        self.reference = Playbook(config, logged=logged)
        for play in (self.fast, self.reference):
            play.policy.access_logged = self._logged
            play.machine.over_limit = over_limit  # as a connection past max_connections_per_ip

        #: what the shell would deliver (as test_connection's any-order test): a server only
        #: after OpenBackend, its bytes only while attached, nothing from a phone that is gone
        self.wants = self.attached = self.gone = False

    def _logged(self) -> bool:
        return self.logged

    def deliverable(self, event: Any) -> bool:
        if isinstance(event, ClientSends | Wait | ClientGone):
            return not self.gone
        if isinstance(event, BackendReady | BackendFails):
            return self.wants
        return self.attached

    def play(self, event: Any) -> None:
        if isinstance(event, Logging):
            self.logged = event.on
            return
        if not self.deliverable(event):
            return
        if isinstance(event, BackendReady):
            self.wants, self.attached = False, True
        elif isinstance(event, BackendFails):
            self.wants = False
        elif isinstance(event, BackendCloses | BackendSilent):
            self.attached = False
        self.gone = self.gone or isinstance(event, ClientGone)
        fast = reference = None
        try:
            fast = self.fast.play(event)
        except EdgeStateError as exc:
            fast = exc
        try:
            with python_moves():
                reference = self.reference.play(event)
        except EdgeStateError as exc:
            reference = exc
        if isinstance(fast, Exception) or isinstance(reference, Exception):
            assert type(fast) is type(reference), (event, fast, reference)
            assert str(fast) == str(reference)
        else:
            assert fast == reference, event
            for command in fast:
                if isinstance(command, OpenBackend):
                    self.wants = True
                elif isinstance(command, ReleaseBackend | DropBackend):
                    self.attached = False
        assert state(self.fast) == state(self.reference), event


PONG = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"Content-Length: 3\r\n\r\nabc"
)
#: Whole requests and answers, as the usual exchange brings them, and their near misses.
REQUESTS = [
    GET,
    post(b"abc"),
    post(b"abc") + GET,
    GET + GET,
    post(b"ab", length=3),
    post(b"abcd", length=3),
    post(b"", length=0),
    PING + b"Content-Length: 2\r\n\r\nxy",
    PING.replace(b"Cmd=Ping", b"Cmd=PING") + b"\r\n",
    b"GET " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET " + EAS + b"?Cmd=Sync HTTP/1.0\r\nHost: h\r\n\r\n",
    b"HEAD " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\n\r\n",
    b"OPTIONS " + EAS + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET " + EAS + b"?Cmd=" + b"X" * 40 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b"GET " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
]
ANSWERS = [
    OK,
    PONG,
    OK + b"extra",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\nWWW-Authenticate: Basic\r\n\r\nno\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Thing\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
]
STEADY_EVENTS = st.one_of(
    st.builds(ClientSends, st.sampled_from(REQUESTS)),
    st.builds(BackendSends, st.sampled_from(ANSWERS)),
    st.just(BackendReady()),
    st.builds(Logging, st.booleans()),
    _EVENTS,
)
CONFIGS = st.sampled_from(
    [
        EdgeConfig(),
        EdgeConfig(requests_per_second_per_ip=1, request_burst_per_ip=2),
        EdgeConfig(requests_per_second_per_ip=0.5, request_burst_per_ip=3),
    ]
)


@settings(max_examples=400, deadline=None)
@given(CONFIGS, st.booleans(), st.booleans(), st.lists(STEADY_EVENTS, max_size=40))
def test_any_transcript_gives_the_same_commands_and_state_with_and_without_c(
    config: EdgeConfig, logged: bool, over_limit: bool, events: list[Any]
) -> None:
    twins = Twins(config, logged, over_limit)
    for event in events:
        twins.play(event)


#: One exchange as the shell delivers it (a request, the server, its answer), now and then
#: with an event of any kind slipped in somewhere.
EXCHANGES = st.tuples(
    st.sampled_from(REQUESTS[:8] + [REQUESTS[0]] * 4),
    st.sampled_from(ANSWERS[:2] * 4 + ANSWERS),
    st.one_of(st.none(), st.tuples(st.integers(0, 3), STEADY_EVENTS)),
)


@settings(max_examples=300, deadline=None)
@given(CONFIGS, st.lists(EXCHANGES, max_size=12))
def test_keep_alive_runs_are_the_same_with_and_without_c(
    config: EdgeConfig, exchanges: list[tuple[bytes, bytes, tuple[int, Any] | None]]
) -> None:
    """Mostly the steady case (a whole request, the server ready, a whole answer, again),
    which C takes, and must take as Python does."""
    twins = Twins(config, False)
    for request, response, extra in exchanges:
        events: list[Any] = [ClientSends(request), BackendReady(), BackendSends(response)]
        if extra is not None:
            events.insert(extra[0], extra[1])
        for event in events:
            twins.play(event)
    twins.play(ClientGone())


def test_the_usual_exchange_is_taken_by_c() -> None:
    """After the first request (which judges the target and opens the address's bucket), a
    keep-alive request's three moves are C's, and the machine is as Python leaves it."""
    twins = Twins(EdgeConfig(), False)
    for event in (ClientSends(post(b"abc")), BackendReady(), BackendSends(PONG)):
        twins.play(event)
    machine, now = twins.fast.machine, twins.fast.now
    taken = C.client_data(machine, post(b"abc"), now)
    assert taken is not None
    assert [type(command) for command in taken] == [OpenBackend]
    assert C.backend_ready(machine, now) is not None
    assert C.backend_data(machine, PONG, now) is not None
    assert machine.request is Request.HEAD
    with python_moves():
        for event in (ClientSends(post(b"abc")), BackendReady(), BackendSends(PONG)):
            twins.reference.play(event)
    assert state(twins.fast) == state(twins.reference)


def test_c_declines_what_is_not_its_own_and_changes_nothing() -> None:
    play = Playbook(EdgeConfig())
    machine, now = play.machine, play.now
    before = state(play)
    # a first request: its target not judged yet, its address without a bucket
    assert C.client_data(machine, GET, now) is None
    assert C.client_data(machine, GET[:10], now) is None  # a head in pieces
    assert C.backend_ready(machine, now) is None  # nothing to connect
    assert C.backend_data(machine, OK, now) is None  # no request in hand
    assert C.client_data(object(), GET, now) is None  # not a machine
    assert state(play) == before


# -- the shell's reads: C's buffer_updated against the Python ones, over fake transports


#: What happens to the edge: the phone sends, the attached server (or pooled one i) sends, a
#: pooled server closes or speaks unasked, time passes.
SHELL_EVENTS = st.one_of(
    st.tuples(st.just("phone"), st.sampled_from(REQUESTS[:9] + [REQUESTS[0]] * 6)),
    st.tuples(st.just("server"), st.sampled_from(ANSWERS[:2] * 6 + ANSWERS)),
    st.tuples(st.just("pooled"), st.integers(0, 3), st.sampled_from(ANSWERS[:2])),
    st.tuples(st.just("closes"), st.integers(0, 3)),
    st.tuples(st.just("poke"), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 40.0])),
    st.just(("fails",)),
)
#: Mostly exchanges (a request, then its server's answer), now and then with another event.
SHELL_ROUNDS = st.tuples(
    st.sampled_from(REQUESTS[:9] + [REQUESTS[0], REQUESTS[1]] * 6),
    st.sampled_from(ANSWERS[:2] * 6 + ANSWERS),
    st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 2), SHELL_EVENTS)),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.booleans(), min_size=POOLED, max_size=POOLED),
    st.sampled_from([1, 2, 64]),
    st.lists(SHELL_ROUNDS, max_size=12),
)
def test_the_shells_reads_do_in_c_what_they_do_in_python(
    remembered: list[bool], pool_size: int, rounds: list[tuple[bytes, bytes, Any]]
) -> None:
    """Two edges, the same events: one reads through C's buffer_updated (the moves, the pool's
    take and release, the writes), the other through the Python methods; after every event
    the phone's machine, the server connections, the pool, the server's counts and what each
    transport was asked to do are the same."""
    events: list[tuple[Any, ...]] = []
    for request, response, extra in rounds:
        exchange = [("phone", request), ("server", response)]
        if extra is not None:
            exchange.insert(extra[0], extra[1])
        events += exchange
    compare(events, remembered, pool_size)


def test_the_usual_exchange_goes_through_the_c_reads() -> None:
    """The shell's reads are C's methods, and a keep-alive request through them leaves the
    server connection back in its pool with the answer sent."""
    assert proxy.C_READS is not None
    assert proxy.ClientConn.buffer_updated is proxy.C_READS[0]

    async def run() -> None:
        shell = Shell.make(EdgeConfig(insecure_backend=True, forwards=(), admin_listen=""), [True])
        try:
            for _ in range(3):
                shell.feed(shell.phone, post(b"abc"))
                assert shell.phone.backend is shell.backends[0]
                shell.feed(shell.backends[0], PONG)
            upstream = next(iter(shell.edge.upstreams.values()))
            assert upstream.pool == [shell.backends[0]]
            phone = cast(FakeTransport, shell.phone.transport)
            assert [call[0] for call in phone.calls] == ["write"] * 3
            assert phone.calls[0][1].endswith(b"\r\n\r\nabc")
        finally:
            shell.close()

    asyncio.run(run())


# -- the shell's writes: TLSTransport's usual write in C, the rest its own


class Sink(asyncio.BufferedProtocol):
    """A protocol that records the transport's flow control."""

    def __init__(self) -> None:
        self.paused = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def get_buffer(self, sizehint: int) -> bytearray:
        return bytearray(16 * 1024)

    def buffer_updated(self, nbytes: int) -> None:
        pass

    def pause_writing(self) -> None:
        self.paused += 1

    def connection_lost(self, exc: Exception | None) -> None:
        pass


@pytest.mark.skipif(transport_module.tlsio is None, reason="natsync.edge._tlsio is not built")
def test_the_c_write_is_the_transports_write_also_when_the_socket_is_full(
    uv: asyncio.AbstractEventLoop,  # noqa: F811 (the fixture)
    pki: Pki,
) -> None:
    """The same writes to a peer that reads nothing, by C and by TLSTransport.write: the same
    bytes kept (in flight and queued), the same writer wait and pause; then, read, the same
    plaintext in the same order."""
    chunks = [bytes([i]) * (9000 + 700 * i) for i in range(60)]

    async def go(use_c: bool) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        ours, theirs, tls, peer, incoming, _outgoing = handshake(
            server_context(pki), pki.client_context()
        )
        sink = Sink()
        conn = TLSTransport(loop, ours, tls, sink)
        conn.start()
        for chunk in chunks:
            if use_c:
                C.send(conn, chunk)
            else:
                conn.write(chunk)
        kept = (conn._wsize, conn._inflight, list(conn._queue), conn._writing, sink.paused)
        theirs.setblocking(False)
        got = bytearray()
        for _ in range(2000):
            with contextlib.suppress(BlockingIOError):
                incoming.write(theirs.recv(1 << 20))
            with contextlib.suppress(ssl.SSLWantReadError):
                while True:
                    got += peer.read(1 << 20)
            if len(got) >= sum(map(len, chunks)):
                break
            await asyncio.sleep(0)
        conn.abort()
        theirs.close()
        return kept, bytes(got)

    with_c = run(uv, go(True))
    without = run(uv, go(False))
    assert with_c == without
    assert with_c[0][0] > 0  # the socket did fill: the kept bytes were compared
    assert with_c[1] == b"".join(chunks)


@pytest.mark.parametrize("seed", range(3))
def test_the_transports_reads_are_the_same_in_c_and_in_python(
    uv: asyncio.AbstractEventLoop,  # noqa: F811 (the fixture)
    pki: Pki,
    seed: int,
) -> None:
    """Whole exchanges both ways over the edge's own TLS transports (bulk data cut anyhow,
    reading paused and resumed, both closing), read by C's _read_ready and by the Python one:
    the same bytes each way and the same ends."""
    rng = random.Random(seed)
    up_data, down_data = rng.randbytes(rng.randrange(200_000)), rng.randbytes(80_000)
    up = cut(up_data, [rng.randrange(1, 40_000) for _ in range(5)])
    down = cut(down_data, [rng.randrange(1, 40_000) for _ in range(5)])
    pauses = [rng.random() < 0.5 for _ in range(4)]
    assert TLSTransport._read_ready is not proxy.PYTHON_READS[2]  # C's, when built
    with_c = run(uv, exchange(pki, True, True, up, down, pauses))
    with proxy.python_shell():
        assert TLSTransport._read_ready is proxy.PYTHON_READS[2]
        without = run(uv, exchange(pki, True, True, up, down, pauses))
    assert with_c[0] == without[0] == up_data
    assert with_c[1] == without[1] == down_data
    assert with_c[3] == without[3] == (None, None)
