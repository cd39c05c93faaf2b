"""What each of the edge's connections decides, as two machines without I/O (issue 21).

:class:`ClientMachine` is one phone's TLS connection: it reads requests one at a time, bridges
each to a server connection and streams the answer back. :class:`BackendMachine` is one TLS
connection to a server: idle (new, or kept in the pool), busy with one phone's exchange, or
closed. Both take bytes and ``now`` (seconds on the shell's monotonic clock) and return
*commands*: values naming what the I/O shell (:mod:`natsync.edge.proxy`) must do —
send to the phone, send to the server, pause or resume reading the phone, close, open or
release a server connection, log. Nothing here reads a clock, a socket or a logger, so every
edge case (pipelining, keep-alive, half-close, an early response, a held Ping, each smuggling
shape) is a transcript test without sockets (``tests/edge/test_connection.py``).

States are :class:`~natsync.base.machine.MachineState` members, each role's changed in one
place (``_to`` for the request and for a server connection, ``_respond`` for the response) that
checks the move against its transition table below (the check of
:func:`~natsync.base.machine.checked_move`, which the server's front calls, written in each
funnel: see Costs) — h11's ``_state.py`` and aioquic's ``_set_state`` are the model. A phone
connection has two roles, as h11's connection has: the *request* (phone → server:
:class:`Request`) and the *response* (server → phone: :class:`Response`). They are separate
because they overlap: a server may answer before the request body is in (the early
response), and a held Ping sits in ``Request.SENT`` / ``Response.HEAD`` for up to an hour.
So a phone connection has one funnel per role, not one for the machine (issue 21 asked one
per machine; h11 also keys its transitions by role, ``EVENT_TRIGGERED_TRANSITIONS[role]``):
folding them into one would need either a table over pairs of states (5 × 3), where each
request move is listed again for every response state it may happen in (and the reverse), or
a type test on every move — nine moves per keep-alive request on the hot path
measured below — for no check the two tables do not already make. :class:`BackendMachine`
has one role and one funnel.

Moves of the request::

    HEAD ──(head valid, published, within limits)──> CONNECTING ──(server ready)──> BODY ─> SENT
     ^  └─(edge answers 404, keep-alive)─┘                  └──(no body)──────────────────┘
     └──────────────────────(whole answer sent, keep-alive)───────────────────────────────┘
    any ──(refused, timed out, early answer, server lost, phone gone)──> CLOSED

Moves of the response: ``NONE ─(server ready)─> HEAD ─(head)─> BODY ─(end)─> NONE``;
``HEAD ─(head and whole Content-Length body in one read)─> NONE``, the usual answer, taken
by a shorter way in :meth:`ClientMachine.backend_data` (the same bytes and the same end as
the answer cut into reads: a property test says so); and ``HEAD/BODY ─(server lost or
dropped)─> NONE``.

Costs: a keep-alive request over a pooled connection makes three machine calls (the head, the
server ready, the answer), seven or eight state moves and two command values with bytes; the
commands without arguments are module singletons, so pausing, closing, opening or releasing
allocates nothing, and the states hash by identity (an ``Enum``'s own ``__hash__`` is a Python
function). With fake transports (``python bench/edge_bench.py hot-path``: one request and one
response through a pooled connection, process CPU time, best of five) the Python run per
keep-alive request was 7.0-7.2 µs before this split and 8.0-8.6 µs with it. Three changes
took it to 7.3-8.0 µs (medians 7.7 against 8.25 µs, six runs each in turns, load 0.8, 7 Dec
2026): each funnel checks its move itself (the shared
:func:`~natsync.base.machine.checked_move` cost a second Python frame per move, seven or eight
per request); the C head parsers are called directly, their Python wrappers only when C
declines or wants more bytes; the one-read answer above. Under TLS that is within the noise
of the bench's CPU time per request (docs/edge.md).

The three usual moves — a whole head between requests (its target judged before, its address
within its rate, the access log off), the server ready for it (no chunked body), a whole
Content-Length answer in one read with nothing held for a next request — are also made in C
(``natsync.edge._steady``, issue 27): each method calls its C function first, which makes the
move exactly as the Python below makes it (the same commands, every slot, the rate limiter's
bucket and the counters) or declines having changed nothing. The Python methods are the
reference and every other case; :func:`python_moves` switches C off, and
``tests/edge/test_steady.py`` and ``fuzz/fuzz_edge_steady.py`` compare the two. So a change to
one of these moves here is a change to ``_steady.c`` too: those tests fail until it is made.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from natsync.base.machine import MachineState, Moves
from natsync.edge import http
from natsync.edge.balance import Server
from natsync.edge.config import EdgeConfig
from natsync.edge.http import (
    F_CHUNKED,
    F_CLOSE,
    F_LENGTH,
    F_NONE,
    ChunkedScanner,
    EasFields,
    EdgeHttpError,
)  # fmt: skip
from natsync.edge.http import c_take_request as _c_take_request
from natsync.edge.http import c_take_response as _c_take_response
from natsync.edge.limits import RateLimiter
from natsync.edge.metrics import LONGEST_COUNTED_CMD, Metrics
from natsync.edge.rules import PublishRules
from natsync.errors import NatsyncError

#: Retry-After (seconds) with a 503 for a client over its limits, or a server that is down.
RETRY_AFTER_LIMIT = 5
RETRY_AFTER_DOWN = 10
#: Seconds an idle pooled server connection is kept: below aiohttp's keep-alive (75 s) so the
#: edge, not the server, closes it, and a request never races the server's close.
POOL_IDLE = 30.0


def shortest_deadline(config: EdgeConfig) -> float:
    """The least time ahead any machine here sets a deadline to: every deadline is ``now +``
    one of these. So a sweep that finds no deadline before T need not look again before
    min(T, its time + this) (natsync.edge.proxy: held connections are not scanned each second)."""
    return min(
        config.header_timeout,
        config.body_timeout,
        config.client_idle_timeout,
        config.read_timeout,
        POOL_IDLE,
    )


#: Distinct request targets whose fields and publishing decision are remembered (as
#: :data:`natsync.edge.rules.REMEMBERED_PATHS`: a scanner's random targets only fill it up).
REMEMBERED_TARGETS = 1024


class EdgeStateError(NatsyncError):
    """A connection machine was asked for a move its transition table forbids (a bug in the
    edge: report it with the log line)."""


# -- states


class Request(MachineState):
    """The request role of a phone connection (phone → server)."""

    #: Reading a request head (or idle between keep-alive requests).
    HEAD = "head"
    #: Head taken and allowed; waiting for a server connection.
    CONNECTING = "connecting"
    #: Forwarding the request body to the server.
    BODY = "body"
    #: The whole request went to the server; its answer is awaited or streaming.
    SENT = "sent"
    CLOSED = "closed"


class Response(MachineState):
    """The response role of a phone connection (server → phone)."""

    #: No exchange with a server in hand.
    NONE = "none"
    #: A server connection is attached; its response head has not come yet (a held Ping).
    HEAD = "head"
    #: Streaming the response body to the phone.
    BODY = "body"


class Backend(MachineState):
    """A server connection."""

    #: Connected, no exchange: just opened, or kept in the pool.
    IDLE = "idle"
    #: Carrying one phone's exchange.
    BUSY = "busy"
    CLOSED = "closed"


_REQ_HEAD, _REQ_CONNECTING, _REQ_BODY, _REQ_SENT, _REQ_CLOSED = Request
_RESP_NONE, _RESP_HEAD, _RESP_BODY = Response
_B_IDLE, _B_BUSY, _B_CLOSED = Backend

#: The moves each state may make; anything else raises :class:`EdgeStateError`.
REQUEST_MOVES: Moves[Request] = {
    Request.HEAD: frozenset({Request.HEAD, Request.CONNECTING, Request.CLOSED}),
    Request.CONNECTING: frozenset({Request.BODY, Request.SENT, Request.CLOSED}),
    Request.BODY: frozenset({Request.SENT, Request.CLOSED}),
    Request.SENT: frozenset({Request.HEAD, Request.CLOSED}),
    Request.CLOSED: frozenset(),
}
RESPONSE_MOVES: Moves[Response] = {
    Response.NONE: frozenset({Response.HEAD}),
    Response.HEAD: frozenset({Response.BODY, Response.NONE}),
    Response.BODY: frozenset({Response.NONE}),
}
BACKEND_MOVES: Moves[Backend] = {
    Backend.IDLE: frozenset({Backend.BUSY, Backend.CLOSED}),
    Backend.BUSY: frozenset({Backend.IDLE, Backend.CLOSED}),
    Backend.CLOSED: frozenset(),
}


def _refuse(role: str, old: MachineState, new: MachineState) -> EdgeStateError:
    return EdgeStateError(f"edge {role}: {old.value} → {new.value} is not a move it may make")


_REFUSE_REQUEST = functools.partial(_refuse, "request")
_REFUSE_RESPONSE = functools.partial(_refuse, "response")
_REFUSE_BACKEND = functools.partial(_refuse, "server connection")


# -- commands (imperatives, as mitmproxy names them)


# The two commands made per request carry bytes and are not frozen: a frozen dataclass is
# built through object.__setattr__, twice the cost, for a value nobody changes anyway.


@dataclass(slots=True)
class SendToClient:
    data: bytes


@dataclass(slots=True)
class SendToBackend:
    data: bytes


@dataclass(frozen=True, slots=True)
class PauseClient:
    """Stop reading the phone (bytes are held that may not be acted on yet)."""


@dataclass(frozen=True, slots=True)
class ResumeClient:
    pass


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close the phone's connection once what was sent is written."""


