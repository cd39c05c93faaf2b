"""What Exchange answers where phones notice, seen through the edge (issue 20): the anonymous
401 challenge passes through unchanged; Autodiscover (both XML schemas and v2 JSON) is
published. A real natsync server on its own certificate behind a real edge, over TLS."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from natsync.config import ServerConfig
from natsync.server import RunningServer, start_server
from natsync.store.api import Store
from tests.conftest import ALICE_NAME, ALICE_PASSWORD
from tests.edge.conftest import PUBLIC_NAME, EdgeFactory, Pki, edge_config, exchange, status_of


@pytest.fixture
async def server(store: Store, pki: Pki) -> AsyncIterator[RunningServer]:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        domains=("example.test",),
        public_name=PUBLIC_NAME,
    )
    running = await start_server(config, store)
    yield running
    await running.close()


def _head(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def _basic() -> str:
    return "Basic " + base64.b64encode(f"{ALICE_NAME}:{ALICE_PASSWORD}".encode()).decode()


@pytest.mark.parametrize("method", ["OPTIONS", "GET"])
async def test_anonymous_challenge_passes_through_the_edge(
    pki: Pki, server: RunningServer, make_edge: EdgeFactory, method: str
) -> None:
    edge = await make_edge(edge_config(pki, server.port))
    request = (
        f"{method} /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: {PUBLIC_NAME}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    response = await exchange(edge, pki, request)
    assert status_of(response) == 401
    assert _head(response)["www-authenticate"] == 'Basic realm="natsync"'
    assert "ms-asprotocolversions" not in _head(response)

    authenticated = request.replace(
        b"Connection:", f"Authorization: {_basic()}\r\nConnection:".encode()
    )
    response = await exchange(edge, pki, authenticated)
    if method == "OPTIONS":
        assert status_of(response) == 200
        assert "16.1" in _head(response)["ms-asprotocolversions"]
        assert _head(response)["x-ms-rp"] == _head(response)["ms-asprotocolversions"]
    else:
        assert status_of(response) == 405
