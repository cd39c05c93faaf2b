"""The edge's connection machines as transcripts, without sockets (issue 21): keep-alive,
pipelining, half-close, an early response, a held Ping, and every request-smuggling shape the
edge refuses (the same shapes ``test_proxy.py`` sends over real TLS)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.edge import http
from natsync.edge.balance import Server
from natsync.edge.config import EdgeConfig
from natsync.edge.connection import (
    BACKEND_MOVES,
    POOL_IDLE,
    REQUEST_MOVES,
    RESPONSE_MOVES,
    AbortClient,
    Backend,
    BackendAnswered,
    BackendBroke,
    BackendFailure,
    BackendMachine,
    ClientMachine,
    CloseClient,
    DropBackend,
    EdgePolicy,
    EdgeStateError,
    LogAccess,
    LogNote,
    OpenBackend,
    PauseClient,
    ReleaseBackend,
    Request,
    Response,
    ResumeClient,
    SendToBackend,
    SendToClient,
)
from tests.edge.playbook import (
    PHONE,
    BackendCloses,
    BackendFails,
    BackendFull,
    BackendReady,
    BackendSends,
    BackendSilent,
    BackendWritable,
    ClientGone,
    ClientSends,
    Playbook,
    Wait,
    answer,
    forwarded,
)
from tests.edge.test_proxy import BAD_CHUNKING, SMUGGLING

EAS = b"/Microsoft-Server-ActiveSync"
GET = b"GET " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\n\r\n"
PING = b"POST " + EAS + b"?Cmd=Ping&User=u&DeviceId=D&DeviceType=T HTTP/1.1\r\nHost: h\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CONFIG = EdgeConfig()


def post(body: bytes, length: int | None = None, path: bytes = EAS + b"?Cmd=Sync") -> bytes:
    size = len(body) if length is None else length
    return b"POST " + path + b" HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size + body


def bridged(request: bytes = GET, **settings: Any) -> Playbook:
    """A transcript whose *request* (head and whole body) is with the server already."""
    play = Playbook(**settings)
    taken = http.take_request(request, CONFIG.max_body)
    assert taken is not None
    assert (
        play
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(request) + taken[1])
    )  # fmt: skip
    return play


# -- keep-alive, pipelining


def test_keep_alive_reuses_the_server_connection_and_waits_for_the_next_head() -> None:
    play = Playbook()
    assert (
        play
        >> ClientSends(GET)
        << OpenBackend()
        >> BackendReady()
        << SendToBackend(forwarded(GET))
        >> BackendSends(OK)
        << SendToClient(OK)
        << BackendAnswered()
        << ReleaseBackend()
    )
    assert play.machine.request is Request.HEAD
    assert play.machine.deadline == play.now + CONFIG.client_idle_timeout
    assert play >> ClientSends(GET) << OpenBackend()
    assert play.policy.metrics.requests == {("Sync", 200): 1}


def test_an_idle_keep_alive_connection_is_cut_at_the_idle_timeout() -> None:
    play = bridged()
    assert (
        play
        >> BackendSends(OK) << SendToClient(OK) << BackendAnswered() << ReleaseBackend()
        >> Wait(CONFIG.client_idle_timeout - 1)
        >> Wait(2) << AbortClient()
    )  # fmt: skip
    assert play >> ClientGone()
    assert play.machine.request is Request.CLOSED


def test_pipelined_requests_are_held_paused_and_taken_in_turn() -> None:
    second = post(b"xy")
    play = Playbook()
    assert (
        play
        >> ClientSends(GET + second)
        << OpenBackend()
        >> BackendReady()
        << SendToBackend(forwarded(GET))
        << PauseClient()  # the second request waits, and so does the phone
        >> BackendSends(OK)
        << SendToClient(OK)
        << BackendAnswered()
        << ReleaseBackend()
        << ResumeClient()
        << OpenBackend()  # the second one, from what was held
        >> BackendReady()
        << SendToBackend(forwarded(second) + b"xy")
        >> BackendSends(OK)
        << SendToClient(OK)
        << BackendAnswered()
        << ReleaseBackend()
    )
    assert play.policy.metrics.requests == {("Sync", 200): 2}


def test_bytes_before_the_server_is_there_are_held_then_sent_with_the_head() -> None:
    request = post(b"abcd")
    assert (
        Playbook()
        >> ClientSends(request[:-2])
        << OpenBackend()
        >> ClientSends(request[-2:])
        << PauseClient()
        >> BackendReady()
        << SendToBackend(forwarded(request) + b"abcd")
        >> BackendSends(OK)
        << SendToClient(OK)
        << BackendAnswered()
        << ReleaseBackend()
        << ResumeClient()
    )


def test_a_body_in_pieces_goes_on_as_it_comes_with_back_pressure() -> None:
    request = post(b"", length=6)
    play = Playbook()
    assert (
        play
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(request))
        >> ClientSends(b"abc") << SendToBackend(b"abc")
        >> BackendFull() << PauseClient()
        >> Wait(CONFIG.body_timeout + 1)  # paused by the edge: not the phone's fault
        >> BackendWritable() << ResumeClient()
        >> ClientSends(b"def") << SendToBackend(b"def")
    )  # fmt: skip
    assert play.machine.request is Request.SENT
    assert play.machine.deadline == 0.0


def test_pipelined_refusals_are_answered_one_by_one_without_recursion() -> None:
    """600 kept-alive 404s in one read (the read buffer holds 64 KiB: about 2,000 of these)."""
    nope = b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
    play = Playbook()
    given = play.machine.client_data(nope * 600, play.now)
    assert given == [SendToClient(answer(404, close=False))] * 600
    assert play.policy.metrics.requests == {("-", 404): 600}


# -- half-close: either side ends its connection


def test_a_close_delimited_answer_ends_when_the_server_closes() -> None:
    head = b"HTTP/1.0 200 OK\r\n\r\n"
    play = bridged()
    assert (
        play
        >> BackendSends(head + b"part 1 ")
        << SendToClient(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart 1 ")
        >> BackendSends(b"part 2") << SendToClient(b"part 2")
        >> BackendCloses() << CloseClient()
    )  # fmt: skip
    assert play.policy.metrics.requests == {("Sync", 200): 1}
    assert play.machine.response is Response.NONE


def test_the_phone_leaving_during_a_request_drops_the_server_connection() -> None:
    play = Playbook()
    assert (
        play
        >> ClientSends(post(b"", length=10)) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(post(b"", length=10)))
        >> ClientGone() << DropBackend()
    )  # fmt: skip
    assert play.policy.metrics.requests == {("Sync", 499): 1}
    assert play.policy.limits.connections == {}


def test_the_phone_leaving_while_connecting_leaves_the_server_connection_to_release() -> None:
    play = Playbook()
    assert (
        play
        >> ClientSends(GET) << OpenBackend()
        >> ClientGone()
        >> BackendReady() << ReleaseBackend()  # the connection opened meanwhile goes to the pool
    )  # fmt: skip
    assert play.policy.metrics.requests == {("Sync", 499): 1}


CLOSED_BEFORE_ANSWER = "the server closed the connection mid-request, before any answer"


def test_the_server_closing_mid_request_is_a_502_and_a_broken_exchange() -> None:
    assert (
        bridged()
        >> BackendCloses()
        << BackendBroke("closed a request it had")
        << BackendFailure("reset", CLOSED_BEFORE_ANSWER)
        << SendToClient(answer(502)) << CloseClient()
    )  # fmt: skip


def test_the_server_closing_mid_answer_cuts_the_phone() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert (
        bridged()
        >> BackendSends(head + b"abc") << SendToClient(head + b"abc")
        >> BackendCloses() << BackendBroke("closed a request it had") << AbortClient()
    )  # fmt: skip


def test_a_server_answer_with_connection_close_spends_only_the_server_side() -> None:
    """The phone keeps its connection; the server's is dropped, not counted as broken."""
    answer_close = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    play = bridged()
    assert (
        play
        >> BackendSends(answer_close)
        << SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        << BackendAnswered() << DropBackend() << CloseClient()
    )  # fmt: skip


