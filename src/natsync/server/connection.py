"""One client connection's HTTP/1.1 decisions, without I/O (RFC 9112): bytes and time in,
actions out.

:class:`ServerConnection` is what :class:`natsync.server.front.Connection` (the asyncio
protocol, TLS included) asks what to do. Each event — :meth:`~ServerConnection.receive`,
:meth:`~ServerConnection.answer`, :meth:`~ServerConnection.timer`, the peer going away —
returns a list of actions, named for what the shell must do: :class:`Send` bytes to the client,
:class:`Serve` a request to the app (its body follows as :class:`Body` and :class:`BodyEnd`),
:class:`Park` a held request (a Ping) beside the connection, :class:`Cancel` the request in
flight, :class:`Pause` and :class:`Resume` reading, :class:`Close` after what was sent or
:class:`Abort`, and :class:`Log`. Time is passed in (``now``: the loop's monotonic clock, for the
deadlines; ``date``: the HTTP Date of an answer), never read, so the tests in
``tests/server/test_connection.py`` play whole conversations — keep-alive, pipelining,
half-close, an early answer, a held Ping, each smuggling shape — as transcripts, without sockets.

The states (:class:`State`) change in one place, :meth:`ServerConnection._set_state`, checked
against :data:`TRANSITIONS` (:func:`natsync.base.machine.checked_move`; the edge's machines
make the same check written in their funnels, per keep-alive request a Python frame less per
move; h11's ``_state.py``, aioquic's ``_set_state``)::

    HANDSHAKE ──► IDLE ──► BODY ──► BUSY ──► HELD
                   ▲ ╰──────────────╯ │        │
                   ╰──────────────────┴────────╯        (any state) ──► CLOSED

* HANDSHAKE: TLS is being set up (by the shell); IDLE: between requests, a head may be
  arriving; BODY: the app has the request, its body is still arriving; BUSY: the app has the
  whole request; HELD: the app parked it (a Ping waiting on the change feed): no task, no
  deadline; its answer comes later. An answer sent from BODY (before the body ended) closes.
* Keep-alive as HTTP/1.1 says (HTTP/1.0: only with ``Connection: keep-alive``); empty lines
  before a request line are ignored (RFC 9112 2.2); ``Expect: 100-continue`` is answered when
  the app first waits for the body (:meth:`ServerConnection.want_body`).
* One request at a time; the bytes of a pipelined next one wait. Past :data:`MAX_PENDING` of
  them, reading pauses until the answer is sent (a client cannot make the server keep more).
* A bad head or body framing (the edge's strict parser: both Content-Length and
  Transfer-Encoding, two lengths, obs-fold, bare LF, a bad chunk line...) is answered with its
  status and closes: nothing after it is read, so no second request hides in a body.
* The peer going away — its FIN (a half-close counts: a phone that shut its side is gone for
  a push server), close_notify or a reset — voids the request in flight (:class:`Cancel`: its
  task cancelled, its held Ping released at once) and closes; nothing is answered.
* Deadlines (:attr:`ServerConnection.deadline`): the handshake (dropped), an idle keep-alive
  connection (closed), a head from its first byte (``header_timeout``: later bytes do not
  restart its clock) and a body between two bytes (``body_timeout``), both answered 408; a
  held request has none (it sent its body: waiting for its answer is not being slow).

Memory: the connection keeps this object and its shell for as long as it lives (a held Ping
too), so both are slotted and keep no buffer and no float of their own while held; actions
without data are shared singletons. The split cost no memory per held Ping (bench/push_bench.py
at 2,000 / 5,000 held: 22.5 / 22.2 KB before, 22.5 / 22.2 KB after) and about 3 µs of CPU per
request (bench/front_bench.py: ~32 → ~35 µs with a handler that answers at once; docs/push.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

from natsync.base.http1 import MAX_CHUNK_LINE, MAX_TRAILER_SIZE, chunk_size
from natsync.base.machine import MachineState, Moves, checked_move
from natsync.edge import http as h1
from natsync.edge.http import EdgeHttpError, Framing
from natsync.errors import NatsyncError

#: Seconds a client gets for the TLS handshake (asyncio's and uvloop's default).
TLS_HANDSHAKE_TIMEOUT = 60.0
#: Seconds an idle keep-alive connection is kept between requests (aiohttp's default, above the
#: edge's pool idle time, so the edge closes its pooled connections first).
KEEPALIVE_TIMEOUT = 75.0
#: Bytes of a next (pipelined) request kept while one is served before reading pauses: one
#: largest head.
MAX_PENDING = h1.MAX_HEAD_SIZE + 4
#: Largest declared body the head parser lets through: the handlers check their own limits
#: (413 with a log line); the shell keeps at most its body limit of any body.
NO_LIMIT = 1 << 62
#: Seconds a timer may fire before its deadline and still count (uvloop rounds a delay to the
#: millisecond), so that a timer is not armed again for a fraction of a millisecond.
TIMER_SLACK = 0.002

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class FrontError(NatsyncError):
    """A reply the front cannot send as given (a handler bug: it is answered 500 instead)."""


@dataclass(slots=True)
class Reply:
    """A complete response: status, headers, body (Content-Length and Date are the front's)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Parked(Protocol):
    """A request that waits without a task: :meth:`park` it with the callback that writes its
    answer (called once, on the loop), or :meth:`cancel` it when its connection went away."""

    def park(self, done: Callable[[Reply], object]) -> None: ...
    def cancel(self) -> None: ...


# -- the states and their one table


class State(MachineState):
    HANDSHAKE = "handshake"
    IDLE = "idle"
    BODY = "body"
    BUSY = "busy"
    HELD = "held"
    CLOSED = "closed"


HANDSHAKE, IDLE, BODY, BUSY, HELD, CLOSED = State

#: Every change of state there is; anything else is a bug (:class:`FrontError`).
TRANSITIONS: Moves[State] = {
    HANDSHAKE: frozenset({IDLE, CLOSED}),
    IDLE: frozenset({BODY, BUSY, CLOSED}),
    BODY: frozenset({BUSY, CLOSED}),  # an answer before the body ended closes
    BUSY: frozenset({IDLE, HELD, CLOSED}),
    HELD: frozenset({IDLE, CLOSED}),
    CLOSED: frozenset(),
}
#: States in which the app has a request (its task, or its parked hold).
WITH_APP = frozenset({BODY, BUSY, HELD})
#: States with a deadline (:attr:`ServerConnection.deadline`).
TIMED = frozenset({HANDSHAKE, IDLE, BODY})


def _refuse(old: State, new: State) -> FrontError:
    return FrontError(f"connection state {old.name} cannot become {new.name}")


# -- what the shell is told to do (imperatives; frozen)


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Serve:
    """Hand this request to the app (its body, if any, follows as Body / BodyEnd)."""

    head: h1.RequestHead


@dataclass(frozen=True, slots=True)
class Body:
    """More of the served request's body (its framing removed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The served request's body is whole."""


@dataclass(frozen=True, slots=True)
class Park:
    """The app parked the request: park it beside the connection until it answers."""

    parked: Parked


@dataclass(frozen=True, slots=True)
class Cancel:
    """The request in flight is void: cancel its task, or release its parked hold."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop reading from the client."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Read from the client again."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close after what was sent (with TLS's close_notify)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the connection at once."""


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the front's log (the shell adds the client's address)."""

    level: int
    message: str


Action = Send | Serve | Body | BodyEnd | Park | Cancel | Pause | Resume | Close | Abort | Log

BODY_END, CANCEL, PAUSE, RESUME, CLOSE, ABORT = (
    BodyEnd(),
    Cancel(),
    Pause(),
    Resume(),
    Close(),
    Abort(),
)


@dataclass(frozen=True, slots=True)
class Limits:
    """A listener's settings, shared by its connections."""

    #: Seconds from a request head's first byte to its end.
    header_timeout: float
    #: Seconds a request body may go without a byte.
    body_timeout: float
    #: Seconds an idle connection is kept between requests.
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    #: Seconds a client gets for the TLS handshake.
    handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT


