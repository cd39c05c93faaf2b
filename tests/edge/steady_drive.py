"""Two edges fed the same events over fake transports, one reading through the steady path in
C (natsync.edge._steady), one through the Python shell and machine: after every event the
phone's machine, the server connections, the pool, the server's counts and what each transport
was asked to do must be the same. Shared by tests/edge/test_steady.py and
fuzz/fuzz_edge_shell.py."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, cast

from natsync.edge import pool as pool_module
from natsync.edge import proxy
from natsync.edge.config import EdgeConfig
from natsync.edge.connection import POOL_IDLE, ClientMachine
from natsync.edge.http import ChunkedScanner
from natsync.edge.tls import BackendTrust

#: The phone's address (TEST-NET-1).
PHONE = "192.0.2.7"
#: Pooled server connections each edge starts with.
POOLED = 4


def _value(value: Any) -> Any:
    """A slot's value, comparable across two machines (a chunked scanner by its state)."""
    if isinstance(value, ChunkedScanner):
        return ("scanner", *(getattr(value, name) for name in type(value).__slots__))
    return value


def machine_state(machine: ClientMachine, policy: Any) -> tuple[Any, ...]:
    """The machine's slots but its policy, and the policy's counters, buckets and targets."""
    slots = tuple(
        (name, _value(getattr(machine, name, "<unset>")))
        for name in ClientMachine.__slots__
        if name != "policy"
    )
    return (slots, policy.metrics, policy.limits.buckets, sorted(policy.targets))


class FakeTransport:
    """What the protocols call on a transport, recorded."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return (PHONE, 40000)
        return self.sock if name == "socket" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Shell:
    """One edge with one phone connection and a few pooled server connections (fakes)."""

    edge: proxy.Edge
    phone: proxy.ClientConn
    backends: list[proxy.BackendConn]
    peers: list[socket.socket]
    spawned: list[str]

    @classmethod
    def make(cls, config: EdgeConfig, remembered: list[bool]) -> Shell:
        edge = proxy.Edge(config, None, BackendTrust(config))  # type: ignore[arg-type]
        spawned: list[str] = []

        def spawn(coro: Any, name: str) -> None:  # no server to connect to here
            coro.close()
            spawned.append(name)

        edge.spawn = spawn  # type: ignore[assignment,method-assign]
        upstream = next(iter(edge.upstreams.values()))
        backends, peers = [], []
        for seen in remembered:
            mine, peer = socket.socketpair()
            backend = proxy.BackendConn(edge, upstream)
            backend.connection_made(FakeTransport(mine))  # type: ignore[arg-type]
            backend.machine.remembered = seen
            backend.machine.deadline = proxy.clock() + POOL_IDLE  # the clock the shell reads
            upstream.pool.append(backend)
            backends.append(backend)
            peers.append(peer)
        phone = proxy.ClientConn(edge)
        phone.connection_made(FakeTransport())  # type: ignore[arg-type]
        return cls(edge, phone, backends, peers, spawned)

    def close(self) -> None:
        for backend in self.backends:
            transport = cast(FakeTransport, backend.transport)
            if transport is not None and transport.sock is not None:
                transport.sock.close()
        for peer in self.peers:
            peer.close()

    def feed(self, conn: Any, data: bytes) -> None:
        proxy._READ_VIEW[: len(data)] = data
        conn.buffer_updated(len(data))

    def which(self, conn: object) -> object:
        if conn is None or conn is self.phone:
            return "phone" if conn is self.phone else None
        return self.backends.index(conn)  # type: ignore[arg-type]

    def state(self) -> tuple[Any, ...]:
        upstream = next(iter(self.edge.upstreams.values()))
        server = upstream.server
        backends = []
        for b in self.backends:
            m = b.machine
            transport = cast(FakeTransport, b.transport)
            seen = (m.state, m.counted, m.deadline, m.remembered)
            backends.append((self.which(b.client), seen, transport.calls, transport.closing))
        phone = cast(FakeTransport, self.phone.transport)
        return (
            machine_state(self.phone.machine, self.edge.policy),
            self.which(self.phone.backend),
            phone.calls,
            backends,
            [self.which(b) for b in upstream.pool],
            (server.active, server.fails, server.up),
            self.spawned,
        )


def _apply(shell: Shell, clock: Clock, event: tuple[Any, ...]) -> None:
    """One event: ("phone", bytes), ("server", bytes), ("pooled", i, bytes), ("closes", i),
    ("poke", i), ("wait", seconds) or ("fails",)."""
    kind = event[0]
    if kind == "phone":
        if shell.phone.transport is not None and not shell.phone.transport.is_closing():
            shell.feed(shell.phone, event[1])
    elif kind == "server":
        backend = shell.phone.backend
        if backend is not None and backend.transport is not None:
            shell.feed(backend, event[1])
    elif kind == "pooled":
        backend = shell.backends[event[1]]
        if backend.transport is not None and not backend.transport.is_closing():
            shell.feed(backend, event[2])
    elif kind == "closes":
        transport = cast(FakeTransport, shell.backends[event[1]].transport)
        transport.closing = True
    elif kind == "poke":
        shell.peers[event[1]].send(b"x")
    elif kind == "fails":  # a failed health check, say: the next answer clears it
        next(iter(shell.edge.upstreams.values())).server.fails += 1
    else:
        clock.now += event[1]


def compare(events: list[tuple[Any, ...]], remembered: list[bool], pool_size: int) -> None:
    """Play *events* to an edge reading through C and to one reading through Python (its
    POOLED server connections remembered or not as *remembered* says), comparing after each."""
    clock = Clock()

    async def run() -> None:
        config = replace(EdgeConfig(insecure_backend=True, forwards=(), admin_listen=""),
                         pool_size=pool_size)  # fmt: skip
        fast, reference = Shell.make(config, remembered), Shell.make(config, remembered)
        try:
            for event in events:
                _apply(fast, clock, event)
                with proxy.python_shell():
                    _apply(reference, clock, event)
                assert fast.state() == reference.state(), event
        finally:
            fast.close()
            reference.close()

    saved = proxy.clock, pool_module.time
    proxy.clock = clock  # type: ignore[assignment]
    pool_module.time = SimpleNamespace(monotonic=clock)  # type: ignore[assignment]
    try:
        asyncio.run(run())
    finally:
        proxy.clock, pool_module.time = saved