# -- early response


def test_an_answer_before_the_body_is_in_spends_both_connections() -> None:
    request = post(b"abc", length=100)
    denied = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    play = Playbook()
    assert (
        play
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(request) + b"abc")
        >> BackendSends(denied)
        << SendToClient(denied)  # (the edge closes after it, as before issue 21)
        << BackendAnswered()
        << DropBackend()  # part of a body went to it: it cannot carry another request
        << CloseClient()
        >> ClientSends(b"more body") << PauseClient()  # read no more from a closing phone
    )  # fmt: skip
    assert play.policy.metrics.requests == {("Sync", 401): 1}


def test_interim_answers_pass_before_the_final_one() -> None:
    request = post(b"hi")
    assert (
        Playbook()
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(request) + b"hi")
        >> BackendSends(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        << SendToClient(b"HTTP/1.1 100 Continue\r\n\r\n")
        << SendToClient(OK) << BackendAnswered() << ReleaseBackend()
    )  # fmt: skip


# -- held Ping


def test_a_held_ping_outlives_every_phone_side_timeout_and_is_counted() -> None:
    ping = PING + b"Content-Length: 4\r\n\r\nping"
    play = Playbook()
    assert (
        play
        >> ClientSends(ping) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(ping) + b"ping")
    )  # fmt: skip
    assert play.policy.metrics.held_pings == 1
    assert play.machine.head is None  # with the server: a held Ping keeps no head (log off)
    longest = max(CONFIG.client_idle_timeout, CONFIG.header_timeout, CONFIG.body_timeout)
    assert play >> Wait(longest + 1) >> Wait(longest + 1)  # nothing happens
    assert play.machine.request is Request.SENT
    assert play.machine.response is Response.HEAD
    assert play >> BackendSends(OK) << SendToClient(OK) << BackendAnswered() << ReleaseBackend()
    assert play.policy.metrics.held_pings == 0
    assert play.policy.metrics.requests == {("Ping", 200): 1}


