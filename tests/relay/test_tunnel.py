"""The relay path for real: two network namespaces (a VPS with a public address, a home that can
only dial out), Debian's wireguard-go and wg, `natsync relay run` and `natsync relay dial` as
processes. A client reaches the home through the relay and the home learns its address from the
PROXY v2 header; one address cannot take more than its share; when the tunnel process dies the
home brings it back by itself."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natsync.lab.runner import NATSYNC

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root (CI runs as root)"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("wireguard-go", "wg", "ip")),
        reason="wireguard-go / wireguard-tools not installed (make test installs them)",
    ),
]

VPS, HOME = "203.0.113.10", "203.0.113.20"
ROOT = Path(__file__).resolve().parents[2]
#: Seconds the parts may take to be up — the echo server listening, the relay forwarding its
#: ports, the home's tunnel shaken hands with the relay: a bound for a hang only. The wait ends
#: on those events, or at once when a process ends (a start takes about a second here, many
#: on a loaded machine).
STARTUP = 60.0
#: Seconds for the tunnel to carry traffic once the parts are up and the tunnel has shaken
#: hands (a client process starts and makes one exchange; the handshake itself is ~10 ms).
TUNNEL_UP = 15.0


@dataclass
class Path2:
    vps: str
    home: str
    dir: Path
    procs: dict[str, subprocess.Popen[bytes]]
    #: The home's tunnel interface (in the home namespace).
    home_if: str


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))


def _spawn(ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
            env=_env(), cwd=ROOT,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _in_ns(ns: str, code: str, timeout: float = 10) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


def _exchange(path: Path2, payload: str, hold: float = 0.0) -> str:
    """From the VPS side's own network (a client on the internet), through the relay."""
    code = (
        "import socket,time\n"
        f"c=socket.create_connection(('{VPS}',443),timeout=3)\n"
        f"c.sendall(b'{payload}')\n"
        f"time.sleep({hold})\n"
        "c.shutdown(socket.SHUT_WR)\n"
        "got=b''\n"
        "while chunk:=c.recv(200): got+=chunk\n"
        "print(got.decode(),end='')\n"
    )
    return _in_ns(path.vps, code)