# -- the machine


def response_head(reply: Reply, http10: bool, close: bool, date: bytes) -> bytes:
    """The status line and fields of *reply* (FrontError for a field with a line break)."""
    status = reply.status
    parts = [b"HTTP/1.0 " if http10 else b"HTTP/1.1 ", b"%d " % status, _REASONS.get(status, b"")]
    parts.append(b"\r\n")
    for name, value in reply.headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise FrontError(f"a line break in response header {name!r}; fix the handler")
        parts.append(f"{name}: {value}\r\n".encode())
    parts.append(b"Content-Length: %d\r\nDate: %s\r\nServer: natsync\r\n" % (len(reply.body), date))
    if close and not http10:
        parts.append(b"Connection: close\r\n")
    elif not close and http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class ServerConnection:
    """The decisions of one client connection (module docstring); starts in HANDSHAKE when the
    shell runs TLS, else IDLE."""

    __slots__ = (
        "_body", "_buf", "_closing", "_continue", "_http10", "_keep_alive", "_limits",
        "_paused", "_since", "state",
    )  # fmt: skip

    def __init__(self, limits: Limits, now: float, tls: bool) -> None:
        self._limits = limits
        self.state = HANDSHAKE if tls else IDLE
        #: When the running deadline counts from (module docstring: which one, by state).
        self._since = now
        #: Bytes received and not yet used (None while there are none: an idle or held
        #: connection keeps no buffer).
        self._buf: bytearray | None = None
        #: The served request's body framing, while its body arrives.
        self._body: _BodyReader | None = None
        self._http10 = False
        self._keep_alive = True
        #: "100 Continue" is owed when the app first waits for the body.
        self._continue = False
        self._paused = False
        #: The listener is shutting down: close once no request is in flight.
        self._closing = False

    # -- the one funnel

    def _set_state(self, new: State) -> None:
        self.state = checked_move(TRANSITIONS, self.state, new, _refuse)
        if new not in TIMED:
            self._since = 0.0  # a shared constant: a held connection keeps no float of its own

    @property
    def busy(self) -> bool:
        """The app has a request (served, its body arriving, or held)."""
        return self.state in WITH_APP

    @property
    def deadline(self) -> float | None:
        """When :meth:`timer` must be called (in ``now``'s clock), or None."""
        state = self.state
        if state is IDLE:
            limit = self._limits.header_timeout if self._buf else self._limits.keepalive_timeout
        elif state is BODY:
            limit = self._limits.body_timeout
        elif state is HANDSHAKE:
            limit = self._limits.handshake_timeout
        else:
            return None
        return self._since + limit

    # -- events

    def handshake_done(self, now: float) -> list[Action]:
        """TLS is up: wait for a request."""
        self._set_state(IDLE)
        self._since = now
        actions: list[Action] = []
        if self._closing:
            self._close(actions)
        return actions

    def receive(
        self, data: bytes | bytearray | memoryview, now: float, date: bytes
    ) -> list[Action]:
        """Bytes from the client (decrypted)."""
        if self.state is CLOSED or self.state is HANDSHAKE:
            return []
        buf = self._buf
        if buf is None:
            if self.state is IDLE:
                self._since = now  # a head begins: its deadline counts from its first byte
            self._buf = buf = bytearray(data)
        else:
            buf += data
        actions: list[Action] = []
        self._process(actions, now, date)
        return actions

    def want_body(self) -> list[Action]:
        """The app waits for the body: "100 Continue" if the client asked for it."""
        if not self._continue:
            return []
        self._continue = False
        return [Send(CONTINUE)]

    def answer(self, result: Reply | Parked, now: float, date: bytes) -> list[Action]:
        """What the app gave back: a reply to send, or a request to park (whose reply comes
        later, through this method again)."""
        if not isinstance(result, Reply):
            if self.state is CLOSED:
                return [Park(result), CANCEL]  # gone meanwhile: release it at once
            if self.state is BUSY:
                self._set_state(HELD)
            return [Park(result)]
        if self.state is CLOSED:
            return []
        close = not self._keep_alive or self.state is BODY or self._closing
        actions: list[Action] = []
        try:
            head = response_head(result, self._http10, close, date)
        except FrontError as exc:
            actions.append(Log(logging.ERROR, exc.message))
            result = Reply(500)
            head = response_head(result, self._http10, close, date)
        actions.append(Send(head + result.body))
        if close:
            self._close(actions)
            return actions
        self._set_state(IDLE)
        self._since = now
        if self._paused:
            self._paused = False
            actions.append(RESUME)
        if self._buf:
            self._process(actions, now, date)
        return actions

    def timer(self, now: float, date: bytes) -> list[Action]:
        """The shell's timer fired: act on a deadline that passed (none yet: nothing)."""
        deadline = self.deadline
        if deadline is None or now + TIMER_SLACK < deadline:
            return []
        state = self.state
        if state is HANDSHAKE:
            self._set_state(CLOSED)
            return [ABORT]
        actions: list[Action] = []
        if state is IDLE and not self._buf:
            self._close(actions)  # idle keep-alive: over
        elif state is IDLE:
            actions.append(Log(logging.INFO, "request head not whole in time; answered 408"))
            self._refuse(actions, 408, date)
        else:
            actions.append(Log(logging.INFO, "request body stalled; answered 408"))
            self._refuse(actions, 408, date)
        return actions

    def peer_closed(self) -> list[Action]:
        """The client went away (FIN, close_notify, reset): the request in flight is void."""
        if self.state is CLOSED:
            return []
        actions: list[Action] = [CANCEL] if self.busy else []
        self._close(actions)
        return actions

    def broken(self) -> list[Action]:
        """The connection cannot go on (a TLS error, the listener's last call): drop it."""
        if self.state is CLOSED:
            return []
        actions: list[Action] = [CANCEL] if self.busy else []
        self._set_state(CLOSED)
        self._buf = None
        self._body = None
        actions.append(ABORT)
        return actions

    def shutdown(self) -> list[Action]:
        """The listener closes: close now when no request is in flight, else after its answer."""
        self._closing = True
        if self.state is IDLE or self.state is HANDSHAKE:
            actions: list[Action] = []
            self._close(actions)
            return actions
        return []

    def lost(self) -> None:
        """The transport is gone (the shell releases what it held)."""
        if self.state is not CLOSED:
            self._set_state(CLOSED)
        self._buf = None
        self._body = None

    # -- inside

    def _process(self, actions: list[Action], now: float, date: bytes) -> None:
        buf = self._buf
        assert buf is not None
        while buf:
            state = self.state
            body = self._body
            if body is not None:
                try:
                    used, done = body.feed(buf, actions)
                except EdgeHttpError as exc:
                    self._refuse(actions, exc.http_status, date)
                    return
                del buf[:used]
                if not done:
                    self._since = now  # the body timeout counts from its last byte
                    break
                self._body = None
                actions.append(BODY_END)
                if state is BODY:
                    self._set_state(BUSY)
            elif state is IDLE:
                try:
                    skip = h1.empty_lines(buf) if buf[:2] == b"\r\n" else 0
                    if skip:
                        if skip == len(buf):
                            break
                        del buf[:skip]
                    end = h1.head_end(buf)
                    if end < 0:
                        break
                    head = h1.parse_request_head(bytes(buf[:end]), NO_LIMIT)
                except EdgeHttpError as exc:
                    self._refuse(actions, exc.http_status, date)
                    return
                del buf[:end]
                self._serve(head, actions, now)
            elif state is CLOSED:
                break
            else:  # a request is with the app: what follows is the next one, kept for later
                if len(buf) > MAX_PENDING and not self._paused:
                    self._paused = True
                    actions.append(PAUSE)
                break
        if self._buf is not None and not self._buf:
            self._buf = None

    def _serve(self, head: h1.RequestHead, actions: list[Action], now: float) -> None:
        self._http10 = http10 = head.version == b"HTTP/1.0"
        self._keep_alive = head.keep_alive
        actions.append(Serve(head))
        if head.framing == Framing.NONE:
            self._continue = False
            self._set_state(BUSY)
            return
        expect = head.get(b"expect")
        self._continue = not http10 and expect is not None and expect.lower() == b"100-continue"
        self._body = _BodyReader(head)
        self._since = now
        self._set_state(BODY)

    def _refuse(self, actions: list[Action], status: int, date: bytes) -> None:
        """Answer a request that cannot be read (its head or body framing, or too slow) and
        close; a request the app has is void."""
        if self.busy:
            actions.append(CANCEL)
        actions.append(Send(response_head(Reply(status), False, True, date)))
        self._close(actions)

    def _close(self, actions: list[Action]) -> None:
        self._set_state(CLOSED)
        self._buf = None
        self._body = None
        actions.append(CLOSE)