def test_a_held_ping_the_server_forgets_gets_504() -> None:
    ping = PING + b"\r\n"
    play = Playbook()
    assert (
        play
        >> ClientSends(ping) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(ping))
        >> BackendSilent()
        << BackendFailure(
            "timeout", f"the server sent nothing for {CONFIG.read_timeout:g} s; closing the request"
        )
        << SendToClient(answer(504)) << CloseClient()
    )  # fmt: skip
    assert play.policy.metrics.held_pings == 0


def test_a_held_ping_whose_phone_leaves_is_no_longer_counted() -> None:
    ping = PING + b"\r\n"
    play = Playbook()
    assert (
        play
        >> ClientSends(ping) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(ping))
        >> ClientGone() << DropBackend()
    )  # fmt: skip
    assert play.policy.metrics.held_pings == 0
    assert play.policy.metrics.requests == {("Ping", 499): 1}


# -- request smuggling and malformed requests: refused before any server connection


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_each_smuggling_shape_is_refused_before_the_server(name: str) -> None:
    data, status = SMUGGLING[name]
    play = Playbook()
    assert play >> ClientSends(data) << LogNote << SendToClient(answer(status)) << CloseClient()
    assert play.machine.request is Request.CLOSED
    assert play.policy.metrics.requests == {("-", status): 1}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_each_smuggling_shape_is_refused_whatever_the_packet_boundaries(name: str) -> None:
    data, status = SMUGGLING[name]
    play = Playbook()
    given = []
    for at in range(0, len(data), 7):
        given += play.machine.client_data(data[at : at + 7], play.now)
        if play.machine.request is Request.CLOSED:
            break
    assert [type(c) for c in given] == [LogNote, SendToClient, CloseClient]
    assert given[1] == SendToClient(answer(status))


@pytest.mark.parametrize("body", BAD_CHUNKING)
def test_bad_chunking_is_refused_and_the_server_connection_dropped(body: bytes) -> None:
    head = b"POST " + EAS + b"?Cmd=Sync HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    play = Playbook()
    assert play >> ClientSends(head) << OpenBackend() >> BackendReady() << SendToBackend
    assert (
        play
        >> ClientSends(body)
        << LogNote  # nothing of a bad chunked body is forwarded
        << DropBackend()
        << SendToClient(answer(400))
        << CloseClient()
    )
    assert play.machine.request is Request.CLOSED
    assert play.machine.attached is False


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_server_answer_the_edge_cannot_frame_is_a_502(response: bytes) -> None:
    play = bridged()
    given = play.play(BackendSends(response))
    assert isinstance(given[0], BackendFailure)
    assert given[0].kind == "protocol"
    assert given[1:] == [
        BackendBroke("closed a request it had"),
        DropBackend(),
        SendToClient(answer(502)),
        CloseClient(),
    ]
    assert play.machine.request is Request.CLOSED


# -- timeouts and limits


def test_a_head_that_does_not_complete_in_time_gets_408() -> None:
    assert (
        Playbook()
        >> ClientSends(GET[:10])
        >> Wait(CONFIG.header_timeout / 2)
        >> ClientSends(GET[10:20])  # later bytes do not restart the head's deadline
        >> Wait(CONFIG.header_timeout / 2 + 1)
        << SendToClient(answer(408)) << CloseClient()
    )  # fmt: skip


