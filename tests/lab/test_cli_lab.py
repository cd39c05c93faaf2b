"""`natsync lab up | status | down` as a user runs them, and what `down` must leave behind:
no namespace, no veth, no process of the run — also after the run's owner crashed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natsync.lab import topology as t
from natsync.lab.runner import NATSYNC, NETNS_ETC, RunState, lab_namespaces, namespace_pids
from tests.lab.conftest import require_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


def natsync(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NATSYNC, "lab", *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def assert_gone(tag: str, pids: list[int]) -> None:
    assert tag not in lab_namespaces()
    names = t.Names(tag)
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert f"nslab-{tag}-" not in listing
    for ifname in (names.lan_if, names.wan_if, names.phone_if, names.inet_if):
        assert ifname not in host_links()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} of the run is still alive"
    assert not any((NETNS_ETC / ns).exists() for ns in names.namespaces)
    assert RunState.load(tag) is None


def test_up_status_down_leaves_nothing_behind() -> None:
    require_lab()
    tag = f"u{os.getpid() % 10000}"
    done = natsync("up", "--tag", tag, "--json")
    try:
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert info["tag"] == tag
        assert sorted(info["namespaces"]) == sorted(t.Names(tag).namespaces)
        # the run is really up: the phone's DNS cache answers from the zone's BIND
        dig = subprocess.run(
            ["ip", "netns", "exec", t.Names(tag).ns(t.Role.PHONE), "dig", "+short",
             "@127.0.0.1", "eas.example.test"],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        assert dig.stdout.split() == [t.PUBLIC]
        status = natsync("status", "--json")
        assert status.returncode == 0, status.stderr
        (run,) = [r for r in json.loads(status.stdout) if r["tag"] == tag]
        assert run["owner_pid"] == 0
        assert run["wan_address"] == t.PUBLIC
        counts = run["namespaces"]
        assert counts[t.Names(tag).ns(t.Role.LAN)] >= 1  # natsync server
        assert counts[t.Names(tag).ns(t.Role.INET)] >= 3  # BIND, STUN, pebble
        pids = [p for ns in t.Names(tag).namespaces for p in namespace_pids(ns)]
        inet = t.Names(tag).ns(t.Role.INET)
        programs = {Path(f"/proc/{p}/comm").read_text().strip() for p in namespace_pids(inet)}
        assert {"named", "turnserver", "pebble"} <= programs, programs
        assert len(pids) >= 5
    finally:
        down = natsync("down", tag)
    assert down.returncode == 0, down.stderr
    assert f"lab {tag}: removed" in down.stdout
    assert_gone(tag, pids)
    again = natsync("down", tag)
    assert again.returncode == 0
    assert "nothing (already gone)" in again.stdout


def test_down_after_the_owner_crashed(tmp_path: Path) -> None:
    """A process that built a run and was killed (no close, no cleanup) leaves namespaces and
    processes; `natsync lab down TAG` still finds and removes all of them."""
    require_lab()
    tag = f"c{os.getpid() % 10000}"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from natsync.lab.runner import Lab\n"
        f"lab = Lab(Path(sys.argv[1]), tag='{tag}')\n"
        "lab.build()\n"
        "lab.spawn(lab.phone, 'sleep', '600', log='sleep.log')\n"
        "print('built', flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline().strip() == "built"
            pids = [p for ns in t.Names(tag).namespaces for p in namespace_pids(ns)]
            assert len(pids) >= 2  # miniupnpd and the sleeper
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=10)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{owner.pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert tag in lab_namespaces()  # the crash left it all behind
        finally:
            down = natsync("down", tag)
    assert down.returncode == 0, down.stderr
    assert_gone(tag, pids)


def test_scenario_name_is_checked() -> None:
    require_lab()
    done = natsync("scenario", "no-such-thing")
    assert done.returncode == 2
    assert "choose from: all, port-forward" in done.stderr
