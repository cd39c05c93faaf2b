"""[console] publish: `natsync run`'s edge forwards a port of the admin's choosing to the console.

A real `natsync run` (server, edge, cert parts) with the console published on an edge port: the
login page is reachable through the edge over TLS (the console's own certificate: the phones'
one), and its guards hold there as on loopback — no page without a session, no change without
the CSRF token, the login rate limit counted per real browser address (the edge's PROXY v2
header), not per the edge's. Browsers are aiohttp sessions bound to distinct loopback source
addresses (127.0.0.2, 127.0.0.3), so "the real client address" is something the test can tell
apart from the edge's 127.0.0.1. `natsync check` warns that the console is published. (Without
publish the edge answers 404 for console paths: tests/cli/test_run_console.py.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from natsync.auth.passwords import hash_password
from natsync.console.security import MAX_FAILURES_PER_ADDRESS
from tests.cli.test_run import (
    SHUTDOWN_TIMEOUT,
    Running,
    add_user,
    free_ports,
    init_file,
    nat,
    start_run,
)
from tests.console.conftest import ADMIN_PASSWORD, CSRF

#: Two browsers on distinct loopback addresses (Linux routes all of 127.0.0.0/8 to lo).
GUESSER, ADMIN = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str, int]]:
    """`natsync run` with the console published on an edge port; (run, its URL, the console's
    loopback publish_port)."""
    tmp_path = tmp_path_factory.mktemp("runpublished")
    ports = free_ports(7)
    console_port, edge_console, publish_port = ports.pop(), ports.pop(), ports.pop()
    config = init_file(tmp_path, ports)
    config.write_text(
        config.read_text()
        + f'\n[console]\nport = {console_port}\npassword_hash = "{hash_password(ADMIN_PASSWORD)}"\n'
        + "doctor_heartbeat = 0\n"
        + f'publish = "127.0.0.1:{edge_console}"\npublish_port = {publish_port}\n'
        + 'tls_cert = "data/tls/public.pem"\ntls_key = "data/tls/public.key"\n'
    )
    add_user(tmp_path)
    run = start_run(tmp_path, config, ports)
    try:
        yield run, f"https://localhost:{edge_console}", publish_port
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert run.proc.stdout is not None
        run.proc.stdout.close()


def browser(run: Running, source: str) -> aiohttp.ClientSession:
    """A browser on *source* that trusts the deployment's CA and keeps its cookies."""
    context = ssl.create_default_context(cafile=str(run.ca))
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(source, 0))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar())


async def _through_the_edge(run: Running, base: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with browser(run, ADMIN) as admin:
        async with admin.get(f"{base}/login") as resp:
            seen["login"] = (resp.status, await resp.text())
        async with admin.get(f"{base}/devices", allow_redirects=False) as resp:
            seen["no session"] = (resp.status, resp.headers.get("Location"))
        async with browser(run, GUESSER) as guesser:
            statuses = []
            for _ in range(MAX_FAILURES_PER_ADDRESS + 1):
                async with guesser.post(
                    f"{base}/login", data={"user": "admin", "password": "wrong"}
                ) as resp:
                    statuses.append(resp.status)
            seen["guesses"] = statuses
        # The guesser is locked out; the admin, from another address, is not.
        async with admin.post(
            f"{base}/login", data={"user": "admin", "password": ADMIN_PASSWORD}
        ) as resp:
            text = await resp.text()
            seen["admin login"] = resp.status
            seen["cookie secure"] = [c["secure"] for c in admin.cookie_jar]
        match = CSRF.search(text)
        assert match is not None, text
        async with admin.post(f"{base}/users/add", data={"user": "x"}) as resp:
            seen["no csrf"] = resp.status
        async with admin.get(f"{base}/devices") as resp:
            seen["devices"] = resp.status
    return seen


def test_the_published_console_keeps_its_guards_through_the_edge(
    published: tuple[Running, str, int],
) -> None:
    run, base, _ = published
    seen = asyncio.run(_through_the_edge(run, base))
    status, login_page = seen["login"]
    assert status == 200
    assert 'name="password"' in login_page
    assert seen["no session"] == (303, "/login")
    guesses = seen["guesses"]
    assert guesses == [401] * MAX_FAILURES_PER_ADDRESS + [429], guesses
    assert seen["admin login"] == 200  # another address: not rate-limited by the guesser
    assert seen["cookie secure"] == [True]
    assert seen["no csrf"] == 403
    assert seen["devices"] == 200
    # The audit log names the browsers' own addresses (from the PROXY header), not the edge's.
    audit = run.config.parent / "data" / "console" / "audit.log"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    remotes = {(line["action"], line["result"], line["remote"]) for line in lines}
    assert ("login", "failed", GUESSER) in remotes
    assert ("login", "refused: too many failed logins", GUESSER) in remotes
    assert ("login", "ok", ADMIN) in remotes
    assert not any(line["remote"] == "127.0.0.1" for line in lines), lines


def test_the_console_publish_port_wants_the_proxy_header(
    published: tuple[Running, str, int],
) -> None:
    """Straight to the console's publish_port, without the edge's PROXY header: dropped."""
    run, _, publish_port = published
    with socket.create_connection(("127.0.0.1", publish_port), 10) as raw:
        raw.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n" + b"\0" * 16)
        raw.settimeout(10)
        try:
            answer = raw.recv(1024)
        except ConnectionResetError:  # closed with our bytes unread: a reset
            answer = b""
        assert answer == b""  # closed without a word
    assert "published console: a connection from the edge was dropped" in run.log.read_text()


def test_check_warns_that_the_console_is_published(published: tuple[Running, str, int]) -> None:
    run, _, _ = published
    checked = nat("check", "-c", str(run.config), cwd=run.config.parent)
    out = checked.stdout + checked.stderr
    assert "console.publish" in out, out
    assert "the admin console is published by the edge" in out
