"""`natsync run` with a [console] table: the first server process serves the web console on its
loopback port, on the server's store, and its Live page charts the server's own metrics (the
Pings it holds, requests by command, push latency)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from natsync.auth.passwords import hash_password
from natsync.store.api import FolderType
from tests.cli.test_run import (
    PUSH_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    add_user,
    free_ports,
    init_file,
    phone,
    send_mail,
    start_run,
)
from tests.console.conftest import ADMIN_PASSWORD, browser_like, login

#: Seconds until the Live page has sampled a held Ping (it samples every 5 s).
LIVE_TIMEOUT = 20.0


async def _live_held(base: str) -> list[dict[str, object]]:
    """Log in and read /live.json until a sample shows a held Ping; the samples."""
    async with browser_like() as http:
        await login(http, base)
        deadline = time.monotonic() + LIVE_TIMEOUT
        while True:
            async with http.get(f"{base}/live.json") as resp:
                assert resp.status == 200
                samples: list[dict[str, object]] = (await resp.json())["samples"]
            if any(s["held"] == 1 for s in samples) or time.monotonic() > deadline:
                return samples
            await asyncio.sleep(0.5)


async def _live_page(base: str) -> str:
    async with browser_like() as http:
        await login(http, base)
        async with http.get(f"{base}/live") as resp:
            assert resp.status == 200
            return await resp.text()


def test_run_serves_the_console_and_live_shows_the_servers_held_pings(tmp_path: Path) -> None:
    ports = free_ports(5)
    console_port = ports.pop()
    config = init_file(tmp_path, ports)
    config.write_text(
        config.read_text()
        + f'\n[console]\nport = {console_port}\npassword_hash = "{hash_password(ADMIN_PASSWORD)}"\n'
    )
    add_user(tmp_path)
    run = start_run(tmp_path, config, ports)
    base = f"http://127.0.0.1:{console_port}"
    try:
        assert run.info["server"][0]["console_port"] == console_port
        assert run.info["server"][0]["console"] == base + "/"

        async def scenario() -> tuple[str, list[dict[str, object]], str]:
            async with browser_like() as http, http.get(f"{base}/login") as resp:
                assert resp.status == 200
                login_page = await resp.text()
            async with phone(run, "RUNCONSOLE1") as client:
                await client.folder_sync()
                inbox = client.folder(type=FolderType.INBOX).server_id
                await client.sync(inbox)
                ping = asyncio.create_task(client.ping([inbox], heartbeat=120))
                samples = await _live_held(base)
                page = await _live_page(base)
                await asyncio.to_thread(send_mail, run.smtp_port, "wakes the Ping")
                assert await asyncio.wait_for(ping, PUSH_TIMEOUT) == [inbox]
            return login_page, samples, page

        login_page, samples, page = asyncio.run(scenario())
        assert 'name="password"' in login_page
        assert any(s["held"] == 1 for s in samples), samples  # the server's held Ping
        assert "the server&#x27;s own metrics" in page or "the server's own metrics" in page
        text = run.log.read_text()
        assert f"console listening on 127.0.0.1:{console_port}" in text
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert run.proc.stdout is not None
        run.proc.stdout.close()
