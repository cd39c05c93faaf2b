"""`natsync run`'s portmap part on a real home router with IPv6: the lab's router namespace
(nftables, Debian's miniupnpd with UPnP IGD:2 pinholes and PCP), natsync run on the LAN host.

One run holds both ways in: the IPv4 port mapping (UPnP) for 443 and 18447, and IPv6 pinholes
for the same ports (ipv6 = "auto": miniupnpd refuses UPnP pinholes below 1024, so 443 goes by
PCP over IPv6, 18447 by UPnP). The server listens on "::" (dual stack), so the internet reaches
it over IPv4 through the mapping and over IPv6 through the pinhole; /healthz shows both
families; the doctor (inside-out) reads the pinholes' state from the record and the router.
The router reboots (its rules and pinhole handles gone): the doctor says the pinhole is gone,
the part makes it again at its next renewal. SIGTERM removes both families; a run killed with
SIGKILL leaves the record, and the doctor says the pinhole expired."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from natsync.lab.runner import NATSYNC, Lab
from natsync.lab.topology import LAN6_HOST
from tests.lab.conftest import require_lab

HTTPS, OTHER = 443, 18447
#: Seconds the router grants (the IPv4 lease and the UPnP pinhole): short, so the part renews
#: every few seconds and an abandoned pinhole expires within the test.
LIFETIME = 10
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Home:
    lab: Lab
    dir: Path
    config: Path
    admin: int


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    require_lab()
    directory = tmp_path_factory.mktemp("portmap-run")
    lab = Lab(directory / "lab", tag="v6" + secrets.token_hex(2), privileged_mappings=True)
    try:
        lab.build()
        # The second published port is a plain listener of both families on the LAN host.
        lab.spawn(
            lab.lan, sys.executable, "-c",
            "import socket\n"
            f"s=socket.create_server(('::',{OTHER}),family=socket.AF_INET6,dualstack_ipv6=True)\n"
            "while True:\n c,_=s.accept(); c.sendall(b'lan-host'); c.close()\n",
            log="other.log",
        )  # fmt: skip
        admin = 18099
        config = directory / "natsync.toml"
        config.write_text(
            f"""[server]
host = "::"
port = {HTTPS}
data_dir = "{directory / "data"}"

[portmap]
method = "upnp"
ipv6 = "auto"
lifetime = {LIFETIME}
mappings = ["{HTTPS}/tcp", "{OTHER}/tcp"]

[admin]
listen = "127.0.0.1:{admin}"