def test_a_stalled_body_gets_408_and_drops_the_server_connection() -> None:
    request = post(b"ab", length=10)
    play = Playbook()
    assert (
        play
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(request) + b"ab")
        >> Wait(CONFIG.body_timeout + 1)
        << DropBackend() << LogNote(f"a request body from {PHONE} stalled; answered 408")
        << SendToClient(answer(408)) << CloseClient()
    )  # fmt: skip


def test_over_the_connection_limit_gets_503_with_retry_after() -> None:
    config = replace(CONFIG, max_connections_per_ip=1)
    play = Playbook(config)
    ClientMachine(play.policy, PHONE).connected(play.now)  # a second one from the same phone
    second = ClientMachine(play.policy, PHONE)
    second.connected(play.now)
    assert second.client_data(GET, play.now) == [SendToClient(answer(503, 5)), CloseClient()]
    assert play >> ClientSends(GET) << OpenBackend()  # the first is within the limit


def test_over_the_request_rate_gets_503_with_retry_after() -> None:
    config = replace(CONFIG, requests_per_second_per_ip=1.0, request_burst_per_ip=1)
    nope = b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"  # 404s are not counted against the rate
    assert (
        Playbook(config)
        >> ClientSends(nope) << SendToClient(answer(404, close=False))
        >> ClientSends(GET) << OpenBackend()
        >> BackendReady() << SendToBackend(forwarded(GET))
        >> BackendSends(OK) << SendToClient(OK) << BackendAnswered() << ReleaseBackend()
        >> ClientSends(GET) << SendToClient(answer(503, 5)) << CloseClient()
    )  # fmt: skip


def test_no_server_to_be_had_gets_503_with_retry_after() -> None:
    play = Playbook()
    assert (
        play
        >> ClientSends(PING + b"\r\n") << OpenBackend()
        >> BackendFails(503, 10) << SendToClient(answer(503, 10)) << CloseClient()
    )  # fmt: skip
    assert play.policy.metrics.held_pings == 0


def test_the_access_log_record_names_the_request() -> None:
    play = Playbook(logged=True)
    request = GET.replace(b"Cmd=Sync", b"Cmd=Sync&User=alice&DeviceId=D1&DeviceType=T")
    assert (
        play
        >> ClientSends(request) << OpenBackend()
        >> BackendReady() << SendToBackend
        >> Wait(0.25)
    )  # fmt: skip
    given = play.play(BackendSends(OK))
    assert given[:3] == [SendToClient(OK), BackendAnswered(), ReleaseBackend()]
    assert given[3] == LogAccess(
        {"client": PHONE, "method": "GET", "path": EAS.decode(), "status": 200, "bytes": len(OK),
         "ms": 250.0, "cmd": "Sync", "user": "alice", "device_id": "D1", "device_type": "T"}
    )  # fmt: skip
    record = play.machine.client_data(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n", play.now)[1]
    assert isinstance(record, LogAccess)
    assert record.record["status"] == 404


# -- the transition tables


def test_every_state_has_its_moves_and_a_forbidden_move_raises() -> None:
    assert set(REQUEST_MOVES) == set(Request)
    assert set(RESPONSE_MOVES) == set(Response)
    assert set(BACKEND_MOVES) == set(Backend)
    machine = ClientMachine(EdgePolicy.of(CONFIG, lambda: False), PHONE)
    with pytest.raises(EdgeStateError, match="head → sent"):
        machine._to(Request.SENT)
    assert REQUEST_MOVES[Request.CLOSED] == frozenset()


# -- the server connection


def test_a_server_connection_is_counted_while_busy_and_pooled_when_there_is_room() -> None:
    server = Server("127.0.0.1:8443", "127.0.0.1", 8443)
    backend = BackendMachine(server, read_timeout=960.0)
    assert backend.received(0.0) is False  # bytes nobody asked for: not trusted
    backend.attach(10.0)
    assert (backend.state, server.active, backend.deadline) == (Backend.BUSY, 1, 970.0)
    assert backend.received(20.0) is True
    assert backend.deadline == 980.0
    assert backend.release(30.0, pooled=0, pool_size=1) is True
    assert (backend.state, server.active, backend.deadline) == (Backend.IDLE, 0, 30.0 + POOL_IDLE)
    backend.attach(40.0)
    assert backend.release(50.0, pooled=1, pool_size=1) is False  # pool full: closed
    assert (backend.state, server.active) == (Backend.CLOSED, 0)
    with pytest.raises(EdgeStateError):
        backend.attach(60.0)


def test_a_server_connection_lost_while_busy_says_so() -> None:
    server = Server("127.0.0.1:8443", "127.0.0.1", 8443)
    backend = BackendMachine(server, read_timeout=960.0)
    backend.attach(0.0)
    assert backend.closed() is True
    assert server.active == 0
    assert backend.closed() is False
    server.up = False
    pooled = BackendMachine(server, read_timeout=960.0)
    pooled.attach(0.0)
    assert pooled.release(1.0, pooled=0, pool_size=8) is False  # its server is out


# -- how the server's answer is cut into reads


_WHOLE_ANSWERS = [
    OK,
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\nWWW-Authenticate: Basic\r\n\r\nno\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
]


def _answered(request: bytes, reads: list[bytes]) -> tuple[bytes, list[Any], Request]:
    """What the phone gets, the other commands and the request state after *reads*."""
    play = bridged(request)
    sent = b""
    others: list[Any] = []
    for data in reads:
        for command in play.play(BackendSends(data)):
            if isinstance(command, SendToClient):
                sent += command.data
            else:
                others.append(command)
    return sent, others, play.machine.request


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_WHOLE_ANSWERS),
    st.sampled_from([GET, post(b"abc")]),
    st.lists(st.integers(min_value=1, max_value=80), max_size=4),
)
def test_an_answer_in_one_read_is_relayed_as_the_same_answer_in_pieces(
    response: bytes, request: bytes, cuts: list[int]
) -> None:
    """The machine takes a whole Content-Length answer in one read by a shorter way (no BODY
    state); the answer cut anywhere, through the general way, gives the phone the same bytes,
    the server connection the same end (released, dropped) and the phone's side the same
    state."""
    points = sorted({cut for cut in cuts if cut < len(response)})
    pieces = [response[a:b] for a, b in zip([0, *points], [*points, len(response)], strict=True)]
    assert _answered(request, [response]) == _answered(request, pieces)


