"""`natsync run` with ``run.server_processes = 2`` on the PostgreSQL store: two server
processes (server.port and server.port + 1), the edge balancing over both; a phone's Ping held
on whichever process the edge chose is woken by a mail SMTP delivered in the first one."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.cli.test_run import (
    SHUTDOWN_TIMEOUT,
    Running,
    _provision_push_sync,
    free_ports,
    init_file,
    nat,
    start_run,
)


def _ports() -> list[int]:
    """edge, smtp, server, admin — with server + 1 free too (the second server process)."""
    from natsync.cli.up import port_free

    for _ in range(50):
        edge, smtp, server, admin = free_ports(4)
        if server + 1 not in (edge, smtp, admin) and port_free("127.0.0.1", server + 1):
            return [edge, smtp, server, admin]
    pytest.skip("no free port beside a free one on loopback (50 tries)")


@pytest.fixture(scope="module")
def two_servers(
    pg_server: pg.PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    tmp_path = tmp_path_factory.mktemp("processes")
    url = pg_server.create_database()
    ports = _ports()
    config = init_file(tmp_path, ports, "--store", url)
    config.write_text(config.read_text().replace("server_processes = 1", "server_processes = 2"))
    added = nat(
        "user", "add", "you", "--email", "you@natsync.test", "--password-stdin",
        "-c", str(config), cwd=tmp_path, stdin="correct horse battery\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    run = start_run(tmp_path, config, ports)
    try:
        yield run
    finally:
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert run.proc.stdout is not None
        run.proc.stdout.close()
        pg_server.drop_database(url)


def test_two_server_processes_behind_the_edge(two_servers: Running) -> None:
    parts = two_servers.health()["parts"]
    assert {"server", "server[1]", "edge"} <= set(parts)
    assert all(part["up"] for part in parts.values())
    servers = two_servers.info["server"]
    assert [s["port"] for s in servers] == [two_servers.server_port, two_servers.server_port + 1]
    assert "smtp" in servers[0]
    assert "smtp" not in servers[1]  # SMTP in and the relay live in the first process
    # Two phones: the edge spreads new connections over both processes.
    for device in ("PROCPHONE1", "PROCPHONE2"):
        subject = f"pushed to {device}"
        assert subject in asyncio.run(_provision_push_sync(two_servers, device, subject))
    text = two_servers.log.read_text()
    assert "edge listening" in text
    assert "Traceback" not in text


def test_check_refuses_two_processes_on_sqlite(tmp_path: Path) -> None:
    config = init_file(tmp_path, free_ports(4))
    config.write_text(config.read_text().replace("server_processes = 1", "server_processes = 2"))
    done = nat("check", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 1
    assert "2 server processes on the SQLite store" in done.stderr
