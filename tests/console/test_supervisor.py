"""start_console as natsync run wires it: with a SupervisorSource over the running server, the
Devices page says which phone holds a Ping from the server itself (exact: a phone that went away
stops counting at once), and the Status page shows the supervisor's processes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from natsync.client import EASClient
from natsync.console import ProcessState, RunningConsole, SupervisorSource, start_console
from tests.console.conftest import ALICE_PASSWORD, Deployment, browser_like, deliver, login


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


async def test_a_push_shows_its_latency_on_the_device_page_and_live(
    deployment: Deployment, supervised: RunningConsole
) -> None:
    """A held Ping woken by a delivered mail: the server notes its push latency; the device's
    row and page show p50/p99 from the store, the Live sample from the server's histogram (in
    process) and, for a console on its own, from the store's record."""
    base = supervised.url.rstrip("/")
    async with (
        EASClient(deployment.eas_base, "alice", ALICE_PASSWORD, device_id="PHONE1") as phone,
        browser_like() as http,
    ):
        await login(http, base)
        await phone.folder_sync()
        inbox = phone.folder(type=2).server_id
        await phone.sync(inbox)
        async with http.get(base + "/devices/alice/PHONE1") as resp:
            assert "<tr id=push><th>Push latency</th><td>—</td></tr>" in await resp.text()
        ping = asyncio.create_task(phone.ping([inbox], 120))
        for _ in range(500):  # the Ping is held once the server says so
            if deployment.server.eas.held_devices():
                break
            await asyncio.sleep(0.02)
        await deliver(deployment, "wakes the Ping")
        assert await asyncio.wait_for(ping, 10) == [inbox]
        await deployment.server.eas.recent.flush()
        async with http.get(base + "/devices/alice/PHONE1") as resp:
            page = await resp.text()
        (shown,) = re.findall(r"<tr id=push><th>Push latency</th><td>([^<]*)</td>", page)
        assert re.fullmatch(r"p50 [\d.]+ ms · p99 [\d.]+ ms \(1 push\)", shown), shown
        assert "after the change" in page  # on the answered Ping's entry: "pushed 0.1 ms after"
        async with http.get(base + "/devices") as resp:
            cells = re.findall(r'data-push="([^"]*)" title="p50[^"]*">([^<]*)<', await resp.text())
        ((p50, cell),) = cells
        assert re.fullmatch(r"[\d.]+/[\d.]+", cell), cell  # p50/p99 ms: short on a phone
        assert 0 < float(p50) < 10_000
    await supervised.console.sample()  # the server's own histogram
    assert supervised.console.series.samples[-1].p50 is not None
    await deployment.console.console.sample()  # on its own: the store's record
    last = deployment.console.console.series.samples[-1]
    assert last.p50 is not None
    assert last.p99 == last.p50
    assert abs(last.p50 * 1000 - float(p50)) < 1e-6  # one push: the same number