class _BodyReader:
    """Removes a body's framing (RFC 9112 6.3: Content-Length, or chunked 7.1)."""

    __slots__ = ("_chunk", "_remaining", "_trailer")

    def __init__(self, head: h1.RequestHead) -> None:
        #: LENGTH: bytes still to come.
        self._remaining = head.length
        #: CHUNKED: >0 data left in the chunk, 0 a size line is next, -1 the CRLF after a
        #: chunk's data, -2 the trailer section (None: not chunked).
        self._chunk: int | None = 0 if head.framing == Framing.CHUNKED else None
        self._trailer = 0

    def feed(self, buf: bytearray, actions: list[Action]) -> tuple[int, bool]:
        """(bytes of *buf* used, whether the body ended); its data appended to *actions* as
        :class:`Body`; EdgeHttpError when the chunked framing is malformed."""
        if self._chunk is None:
            take = min(self._remaining, len(buf))
            if take:
                actions.append(Body(bytes(buf[:take])))
            self._remaining -= take
            return take, not self._remaining
        return self._feed_chunked(buf, actions)

    def _feed_chunked(self, buf: bytearray, actions: list[Action]) -> tuple[int, bool]:
        pos, n = 0, len(buf)
        while pos < n:
            chunk = self._chunk
            assert chunk is not None
            if chunk > 0:
                take = min(chunk, n - pos)
                actions.append(Body(bytes(buf[pos : pos + take])))
                pos += take
                self._chunk = chunk - take or -1
                continue
            end = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if end < 0:
                if n - pos > MAX_CHUNK_LINE:
                    raise EdgeHttpError(400, "chunk size line too long")
                break
            line = bytes(buf[pos:end])
            pos = end + 2
            if b"\r" in line or b"\n" in line:
                raise EdgeHttpError(400, "chunked body line without CRLF")
            if chunk == -1:
                if line:
                    raise EdgeHttpError(400, "chunk data longer than its size")
                self._chunk = 0
            elif chunk == 0:
                self._chunk = chunk_size(line) or -2
            elif line:
                self._trailer += len(line)
                if self._trailer > MAX_TRAILER_SIZE:
                    raise EdgeHttpError(400, "chunked trailers too large")
            else:
                return pos, True
        return pos, False
