"""The server's listener is dual stack: ``server.host = "::"`` and a host name take IPv4 and
IPv6 alike (natsync.base.listen), a literal address only its own family. Real sockets on
loopback: the in-process server, `natsync server --host ::` as a process, and a host name
naming both 127.0.0.1 and ::1 in a network namespace's own /etc/hosts."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from natsync.base.listen import listen_host, listen_port
from natsync.server import start_server
from natsync.store.api import Store
from natsync.store.sqlite import SqliteStore
from tests.server.conftest import BASE_CONFIG

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """One SQLite store: which driver serves the store does not matter to the listener."""
    store = SqliteStore(tmp_path / "natsync.db")
    yield store
    store.close()


async def _health(address: str, port: int) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 5)
    writer.write(HEALTH)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


def test_the_wildcard_and_names_mean_both_families_a_literal_its_own() -> None:
    assert listen_host("::") is None
    assert listen_host("[::]") is None
    assert listen_host("") is None
    assert listen_host("0.0.0.0") == "0.0.0.0"
    assert listen_host("::1") == "::1"
    assert listen_host("mail.example.test") == "mail.example.test"
    port = listen_port(None, 0)
    assert port > 0  # one port free on 0.0.0.0 and :: alike
    assert listen_port("127.0.0.1", 0) == 0  # one address: the kernel picks
    assert listen_port(None, 8443) == 8443


async def test_listening_on_the_ipv6_wildcard_accepts_ipv4_and_ipv6(store: Store) -> None:
    server = await start_server(replace(BASE_CONFIG, host="::", port=0), store)
    try:
        families = {s.family for s in server.front._server.sockets}  # type: ignore[union-attr]
        assert len(families) == 2
        assert await _health("127.0.0.1", server.port) == b"HTTP/1.1 200 OK"
        assert await _health("::1", server.port) == b"HTTP/1.1 200 OK"
    finally:
        await server.close()


async def test_a_literal_address_listens_on_its_family_only(store: Store) -> None:
    server = await start_server(replace(BASE_CONFIG, host="::1", port=0), store)
    try:
        assert await _health("::1", server.port) == b"HTTP/1.1 200 OK"
        with pytest.raises(ConnectionRefusedError):
            await _health("127.0.0.1", server.port)
    finally:
        await server.close()


def _natsync_server(args: list[str], config: Path, ns: str | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from natsync.cli import main; main()", "server",
               "--config", str(config), *args]  # fmt: skip
    if ns is not None:
        command = ["ip", "netns", "exec", ns, *command]
    return subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _served_port(proc: subprocess.Popen[str], what: str = "ActiveSync") -> tuple[str, int]:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"ActiveSync at (\S+)://(\S+):(\d+)/", line)
        if m and what == "ActiveSync":
            return m.group(2), int(m.group(3))
        m = re.search(r"SMTP at (\S+):(\d+)", line)
        if m and what == "SMTP":
            return m.group(1), int(m.group(2))
    raise AssertionError(f"natsync server did not say where it serves {what}")


def _smtp_banner(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=5) as conn:
        return conn.recv(100).decode().split()[0]


def _options(address: str, port: int, ns: str | None = None) -> str:
    """An OPTIONS request (no user: the Basic challenge) from a fresh process."""
    code = (
        "import socket\n"
        f"c=socket.create_connection(({address!r},{port}),timeout=5)\n"
        "c.sendall(b'OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\\r\\nHost: x\\r\\n"
        "Connection: close\\r\\n\\r\\n')\n"
        "print(c.recv(100).split(b'\\r\\n')[0].decode())\n"
    )
    command = [sys.executable, "-c", code]
    if ns is not None:
        command = ["ip", "netns", "exec", ns, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    assert proc.stderr is not None
    proc.stderr.close()
    return code


def test_natsync_server_on_the_ipv6_wildcard_serves_ipv4_and_ipv6(tmp_path: Path) -> None:
    """ActiveSync on --host ::, and SMTP in on smtp_listen = "[::]:0" (port 25 is published
    beside 443: mail from IPv6 servers comes the same way)."""
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nport = 0\nsmtp_listen = "[::]:0"\ndomains = ["example.test"]\n'
        f'data_dir = "{tmp_path / "data"}"\n'
    )
    proc = _natsync_server(["--host", "::"], config)
    try:
        host, port = _served_port(proc)
        assert host == "[::]"
        _, smtp = _served_port(proc, "SMTP")
        assert _options("127.0.0.1", port) == "HTTP/1.1 401 Unauthorized"
        assert _options("::1", port) == "HTTP/1.1 401 Unauthorized"
        assert _smtp_banner("127.0.0.1", smtp) == "220"
        assert _smtp_banner("::1", smtp) == "220"
    finally:
        assert _stop(proc) == 0


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace of its own (loopback only) whose /etc/hosts names dual.test on
    both families, as a host name with A and AAAA records does."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("network namespaces need root and iproute2, and CI runs as root")
        pytest.skip("network namespaces need root (CI runs this as root)")
    name = f"nsv6l-{secrets.token_hex(3)}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 dual.test\n::1 dual.test\n")
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_host_name_listens_on_every_address_it_names(tmp_path: Path, namespace: str) -> None:
    config = tmp_path / "natsync.toml"
    config.write_text(f'[server]\nport = 0\ndata_dir = "{tmp_path / "data"}"\n')
    proc = _natsync_server(["--host", "dual.test"], config, ns=namespace)
    try:
        _, port = _served_port(proc)
        assert _options("127.0.0.1", port, namespace) == "HTTP/1.1 401 Unauthorized"
        assert _options("::1", port, namespace) == "HTTP/1.1 401 Unauthorized"
    finally:
        assert _stop(proc) == 0
