"""The peers the benches run beside natsync (HAProxy 2.6 and nginx from Debian): starting them
on a configuration, their PIDs, stopping them by PID. Shared by bench/edge_bench.py and
bench/held_bench.py (bench/ is not a package: they import it from their own directory).

The configurations themselves come from one place too: ``natsync edge render nginx|haproxy``
(natsync.edge.render) for the edge bench; held_bench writes its own multi-server HAProxy.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
#: Seconds a peer may take to start listening.
START_TIMEOUT = 15.0


def haproxy_version() -> str:
    out = subprocess.run([HAPROXY, "-v"], check=False, capture_output=True, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


class HAProxyProcesses:
    """*count* HAProxy processes on the configuration file *config* (one port: SO_REUSEPORT is
    HAProxy's default), each logging to ``haproxy-<i>.log`` in *work*; started at once, ready
    when *port* answers."""

    def __init__(
        self, config: Path, work: Path, port: int, count: int = 1, stop_timeout: float = 10.0
    ) -> None:
        self.port = port
        self.stop_timeout = stop_timeout
        self.procs = [
            subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(work / f"haproxy-{i}.log").open("wb"),
            )
            for i in range(count)
        ]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    log = (work / "haproxy-0.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"HAProxy did not start:\n{log}") from None
                time.sleep(0.1)
        time.sleep(0.5)  # every process bound

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
