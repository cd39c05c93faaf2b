"""`natsync run` as a user runs it: `natsync init` writes the file, `natsync run` runs it on
loopback as real processes; a phone (natsync.client) provisions, gets a mail sent by SMTP by
push and syncs it; a killed part comes back; SIGHUP reloads; SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from natsync.client import EASClient
from natsync.store.api import FolderType

#: Seconds `natsync run` may take until every part serves (processes start, TLS keys load).
STARTUP_TIMEOUT = 60.0
#: Seconds it may take to stop after SIGTERM (every part answers within its grace).
SHUTDOWN_TIMEOUT = 30.0
#: Seconds a push may take from the SMTP delivery to the Ping's answer (in practice: ms).
PUSH_TIMEOUT = 20.0
PASSWORD = "correct horse battery"
NAT = [sys.executable, "-c", "from natsync.cli import main; main()"]


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def nat(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NAT, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


@dataclass
class Running:
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    config: Path
    log: Path
    ca: Path
    edge_port: int
    smtp_port: int
    server_port: int
    admin_port: int

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.admin_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                doc: dict[str, Any] = json.load(answer)
        except urllib.error.HTTPError as exc:  # 503 while a part is down: same document
            doc = json.load(exc)
        return doc

    def wait_log(self, needle: str, timeout: float = 30.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()[after:]
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not logged; log:\n{self.log.read_text()[-4000:]}")


def init_file(tmp_path: Path, ports: list[int], *extra: str) -> Path:
    edge, smtp, server, admin = ports
    result = nat(
        "init", "localhost", "-o", "natsync.toml", "--data-dir", "data", "--no-detect", "-y",
        "--cert", "private-ca", "--domain", "natsync.test", "--listen", "127.0.0.1",
        "--https-port", str(edge), "--smtp-port", str(smtp), "--server-port", str(server),
        "--admin-listen", f"127.0.0.1:{admin}", "--edge-admin-listen", "127.0.0.1:0", *extra,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tmp_path / "natsync.toml"


def add_user(directory: Path) -> None:
    """The mailbox the phone uses, in the data directory `init_file` named."""
    added = nat(
        "user", "add", "you", "--email", "you@natsync.test", "--password-stdin",
        "--data-dir", "data", cwd=directory, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def start_run(directory: Path, config: Path, ports: list[int]) -> Running:
    """`natsync run -c CONFIG --json` in *directory*, its log in run.log; once it serves."""
    log = directory / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*NAT, "run", "-c", str(config), "--json"],
            cwd=directory, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the JSON line once every part serves (or EOF on failure)
    if not line:
        proc.wait(SHUTDOWN_TIMEOUT)
        proc.stdout.close()
        raise AssertionError(f"natsync run did not start:\n{log.read_text()[-4000:]}")
    ca = directory / "data" / "ca" / "ca.pem"
    return Running(proc, json.loads(line), config, log, ca, *ports)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp_path = tmp_path_factory.mktemp("run")
    ports = free_ports(4)
    config = init_file(tmp_path, ports)
    add_user(tmp_path)
    run = start_run(tmp_path, config, ports)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            run.proc.wait(SHUTDOWN_TIMEOUT)
        assert run.proc.stdout is not None
        run.proc.stdout.close()


def send_mail(port: int, subject: str) -> None:
    message = f"From: a@remote.test\r\nTo: you@natsync.test\r\nSubject: {subject}\r\n\r\nhi\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", ["you@natsync.test"], message)


def phone(run: Running, device: str) -> EASClient:
    return EASClient(
        f"https://localhost:{run.edge_port}", "you", PASSWORD, ca_file=str(run.ca),
        device_id=device,
    )  # fmt: skip


def server_get(run: Running, path: str) -> str:
    context = ssl.create_default_context(cafile=str(run.ca))
    with (
        socket.create_connection(("127.0.0.1", run.server_port), 10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    return body.decode()


async def _provision_push_sync(run: Running, device: str, subject: str) -> list[str]:
    async with phone(run, device) as client:
        await client.folder_sync()
        assert client.state.policy_key != 0  # provisioned
        inbox = client.folder(type=FolderType.INBOX).server_id
        await client.sync(inbox)
        ping = asyncio.create_task(client.ping([inbox], heartbeat=120))
        await asyncio.sleep(0.5)  # the Ping is held by now
        await asyncio.to_thread(send_mail, run.smtp_port, subject)
        assert await asyncio.wait_for(ping, PUSH_TIMEOUT) == [inbox]  # pushed
        result = await client.sync(inbox)
        return [item.subject for item in result.added]


def test_init_writes_a_file_check_accepts_and_run_serves_it(running: Running) -> None:
    assert set(running.info) >= {"server", "edge", "pid", "admin_port"}
    assert running.info["edge"][0]["port"] == running.edge_port
    subjects = asyncio.run(_provision_push_sync(running, "RUNPHONE1", "pushed through run"))
    assert "pushed through run" in subjects
    health = running.health()
    assert health["status"] == "ok"
    assert set(health["parts"]) == {"server", "edge", "cert"}
    # The server's own metrics: request time by command, push latency (one push at least).
    metrics = server_get(running, "/metrics")
    assert 'natsync_server_request_seconds_count{cmd="Ping"} ' in metrics
    push_count = next(
        line for line in metrics.splitlines()
        if line.startswith("natsync_server_push_latency_seconds_count")
    )  # fmt: skip
    assert int(push_count.split()[1]) >= 1
    assert json.loads(server_get(running, "/healthz"))["status"] == "ok"
    # Every log line carries its timestamp; a request is one line (the server's).
    text = running.log.read_text()
    assert all(line[:4].isdigit() and "Z " in line[:30] for line in text.splitlines() if line)
    assert text.count("natsync.edge.access") == 0
    assert "natsync.server.access" in text


def test_self_check_runs_after_start_and_shows_on_healthz(running: Running) -> None:
    running.wait_log("self-check (after start)")
    verdict = running.health()["self_check"]
    assert verdict["url"] == f"https://localhost:{running.edge_port}/Microsoft-Server-ActiveSync"
    assert verdict["verdict"] in ("ok", "warn"), verdict


def test_a_killed_part_is_restarted(running: Running) -> None:
    before = running.health()["parts"]["edge"]
    os.kill(before["pid"], signal.SIGKILL)
    text = running.wait_log("part edge restarted")
    assert "part edge (pid" in text
    assert "exited with status -9; restarting in" in text
    after = running.health()["parts"]["edge"]
    assert after["pid"] != before["pid"]
    assert after["up"]
    assert after["restarts"] == before["restarts"] + 1
    # Phones get through the new edge process.
    subjects = asyncio.run(_provision_push_sync(running, "RUNPHONE2", "after the restart"))
    assert "after the restart" in subjects


def test_sighup_reloads_what_changed_and_refuses_a_broken_file(running: Running) -> None:
    original = running.config.read_text()
    mark = len(running.log.read_text())
    try:
        running.config.write_text(original.replace("[run]\n", "[run]\nrestart_backof = 2\n"))
        running.proc.send_signal(signal.SIGHUP)
        text = running.wait_log("reload refused", after=mark)
        assert "unknown setting run.restart_backof (did you mean 'restart_backoff'?)" in text
        assert "Traceback" not in text

        mark = len(running.log.read_text())
        server_pid = running.health()["parts"]["server"]["pid"]
        edge_pid = running.health()["parts"]["edge"]["pid"]
        changed = original.replace("hostname = ", "heartbeat_max = 1800\nhostname = ", 1)
        changed = changed.replace('log_level = "info"', 'log_level = "debug"')
        running.config.write_text(changed)
        running.proc.send_signal(signal.SIGHUP)
        text = running.wait_log("reload done", after=mark)
        assert "reload: server settings changed: restarting server" in text
        assert "run.log_level changed; it applies when natsync run restarts" in text
        parts = running.health()["parts"]
        assert parts["server"]["pid"] != server_pid
        assert parts["edge"]["pid"] != edge_pid  # it reads [server] (the heartbeat it allows)
    finally:
        running.config.write_text(original)
    subjects = asyncio.run(_provision_push_sync(running, "RUNPHONE3", "after the reload"))
    assert "after the reload" in subjects


def test_zz_sigterm_stops_every_part(running: Running) -> None:
    pids = [part["pid"] for part in running.health()["parts"].values()]
    mark = len(running.log.read_text())
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(SHUTDOWN_TIMEOUT) == 0
    text = running.log.read_text()[mark:]
    assert text.index("part cert stopped") < text.index("part edge stopped")
    assert text.index("part edge stopped") < text.index("part server stopped")
    assert "natsync run: stopped" in text
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
