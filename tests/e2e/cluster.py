"""Several real `natsync server` processes sharing one PostgreSQL database, on loopback.

Each process is started the way an administrator starts one (``natsync server --config FILE``,
the venv's entry point), with its own config file naming the same ``store`` URL, plain HTTP on a
free port and SMTP in on a free port (``port = 0`` / ``smtp_listen = "127.0.0.1:0"``; the
process prints the ports it bound). Its stderr (banner and JSON logs) goes to a file, read for
the banner and shown when a test fails. Processes are stopped by PID: SIGTERM at the end, or
SIGKILL when a test kills one on purpose.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Seconds a server process may take to print both addresses (migrations, imports, TLS-less).
START_TIMEOUT = 30.0
#: Seconds a SIGTERMed server may take to close (held Pings get SHUTDOWN_GRACE, 2 s).
STOP_TIMEOUT = 15.0
#: The domain the servers take mail for.
DOMAIN = "natsync.test"
NATSYNC = Path(sys.executable).parent / "natsync"

#: The banner names the ActiveSync URL; phones are given the server's root.
_HTTP = re.compile(r"ActiveSync at (https?://[^/\s]+)")
_SMTP = re.compile(r"SMTP at (\S+):(\d+)")


@dataclass
class ServerProcess:
    """One running ``natsync server``: its addresses and its log."""

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


def write_config(directory: Path, store_url: str, *, heartbeat_min: int) -> Path:
    """One process's config file: its own data_dir, the shared store."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "natsync.toml"
    config.write_text(
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        f'data_dir = "{directory / "data"}"\n'
        f'store = "{store_url}"\n'
        'smtp_listen = "127.0.0.1:0"\n'
        f'domains = ["{DOMAIN}"]\n'
        f"heartbeat_min = {heartbeat_min}\n",
        encoding="utf-8",
    )
    return config


def _wait_ready(server: ServerProcess, deadline: float) -> None:
    while time.monotonic() < deadline:
        text = server.log.read_text(errors="replace")
        http, smtp = _HTTP.search(text), _SMTP.search(text)
        if http and smtp:
            server.url = http.group(1)
            server.smtp_host, server.smtp_port = smtp.group(1), int(smtp.group(2))
            return
        if not server.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"natsync server {server.name} did not start:\n{server.log_tail()}")


@contextlib.contextmanager
def servers(
    directory: Path, store_url: str, count: int, *, heartbeat_min: int = 1
) -> Iterator[list[ServerProcess]]:
    """*count* ``natsync server`` processes on *store_url*, started together; stopped at exit."""
    started: list[ServerProcess] = []
    try:
        for index in range(count):
            name = "ABCDEFGH"[index]
            config = write_config(directory / name, store_url, heartbeat_min=heartbeat_min)
            log = directory / name / "server.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(NATSYNC), "server", "--config", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            started.append(ServerProcess(name, process, log))
        deadline = time.monotonic() + START_TIMEOUT
        for server in started:
            _wait_ready(server, deadline)
        yield started
    finally:
        for server in started:
            server.stop()
