"""X-Forwarded-For counts only from a trusted proxy (the edge): the access log and the
per-address login limit then use the address that proxy names; from anyone else the header is
ignored, so a client cannot choose the address it is logged and rate-limited under."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.server.conftest import ServerFactory

#: A loopback source address other than 127.0.0.1: a client that is not the trusted proxy.
OTHER_SOURCE = "127.0.0.7"


async def _options(port: int, source: str, forwarded: str) -> int:
    """One anonymous OPTIONS (answered 401) from *source* with *forwarded*; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: localhost\r\n"
        b"X-Forwarded-For: " + forwarded.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    await writer.wait_closed()
    return status


def _remotes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        json.loads(r.getMessage())["remote"]
        for r in caplog.records
        if r.name == "natsync.server.access"
    ]


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    make_client: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsync.server.access")
    client = await make_client(trusted_proxies=("127.0.0.1",))
    port = client.server.port
    assert await _options(port, "127.0.0.1", "198.51.100.1, 203.0.113.9") == 401
    assert await _options(port, OTHER_SOURCE, "203.0.113.66") == 401
    # The proxy's own entry is the last one; what a client put before it is not believed.
    assert _remotes(caplog) == ["203.0.113.9", OTHER_SOURCE]


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    make_client: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsync.server.access")
    client = await make_client()
    assert await _options(client.server.port, "127.0.0.1", "203.0.113.9") == 401
    assert _remotes(caplog) == ["127.0.0.1"]


def test_trusted_proxies_are_read_from_the_server_table_and_checked() -> None:
    from natsync.config import server_config_from_dict
    from natsync.errors import ConfigError

    config = server_config_from_dict({"trusted_proxies": ["127.0.0.1", "::1"]})
    assert config.trusted_proxies == ("127.0.0.1", "::1")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        server_config_from_dict({"trusted_proxies": ["edge.example"]})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        server_config_from_dict({"trusted_proxies": "127.0.0.1"})