@dataclass(frozen=True, slots=True)
class AbortClient:
    """Cut the phone's connection now (nothing more can be said on it)."""


@dataclass(frozen=True, slots=True)
class OpenBackend:
    """Attach a server connection (pooled or new) and report ``backend_ready`` or
    ``backend_failed``."""


@dataclass(frozen=True, slots=True)
class ReleaseBackend:
    """The exchange ended cleanly: the server connection may go back to its pool."""


@dataclass(frozen=True, slots=True)
class DropBackend:
    """Detach the server connection and abort it (spent, or no longer trustworthy)."""


@dataclass(frozen=True, slots=True)
class BackendAnswered:
    """The server gave a whole answer: whatever failed on it before is past (health)."""


@dataclass(frozen=True, slots=True)
class BackendBroke:
    """The server broke an exchange it had (counts as a failed health check)."""

    reason: str


@dataclass(frozen=True, slots=True)
class BackendFailure:
    """Count a server-side failure of *kind* and log *message* (rate-limited by the shell)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class LogAccess:
    """One access-log record (only made while the access log is on)."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LogNote:
    """One informational log line."""

    message: str


Command = (
    SendToClient | SendToBackend | PauseClient | ResumeClient | CloseClient | AbortClient
    | OpenBackend | ReleaseBackend | DropBackend | BackendAnswered | BackendBroke
    | BackendFailure | LogAccess | LogNote
)  # fmt: skip

