"""The edge's relayed listener: TLS connections that a trusted hop (``natsync relay``) passes on.

A home behind carrier-grade NAT has no public address; ``natsync relay`` on a small public server
takes the phones' TCP connections and sends them through a WireGuard tunnel to this listener,
each starting with a PROXY v2 header (natsync.base.proxyv2) that names the phone. TLS still ends
here, at home: the relay only ever sees ciphertext.

Why raw sockets for the first bytes: the header is read with exact-length ``recv`` calls (the
16 fixed bytes, then the length it announces), so the phone's TLS ClientHello that follows stays
in the kernel's buffer, and the socket is then handed to the edge's TLS listener
(:class:`~natsync.edge.transport.TLSServer`) as if it had just been accepted there. Only
addresses in ``edge.relayed_from`` may speak here; anyone else is dropped before a byte is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from natsync.base.proxyv2 import FIXED_LENGTH, ProxyHeaderError, parse_header
from natsync.edge.config import split_hostport
from natsync.edge.proxy import ClientConn, Edge
from natsync.edge.transport import TLSServer
from natsync.errors import ConfigError

log = logging.getLogger("natsync.edge")

#: Seconds a relay may take to send the PROXY header of a connection (it sends it at once).
HEADER_TIMEOUT = 5.0
#: Listen backlog: after a tunnel outage every phone comes back through the relay at once.
BACKLOG = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """``edge.relayed_from`` as networks; ConfigError naming the bad entry."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"edge.relayed_from: {value!r} is not an address or network (e.g. 10.77.0.1)"
            ) from exc
    return tuple(out)


class RelayedListener:
    """Accepts the relay's connections, reads each PROXY header, then serves TLS as the edge."""

    def __init__(
        self, edge: Edge, listen: str, trusted: tuple[Network, ...], tls: TLSServer
    ) -> None:
        self.edge = edge
        #: the phone listener, whose TLS (handshake timeout, SNI, TLS-ALPN-01) serves these too
        self.tls = tls
        self.listen = listen
        self.trusted = trusted
        self.sock: socket.socket | None = None
        self.port = 0
        self.refused = 0

    async def start(self) -> int:
        host, port = split_hostport(self.listen, "edge.relayed_listen")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"edge.relayed_listen {self.listen}: {exc.strerror}") from exc
        sock.setblocking(False)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.edge.spawn(self._accept_loop(sock), "edge-relayed-accept")
        log.info("relayed listener on %s:%d (PROXY v2 from %s)", host, self.port,
                 ", ".join(str(n) for n in self.trusted) or "nobody")  # fmt: skip
        return self.port

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _trusts(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
        return any(ip in network for network in self.trusted)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while self.sock is listener:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError:
                if self.sock is not listener:
                    return  # closed
                await asyncio.sleep(0.1)  # EMFILE and the like: breathe, then go on
                continue
            if not self._trusts(peer[0]):
                self.refused += 1
                log.warning("relayed listener: %s is not in edge.relayed_from; dropped", peer[0])
                conn.close()
                continue
            conn.setblocking(False)
            self.edge.spawn(self._serve(conn, peer[0]), "edge-relayed-conn")

    async def _serve(self, conn: socket.socket, hop: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                fixed = await _recv_exactly(loop, conn, FIXED_LENGTH)
                parsed = parse_header(fixed)
                if parsed is None:  # the fixed part says how much more there is
                    length = int.from_bytes(fixed[14:16], "big")
                    parsed = parse_header(fixed + await _recv_exactly(loop, conn, length))
            assert parsed is not None
            header, _ = parsed
        except (ProxyHeaderError, TimeoutError, OSError, ConnectionError) as exc:
            self.refused += 1
            log.warning("relayed connection from %s dropped: %s", hop, exc)
            conn.close()
            return
        client = ClientConn(self.edge)
        # A LOCAL header is the relay checking the path: it counts as the relay itself.
        client.ip = header.source[0] if header.source is not None else hop
        self.tls.serve(conn, lambda: client)


async def _recv_exactly(loop: asyncio.AbstractEventLoop, conn: socket.socket, size: int) -> bytes:
    """*size* bytes and not one more (what follows is the phone's TLS, left for the TLS layer)."""
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(conn, size - len(data))
        if not chunk:
            raise ConnectionError("the relay closed the connection inside the PROXY header")
        data += chunk
    return data
