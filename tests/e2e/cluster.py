"""Several real `natsync server` processes sharing one PostgreSQL database, on loopback.

Each process is started the way an administrator starts one (``natsync server --config FILE``,
the venv's entry point), with its own config file naming the same ``store`` URL, plain HTTP on a
free port and SMTP in on a free port (``port = 0`` / ``smtp_listen = "127.0.0.1:0"``; the
process prints the ports it bound). Its stderr (banner and JSON logs) goes to a file, read for
the banner and shown when a test fails. With a :class:`Pki` the servers speak TLS, and
:func:`edge` puts ``natsync edge run`` in front of them (``backends = [...]``, health-checked).
Processes are stopped by PID: SIGTERM at the end, or SIGKILL when a test kills one on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from natsync.client import EASClient
from natsync.store import open_store
from natsync.store.api import FolderType, Txn
from tests import pg
from tests.conftest import ALICE_PASSWORD

#: Seconds a server process may take to print both addresses (migrations, imports, TLS-less).
START_TIMEOUT = 30.0
#: Seconds a SIGTERMed server may take to close (held Pings get SHUTDOWN_GRACE, 2 s).
STOP_TIMEOUT = 15.0
#: Seconds between the edge's health checks of each server, and the time one may take: short,
#: so a killed server is out quickly even without traffic.
EDGE_HEALTH_INTERVAL = 0.5
EDGE_HEALTH_TIMEOUT = 0.4
#: The heartbeat the phones ask for: far longer than any wait the tests accept, so an answer
#: that comes is a wake-up or an ended hold, never an expired heartbeat.
HEARTBEAT = 120
#: Seconds given to a Ping to reach its server and start waiting before the test acts on it
#: (the phone's connection is already open: auth is cached, one transaction).
SETTLE = 1.0
#: Seconds within which a wake-up or an ended hold must answer (well under HEARTBEAT; the
#: change feed delivers in milliseconds, the rest is slack for a loaded 2-core machine).
PROMPT = 5.0
#: The domain the servers take mail for.
DOMAIN = "natsync.test"
NATSYNC = Path(sys.executable).parent / "natsync"
T = TypeVar("T")

#: The banner names the ActiveSync URL; phones are given the server's root.
_HTTP = re.compile(r"ActiveSync at (https?://[^/\s]+)")
_SMTP = re.compile(r"SMTP at (\S+):(\d+)")


@dataclass
class ServerProcess:
    """One running ``natsync server`` (or ``natsync edge``): its addresses and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    smtp_host: str = ""
    smtp_port: int = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye to open connections (a machine that dies)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (SIGKILL after STOP_TIMEOUT)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass(frozen=True)
class Pki:
    """A private CA and one certificate from it for "localhost" (servers and edge alike)."""

    ca_file: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Pki:
        from natsync.cert import init_ca

        ca = init_ca(directory / "ca")
        cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], directory / "tls")
        return cls(ca.cert_path, cert, key)


def write_config(
    directory: Path,
    store_url: str,
    *,
    heartbeat_min: int,
    pki: Pki | None = None,
    smarthost: str = "",
) -> Path:
    """One process's config file: its own data_dir, the shared store (TLS with *pki*; the
    outbound relay to *smarthost* "host:port" when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "natsync.toml"
    tls = f'tls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n' if pki else ""
    if smarthost:
        tls += f'smarthost = "{smarthost}"\n'
    config.write_text(
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        f"{tls}"
        f'data_dir = "{directory / "data"}"\n'
        f'store = "{store_url}"\n'
        'smtp_listen = "127.0.0.1:0"\n'
        f'domains = ["{DOMAIN}"]\n'
        f"heartbeat_min = {heartbeat_min}\n",
        encoding="utf-8",
    )
    return config


def _wait_for(server: ServerProcess, *patterns: re.Pattern[str]) -> list[re.Match[str]]:
    """The first match of every pattern in the process's log, once all are there."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = server.log.read_text(errors="replace")
        found = [m for m in (p.search(text) for p in patterns) if m is not None]
        if len(found) == len(patterns):
            return found
        if not server.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"natsync {server.name} did not start:\n{server.log_tail()}")


def _start(name: str, directory: Path, *argv: str) -> ServerProcess:
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(NATSYNC), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return ServerProcess(name, process, log)