PAUSE_CLIENT = PauseClient()
RESUME_CLIENT = ResumeClient()
CLOSE_CLIENT = CloseClient()
ABORT_CLIENT = AbortClient()
OPEN_BACKEND = OpenBackend()
RELEASE_BACKEND = ReleaseBackend()
DROP_BACKEND = DropBackend()
BACKEND_ANSWERED = BackendAnswered()


@dataclass(slots=True)
class EdgePolicy:
    """What every phone connection of one edge process consults: settings, publishing rules,
    per-address limits, counters, and whether the access log is on (asked per request: a test
    or an operator may switch it)."""

    config: EdgeConfig
    rules: PublishRules
    limits: RateLimiter
    metrics: Metrics
    access_logged: Callable[[], bool]
    #: Request target → (its ActiveSync fields, published?), for targets whose fields come
    #: from the target alone. A phone repeats the same few targets; this saves decoding the
    #: path and the query per request (issue 21 kept the per-request cost where it was).
    targets: dict[bytes, tuple[EasFields, bool]] = field(default_factory=dict)

    @classmethod
    def of(cls, config: EdgeConfig, access_logged: Callable[[], bool]) -> EdgePolicy:
        rules = PublishRules(config.paths)
        return cls(config, rules, RateLimiter(config), Metrics(), access_logged)

    def judge(self, head: http.RequestHead, logged: bool) -> tuple[EasFields, bool]:
        """The request's ActiveSync fields (the user too while the access log is on: *logged*)
        and whether its path is published."""
        if logged:
            return http.eas_fields(head, True), self.rules.allows(head.path)
        target = head.target
        known = self.targets.get(target)
        if known is None:
            known = (http.eas_fields(head, False), self.rules.allows(head.path))
            query = target.partition(b"?")[2]
            # the other (base64) form of the query is read with the head's fields: not kept
            if not query or b"Cmd=" in query or (b"=" in query and b"&" in query):
                if len(self.targets) >= REMEMBERED_TARGETS:
                    self.targets.clear()
                self.targets[target] = known
        return known


_Out = list[Command]


