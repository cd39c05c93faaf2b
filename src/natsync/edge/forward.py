"""TCP forwards (SMTP 25 → the server's SMTP port) with the PROXY protocol v2 toward the server.

An SMTP server behind a forward sees the edge's address as its peer; the PROXY protocol header
(haproxy's proxy-protocol.txt, version 2, section 2.2) sent first on every forwarded connection
carries the real sender's address, so the server's ``Received`` line, logs and any per-address
policy use it. natsync's SMTP server accepts that header only from addresses listed in its
``proxy_protocol_from`` (the edge), never from the internet.

The header is built by :func:`natsync.base.proxyv2.build_header` (sans-I/O); the rest is a
byte pipe with back-pressure in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

from natsync.base.proxyv2 import build_header
from natsync.edge.config import Forward, split_hostport
from natsync.edge.metrics import Metrics

log = logging.getLogger("natsync.edge")

#: Seconds to connect to the forward's target before the client is dropped.
CONNECT_TIMEOUT = 5.0
#: Write-buffer high-water mark per side (pauses the other side's reading above it).
WRITE_HIGH_WATER = 64 * 1024
#: Most seconds between two looks for idle connections (a forward with an idle timeout): a
#: connection is cut at most this long (or a quarter of its timeout) after it passed it.
IDLE_SWEEP = 1.0


def _ignore(_pipe: _Pipe) -> None:
    return None


class _Pipe(asyncio.Protocol):
    """One side of a forwarded connection; bytes go to ``peer``."""

    __slots__ = ("eof", "last", "on_lost", "peer", "pending", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending = b""
        self.eof = False
        self.on_lost: Callable[[_Pipe], None] = _ignore
        #: When this side last received a byte (time.monotonic, the event loop's clock).
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending += data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        """Half-close: pass the EOF on; once both directions ended, close both sides."""
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.eof or not peer.transport.can_write_eof():
            peer.transport.close()
            return False
        peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Incoming(_Pipe):
    __slots__ = ("address", "forwarder")

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder
        #: The client address counted against the per-address limit ("" when not counted).
        self.address = ""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.address:
            self.forwarder.release(self.address)
            self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.forwarder.connect(self)


class Forwarder:
    """One configured forward: listens, connects each client to the target."""

    def __init__(
        self,
        forward: Forward,
        metrics: Metrics,
        *,
        max_per_address: int = 0,
        idle_timeout: float = 0.0,
    ) -> None:
        self.forward = forward
        #: Connections one client address may hold at once (0: no limit); the relay sets it.
        self.max_per_address = max_per_address
        #: Seconds a connection may carry no byte either way before it is cut (0: never); the
        #: relay sets it from the heartbeat (natsync.relay.settings).
        self.idle_timeout = idle_timeout
        self.sweeper: asyncio.Task[None] | None = None
        self.idle_cut = 0
        self.per_address: dict[str, int] = {}
        self.metrics = metrics
        self.target = split_hostport(forward.to, "edge.forwards.to")
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.pipes: set[_Pipe] = set()

    async def start(self) -> int:
        host, port = split_hostport(self.forward.listen, "edge.forwards.listen")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Incoming(self), host, port)
        bound = int(self.server.sockets[0].getsockname()[1])
        log.info("forwarding %s:%d to %s (PROXY v2: %s)", host, bound, self.forward.to,
                 self.forward.proxy_protocol)  # fmt: skip
        if self.idle_timeout > 0:
            self.sweeper = loop.create_task(self._sweep(), name="edge-forward-idle")
        return bound

    async def _sweep(self) -> None:
        """Cut the connections that carried no byte either way for ``idle_timeout`` s."""
        every = min(IDLE_SWEEP, self.idle_timeout / 4)
        while True:
            await asyncio.sleep(every)
            quiet_since = time.monotonic() - self.idle_timeout
            for pipe in list(self.pipes):
                peer = pipe.peer
                if not isinstance(pipe, _Incoming) or peer is None:
                    continue
                if max(pipe.last, peer.last) < quiet_since:
                    self.idle_cut += 1
                    log.info("forward %s: a connection idle for %g s cut",
                             self.forward.listen, self.idle_timeout)  # fmt: skip
                    for side in (pipe, peer):
                        if side.transport is not None:
                            side.transport.abort()

    def connect(self, incoming: _Incoming) -> None:
        if self.max_per_address and incoming.transport is not None:
            ip = str(incoming.transport.get_extra_info("peername")[0])
            held = self.per_address.get(ip, 0)
            if held >= self.max_per_address:
                log.warning("forward %s: %s holds %d connections already; refused",
                            self.forward.listen, ip, held)  # fmt: skip
                incoming.transport.abort()
                return
            self.per_address[ip] = held + 1
            incoming.address = ip
        self.metrics.forwarded_connections += 1
        task = asyncio.get_running_loop().create_task(self._connect(incoming), name="edge-forward")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, incoming: _Incoming) -> None:
        loop = asyncio.get_running_loop()
        client = incoming.transport
        if client is None:
            return
        try:
            _, outgoing = await asyncio.wait_for(
                loop.create_connection(_Pipe, *self.target), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.error("forward %s: cannot reach %s: %s", self.forward.listen, self.forward.to, exc)
            client.abort()
            return
        assert outgoing.transport is not None
        if incoming.transport is None:
            outgoing.transport.close()
            return
        if self.forward.proxy_protocol:
            src = client.get_extra_info("peername")
            dst = client.get_extra_info("sockname")
            outgoing.transport.write(build_header(src[:2], dst[:2]))
        incoming.peer, outgoing.peer = outgoing, incoming
        for pipe in (incoming, outgoing):
            self.pipes.add(pipe)
            pipe.on_lost = self.pipes.discard
        if incoming.pending:
            outgoing.transport.write(incoming.pending)
            incoming.pending = b""
        client.resume_reading()

    def release(self, ip: str) -> None:
        held = self.per_address.get(ip, 0) - 1
        if held > 0:
            self.per_address[ip] = held
        else:
            self.per_address.pop(ip, None)

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        for pipe in list(self.pipes):
            if pipe.transport is not None:
                pipe.transport.abort()