@contextlib.contextmanager
def servers(
    directory: Path,
    store_url: str,
    count: int,
    *,
    heartbeat_min: int = 1,
    pki: Pki | None = None,
    smarthost: str = "",
) -> Iterator[list[ServerProcess]]:
    """*count* ``natsync server`` processes on *store_url*, started together; stopped at exit.
    Plain HTTP, or TLS with *pki*'s certificate; each relays outbound mail to *smarthost*."""
    started: list[ServerProcess] = []
    try:
        for index in range(count):
            name = "ABCDEFGH"[index]
            config = write_config(
                directory / name,
                store_url,
                heartbeat_min=heartbeat_min,
                pki=pki,
                smarthost=smarthost,
            )
            started.append(_start(name, directory / name, "server", "--config", str(config)))
        for server in started:
            http, smtp = _wait_for(server, _HTTP, _SMTP)
            server.url = http.group(1)
            server.smtp_host, server.smtp_port = smtp.group(1), int(smtp.group(2))
        yield started
    finally:
        for server in started:
            server.stop()


#: The edge's banner: ``natsync edge: listening on https://127.0.0.1:PORT ...``.
_EDGE = re.compile(r"listening on (https://[^/\s]+)")


@contextlib.contextmanager
def edge(directory: Path, backends: list[ServerProcess], pki: Pki) -> Iterator[ServerProcess]:
    """``natsync edge run`` on a free loopback port, balancing over *backends* (TLS servers
    verified against *pki*'s CA), with quick health checks; stopped at exit."""
    directory.mkdir(parents=True, exist_ok=True)
    servers_list = ", ".join(f'"{b.url.removeprefix("https://")}"' for b in backends)
    config = directory / "edge.toml"
    config.write_text(
        "[edge]\n"
        'listen = "127.0.0.1:0"\n'
        f"backends = [{servers_list}]\n"
        'backend_name = "localhost"\n'
        f'backend_ca = "{pki.ca_file}"\n'
        'admin_listen = ""\n'
        "forwards = []\n"
        f"health_interval = {EDGE_HEALTH_INTERVAL}\n"
        f"health_timeout = {EDGE_HEALTH_TIMEOUT}\n"
        "health_fall = 1\n"
        "[[edge.certificates]]\n"
        'names = ["localhost"]\n'
        f'cert = "{pki.cert}"\n'
        f'key = "{pki.key}"\n',
        encoding="utf-8",
    )
    running = _start("edge", directory, "edge", "run", "--config", str(config))
    try:
        (listening,) = _wait_for(running, _EDGE)
        running.url = listening.group(1)
        yield running
    finally:
        running.stop()


# -- the phones' side ---------------------------------------------------------------------------


@contextlib.contextmanager
def database(pg_server: pg.PgServer, users: list[str], password_hash: str) -> Iterator[str]:
    """A database of its own on the session's PostgreSQL, holding *users* (*password_hash*
    must be the hash of ALICE_PASSWORD, the phones' password); dropped at the end, after the
    processes that used it are gone."""
    url = pg_server.create_database()
    now = datetime.now(UTC)

    def add_users(txn: Txn) -> None:
        for name in users:
            txn.add_user(name, f"{name}@{DOMAIN}", name.title(), password_hash, now)

    store = open_store(url)
    try:
        store.run_sync(add_users)
    finally:
        store.close()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


def phone(
    server: ServerProcess, user: str, device: str = "MULTIPROC01", ca_file: Path | None = None
) -> EASClient:
    """A phone of *user* talking to *server* (a natsync server or the edge)."""
    return EASClient(
        server.url, user, ALICE_PASSWORD, device_id=device, timeout=30, ca_file=ca_file
    )


def same_device(client: EASClient, server: ServerProcess) -> EASClient:
    """The same phone reaching another process (a balancer's choice): shared DeviceState."""
    moved = EASClient(
        server.url,
        client.identity.user,
        ALICE_PASSWORD,
        device_id=client.identity.device_id,
        timeout=30,
    )
    moved.state = client.state
    return moved


def message(user: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = f"{user}@{DOMAIN}"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.test>"
    msg.set_content(f"{subject}\n")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP requires


async def deliver(server: ServerProcess, user: str, subject: str) -> None:
    await aiosmtplib.send(
        message(user, subject),
        sender="sender@remote.test",
        recipients=[f"{user}@{DOMAIN}"],
        hostname=server.smtp_host,
        port=server.smtp_port,
        timeout=30,
        validate_certs=False,  # opportunistic STARTTLS, as a sending MTA does
    )


async def ready_inbox(client: EASClient) -> str:
    """FolderSync, then Sync the Inbox to its current state (so a Ping on it waits)."""
    await client.folder_sync()
    inbox = client.folder(type=int(FolderType.INBOX)).server_id
    await client.sync(inbox)
    await client.sync(inbox)
    return inbox


class Tasks:
    """The test's background requests; whatever is still running at the end is cancelled (a
    failed assertion leaves no Ping behind)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        return task

    async def __aenter__(self) -> Tasks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def timed(awaitable: Awaitable[T], within: float) -> tuple[T, float]:
    started = time.monotonic()
    result = await asyncio.wait_for(awaitable, within)
    return result, time.monotonic() - started