class ClientMachine:
    """One phone's connection: requests read one at a time, each bridged to a server."""

    __slots__ = (
        "attached", "buf", "bytes_out", "chunks", "deadline", "fields", "head", "ip",
        "keep_alive", "left", "logged", "method", "over_limit", "paused", "ping", "policy",
        "request", "resp_buf", "resp_chunks", "resp_left", "response", "response_head",
        "started", "status",
    )  # fmt: skip

    def __init__(self, policy: EdgePolicy, ip: str) -> None:
        self.policy = policy
        self.ip = ip
        self.request = _REQ_HEAD
        self.response = _RESP_NONE
        #: Bytes read from the phone and not yet acted on (a partial head, early body bytes, a
        #: pipelined request).
        self.buf = b""
        #: The request in hand (None between requests, and once a request is wholly with the
        #: server while the access log is off: a held Ping need not keep it).
        self.head: http.RequestHead | None = None
        #: Its method (how the response is framed depends on it).
        self.method = b"GET"
        self.fields = EasFields()
        self.left = 0
        self.chunks: ChunkedScanner | None = None
        self.keep_alive = True
        #: The access log was on when the request in hand came (asked once per request).
        self.logged = policy.access_logged()
        self.started = 0.0
        #: The status the phone was given for the request in hand (0: none yet).
        self.status = 0
        self.bytes_out = 0
        #: When the phone's side times out (0: it does not: a request is with the server).
        self.deadline = 0.0
        self.over_limit = False
        self.paused = False
        #: The request in hand is a Ping (counted in the held-Pings gauge while it is open).
        self.ping = False
        #: A server connection is attached to the request in hand.
        self.attached = False
        self.resp_buf = b""
        self.response_head: http.ResponseHead | None = None
        self.resp_left = 0
        self.resp_chunks: ChunkedScanner | None = None

    # -- the funnels: one per role (see the module docstring), each checked against its table

    def _to(self, new: Request) -> None:
        if new not in REQUEST_MOVES[self.request]:
            raise _REFUSE_REQUEST(self.request, new)
        self.request = new

    def _respond(self, new: Response) -> None:
        if new not in RESPONSE_MOVES[self.response]:
            raise _REFUSE_RESPONSE(self.response, new)
        self.response = new

    # -- events from the phone

    def connected(self, now: float) -> None:
        """The phone's TLS connection is up."""
        policy = self.policy
        policy.metrics.connections_total += 1
        self.over_limit = not policy.limits.connect(self.ip)
        self.deadline = now + policy.config.header_timeout

    def client_data(self, data: bytes, now: float) -> _Out:
        if _c_client_data is not None:  # the steady case in C (natsync.edge._steady)
            done = _c_client_data(self, data, now)
            if done is not None:
                return done
        out: _Out = []
        state = self.request
        if state is _REQ_BODY:
            self._body(data, b"", now, out)
        elif state is _REQ_HEAD:
            if self.buf:  # more of a head: its deadline (from its first byte) stands
                self.buf += data
                self._next_request(now, out, False)
            else:
                self.buf = data
                self._next_request(now, out)
        else:  # body bytes before the server is there, or pipelined: hold them, read no more
            self.buf += data
            self._pause(out)
        return out

    def client_lost(self, now: float) -> _Out:
        """The phone's connection ended (closed by either side, or reset)."""
        out: _Out = []
        if self.request in (_REQ_BODY, _REQ_SENT, _REQ_CONNECTING):
            self._end_request(499 if not self.status else self.status, now, out)
            self._detach(out)
        if self.request is not _REQ_CLOSED:
            self._to(_REQ_CLOSED)
        self.policy.limits.disconnect(self.ip)
        return out

    def timer(self, now: float) -> _Out:
        """The deadline passed: a slow head, a stalled body or an idle keep-alive connection."""
        out: _Out = []
        self.deadline = 0.0
        if self.request is _REQ_HEAD and self.buf:  # a head that never completed
            self.keep_alive = False
            self._answer(408, now, out, error="the request head did not arrive in time")
        elif self.request is _REQ_BODY:
            self._body_stalled(now, out)
        else:
            out.append(ABORT_CLIENT)
        return out

    # -- events from the server side

    def backend_ready(self, now: float) -> _Out:
        """A server connection was attached for the request in hand."""
        if _c_backend_ready is not None:
            done = _c_backend_ready(self, now)
            if done is not None:
                return done
        head = self.head
        if self.request is not _REQ_CONNECTING or head is None:  # the phone left meanwhile
            return [RELEASE_BACKEND]
        out: _Out = []
        self.attached = True
        self._respond(_RESP_HEAD)
        self.resp_buf = b""
        self.response_head = None
        self.resp_chunks = None
        self.left = head.length
        self.chunks = ChunkedScanner() if head.framing == F_CHUNKED else None
        body, self.buf = self.buf, b""
        request = http.backend_request(head, self.ip)
        head.section = b""  # forwarded; a held Ping should not keep a copy of its head
        if head.framing == F_NONE and not body:  # the usual GET, OPTIONS or Ping: sent whole
            out.append(SendToBackend(request))
            self._to(_REQ_SENT)
            if not self.logged:
                self.head = None
            return out
        self._to(_REQ_BODY)
        self._body(body, request, now, out)
        if self.request is _REQ_BODY:
            self._resume(out)
        return out

    def backend_failed(self, status: int, now: float, retry_after: int | None = None) -> _Out:
        """No server connection could be had (503 down or unreachable, 502 wrong certificate)."""
        out: _Out = []
        if self.request is _REQ_CONNECTING:
            self._end_ping()
            self.keep_alive = False
            self._answer(status, now, out, retry_after=retry_after)
        return out

    def backend_data(self, data: bytes, now: float) -> _Out:
        """Bytes from the attached server connection."""
        if _c_backend_data is not None:
            done = _c_backend_data(self, data, now)
            if done is not None:
                return done
        out: _Out = []
        if self.response_head is not None:
            self._response_body(data, b"", now, out)
            return out
        self.resp_buf = self.resp_buf + data if self.resp_buf else data
        method = self.method
        while True:
            try:
                taken = _c_take_response(self.resp_buf, method) or http.python_take_response(
                    self.resp_buf, method
                )
            except EdgeHttpError as exc:
                out.append(BackendFailure("protocol", exc.message))
                self._backend_broke(now, out)
                return out
            if taken is None:
                return out
            head, rest = taken
            self.resp_buf = b""
            if head.status < 200:  # interim (100 Continue): pass on, read the next head
                self._send(http.client_response(head, True), out)
                self.resp_buf = rest
                continue
            self.status = head.status
            self.keep_alive = keep_alive = self.keep_alive and head.keep_alive
            if head.framing == F_LENGTH and len(rest) == head.length:
                # the usual answer: head and whole body in one read; response HEAD → NONE
                # at once (no BODY state for bytes already all here)
                self._send(http.client_response(head, keep_alive) + rest, out)
                out.append(BACKEND_ANSWERED)
                self._response_ended(head.keep_alive, now, out)
                return out
            self.response_head = head
            self._respond(_RESP_BODY)
            self.resp_left = head.length
            self.resp_chunks = ChunkedScanner() if head.framing == F_CHUNKED else None
            self._response_body(rest, http.client_response(head, keep_alive), now, out)
            return out

    def backend_closed(self, now: float, how: str = "") -> _Out:
        """The attached server connection ended: the end of a close-delimited answer, or the
        server broke the exchange (502 if the phone has no answer yet). *how*: which connection
        it was and how it ended, for the log line (the shell knows; the phone is told 502)."""
        out: _Out = []
        self.attached = False
        response = self.response_head
        if response is not None and response.framing == F_CLOSE:
            self._response_ended(False, now, out)
        else:
            out.append(BackendBroke("closed a request it had"))
            self._backend_lost(502, now, out, how)
        return out

    def backend_silent(self, now: float) -> _Out:
        """The attached server sent nothing for the read timeout: 504 (its connection is gone)."""
        out: _Out = []
        self.attached = False
        timeout = self.policy.config.read_timeout
        out.append(
            BackendFailure(
                "timeout", f"the server sent nothing for {timeout:g} s; closing the request"
            )
        )
        self._backend_lost(504, now, out)
        return out

    def backend_full(self) -> _Out:
        """The server's write buffer is full: stop reading the phone."""
        out: _Out = []
        self._pause(out)
        return out

    def backend_writable(self) -> _Out:
        """The server's write buffer drained: read the body on."""
        out: _Out = []
        if self.request is _REQ_BODY:
            self._resume(out)
        return out

    # -- requests

    def _next_request(self, now: float, out: _Out, first: bool = True) -> None:
        """Take the request head in ``buf``; *first*: its first bytes arrived just now (the
        header deadline starts; later bytes do not restart it). A loop, not recursion: a
        pipelined run of refused-but-kept-alive requests (404s) is answered one by one."""
        policy = self.policy
        config = policy.config
        while True:
            try:
                buf = self.buf
                taken = _c_take_request(buf, config.max_body) or http.python_take_request(
                    buf, config.max_body
                )
            except EdgeHttpError as exc:
                self._reject(exc.http_status, exc.message, now, out)
                return
            if taken is None:
                if first and self.buf:
                    self.deadline = now + config.header_timeout
                return
            head, body = taken
            self.buf = b""
            self.head = head
            self.method = head.method
            self.logged = logged = policy.access_logged()
            fields, published = policy.judge(head, logged)
            self.fields = fields
            self.started = now
            self.status = 0
            self.bytes_out = 0
            self.keep_alive = head.keep_alive
            self.deadline = 0.0
            if self.over_limit:
                self.keep_alive = False
                self._answer(503, now, out, retry_after=RETRY_AFTER_LIMIT)
                return
            if not published:
                if head.framing != F_NONE:
                    self.keep_alive = False
                self._answer(404, now, out)
                if self.keep_alive:
                    self.buf = body
                    if self._ready_for_next(now, out):
                        first = True
                        continue
                return
            if not policy.limits.allow_request(self.ip, now):
                self.keep_alive = False
                self._answer(503, now, out, retry_after=RETRY_AFTER_LIMIT)
                return
            if fields.cmd and fields.cmd.lower() == "ping":
                self.ping = True
                policy.metrics.held_pings += 1
            self.buf = body
            self._to(_REQ_CONNECTING)
            out.append(OPEN_BACKEND)  # last: the shell may call backend_ready at once
            return

    def _reject(self, status: int, message: str, now: float, out: _Out) -> None:
        """A request the edge refuses as malformed: answer and close."""
        self.fields = EasFields()
        self.logged = self.policy.access_logged()
        self.started = now
        self.keep_alive = False
        out.append(LogNote(f"refused a request from {self.ip}: {message} ({status})"))
        self._answer(status, now, out, error=message)

    def _answer(
        self, status: int, now: float, out: _Out, retry_after: int | None = None, error: str = ""
    ) -> None:
        """The edge's own answer (after which it closes unless the request may keep alive)."""
        self.status = status
        close = not self.keep_alive
        self._send(http.error_response(status, retry_after=retry_after, close=close), out)
        self._log(status, now, out, error)
        if close:
            self._to(_REQ_CLOSED)
            out.append(CLOSE_CLIENT)

    def _body(self, data: bytes, prefix: bytes, now: float, out: _Out) -> None:
        """Forward request body bytes (after *prefix*, the head, in the same TLS record)."""
        head = self.head
        assert head is not None
        framing = head.framing
        size = len(data)
        if framing == F_NONE:
            used = 0
            done = True
        elif framing == F_LENGTH:
            used = self.left if self.left < size else size
            self.left -= used
            done = self.left == 0
        else:
            assert self.chunks is not None
            try:
                used = self.chunks.feed(data)
            except EdgeHttpError as exc:
                out.append(LogNote(f"refused a chunked body from {self.ip}: {exc.message}"))
                self._detach(out)
                if self.status == 0:
                    self._end_ping()
                    self.keep_alive = False
                    self._answer(400, now, out, error=exc.message)
                else:
                    self._end_request(self.status, now, out)
                    self._to(_REQ_CLOSED)
                    out.append(ABORT_CLIENT)
                return
            done = self.chunks.done
        if used or prefix:
            out.append(SendToBackend(prefix + (data if used == size else data[:used])))
        if done:
            self.deadline = 0.0
            if self.request is _REQ_BODY:
                self._to(_REQ_SENT)
                if not self.logged:
                    self.head = None
            if used < size:  # what follows the body: a pipelined request, held for later
                self.buf += data[used:]
                self._pause(out)
        else:  # more to come: within body_timeout of this byte
            self.deadline = now + self.policy.config.body_timeout

    def _body_stalled(self, now: float, out: _Out) -> None:
        """No body byte for body_timeout: 408 and close (unless the edge itself paused the
        reading: then the server is slow to take the body, not the phone to send it)."""
        if self.paused:
            self.deadline = now + self.policy.config.body_timeout
            return
        self._detach(out)
        out.append(LogNote(f"a request body from {self.ip} stalled; answered 408"))
        if self.status:  # the server's answer already started: nothing more can be said
            self._end_request(self.status, now, out)
            self._to(_REQ_CLOSED)
            out.append(ABORT_CLIENT)
            return
        self._end_ping()
        self.keep_alive = False
        self._answer(408, now, out, error="the request body stalled")

    # -- responses

    def _response_body(self, data: bytes, prefix: bytes, now: float, out: _Out) -> None:
        """Forward response body bytes (after *prefix*, the head, in the same TLS record)."""
        response = self.response_head
        assert response is not None
        framing = response.framing
        size = len(data)
        if framing == F_LENGTH:
            used = self.resp_left if self.resp_left < size else size
            self.resp_left -= used
            finished = self.resp_left == 0
        elif framing == F_NONE:
            used = 0
            finished = True
        elif framing == F_CLOSE:  # until the server closes: backend_closed ends it
            if data or prefix:
                self._send(prefix + data, out)
            return
        else:
            assert self.resp_chunks is not None
            try:
                used = self.resp_chunks.feed(data)
            except EdgeHttpError as exc:
                out.append(BackendFailure("protocol", f"bad chunked body: {exc.message}"))
                if prefix:  # its head was not sent yet: the phone can still be told (502)
                    self.status = 0
                self._backend_broke(now, out)
                return
            finished = self.resp_chunks.done
        if used or prefix:
            sent = prefix + (data if used == size else data[:used])
            self.bytes_out += len(sent)
            out.append(SendToClient(sent))
        if finished:
            out.append(BACKEND_ANSWERED)
            self._response_ended(response.keep_alive and used == size, now, out)

    def _response_ended(self, reusable: bool, now: float, out: _Out) -> None:
        """The whole answer went out; reuse both sides when they may be reused."""
        request_sent = self.request is _REQ_SENT
        self.response_head = None
        self._respond(_RESP_NONE)
        if self.attached:
            self.attached = False
            # an answer before the whole body was sent spends the server connection
            out.append(RELEASE_BACKEND if reusable and request_sent else DROP_BACKEND)
        self._end_request(self.status, now, out)
        if not request_sent:
            self.keep_alive = False
        if not self.keep_alive:
            self._to(_REQ_CLOSED)
            out.append(CLOSE_CLIENT)
            return
        if self._ready_for_next(now, out):
            self._next_request(now, out)

    def _ready_for_next(self, now: float, out: _Out) -> bool:
        """Back to reading heads; True when a pipelined request is already in ``buf``."""
        self._to(_REQ_HEAD)
        self.head = None
        config = self.policy.config
        if self.buf:  # a pipelined request came with the last one
            self.deadline = now + config.header_timeout
            self._resume(out)
            return True
        self.deadline = now + config.client_idle_timeout
        if self.paused:
            self._resume(out)
        return False

    def _backend_broke(self, now: float, out: _Out) -> None:
        """The server spoke outside HTTP/1.1: drop it, count a failed check, answer 502."""
        out.append(BackendBroke("closed a request it had"))
        self._detach(out)
        self._backend_lost(502, now, out, closed=False)  # the protocol failure said why

    def _backend_lost(
        self, status: int, now: float, out: _Out, how: str = "", closed: bool = True
    ) -> None:
        """The server connection broke (502) or went silent (504) before the answer ended;
        *closed*: the server closed it (said in the log line), not the edge."""
        answered = self.response_head is not None  # its head had come (not sent to the phone)
        if self.response is not _RESP_NONE:
            self.response_head = None
            self._respond(_RESP_NONE)
        if self.request is _REQ_CLOSED:
            return
        if self.status == 0:
            if status == 502 and closed:
                what = "after the head of its answer" if answered else "before any answer"
                message = f"the server closed the connection mid-request, {what}"
                out.append(BackendFailure("reset", f"{message} ({how})" if how else message))
            self._end_ping()
            self.keep_alive = False
            self._answer(status, now, out)
        else:
            self._end_request(self.status, now, out)
            self._to(_REQ_CLOSED)
            out.append(ABORT_CLIENT)

    def _detach(self, out: _Out) -> None:
        if self.attached:
            self.attached = False
            out.append(DROP_BACKEND)
        if self.response is not _RESP_NONE:
            self.response_head = None
            self._respond(_RESP_NONE)

    # -- small steps

    def _send(self, data: bytes, out: _Out) -> None:
        self.bytes_out += len(data)
        out.append(SendToClient(data))

    def _pause(self, out: _Out) -> None:
        if not self.paused:
            self.paused = True
            out.append(PAUSE_CLIENT)

    def _resume(self, out: _Out) -> None:
        """Read again (once per pause: resuming costs the TLS layer a scheduled callback)."""
        if self.paused:
            self.paused = False
            out.append(RESUME_CLIENT)

    def _end_ping(self) -> None:
        if self.ping:
            self.ping = False
            self.policy.metrics.held_pings -= 1

    def _end_request(self, status: int, now: float, out: _Out) -> None:
        if self.ping:
            self._end_ping()
        self._log(status, now, out)

    def _log(self, status: int, now: float, out: _Out, error: str = "") -> None:
        fields = self.fields
        policy = self.policy
        policy.metrics.count_request(fields.cmd or "-", status)
        if not self.logged:
            return
        head = self.head
        record: dict[str, Any] = {
            "client": self.ip,
            "method": head.method.decode("latin-1") if head else "",
            "path": head.path if head else "",
            "status": status,
            "bytes": self.bytes_out,
            "ms": round((now - self.started) * 1000, 2),
        }
        if fields.cmd:
            record["cmd"] = fields.cmd
        if fields.user:
            record["user"] = fields.user
        if fields.device_id:
            record["device_id"] = fields.device_id
        if fields.device_type:
            record["device_type"] = fields.device_type
        if error:
            record["error"] = error
        out.append(LogAccess(record))


