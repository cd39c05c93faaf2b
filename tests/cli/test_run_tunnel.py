"""`natsync run` with a [tunnel] table, for real: a relay (`natsync relay run`) in a VPS network
namespace, `natsync run` in a home namespace that can only dial out. The run's tunnel part
brings the home's WireGuard end up before the edge binds its relayed listener on the tunnel
address; a client on the VPS side reaches the home's ActiveSync through the relay, and the
server knows the client's address (PROXY v2); SIGTERM takes the tunnel down."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run import NAT, PASSWORD, SHUTDOWN_TIMEOUT, add_user, free_ports, init_file
from tests.relay.test_tunnel import VPS, vps_and_home

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="namespaces and wireguard-go need root (CI runs as root)"
    ),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("wireguard-go", "wg", "ip")),
        reason="wireguard-go / wireguard-tools not installed (make test installs them)",
    ),
]

#: Seconds for a request to come through the relay after `natsync run` is ready.
THROUGH_TIMEOUT = 15.0


def _ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    with vps_and_home("nswp") as names:
        yield names


def _request_through_relay(vps: str, ca: Path) -> str:
    """From the VPS side (a phone on the internet): TLS to the relay's 443, the user's OPTIONS."""
    token = base64.b64encode(f"you:{PASSWORD}".encode()).decode()
    code = (
        "import socket,ssl\n"
        f"ctx=ssl.create_default_context(cafile={str(ca)!r})\n"
        f"raw=socket.create_connection(({VPS!r},443),timeout=5)\n"
        "tls=ctx.wrap_socket(raw,server_hostname='localhost')\n"
        "tls.sendall(b'OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\\r\\nHost: localhost\\r\\n"
        f"Authorization: Basic {token}\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "print(tls.recv(200).decode().split('\\r\\n')[0])\n"
    )
    done = _ns(vps, sys.executable, "-c", code)
    return done.stdout + done.stderr


def test_run_brings_the_tunnel_up_and_down(
    tmp_path: Path, namespaces: tuple[str, str, str]
) -> None:
    vps, home, tag = namespaces
    interface = f"nwh{tag}"
    init = subprocess.run(
        [*NAT, "relay", "init", VPS, "--dir", str(tmp_path / "vps"),
         "--home-dir", str(tmp_path / "home"), "--interface", f"nwr{tag}",
         "--home-interface", interface],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    # The home's file: `natsync init`'s, with the [tunnel] table and the edge's relayed
    # listener that `natsync relay init` printed for the home.
    ports = free_ports(4)
    config = init_file(tmp_path, ports)
    home_toml = (tmp_path / "home" / "home.toml").read_text()
    tunnel, _, edge = home_toml.partition("[edge]\n")
    tunnel = tunnel.replace('"tunnel.key"', f'"{tmp_path / "home" / "tunnel.key"}"')
    config.write_text(config.read_text().replace("[edge]\n", "[edge]\n" + edge, 1) + "\n" + tunnel)
    add_user(tmp_path)

    relay_log, run_log = tmp_path / "relay.log", tmp_path / "run.log"
    relay_toml = tmp_path / "vps" / "relay.toml"
    with relay_log.open("w") as out:
        relay = subprocess.Popen(
            ["ip", "netns", "exec", vps, *NAT, "relay", "run", "-c", str(relay_toml)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    with run_log.open("w") as err:
        run = subprocess.Popen(
            ["ip", "netns", "exec", home, *NAT, "run", "-c", str(config), "--json"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        assert line, f"natsync run did not start:\n{run_log.read_text()[-4000:]}"
        info = json.loads(line)
        assert info["tunnel"][0]["interface"] == interface
        assert "10.77.0.2/30" in _ns(home, "ip", "-o", "addr", "show", "dev", interface).stdout
        deadline = time.monotonic() + THROUGH_TIMEOUT
        answer = ""
        while time.monotonic() < deadline and not answer.startswith("HTTP/1.1 "):
            answer = _request_through_relay(vps, tmp_path / "data" / "ca" / "ca.pem")
            time.sleep(0.3)
        assert answer.startswith("HTTP/1.1 200"), (answer, run_log.read_text()[-3000:])
        # The server's access line names the client the relay saw (PROXY v2, then XFF).
        deadline = time.monotonic() + 5
        while VPS not in run_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert VPS in run_log.read_text()

        run.send_signal(signal.SIGTERM)
        assert run.wait(SHUTDOWN_TIMEOUT) == 0
        text = run_log.read_text()
        assert text.index("part edge stopped") < text.index("part tunnel stopped")
        gone = _ns(home, "ip", "link", "show", interface)
        assert gone.returncode != 0, gone.stdout  # the tunnel's interface is gone
    finally:
        for proc in (run, relay):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(SHUTDOWN_TIMEOUT)
        if run.stdout is not None:
            run.stdout.close()
