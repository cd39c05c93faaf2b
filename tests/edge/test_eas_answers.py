"""What Exchange answers where phones notice, seen through the edge (issue 20): the anonymous
401 challenge passes through unchanged; Autodiscover (both XML schemas and v2 JSON) is
published. A real natsync server on its own certificate behind a real edge, over TLS."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
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


def _autodiscover_request(schema: str) -> bytes:
    kind = "outlook" if "outlook" in schema else "mobilesync"
    return (
        '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
        f'exchange/autodiscover/{kind}/requestschema/2006"><Request><EMailAddress>'
        f"alice@example.test</EMailAddress><AcceptableResponseSchema>{schema}"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def _body(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        return out
    return body


def _find(root: ET.Element, local: str) -> list[ET.Element]:
    return [el for el in root.iter() if el.tag.rpartition("}")[2] == local]


@pytest.mark.parametrize(
    "schema",
    [
        "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006",
        "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a",
    ],
)
async def test_autodiscover_both_schemas_through_the_edge(
    pki: Pki, server: RunningServer, make_edge: EdgeFactory, schema: str
) -> None:
    edge = await make_edge(edge_config(pki, server.port))
    body = _autodiscover_request(schema)
    request = (
        f"POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\nHost: {PUBLIC_NAME}\r\n"
        f"Authorization: {_basic()}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    response = await exchange(edge, pki, request)
    assert status_of(response) == 200
    root = ET.fromstring(_body(response))  # our own server's answer
    (inner,) = _find(root, "Response")
    assert inner.tag == "{" + schema + "}Response"
    url = f"https://{PUBLIC_NAME}/Microsoft-Server-ActiveSync"
    if "mobilesync" in schema:
        assert [t.text for t in _find(root, "Type")] == ["MobileSync"]
        assert [u.text for u in _find(root, "Url")] == [url]
    else:
        protocols = {
            p.findtext(f"{{{schema}}}Type"): p.findtext(f"{{{schema}}}Server")
            for p in _find(root, "Protocol")
        }
        assert protocols == {"EXCH": PUBLIC_NAME, "EXPR": PUBLIC_NAME, "MobileSync": url}
        assert [a.text for a in _find(root, "AutoDiscoverSMTPAddress")] == ["alice@example.test"]


async def test_autodiscover_v2_json_through_the_edge(
    pki: Pki, server: RunningServer, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, server.port))

    async def get(target: str) -> tuple[int, dict[str, str]]:
        request = f"GET {target} HTTP/1.1\r\nHost: {PUBLIC_NAME}\r\nConnection: close\r\n\r\n"
        response = await exchange(edge, pki, request.encode())
        assert _head(response)["content-type"].startswith("application/json")
        return status_of(response), json.loads(_body(response))

    url = f"https://{PUBLIC_NAME}/Microsoft-Server-ActiveSync"
    path = "/autodiscover/autodiscover.json/v1.0/alice@example.test"
    assert await get(f"{path}?Protocol=ActiveSync") == (200, {"Protocol": "ActiveSync", "Url": url})
    # The same answer for an address nobody has: v2 tells no one which accounts exist.
    other = "/AutoDiscover/AutoDiscover.json/v1.0/nobody@example.test?Protocol=activesync"
    assert await get(other) == (200, {"Protocol": "ActiveSync", "Url": url})
    query_form = "/autodiscover/autodiscover.json?Email=alice@example.test&Protocol=AutodiscoverV1"
    assert await get(query_form) == (
        200,
        {
            "Protocol": "AutodiscoverV1",
            "Url": f"https://{PUBLIC_NAME}/autodiscover/autodiscover.xml",
        },
    )
    status, error = await get(f"{path}?Protocol=Rest")
    assert status == 400
    assert error["ErrorCode"] == "InvalidProtocol"
    status, error = await get("/autodiscover/autodiscover.json/v1.0/?Protocol=ActiveSync")
    assert (status, error["ErrorCode"]) == (400, "InvalidUser")
