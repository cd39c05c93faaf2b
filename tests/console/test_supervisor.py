"""start_console as natsync run wires it: with a SupervisorSource over the running server, the
Devices page says which phone holds a Ping from the server itself (exact: a phone that went away
stops counting at once), and the Status page shows the supervisor's processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from natsync.client import EASClient
from natsync.console import ProcessState, RunningConsole, SupervisorSource, start_console
from tests.console.conftest import ALICE_PASSWORD, Deployment, browser_like, login


@pytest.fixture
async def supervised(deployment: Deployment) -> AsyncIterator[RunningConsole]:
    def processes() -> list[ProcessState]:
        return [ProcessState("server", True, f"pid 1234, {deployment.server.url}"),
                ProcessState("edge", False, "exited with status 1")]  # fmt: skip

    source = SupervisorSource([deployment.server], processes)
    settings = replace(deployment.console.console.settings, port=0)
    running = await start_console(settings, deployment.store, source)
    yield running
    await running.close()


async def test_held_pings_and_processes_from_the_supervisor(
    deployment: Deployment, supervised: RunningConsole
) -> None:
    base = supervised.url.rstrip("/")
    async with browser_like() as http:
        await login(http, base)
        async with http.get(base + "/") as resp:
            page = await resp.text()
        assert 'class="light green" data-light="server"' in page
        assert 'class="light red" data-light="edge"' in page
        assert "exited with status 1" in page
        phone = EASClient(deployment.eas_base, "alice", ALICE_PASSWORD, device_id="PHONE1")
        try:
            await _hold_then_leave(http, base, phone)
        finally:
            await phone.close()


async def _hold_then_leave(http: aiohttp.ClientSession, base: str, phone: EASClient) -> None:
    await phone.folder_sync()
    inbox = phone.folder(type=2).server_id
    await phone.sync(inbox)
    ping = asyncio.create_task(phone.ping([inbox], 120))
    for _ in range(50):
        async with http.get(base + "/devices") as resp:
            page = await resp.text()
        if 'data-ping="true"' in page:
            break
        await asyncio.sleep(0.1)
    assert 'data-ping="true"' in page
    # The phone goes away: the server ends its hold, and the console says so at once
    # (the store's record alone would say "holding" until the heartbeat ran out).
    ping.cancel()
    await phone.close()
    for _ in range(50):
        async with http.get(base + "/devices") as resp:
            page = await resp.text()
        if 'data-ping="false"' in page:
            break
        await asyncio.sleep(0.1)
    assert 'data-ping="false"' in page