[run]
self_check = false
"""
        )
        yield Home(lab, directory, config, admin)
    finally:
        lab.close()


def _start(home: Home) -> subprocess.Popen[str]:
    log = (home.dir / "run.log").open("a")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", home.lab.lan, *NATSYNC, "run", "-c", str(home.config), "--json"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=home.lab.env(),
    )  # fmt: skip
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the JSON line once every part serves (EOF: it failed)
    assert line, (home.dir / "run.log").read_text()[-3000:]
    return proc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(STOP_TIMEOUT)
    assert proc.stdout is not None
    proc.stdout.close()


def _dial(lab: Lab, address: str, port: int) -> str:
    """From the internet: the first line the LAN host answers, or why nothing did."""
    code = (
        "import socket\n"
        "try:\n"
        f"    c=socket.create_connection(({address!r},{port}),timeout=1.5)\n"
        "    c.sendall(b'OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    print(c.recv(100).split(b'\\r\\n')[0].decode())\n"
        "except OSError as e:\n"
        "    print('unreachable', type(e).__name__)\n"
    )
    return home_run(lab, lab.inet, sys.executable, "-c", code).strip()


def home_run(lab: Lab, ns: str, *argv: str) -> str:
    return lab.run_in(ns, *argv).stdout


def _health(home: Home) -> dict[str, Any]:
    code = (
        "import json,urllib.request,urllib.error\n"
        "try:\n"
        f"    r=urllib.request.urlopen('http://127.0.0.1:{home.admin}/healthz',timeout=5)\n"
        "except urllib.error.HTTPError as e:\n"
        "    r=e\n"
        "print(r.read().decode())\n"
    )
    doc: dict[str, Any] = json.loads(home_run(home.lab, home.lab.lan, sys.executable, "-c", code))
    return doc


def _pinhole_findings(home: Home) -> dict[str, tuple[str, str]]:
    """`natsync doctor --config` (inside-out) on the LAN host: its IPv6 pinhole findings."""
    done = home.lab.natsync(
        "doctor", f"http://[{LAN6_HOST}]:{HTTPS}", "--config", str(home.config),
        "--heartbeat", "0", "--timeout", "2", "--json",
    )  # fmt: skip
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    return {
        f["title"].split()[3]: (f["severity"], f["title"])
        for f in report["findings"]
        if f["title"].startswith("IPv6 pinhole for ")
    }


def _wait_for(probe: Any, expected: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def test_one_run_holds_the_ipv4_mapping_and_the_ipv6_pinholes(home: Home) -> None:
    lab, wan = home.lab, home.lab.wan_address
    before = [_dial(lab, wan, HTTPS), _dial(lab, LAN6_HOST, HTTPS), _dial(lab, LAN6_HOST, OTHER)]
    assert all(seen.startswith("unreachable") for seen in before), before
    run = _start(home)
    try:
        # IPv4 through the UPnP mapping and IPv6 through the pinholes, to the dual-stack server
        assert _dial(lab, wan, HTTPS) == "HTTP/1.1 401 Unauthorized"
        assert _dial(lab, LAN6_HOST, HTTPS) == "HTTP/1.1 401 Unauthorized"
        assert _dial(lab, wan, OTHER) == "lan-host"
        assert _dial(lab, LAN6_HOST, OTHER) == "lan-host"

        health = _health(home)
        assert health["status"] == "ok", health
        held = {(m["family"], m["mapping"]): m for m in health["portmap"]["mappings"]}
        assert {k: (m["state"], m["method"]) for k, m in held.items()} == {
            (4, "443->443/tcp"): ("open", "upnp"),
            (4, "18447->18447/tcp"): ("open", "upnp"),
            (6, "443->443/tcp"): ("open", "pcp6"),  # UPnP refuses pinholes below 1024
            (6, "18447->18447/tcp"): ("open", "upnp6"),
        }
        assert held[(6, "18447->18447/tcp")]["address"] == LAN6_HOST
        shown = lab.natsync("portmap", "status", "--config", str(home.config)).stdout
        assert f"IPv6 18447->18447/tcp via upnp6 [{LAN6_HOST}]: open, expires in" in shown
        assert "IPv4 443->443/tcp via upnp: open, expires in" in shown
        assert isinstance(held[(6, "18447->18447/tcp")]["unique_id"], int)

        assert _pinhole_findings(home) == {
            m: ("ok", f"IPv6 pinhole for {m} is open in the router's IPv6 firewall")
            for m in ("443->443/tcp", "18447->18447/tcp")
        }

        # The router reboots: its rules and pinhole handles are gone, UPnP on another port.
        # The part is paused meanwhile (its next renewal would come within seconds).
        part = health["parts"]["portmap"]["pid"]
        os.kill(part, signal.SIGSTOP)
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
            lab.ns(lab.router, "nft", "flush", "chain", "inet", "miniupnpd", chain)
        (lab.dir / "upnp.leases").write_text("")
        lab.restart_miniupnpd()
        assert _dial(lab, wan, HTTPS).startswith("unreachable")
        assert _dial(lab, LAN6_HOST, OTHER).startswith("unreachable")
        severity, title = _pinhole_findings(home)["18447->18447/tcp"]
        assert (severity, title) == (
            "fail",
            "IPv6 pinhole for 18447->18447/tcp missing: the router no longer has it",
        )
        # ... and the part makes it again at its next renewal (every LIFETIME / 2 s).
        os.kill(part, signal.SIGCONT)
        assert _wait_for(lambda: _dial(lab, LAN6_HOST, OTHER), "lan-host", 3 * LIFETIME) == (
            "lan-host"
        )
        assert _wait_for(lambda: _dial(lab, wan, HTTPS), "HTTP/1.1 401 Unauthorized", LIFETIME) == (
            "HTTP/1.1 401 Unauthorized"
        )
        assert _pinhole_findings(home)["18447->18447/tcp"][0] == "ok"
        renewed = {
            (m["family"], m["mapping"]): m["method"] for m in _health(home)["portmap"]["mappings"]
        }
        assert renewed[(6, "18447->18447/tcp")] == "upnp6"  # found again at its new port
    finally:
        _stop(run)
    # Stopped: both families removed from the router, and the doctor says so.
    after = [_dial(lab, wan, HTTPS), _dial(lab, LAN6_HOST, HTTPS), _dial(lab, LAN6_HOST, OTHER)]
    assert all(seen.startswith("unreachable") for seen in after), after
    listed = lab.natsync("portmap", "list", "--config", str(home.config))
    assert "the router has no port mappings" in listed.stdout, listed.stdout + listed.stderr
    assert _pinhole_findings(home) == {
        m: ("fail", f"IPv6 pinhole for {m} missing: removed when natsync run stopped")
        for m in ("443->443/tcp", "18447->18447/tcp")
    }


def test_a_killed_run_leaves_pinholes_the_doctor_finds_expired(home: Home) -> None:
    run = _start(home)
    assert _dial(home.lab, LAN6_HOST, OTHER) == "lan-host"
    _stop(run, signal.SIGKILL)  # no removal: its parts die with it (PR_SET_PDEATHSIG)
    status = json.loads((home.dir / "data" / "portmap" / "status.json").read_text())
    upnp6 = next(m for m in status["mappings"] if m["method"] == "upnp6")
    time.sleep(max(0.0, upnp6["expires_at"] - time.time()) + 2)
    assert _dial(home.lab, LAN6_HOST, OTHER).startswith("unreachable")  # the router expired it
    severity, title = _pinhole_findings(home)["18447->18447/tcp"]
    assert (severity, title) == (
        "fail",
        "IPv6 pinhole for 18447->18447/tcp expired: nothing renews it",
    )
