"""The relay's idle timeouts, on real sockets (loopback): the relay's own forwards as `natsync
relay run` builds them, in front of a home that holds a Ping for the full heartbeat. The
timeouts come from the heartbeat by the home edge's derivation (heartbeat + margin); the test
scales the margin down to 1 s so a heartbeat of 2 s makes a 3 s idle timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natsync.edge import config as edge_config
from natsync.edge.forward import Forwarder
from natsync.edge.metrics import Metrics
from natsync.relay.service import relay_forwarders
from natsync.relay.settings import RelaySettings
from natsync.relay.wireguard import generate_private_key, public_key
from tests.relay.proxy_echo import read_header

HEARTBEAT = 2
MARGIN = 1


@dataclass
class Home:
    """Stands in for the home edge: reads the PROXY header, then answers each request line
    ``hold N`` after N seconds of silence (a held Ping) and notes when a connection ends."""

    port: int
    closed: list[float]


async def _home_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, home: Home
) -> None:
    if (got := await read_header(reader)) is None:
        return
    if got[1]:
        reader.feed_data(got[1])  # bytes that came with the header: the first request
    try:
        while line := await reader.readline():
            seconds = float(line.split()[1])
            await asyncio.sleep(seconds)  # the server holds the Ping: nothing on the wire
            writer.write(b"answered after %g s\n" % seconds)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        home.closed.append(time.monotonic())
        writer.close()


@pytest.fixture
async def relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, Home, Forwarder]]:
    monkeypatch.setattr(edge_config, "HEARTBEAT_MARGIN", MARGIN)
    home = Home(0, [])
    server = await asyncio.start_server(lambda r, w: _home_conn(r, w, home), "127.0.0.1", 0)
    home.port = int(server.sockets[0].getsockname()[1])
    settings = RelaySettings(
        home_public_key=public_key(generate_private_key()),
        private_key_file=tmp_path / "relay.key",
        listen=("127.0.0.1",),
        https_port=0,
        smtp_port=0,
        home_address="127.0.0.1",
        home_https_port=home.port,
        home_smtp_port=home.port,
        heartbeat_max=HEARTBEAT,
    )
    assert settings.idle_timeout == HEARTBEAT + MARGIN
    https = relay_forwarders(settings, Metrics())[0]
    assert https.idle_timeout == HEARTBEAT + MARGIN
    port = await https.start()
    try:
        yield port, home, https
    finally:
        await https.close()
        server.close()
        await server.wait_closed()


async def test_a_ping_held_for_the_full_heartbeat_is_not_cut(
    relay: tuple[int, Home, Forwarder],
) -> None:
    port, home, https = relay
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):  # two Pings back to back, each silent for the whole heartbeat
        writer.write(f"hold {HEARTBEAT}\n".encode())
        answer = await asyncio.wait_for(reader.readline(), HEARTBEAT + 5)
        assert answer == f"answered after {HEARTBEAT} s\n".encode()
    assert https.idle_cut == 0
    assert home.closed == []
    writer.close()


async def test_a_connection_silent_past_the_timeout_is_cut(
    relay: tuple[int, Home, Forwarder],
) -> None:
    port, home, https = relay
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hold 0\n")
    assert await reader.readline() == b"answered after 0 s\n"
    quiet = time.monotonic()
    try:
        rest = await asyncio.wait_for(reader.read(100), HEARTBEAT + MARGIN + 5)
    except ConnectionError:  # the relay aborts (a reset) rather than closing politely
        rest = b""
    assert rest == b""
    cut = time.monotonic() - quiet
    idle = HEARTBEAT + MARGIN
    assert idle <= cut < idle + 1.5  # within one look (a quarter of the timeout) of it
    assert https.idle_cut == 1
    for _ in range(20):  # the home's side of the connection is cut too
        if home.closed:
            break
        await asyncio.sleep(0.05)
    assert home.closed
    assert home.closed[0] - quiet >= idle
    writer.close()
