"""Transcripts of a phone connection's machine, without sockets (mitmproxy's ``Playbook``).

A test writes what happens (``>> event``) and what the edge must do then (``<< command``)::

    assert (
        Playbook()
        >> ClientSends(GET)
        << OpenBackend()
        >> BackendReady()
        << SendToBackend(forwarded(GET))
    )

Every command the machine gives after an event must be written, in order; a command *class*
instead of a value matches any command of that class (for access-log records). On a mismatch the
assertion shows the whole transcript so far, expected against given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natsync.edge import http
from natsync.edge.config import EdgeConfig
from natsync.edge.connection import ClientMachine, Command, EdgePolicy

#: The phone's address in every transcript (TEST-NET-1).
PHONE = "192.0.2.7"
#: The clock at the start of a transcript (any value: only differences matter).
START = 1000.0


@dataclass(frozen=True)
class ClientSends:
    data: bytes


@dataclass(frozen=True)
class ClientGone:
    """The phone's connection ended (closed, half-closed or reset: the TLS layer ends it)."""


@dataclass(frozen=True)
class BackendReady:
    """A server connection was attached (pooled or new)."""


@dataclass(frozen=True)
class BackendFails:
    status: int
    retry_after: int | None = None


@dataclass(frozen=True)
class BackendSends:
    data: bytes


@dataclass(frozen=True)
class BackendCloses:
    """The server's connection ended while attached."""


@dataclass(frozen=True)
class BackendSilent:
    """The server sent nothing for the read timeout (the sweeper found its deadline passed)."""


@dataclass(frozen=True)
class BackendFull:
    """The server's write buffer is over its high-water mark."""


@dataclass(frozen=True)
class BackendWritable:
    pass


@dataclass(frozen=True)
class Wait:
    """*seconds* pass; the sweeper fires the phone connection's deadline if it passed."""

    seconds: float


Event = (
    ClientSends | ClientGone | BackendReady | BackendFails | BackendSends | BackendCloses
    | BackendSilent | BackendFull | BackendWritable | Wait
)  # fmt: skip


class Playbook:
    """One phone connection's machine, the events played to it and the commands expected."""

    def __init__(
        self, config: EdgeConfig | None = None, *, logged: bool = False, ip: str = PHONE
    ) -> None:
        self.policy = EdgePolicy.of(config or EdgeConfig(), lambda: logged)
        self.machine = ClientMachine(self.policy, ip)
        self.now = START
        self.machine.connected(self.now)
        self._script: list[tuple[str, Any]] = []
        self._played = 0
        self._given: list[Command] = []

    def __rshift__(self, event: Event) -> Playbook:
        self._script.append(("event", event))
        return self

    def __lshift__(self, command: Command | type[Any]) -> Playbook:
        self._script.append(("command", command))
        return self

    def play(self, event: Event) -> list[Command]:
        m = self.machine
        now = self.now
        match event:
            case ClientSends(data):
                return m.client_data(data, now)
            case ClientGone():
                return m.client_lost(now)
            case BackendReady():
                return m.backend_ready(now)
            case BackendFails(status, retry_after):
                return m.backend_failed(status, now, retry_after)
            case BackendSends(data):
                return m.backend_data(data, now)
            case BackendCloses():
                return m.backend_closed(now)
            case BackendSilent():
                return m.backend_silent(now)
            case BackendFull():
                return m.backend_full()
            case BackendWritable():
                return m.backend_writable()
            case Wait(seconds):
                self.now += seconds
                if m.deadline and self.now > m.deadline:
                    return m.timer(self.now)
                return []
        raise AssertionError(f"not an event: {event!r}")

    def __bool__(self) -> bool:
        """Play the events not played yet and check every command against the script."""
        lines: list[str] = []
        expected: list[Any] = []
        for kind, item in self._script[self._played :]:
            if kind == "event":
                self._check(expected, lines)
                lines.append(f">> {item!r}")
                self._given = self.play(item)
                expected = []
            else:
                expected.append(item)
        self._check(expected, lines)
        self._played = len(self._script)
        return True

    def _check(self, expected: list[Any], lines: list[str]) -> None:
        given, self._given = self._given, []
        for i in range(max(len(given), len(expected))):
            want = expected[i] if i < len(expected) else None
            got = given[i] if i < len(given) else None
            ok = (
                (isinstance(want, type) and isinstance(got, want))
                if isinstance(want, type)
                else want == got
            )
            if not ok:
                lines.append(f"<< expected {want!r}\n   given    {got!r}")
                raise AssertionError("transcript differs:\n" + "\n".join(lines))
            lines.append(f"<< {got!r}")


def forwarded(request: bytes, ip: str = PHONE) -> bytes:
    """What the server receives for the request *head* (its framing kept, X-Forwarded-* set)."""
    taken = http.take_request(request, EdgeConfig().max_body)
    assert taken is not None
    return http.backend_request(taken[0], ip)


def answer(status: int, retry_after: int | None = None, *, close: bool = True) -> bytes:
    """The edge's own answer with *status*."""
    return http.error_response(status, retry_after=retry_after, close=close)
