"""The console's second listener, for the edge's forward when the admin publishes the console.

``console.publish`` set, ``natsync run``'s edge listens there and forwards each TCP connection to
this loopback listener (``console.publish_port``), starting with a PROXY v2 header
(natsync.base.proxyv2, haproxy's proxy-protocol.txt 2.2) that names the browser's address. The
header is read with exact-length receives, so the browser's TLS ClientHello that follows stays
in the kernel's buffer; the socket then goes to the loop's TLS with the console's own
certificate and to the console's aiohttp app, which takes the header's address as the client's
(:attr:`ProxiedClients.remote`): the login rate limit and the audit log count the real browser,
not the edge. Only loopback peers may speak here (the edge runs on this machine); a connection
without a valid header is dropped before a byte of it reaches the app.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from natsync.base.proxyv2 import FIXED_LENGTH, ProxyHeaderError, parse_header
from natsync.errors import ConfigError

log = logging.getLogger("natsync.console")

#: Seconds the edge may take to send a connection's PROXY header (it sends it at once).
HEADER_TIMEOUT = 5.0
#: Seconds a browser may take for its TLS handshake through the edge.
TLS_HANDSHAKE_TIMEOUT = 10.0


class ProxiedClients:
    """The browser's address of each connection that came through the edge, by its protocol
    object (aiohttp's request handler, which takes no weak reference): an entry goes when its
    connection has closed, found at the next connection (an admin console has few)."""

    def __init__(self) -> None:
        self._by_protocol: dict[object, tuple[str, float]] = {}

    def note(self, protocol: object, address: str, now: float) -> None:
        for known, (_, since) in list(self._by_protocol.items()):
            # Closed (aiohttp drops its transport), or never connected within the handshake time.
            if getattr(known, "transport", None) is None and now - since > TLS_HANDSHAKE_TIMEOUT:
                del self._by_protocol[known]
        self._by_protocol[protocol] = (address, now)

    def remote(self, protocol: object) -> str | None:
        """The address the PROXY header named; None for a connection not through the edge."""
        found = self._by_protocol.get(protocol)
        return None if found is None else found[0]

    def __len__(self) -> int:
        return len(self._by_protocol)


class PublishedListener:
    """Accepts the edge's forwarded connections on loopback; see the module docstring."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
        clients: ProxiedClients,
    ) -> None:
        self.port = port
        self.context = context
        self.factory = protocol_factory
        self.clients = clients
        self.refused = 0
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"console.publish_port {self.port}: {exc.strerror}; choose a free port"
            ) from exc
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._spawn(self._accept_loop(sock))
        log.info("published console: PROXY v2 + TLS from the edge on 127.0.0.1:%d", self.port)
        return self.port

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while self._sock is listener:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError:
                if self._sock is not listener:
                    return
                await asyncio.sleep(0.1)  # EMFILE and the like: breathe, then go on
                continue
            if not ipaddress.ip_address(peer[0]).is_loopback:  # bound to 127.0.0.1: never
                conn.close()
                continue
            conn.setblocking(False)
            self._spawn(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                data = await _receive(loop, conn, FIXED_LENGTH)
                parsed = parse_header(data)
                if parsed is None:  # the fixed part says how much more follows
                    data += await _receive(loop, conn, int.from_bytes(data[14:16], "big"))
                    parsed = parse_header(data)
            if parsed is None or parsed[0].source is None:
                raise ProxyHeaderError("no client address in the PROXY header")
        except (ProxyHeaderError, TimeoutError, OSError, ConnectionError) as exc:
            self.refused += 1
            log.warning("published console: a connection from the edge was dropped: %s", exc)
            conn.close()
            return
        client = parsed[0].source[0]

        def protocol() -> asyncio.Protocol:
            made = self.factory()
            self.clients.note(made, client, loop.time())
            return made

        try:
            await loop.connect_accepted_socket(
                protocol, conn, ssl=self.context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.info("published console: TLS with %s failed: %s", client, exc)
            conn.close()


async def _receive(loop: asyncio.AbstractEventLoop, conn: socket.socket, size: int) -> bytes:
    """Exactly *size* bytes (what follows is the browser's TLS, left to the TLS layer)."""
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = await loop.sock_recv(conn, left)
        if not chunk:
            raise ConnectionError("the edge closed the connection inside the PROXY header")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