@contextlib.contextmanager
def vps_and_home(prefix: str) -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth (VPS and HOME addresses, nothing else, no route out):
    (vps, home, tag), deleted on exit. *prefix* keeps one test's names from another's."""
    tag = uuid.uuid4().hex[:6]
    vps, home = f"{prefix}-{tag}-vps", f"{prefix}-{tag}-home"
    subprocess.run(["ip", "netns", "add", vps], check=True)
    subprocess.run(["ip", "netns", "add", home], check=True)
    try:
        for command in (
            ["ip", "link", "add", f"rv{tag}", "netns", vps, "type", "veth",
             "peer", "name", f"rh{tag}", "netns", home],
            ["ip", "-n", vps, "addr", "add", f"{VPS}/24", "dev", f"rv{tag}"],
            ["ip", "-n", home, "addr", "add", f"{HOME}/24", "dev", f"rh{tag}"],
            ["ip", "-n", vps, "link", "set", f"rv{tag}", "up"],
            ["ip", "-n", home, "link", "set", f"rh{tag}", "up"],
            ["ip", "-n", vps, "link", "set", "lo", "up"],
            ["ip", "-n", home, "link", "set", "lo", "up"],
        ):  # fmt: skip
            subprocess.run(command, check=True)
        yield vps, home, tag
    finally:
        subprocess.run(["ip", "netns", "del", vps], check=False)
        subprocess.run(["ip", "netns", "del", home], check=False)


@pytest.fixture
def relay_path(tmp_path: Path) -> Iterator[Path2]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with vps_and_home("nsrl") as (vps, home, tag):
        try:
            init = subprocess.run(
                [*NATSYNC, "relay", "init", VPS, "--dir", str(tmp_path / "vps"),
                 "--home-dir", str(tmp_path / "home"), "--interface", f"nwr{tag}",
                 "--home-interface", f"nwh{tag}"],
                capture_output=True, text=True, env=_env(), check=False,
            )  # fmt: skip
            assert init.returncode == 0, init.stderr
            relay_toml = tmp_path / "vps" / "relay.toml"
            relay_toml.write_text(
                relay_toml.read_text().replace(
                    "max_connections_per_address = 20", "max_connections_per_address = 2"
                )
            )
            procs["echo"] = _spawn(
                home, [sys.executable, "-m", "tests.relay.proxy_echo", "0.0.0.0", "8443"],
                tmp_path / "echo.log",
            )  # fmt: skip
            procs["relay"] = _spawn(
                vps, [*NATSYNC, "relay", "run", "-c", str(relay_toml)], tmp_path / "relay.log"
            )
            procs["dial"] = _spawn(
                home, [*NATSYNC, "relay", "dial", "-c", str(tmp_path / "home" / "home.toml")],
                tmp_path / "dial.log",
            )  # fmt: skip
            yield Path2(vps, home, tmp_path, procs, f"nwh{tag}")
        finally:
            for proc in procs.values():
                _stop(proc)


def _logs(path: Path2) -> dict[str, str]:
    return {p.name: p.read_text()[-800:] for p in path.dir.glob("*.log")}


def _handshake(path: Path2) -> int:
    """When the home's tunnel last shook hands with the relay (Unix time; 0: never, or no
    tunnel interface now)."""
    shown = subprocess.run(
        ["ip", "netns", "exec", path.home, "wg", "show", path.home_if, "latest-handshakes"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return int(shown[1]) if len(shown) == 2 and shown[1].isdigit() else 0


def _wait_event(path: Path2, what: str, happened: Callable[[], bool]) -> None:
    """Until *happened*: fails at once when one of the parts ended, else after STARTUP s."""
    deadline = time.monotonic() + STARTUP
    while not happened():
        ended = {name: p.returncode for name, p in path.procs.items() if p.poll() is not None}
        assert not ended, f"ended {ended} before {what}: {_logs(path)}"
        assert time.monotonic() < deadline, f"not {what} in {STARTUP} s: {_logs(path)}"
        time.sleep(0.2)


def _wait_through(path: Path2) -> float:
    """Waits for the parts to be up (the events, :data:`STARTUP`), then for a client's bytes to
    come through the relay to the home and back, within :data:`TUNNEL_UP` s of that; returns
    the seconds the traffic took to flow after the parts were up."""
    _wait_event(path, "listening", lambda: "listening" in (path.dir / "echo.log").read_text())
    _wait_event(path, "forwarding", lambda: "forwarding" in (path.dir / "relay.log").read_text())
    _wait_event(path, "shaken hands", lambda: _handshake(path) > 0)
    started = time.monotonic()
    while time.monotonic() - started < TUNNEL_UP:
        if _exchange(path, "ping").startswith(f"client={VPS}\nping"):
            took = time.monotonic() - started
            print(f"through the relay {took:.2f} s after its parts were up")
            return took
        time.sleep(0.2)
    raise AssertionError(f"nothing came through the relay in {TUNNEL_UP} s: {_logs(path)}")


def test_a_client_reaches_home_through_the_relay_and_home_knows_who_it_is(
    relay_path: Path2,
) -> None:
    _wait_through(relay_path)
    answer = _exchange(relay_path, "hello")
    assert answer == f"client={VPS}\nhello"
    # the relay keeps nothing but bytes: no certificate, no key but its tunnel key
    assert sorted(p.name for p in (relay_path.dir / "vps").iterdir()) == [
        "relay.key", "relay.toml"
    ]  # fmt: skip


def test_one_address_cannot_take_more_than_its_share(relay_path: Path2) -> None:
    _wait_through(relay_path)
    code = (
        "import socket,time\n"
        f"held=[socket.create_connection(('{VPS}',443),timeout=3) for _ in range(2)]\n"
        "for c in held: c.sendall(b'x')\n"
        "time.sleep(0.5)\n"
        f"third=socket.create_connection(('{VPS}',443),timeout=3)\n"
        "third.sendall(b'y')\n"
        "try:\n"
        "    got=third.recv(100)\n"
        "except ConnectionResetError:\n"
        "    got=b''\n"
        "print('third', got==b'')\n"
        "print('held', [c.recv(100).startswith(b'client=') for c in held])\n"
    )
    said = _in_ns(relay_path.vps, code)
    assert "third True" in said
    assert "held [True, True]" in said


def test_the_tunnel_comes_back_by_itself(relay_path: Path2) -> None:
    _wait_through(relay_path)
    dial = relay_path.procs["dial"]
    children = subprocess.run(
        ["pgrep", "-P", str(dial.pid), "wireguard-go"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 1, children
    os.kill(int(children[0]), 9)  # the home's tunnel process dies (started by our dial)
    dial_log = relay_path.dir / "dial.log"
    # the dial sees it end and starts it again by itself; then the tunnel carries traffic
    _wait_event(relay_path, "started again", lambda: "starting it again" in dial_log.read_text())
    _wait_through(relay_path)
    again = subprocess.run(
        ["pgrep", "-P", str(dial.pid), "wireguard-go"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(again) == 1
    assert again != children  # a new wireguard-go, and traffic flows through it
