"""The edge's relayed listener on real TLS: a trusted hop's PROXY v2 header names the client
(X-Forwarded-For toward the server, the per-address limits), the phone's TLS follows in the
same segment, and anyone else or anything else is dropped."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import replace

import pytest

from natsync.base.proxyv2 import build_header
from natsync.edge.config import EdgeConfig
from natsync.errors import ConfigError
from tests.edge.conftest import PUBLIC_NAME, EdgeFactory, Pki, Recorder, edge_config, status_of

REQUEST = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=ann&DeviceId=d1&DeviceType=t HTTP/1.1\r\n"
    b"Host: " + PUBLIC_NAME.encode() + b"\r\nContent-Length: 2\r\n\r\nhi"
)


def _tls_through_proxy(port: int, prefix: bytes, request: bytes, pki: Pki) -> bytes:
    """A phone behind the relay: the PROXY header and the TLS ClientHello in ONE write (as a
    relay that got the ClientHello with the connection sends them), then one request."""
    context = pki.client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=PUBLIC_NAME)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        first = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outgoing.read()
                sock.sendall((prefix + data) if first else data)
                first = False
                chunk = sock.recv(65536)
                if not chunk:
                    return b""
                incoming.write(chunk)
        tls.write(request)
        sock.sendall(outgoing.read())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"hi"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            incoming.write(chunk)
            try:
                answer += tls.read(65536)
            except ssl.SSLWantReadError:
                continue
        return answer


def _relayed(pki: Pki, recorder: Recorder, trusted: tuple[str, ...] = ("127.0.0.1",)) -> EdgeConfig:
    return edge_config(pki, recorder.port, relayed_listen="127.0.0.1:0", relayed_from=trusted)


async def test_the_relays_client_address_is_the_one_the_server_hears_of(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    running = await make_edge(_relayed(pki, recorder))
    assert running.relayed is not None
    header = build_header(("198.51.100.7", 50123), ("203.0.113.10", 443))
    answer = await asyncio.to_thread(_tls_through_proxy, running.relayed.port, header, REQUEST, pki)
    assert status_of(answer) == 200
    assert answer.endswith(b"backend:hi")
    assert recorder.seen[-1].headers["X-Forwarded-For"] == "198.51.100.7"
    # and the direct listener still serves as before
    direct = await asyncio.to_thread(_tls_through_proxy, running.port, b"", REQUEST, pki)
    assert status_of(direct) == 200
    assert recorder.seen[-1].headers["X-Forwarded-For"] == "127.0.0.1"


async def test_per_address_limits_count_the_relayed_client(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    config = replace(_relayed(pki, recorder), max_connections_per_ip=1)
    running = await make_edge(config)
    assert running.relayed is not None
    one = build_header(("198.51.100.7", 1), ("203.0.113.10", 443))
    other = build_header(("198.51.100.8", 1), ("203.0.113.10", 443))
    # two phones behind the same relay: each has its own budget of one connection
    answers = await asyncio.gather(
        asyncio.to_thread(_tls_through_proxy, running.relayed.port, one, REQUEST, pki),
        asyncio.to_thread(_tls_through_proxy, running.relayed.port, other, REQUEST, pki),
    )
    assert [status_of(a) for a in answers] == [200, 200]


async def test_a_hop_not_in_relayed_from_is_dropped_before_a_byte_is_read(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    running = await make_edge(_relayed(pki, recorder, trusted=("10.77.0.1",)))
    assert running.relayed is not None
    header = build_header(("198.51.100.7", 1), ("203.0.113.10", 443))
    try:
        answer = await asyncio.to_thread(
            _tls_through_proxy, running.relayed.port, header, REQUEST, pki
        )
    except (ConnectionError, ssl.SSLError):
        answer = b""
    assert answer == b""
    assert running.relayed.refused == 1
    assert recorder.seen == []


async def test_a_connection_without_a_proxy_header_is_dropped(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    running = await make_edge(_relayed(pki, recorder))
    assert running.relayed is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", running.relayed.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:  # closed with our bytes unread: the kernel says RST
        answer = b""
    assert answer == b""
    writer.close()
    assert running.relayed.refused == 1
    assert recorder.seen == []


def test_relayed_listen_without_relayed_from_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="relayed_from"):
        edge_config(pki, 1, relayed_listen="127.0.0.1:0")
    with pytest.raises(ConfigError, match="relayed_listen"):
        edge_config(pki, 1, relayed_listen="nowhere", relayed_from=("10.77.0.1",))
