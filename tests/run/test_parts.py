"""natsync.run.parts: the edge part raises its open-files limit as `natsync edge run` does.

A service manager starts `natsync run` with a soft limit of 1024 (systemd's default); the server
part raised its own, the edge part did not, so each edge worker could bridge ~500 Pings (two
descriptors each) before refusing phones. Started here under a soft limit of 1024 for real."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from tests.cli.test_run import NAT, SHUTDOWN_TIMEOUT, free_ports, init_file

#: The soft limit a systemd unit gets unless it sets LimitNOFILE.
UNIT_SOFT_LIMIT = 1024


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(UNIT_SOFT_LIMIT, hard), hard))


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit for {pid}")


def test_edge_part_raises_its_open_files_limit(tmp_path: Path) -> None:
    import json

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > UNIT_SOFT_LIMIT, "the machine's hard limit leaves nothing to raise"
    ports = free_ports(4)
    config = init_file(tmp_path, ports)
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*NAT, "run", "-c", str(config), "--json"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True,
            preexec_fn=_low_soft_limit,  # noqa: PLW1509 (no threads here)
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"natsync run did not start:\n{log.read_text()[-4000:]}"
        info = json.loads(line)
        assert _soft_limit(proc.pid) == min(UNIT_SOFT_LIMIT, hard)  # the supervisor as started
        for kind in ("server", "edge"):
            for part in info[kind]:
                assert _soft_limit(part["pid"]) == hard, (kind, part)
    finally:
        proc.terminate()
        proc.wait(SHUTDOWN_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()
