"""The front's connection machine (natsync.server.connection) as transcripts, without sockets:
bytes and time go in, the actions come out and are compared whole (mitmproxy's Playbook).
Keep-alive, pipelining (and its pause), half-close, an early answer, a held Ping, slow clients,
and each request smuggling shape, refused before anything behind it is read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.server.connection import (
    BODY,
    BUSY,
    CLOSED,
    CONTINUE,
    HANDSHAKE,
    HELD,
    IDLE,
    MAX_PENDING,
    TRANSITIONS,
    Abort,
    Action,
    Body,
    BodyEnd,
    Cancel,
    Close,
    FrontError,
    Limits,
    Log,
    Park,
    Pause,
    Reply,
    Resume,
    Send,
    Serve,
    ServerConnection,
    State,
)

LIMITS = Limits(header_timeout=30.0, body_timeout=60.0, keepalive_timeout=75.0)
DATE = b"Sun, 06 Dec 2026 23:00:00 GMT"
GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes, *fields: bytes) -> bytes:
    extra = b"".join(f + b"\r\n" for f in fields)
    head = b"POST /p HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(body))
    return head + body


def answer(
    status: int, *fields: str, body: bytes = b"", close: bool = False, version: str = "1.1"
) -> Send:
    """The exact bytes the front sends for a reply."""
    lines = [f"HTTP/{version} {status} {HTTPStatus(status).phrase}", *fields]
    lines += [f"Content-Length: {len(body)}", f"Date: {DATE.decode()}", "Server: natsync"]
    if close:
        lines.append("Connection: close")
    return Send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)


def shown(actions: list[Action]) -> list[object]:
    """Actions as a transcript reads them (a served request by its request line)."""
    out: list[object] = []
    for action in actions:
        if isinstance(action, Serve):
            out.append(
                Serve.__name__ + " " + (action.head.method + b" " + action.head.target).decode()
            )
        elif isinstance(action, Park):
            out.append("Park")
        else:
            out.append(action)
    return out


class Parked:
    """What the app hands back for a held Ping (the machine only passes it on)."""

    def park(self, done: Callable[[Reply], object]) -> None:
        raise AssertionError("the machine never parks by itself: the shell does")

    def cancel(self) -> None:
        raise AssertionError("the machine never cancels by itself: the shell does")


def conn(tls: bool = False) -> ServerConnection:
    return ServerConnection(LIMITS, 0.0, tls=tls)


def at(c: ServerConnection) -> State:
    """The state now (a call, so that mypy does not narrow it across events)."""
    return c.state


def due(c: ServerConnection) -> float | None:
    return c.deadline


# -- keep-alive and pipelining


def test_keep_alive_answers_then_waits_for_the_next_request_then_closes_when_idle() -> None:
    c = conn()
    assert at(c) is IDLE
    assert due(c) == 75.0
    assert shown(c.receive(GET, 1.0, DATE)) == ["Serve GET /a"]
    assert at(c) is BUSY
    assert due(c) is None
    assert c.answer(Reply(200, {"X-A": "1"}, b"ok"), 2.0, DATE) == [
        answer(200, "X-A: 1", body=b"ok")
    ]
    assert at(c) is IDLE
    assert due(c) == 77.0
    assert shown(c.receive(GET_B, 3.0, DATE)) == ["Serve GET /b"]
    assert c.answer(Reply(204), 4.0, DATE) == [answer(204)]
    assert c.timer(50.0, DATE) == []  # not yet
    assert c.timer(79.0, DATE) == [Close()]
    assert at(c) is CLOSED


def test_pipelined_requests_are_served_one_at_a_time_in_order() -> None:
    c = conn()
    assert shown(c.receive(GET + post(b"abc") + GET_B, 0.0, DATE)) == ["Serve GET /a"]
    # The next ones wait while the first is with the app.
    assert c.receive(b"", 0.5, DATE) == []
    assert shown(c.answer(Reply(200), 1.0, DATE)) == [
        answer(200), "Serve POST /p", Body(b"abc"), BodyEnd()
    ]  # fmt: skip
    assert shown(c.answer(Reply(201), 2.0, DATE)) == [answer(201), "Serve GET /b"]
    assert c.answer(Reply(200), 3.0, DATE) == [answer(200)]
    assert at(c) is IDLE


def test_a_pipelined_flood_pauses_reading_until_the_answer() -> None:
    c = conn()
    c.receive(GET, 0.0, DATE)
    assert c.receive(b"x" * MAX_PENDING, 0.1, DATE) == []
    assert c.receive(b"y", 0.2, DATE) == [Pause()]
    assert c.receive(b"z", 0.3, DATE) == []  # paused once
    # Reading resumes; what was kept is no request head (too long): 431, closed.
    assert c.answer(Reply(200), 1.0, DATE) == [
        answer(200), Resume(), answer(431, close=True), Close()
    ]  # fmt: skip


def test_http_1_0_closes_after_its_answer_unless_it_asked_to_keep_alive() -> None:
    c = conn()
    c.receive(b"GET / HTTP/1.0\r\n\r\n", 0.0, DATE)
    assert c.answer(Reply(200), 1.0, DATE) == [answer(200, version="1.0"), Close()]
    c = conn()
    c.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.0, DATE)
    (sent,) = c.answer(Reply(200), 1.0, DATE)
    assert isinstance(sent, Send)
    assert b"\r\nConnection: keep-alive\r\n" in sent.data
    assert at(c) is IDLE


def test_connection_close_is_honoured_and_what_follows_is_not_read() -> None:
    c = conn()
    last = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert shown(c.receive(last + GET, 0, DATE)) == ["Serve GET /"]
    assert c.answer(Reply(200), 1.0, DATE) == [answer(200, close=True), Close()]
    assert c.receive(GET, 2.0, DATE) == []


# -- half-close, early answer, held Ping


def test_the_peer_going_away_voids_the_request_in_flight() -> None:
    c = conn()
    c.receive(GET, 0.0, DATE)
    assert c.peer_closed() == [Cancel(), Close()]
    assert at(c) is CLOSED
    assert c.answer(Reply(200), 1.0, DATE) == []  # nothing is written any more
    idle = conn()
    assert idle.peer_closed() == [Close()]


def test_a_ping_parked_after_the_peer_left_is_released_at_once() -> None:
    c = conn()
    c.receive(post(b"ping"), 0.0, DATE)
    c.peer_closed()
    parked = Parked()
    assert c.answer(parked, 1.0, DATE) == [Park(parked), Cancel()]


def test_an_answer_before_the_body_ended_closes_the_connection() -> None:
    c = conn()
    assert shown(c.receive(post(b"0123456789")[:-7], 0.0, DATE)) == ["Serve POST /p", Body(b"012")]
    assert at(c) is BODY
    assert c.answer(Reply(413), 1.0, DATE) == [answer(413, close=True), Close()]
    assert c.receive(b"3456789" + GET, 2.0, DATE) == []  # the rest is not read


def test_a_held_ping_has_no_deadline_and_answers_later() -> None:
    c = conn()
    assert shown(c.receive(post(b"<ping>"), 0.0, DATE)) == [
        "Serve POST /p", Body(b"<ping>"), BodyEnd()
    ]  # fmt: skip
    parked = Parked()
    assert c.answer(parked, 0.1, DATE) == [Park(parked)]
    assert at(c) is HELD
    assert due(c) is None
    assert c.busy
    assert c.timer(10_000.0, DATE) == []
    # A pipelined request behind it waits for the Ping's answer.
    assert c.receive(GET, 500.0, DATE) == []
    assert shown(c.answer(Reply(200, body=b"pong"), 600.0, DATE)) == [
        answer(200, body=b"pong"), "Serve GET /a"
    ]  # fmt: skip


def test_expect_100_continue_is_answered_once_when_the_body_is_wanted() -> None:
    c = conn()
    c.receive(post(b"abc", b"Expect: 100-continue")[:-3], 0.0, DATE)
    assert c.want_body() == [Send(CONTINUE)]
    assert c.want_body() == []
    old = conn()
    old.receive(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 0, DATE)
    assert old.want_body() == []


def test_chunked_bodies_lose_their_framing() -> None:
    c = conn()
    head = b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    assert shown(c.receive(head + body + GET, 0.0, DATE)) == [
        "Serve POST /p", Body(b"abc"), Body(b"de"), BodyEnd()
    ]  # fmt: skip
    assert shown(c.answer(Reply(200), 1.0, DATE)) == [answer(200), "Serve GET /a"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_split_of_a_conversation_serves_the_same_requests_and_bodies(sizes: list[int]) -> None:
    head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire = b"\r\n" + post(b"hello") + head + b"4\r\nwxyz\r\n1\r\n!\r\n0\r\n\r\n" + GET
    c = conn()
    got: list[Action] = []
    pos, now = 0, 0.0
    for size in [*sizes, len(wire)]:
        now += 1
        got += c.receive(wire[pos : pos + size], now, DATE)
        pos += size
        while c.state is BUSY:  # the app answers each whole request at once
            got += c.answer(Reply(200), now, DATE)
    requests = [a for a in shown(got) if isinstance(a, str)]
    data = b"".join(a.data for a in got if isinstance(a, Body))
    assert requests == ["Serve POST /p", "Serve POST /c", "Serve GET /a"]
    assert data == b"hellowxyz!"
    assert sum(isinstance(a, Send) for a in got) == 3


# -- slow clients and the handshake


def test_a_head_is_cut_at_its_deadline_from_its_first_byte() -> None:
    c = conn()
    c.receive(b"GET / HT", 10.0, DATE)
    assert due(c) == 40.0
    c.receive(b"TP/1.1\r\n", 39.0, DATE)  # later bytes do not restart the clock
    actions = c.timer(40.0, DATE)
    assert actions == [
        Log(logging.INFO, "request head not whole in time; answered 408"),
        answer(408, close=True),
        Close(),
    ]


def test_a_stalled_body_gets_408_and_its_request_is_void() -> None:
    c = conn()
    c.receive(post(b"0123")[:-2], 0.0, DATE)
    c.receive(b"2", 50.0, DATE)
    assert due(c) == 110.0
    assert c.timer(60.0, DATE) == []  # the body moved at 50: not stalled yet
    actions = c.timer(110.0, DATE)
    assert actions[0] == Log(logging.INFO, "request body stalled; answered 408")
    assert actions[1:] == [Cancel(), answer(408, close=True), Close()]


def test_the_tls_handshake_has_its_deadline_then_requests_are_read() -> None:
    c = conn(tls=True)
    assert at(c) is HANDSHAKE
    assert due(c) == 60.0
    assert c.receive(GET, 1.0, DATE) == []  # not before TLS is up
    assert c.timer(60.0, DATE) == [Abort()]
    c = conn(tls=True)
    assert c.handshake_done(5.0) == []
    assert at(c) is IDLE
    assert due(c) == 80.0
    assert shown(c.receive(GET, 6.0, DATE)) == ["Serve GET /a"]


def test_empty_lines_before_a_request_line_are_ignored() -> None:
    c = conn()
    assert c.receive(b"\r\n\r\n", 0.0, DATE) == []
    assert shown(c.receive(GET, 1.0, DATE)) == ["Serve GET /a"]


def test_shutdown_closes_idle_connections_now_and_busy_ones_after_their_answer() -> None:
    idle = conn()
    assert idle.shutdown() == [Close()]
    busy = conn()
    busy.receive(GET + GET_B, 0.0, DATE)
    assert busy.shutdown() == []
    assert busy.answer(Reply(200), 1.0, DATE) == [answer(200, close=True), Close()]
    handshaking = conn(tls=True)
    assert handshaking.shutdown() == [Close()]


def test_a_handler_reply_with_a_line_break_in_a_header_is_answered_500() -> None:
    c = conn()
    c.receive(GET, 0.0, DATE)
    actions = c.answer(Reply(200, {"X-Bad": "a\r\nSet-Cookie: b"}), 1.0, DATE)
    assert actions[0] == Log(
        logging.ERROR, "a line break in response header 'X-Bad'; fix the handler"
    )
    assert actions[1] == answer(500)


def test_every_change_of_state_goes_through_the_table() -> None:
    c = conn()
    c.receive(GET, 0.0, DATE)
    c.peer_closed()
    with pytest.raises(FrontError, match="CLOSED cannot become IDLE"):
        c._set_state(IDLE)
    assert set(TRANSITIONS) == set(State)
    assert not TRANSITIONS[CLOSED]
    assert all(CLOSED in TRANSITIONS[s] for s in State if s is not CLOSED)


# -- request smuggling: refused, and nothing behind the bad message is served

SMUGGLING_HEADS = {
    "both Content-Length and Transfer-Encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "two Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        400,
    ),
    "a Content-Length list": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n", 400),
    "a signed Content-Length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n", 400),
    "a coding other than chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    "chunked twice": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        501,
    ),
    "Transfer-Encoding in HTTP/1.0": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "obs-fold": (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 4\r\n\r\n",
        400,
    ),
    "a space before the colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        400,
    ),
    "a bare LF": (b"POST / HTTP/1.1\nHost: x\r\nContent-Length: 4\r\n\r\n", 400),
    "two Hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "a NUL in a value": (b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n", 400),
    "an absolute target": (b"GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "a head too large": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 17_000, 431),
}

CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
SMUGGLING_BODIES = {
    "a chunk size that is not hexadecimal": b"zz\r\n",
    "a chunk size with 0x": b"0x4\r\nabcd\r\n0\r\n\r\n",
    "a negative chunk size": b"-4\r\n",
    "a chunk longer than its size": b"2\r\nabcd\r\n0\r\n\r\n",
    "a chunk line ending in a bare LF": b"4\nabcd\r\n0\r\n\r\n",
    "a control character in a chunk extension": b"4;a=\x01\r\nabcd\r\n0\r\n\r\n",
    "a chunk size line too long": b"4;" + b"a" * 2000,
    "trailers too large": b"0\r\n" + b"X-T: " + b"t" * 4100 + b"\r\n\r\n",
}


@pytest.mark.parametrize(("head", "status"), SMUGGLING_HEADS.values(), ids=SMUGGLING_HEADS)
def test_each_smuggling_head_is_refused_and_closes(head: bytes, status: int) -> None:
    c = conn()
    actions = c.receive(head + b"abcd" + SMUGGLED, 0.0, DATE)
    assert actions == [answer(status, close=True), Close()]
    assert c.receive(SMUGGLED, 1.0, DATE) == []


@pytest.mark.parametrize("body", SMUGGLING_BODIES.values(), ids=SMUGGLING_BODIES)
def test_each_smuggling_chunked_body_is_refused_its_request_void_and_closes(body: bytes) -> None:
    c = conn()
    actions = c.receive(CHUNKED + body + SMUGGLED, 0.0, DATE)
    assert shown(actions[:1]) == ["Serve POST /"]
    rest = [a for a in actions[1:] if not isinstance(a, Body)]
    assert rest == [Cancel(), answer(400, close=True), Close()]
