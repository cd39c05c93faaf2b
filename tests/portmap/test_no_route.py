"""A host with no route to a router (an IPv6-only host has no IPv4 route; a host whose router
hands out no IPv6 has no IPv6 route): asking the router is a plain failure, said in words and
asked again later, never a traceback that ends the portmap part. In a network namespace with
loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.lab.runner import NATSYNC

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_route() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    name = f"nsnort-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))


def test_pcp_without_a_route_is_router_unreachable(no_route: str) -> None:
    code = (
        "from natsync.portmap.pcp import PcpClient\n"
        "from natsync.portmap.errors import RouterUnreachable\n"
        "try:\n"
        "    PcpClient('2001:db8::1').map('tcp', 443, 443, 120)\n"
        "except RouterUnreachable as exc:\n"
        "    print('unreachable:', exc.message)\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", no_route, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30, env=_env(), check=False,
    )  # fmt: skip
    assert done.stdout.startswith("unreachable: PCP to 2001:db8::1:5351:"), done.stderr
    assert "no route to the router" in done.stdout


def test_hold_without_routes_says_so_and_keeps_running(no_route: str, tmp_path: Path) -> None:
    """UPnP discovery (IPv4 multicast) and the IPv6 pinholes both have nowhere to go."""
    config = tmp_path / "natsync.toml"
    config.write_text(
        '[portmap]\nmethod = "upnp"\nipv6 = "auto"\nmappings = ["18443/tcp"]\n'
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    log = tmp_path / "hold.log"
    with log.open("w") as out:
        hold = subprocess.Popen(
            ["ip", "netns", "exec", no_route, *NATSYNC, "portmap", "hold", "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "via upnp6|pcp6" not in log.read_text() and time.monotonic() < deadline:
            assert hold.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert "has no IPv4 route" in text
        assert "no IPv6 default route" in text
        assert "Traceback" not in text
        assert hold.poll() is None  # it asks again later
    finally:
        hold.send_signal(signal.SIGTERM)
        hold.wait(30)