class BackendMachine:
    """One server connection: idle (new or pooled), busy with one exchange, or closed.

    The exchange's bytes are the attached phone connection's business
    (:meth:`ClientMachine.backend_data`); this machine decides the connection's own life: its
    read deadline, whether it may go back to the pool, and the in-flight count its server is
    chosen by (:class:`~natsync.edge.balance.Server.active`)."""

    __slots__ = ("counted", "deadline", "read_timeout", "remembered", "server", "state")

    def __init__(self, server: Server, read_timeout: float) -> None:
        self.server = server
        self.read_timeout = read_timeout
        self.state = _B_IDLE
        #: Counted in its server's exchanges in flight.
        self.counted = False
        #: Its TLS session was offered for resumption (once per connection: reading the
        #: session serialises it, about 1 ms).
        self.remembered = False
        #: When it times out (0: never): silent server while busy, idle time while pooled.
        self.deadline = 0.0

    def _to(self, new: Backend) -> None:
        if new not in BACKEND_MOVES[self.state]:
            raise _REFUSE_BACKEND(self.state, new)
        self.state = new

    def attach(self, now: float) -> None:
        """An exchange starts on it."""
        self._to(_B_BUSY)
        if not self.counted:
            self.counted = True
            self.server.active += 1
        self.deadline = now + self.read_timeout

    def received(self, now: float) -> bool:
        """Bytes came; False when they must not be trusted (nothing asked: drop the connection)."""
        if self.state is not _B_BUSY:
            return False
        self.deadline = now + self.read_timeout
        return True

    def release(self, now: float, pooled: int, pool_size: int) -> bool:
        """The exchange ended cleanly: True when it goes to the pool (room, and its server is
        up), False when it is to be closed."""
        if self.counted:
            self.counted = False
            self.server.active -= 1
        if self.state is _B_BUSY:
            self._to(_B_IDLE)
        if pooled >= pool_size or not self.server.up or self.state is not _B_IDLE:
            self.closed()
            return False
        self.deadline = now + POOL_IDLE
        return True

    def closed(self) -> bool:
        """It is gone (dropped, timed out or lost); True when an exchange was on it."""
        busy = self.state is _B_BUSY
        self._uncount()
        self.deadline = 0.0
        if self.state is not _B_CLOSED:
            self._to(_B_CLOSED)
        return busy

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.server.active -= 1


