"""A real natsync server and a real console on 127.0.0.1 over one SQLite store in tmp_path,
with the user alice and a console admin password."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


async def deliver(deployment: Deployment, subject: str) -> None:
    """A mail for alice, delivered as SMTP in does (one store transaction: a held Ping of
    hers wakes)."""
    from natsync.mail.relay import deliver_to_inbox
    from natsync.mime import parse_message

    raw = (
        f"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        "Message-ID: <m1@example.org>\r\n\r\nHello\r\n"
    ).encode()
    message = parse_message(raw, datetime.now(UTC))
    await deployment.store.run(
        lambda t: deliver_to_inbox(t, admin.require_user(t, "alice"), message)
    )


# -- Debian's chromium + chromium-driver through Selenium (tests/console/test_browser.py and the
# -- natsync run flow in tests/cli/test_run_console.py)

CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "console-screenshots"
NO_BROWSER = pytest.mark.skipif(
    shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists(),
    reason="needs Debian's chromium and chromium-driver (make apt-test installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with open_browser() as driver:
        yield driver


@contextlib.contextmanager
def open_browser() -> Iterator[Any]:
    """Headless chromium 420 px wide (a phone's screen), through chromium-driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=420,900", "--no-proxy-server"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


async def do(fn: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks: run it off the loop that serves the console and the server."""
    return await asyncio.to_thread(fn, *args)


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    from selenium.common.exceptions import WebDriverException

    for _ in range(int(timeout * 5)):
        try:
            value = await do(check)
        except WebDriverException:  # the page changed under the lookup: look again
            value = None
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