# -- any order of events the shell can deliver


_PIECES = [
    GET,
    post(b"abc"),
    post(b"", length=3),
    b"abc",
    PING + b"\r\n",
    SMUGGLING["cl-and-te"][0],
    b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST " + EAS + b" HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"zz\r\n",
]
_ANSWERS = [
    OK,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"cde",
    b"HTTP/1.0 200 OK\r\n\r\nx",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"junk\r\n\r\n",
]
_SIGNALS = [
    BackendReady(),
    BackendCloses(),
    BackendSilent(),
    BackendFull(),
    BackendWritable(),
    ClientGone(),
    BackendFails(503, 10),
    BackendFails(502),
]
_EVENTS = st.one_of(
    st.builds(ClientSends, st.sampled_from(_PIECES) | st.binary(max_size=24)),
    st.builds(BackendSends, st.sampled_from(_ANSWERS) | st.binary(max_size=24)),
    st.sampled_from(_SIGNALS),
    st.builds(Wait, st.sampled_from([1.0, 31.0, 61.0, 121.0])),
)
_FROM_PHONE = ClientSends | Wait | ClientGone
_OFFERS = BackendReady | BackendFails


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENTS, max_size=30))
def test_any_order_of_events_keeps_the_machine_within_its_table(events: list[Any]) -> None:
    """Events as the shell delivers them (a server only after OpenBackend, its bytes only while
    attached, nothing from a phone that is gone): the machine never makes a move outside its
    table, never sends to a server it has not got, and leaves no Ping or connection counted."""
    play = Playbook()
    wants = attached = gone = False
    for event in events:
        if isinstance(event, ClientSends | Wait | ClientGone) and gone:
            continue
        if isinstance(event, BackendReady | BackendFails) and not wants:
            continue
        if not isinstance(
            event, BackendReady | BackendFails | ClientSends | Wait | ClientGone
        ) and (not attached):
            continue
        if isinstance(event, BackendReady):
            wants, attached = False, True
        elif isinstance(event, BackendFails):
            wants = False
        elif isinstance(event, BackendCloses | BackendSilent):
            attached = False
        gone = gone or isinstance(event, ClientGone)
        for command in play.play(event):
            if isinstance(command, OpenBackend):
                assert not wants
                assert not attached
                assert not gone
                wants = True
            elif isinstance(command, ReleaseBackend | DropBackend):
                assert attached
                attached = False
            elif isinstance(command, SendToBackend):
                assert attached
    if not gone:
        play.play(ClientGone())
    assert play.machine.request is Request.CLOSED
    assert play.policy.metrics.held_pings == 0
    assert play.policy.limits.connections == {}