def _load_steady() -> Any:
    """natsync.edge._steady (the three usual moves of :class:`ClientMachine` in C) configured
    with this module's classes, states and commands, or None: not built, or the edge's C
    parsers off (``NATSYNC_PURE_PYTHON``; it calls them). Then the Python methods make every
    move, as they do for every case the C part declines."""
    if http.speedups is None:
        return None
    try:
        from natsync.edge import _steady
    except ImportError:  # pragma: no cover - a build without a C compiler
        return None
    _steady.configure(
        (ClientMachine, EdgePolicy, EdgeConfig, RateLimiter, Metrics, EasFields,
         http.RequestHead, http.ResponseHead, SendToClient, SendToBackend),
        (*Request, _RESP_NONE, _RESP_HEAD),
        (OPEN_BACKEND, RELEASE_BACKEND, DROP_BACKEND, BACKEND_ANSWERED, CLOSE_CLIENT,
         PAUSE_CLIENT, RESUME_CLIENT),
        (F_NONE, F_LENGTH),
        (http.c_take_request, http.c_take_response, http.c_backend_request,
         http.python_backend_request, http.c_client_response, http.python_client_response),
        LONGEST_COUNTED_CMD,
    )  # fmt: skip
    return _steady


#: The C module of the steady moves, or None; each method calls its function first (None from
#: it: not the steady case, nothing changed, the Python method decides).
steady: Any = _load_steady()
_c_client_data: Callable[[ClientMachine, bytes, float], _Out | None] | None = (
    steady.client_data if steady is not None else None
)
_c_backend_ready: Callable[[ClientMachine, float], _Out | None] | None = (
    steady.backend_ready if steady is not None else None
)
_c_backend_data: Callable[[ClientMachine, bytes, float], _Out | None] | None = (
    steady.backend_data if steady is not None else None
)


@contextlib.contextmanager
def python_moves() -> Iterator[None]:
    """Within it, :class:`ClientMachine`'s methods make every move in Python (the reference the
    C moves are compared with: tests/edge/test_steady.py, fuzz/fuzz_edge_steady.py)."""
    global _c_client_data, _c_backend_ready, _c_backend_data  # noqa: PLW0603 - read per call
    saved = _c_client_data, _c_backend_ready, _c_backend_data
    _c_client_data = _c_backend_ready = _c_backend_data = None
    try:
        yield
    finally:
        _c_client_data, _c_backend_ready, _c_backend_data = saved
