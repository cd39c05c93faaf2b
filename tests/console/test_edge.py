"""The console is not reachable through the edge: its paths are not published, even when the
edge is pointed at the console's own port by mistake; under TLS its cookie is Secure; and the
Live page charts a real edge's /metrics while a phone holds a Ping through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.console import RunningConsole, settings_from_data_dir, start_console
from natsync.server import RunningServer, start_server
from natsync.store.api import Store
from tests.console.conftest import ADMIN_PASSWORD, ALICE_PASSWORD, store_with_alice
from tests.edge.conftest import PUBLIC_NAME, EdgeFactory, Pki, edge_config, exchange, status_of

CONSOLE_PATHS = ["/", "/login", "/devices", "/users", "/live", "/live.json", "/doctor/report",
                 "/static/console.js"]  # fmt: skip


@pytest.fixture
async def behind_edge(
    tmp_path: Path,
    pki: Pki,
    admin_hash: str,
    alice_password_hash: str,
) -> AsyncIterator[tuple[Store, RunningServer, RunningConsole]]:
    data = tmp_path / "data"
    data.mkdir()
    settings = settings_from_data_dir(data)
    store = await store_with_alice(data, alice_password_hash)
    config = ServerConfig(
        host="127.0.0.1", port=0, tls_cert=pki.server_cert, tls_key=pki.server_key,
        data_dir=data, heartbeat_min=1,
    )  # fmt: skip
    server = await start_server(config, store)
    console = await start_console(
        replace(settings, port=0, password_hash=admin_hash, tls_cert=pki.server_cert,
                tls_key=pki.server_key),
        store,
    )  # fmt: skip
    try:
        yield store, server, console
    finally:
        await console.close()
        await server.close()
        await store.aclose()


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {PUBLIC_NAME}\r\nConnection: close\r\n\r\n".encode()


async def test_console_paths_are_not_published_by_the_edge(
    behind_edge: tuple[Store, RunningServer, RunningConsole],
    pki: Pki,
    make_edge: EdgeFactory,
) -> None:
    _, server, console = behind_edge
    # The edge as deployed (in front of the server), and an edge pointed at the console's port
    # by mistake: neither lets a console path through.
    for backend in (server.port, console.port):
        edge = await make_edge(edge_config(pki, backend))
        for path in CONSOLE_PATHS:
            assert status_of(await exchange(edge, pki, _get(path))) == 404, (backend, path)
        login = (
            f"POST /login HTTP/1.1\r\nHost: {PUBLIC_NAME}\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
            f"user=admin&password={ADMIN_PASSWORD}".ljust(40)
        ).encode()
        assert status_of(await exchange(edge, pki, login)) == 404
    # The one published path, sent to the console by that mistake, is refused: the console
    # answers to its addresses only, not to the public name phones use.
    edge = await make_edge(edge_config(pki, console.port))
    answer = await exchange(edge, pki, _get("/Microsoft-Server-ActiveSync"))
    assert status_of(answer) == 421


async def test_under_tls_the_session_cookie_is_secure(
    behind_edge: tuple[Store, RunningServer, RunningConsole],
    pki: Pki,
) -> None:
    import aiohttp

    _, _, console = behind_edge
    assert console.url.startswith("https://127.0.0.1:")
    assert console.host == "127.0.0.1"  # loopback unless console.host says otherwise
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as http,
        http.post(
            console.url + "login",
            data={"user": "admin", "password": ADMIN_PASSWORD},
            allow_redirects=False,
        ) as resp,
    ):
        cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


async def test_live_charts_a_real_edges_metrics_with_a_held_ping(
    behind_edge: tuple[Store, RunningServer, RunningConsole],
    pki: Pki,
    make_edge: EdgeFactory,
) -> None:
    _, server, running = behind_edge
    edge = await make_edge(edge_config(pki, server.port))
    console = running.console
    console.settings = replace(
        console.settings, metrics_url=f"http://127.0.0.1:{edge.admin_port}/metrics"
    )
    await console.sample()
    async with EASClient(
        f"https://127.0.0.1:{edge.port}", "alice", ALICE_PASSWORD, ca_file=pki.ca_file
    ) as phone:
        await phone.folder_sync()
        inbox = phone.folder(type=2).server_id
        ping = asyncio.create_task(phone.ping([inbox], 30))
        try:
            for _ in range(50):
                await console.sample()
                if console.series.samples[-1].held == 1:
                    break
                await asyncio.sleep(0.1)
            last = console.series.samples[-1]
            assert last.held == 1
        finally:
            ping.cancel()
    rates = {c for s in console.series.samples for c in s.rates if s.rates[c] > 0}
    # The edge counts a request when it is answered: the held Ping shows in the gauge above.
    assert {"Provision", "FolderSync"} <= rates
