"""A real natsync server and a real console on 127.0.0.1 over one SQLite store in tmp_path,
with the user alice and a console admin password."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from natsync import admin
from natsync.console import ConsoleSettings, RunningConsole, settings_from_data_dir, start_console
from natsync.server import RunningServer, start_server
from natsync.store import open_store
from natsync.store.api import Store
from tests.edge.conftest import make_edge, pki  # noqa: F401 (fixtures of test_edge)
from tests.server.conftest import BASE_CONFIG

ADMIN_PASSWORD = "console-admin-pw"
ALICE_PASSWORD = "alice-password"


@pytest.fixture(scope="session")
def admin_hash() -> str:
    from natsync.auth.passwords import hash_password

    return hash_password(ADMIN_PASSWORD)


@dataclass
class Deployment:
    data_dir: Path
    store: Store
    server: RunningServer
    console: RunningConsole

    @property
    def base(self) -> str:
        return self.console.url.rstrip("/")

    @property
    def eas_base(self) -> str:
        return self.server.url.rsplit("/", 1)[0]


async def store_with_alice(data: Path, password_hash: str) -> Store:
    """The data directory's store, with the user alice."""
    store = open_store(settings_from_data_dir(data).store_url)
    now = datetime.now(UTC)
    await store.run(
        lambda t: admin.add_user(t, "alice", "alice@example.test", "Alice", password_hash, now)
    )
    return store


@pytest.fixture
async def deployment(
    tmp_path: Path, admin_hash: str, alice_password_hash: str
) -> AsyncIterator[Deployment]:
    data = tmp_path / "data"
    data.mkdir()
    settings = settings_from_data_dir(data)
    store = await store_with_alice(data, alice_password_hash)
    server = await start_server(replace(BASE_CONFIG, data_dir=data), store)
    settings = replace(
        settings, port=0, password_hash=admin_hash, doctor_url=server.url.rsplit("/", 1)[0],
        doctor_heartbeat=0, public_name="mail.example.test",
    )  # fmt: skip
    console = await start_console(settings, store)
    try:
        yield Deployment(data, store, server, console)
    finally:
        await console.close()
        await server.close()
        await store.aclose()


def settings_of(d: Deployment) -> ConsoleSettings:
    return d.console.console.settings


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(http: aiohttp.ClientSession, base: str, password: str = ADMIN_PASSWORD) -> str:
    """Log in; the CSRF token of the session (from the Status page)."""
    async with http.post(
        f"{base}/login", data={"user": "admin", "password": password}, allow_redirects=True
    ) as resp:
        text = await resp.text()
        assert resp.status == 200, text
    match = CSRF.search(text)
    assert match is not None
    return match.group(1)


def browser_like() -> aiohttp.ClientSession:
    """A client session that keeps cookies of an IP-address host (the console's 127.0.0.1)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
