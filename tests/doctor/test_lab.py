"""Inside-out checks against a real router: the namespace lab of tests/ddns (LAN host — router
with nftables NAT and miniupnpd — "internet"). The doctor runs in the LAN namespace with the
deployment's config, as a user on the server's side would:

* the router's port mappings: 443 and 25 asked for in [portmap] but absent from miniupnpd's
  table, then mapped with `natsync portmap add` (UPnP IGD);
* hairpin NAT: miniupnpd's DNAT applies to packets arriving from the WAN only, so from the LAN
  the router's public address refuses the mapped port; a hairpin rule (DNAT from the LAN side
  plus masquerade back into it) makes it answer.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ddns.lab import LAN_HOST, PUBLIC
from tests.ddns.servers import stop
from tests.ddns.test_lab import World, lan_server, world

pytestmark = [pytest.mark.root, pytest.mark.slow]

__all__ = ["lan_server", "world"]  # the lab's fixtures, used here by name

#: The mappings the deployment asks for: HTTPS to the LAN test server, SMTP as is.
WANTED = ("443:8080/tcp", "25/tcp")
#: Seconds per doctor step: everything is on veths one hop away.
STEP_TIMEOUT = "2"
#: Marks the hairpin rule added to the router's forward chain, to remove it by handle.
HAIRPIN = "doctor-hairpin"
#: Seconds miniupnpd may take to listen again after a restart.
MINIUPNPD_START = 10.0


def _privileged_miniupnpd(lab: Any) -> None:
    """Restart the lab's miniupnpd allowing external ports below 1024 for the LAN (the lab's
    own config allows 1024-65535 only, its tests rely on that): 443 and 25 are what a real
    deployment maps."""
    assert lab.miniupnpd is not None
    stop(lab.miniupnpd)
    lab.procs.remove(lab.miniupnpd)
    conf = lab.dir / "miniupnpd.conf"
    text = conf.read_text()
    conf = lab.dir / "miniupnpd-doctor.conf"
    conf.write_text(
        text.replace(
            "allow 1024-65535 192.168.77.0/24 1024-65535", "allow 1-65535 192.168.77.0/24 1-65535"
        )
    )
    log = "miniupnpd-doctor.log"
    lab.miniupnpd = lab.spawn(
        lab.router, "miniupnpd", "-f", str(conf), "-d", "-P", str(lab.dir / "mu.pid"), log=log
    )
    deadline = time.monotonic() + MINIUPNPD_START
    while b"Listening for NAT-PMP" not in (lab.dir / log).read_bytes():
        assert lab.miniupnpd.poll() is None, (lab.dir / log).read_text()[-2000:]
        assert time.monotonic() < deadline, "miniupnpd did not start again"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def deployment(world: World) -> Path:
    """The lab's natsync.toml plus the [portmap] mappings a deployment asks for."""
    _privileged_miniupnpd(world.lab)
    mappings = ", ".join(f'"{m}"' for m in WANTED)
    text = world.config.read_text().replace("[portmap]\n", f"[portmap]\nmappings = [{mappings}]\n")
    config = world.config.parent / "deployment.toml"
    config.write_text(text)
    return config


def doctor(world: World, config: Path) -> tuple[int, dict[str, Any]]:
    """`natsync doctor https://<public address> --config ...` run on the LAN host."""
    done = world.lab.natsync(
        "doctor",
        f"https://{PUBLIC}",
        "--config",
        str(config),
        "--heartbeat",
        "0",
        "--timeout",
        STEP_TIMEOUT,
        "--json",
    )
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def finding(report: dict[str, Any], check: str, title_start: str) -> dict[str, Any]:
    for f in report["findings"]:
        if f["check"] == check and f["title"].startswith(title_start):
            return f  # type: ignore[no-any-return]
    raise AssertionError(f"no {check} finding '{title_start}...' in {report['findings']}")


def portmap(world: World, config: Path, *args: str, check: bool = True) -> None:
    done = world.lab.natsync("portmap", *args, "--config", str(config))
    assert done.returncode == 0 or not check, done.stdout + done.stderr


def run_as_printed(world: World, command: str) -> None:
    """A command the doctor printed, run verbatim on the LAN host."""
    args = shlex.split(command)
    assert args[0] == "natsync"
    done = world.lab.natsync(*args[1:])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def unmapped(world: World, deployment: Path) -> Iterator[Path]:
    """The deployment with no mapping on the router before and after the test."""
    for spec in WANTED:
        portmap(world, deployment, "remove", spec, check=False)
    yield deployment
    for spec in WANTED:
        portmap(world, deployment, "remove", spec, check=False)


def test_missing_router_mappings_then_mapped(world: World, unmapped: Path, lan_server: int) -> None:
    deployment = unmapped
    code, report = doctor(world, deployment)
    assert code == 2
    nat = finding(report, "inside", f"Public address {PUBLIC}")
    assert nat["severity"] == "ok"
    missing = finding(report, "inside", "Router port mapping missing")
    assert missing["severity"] == "fail"
    assert missing["title"] == "Router port mapping missing: 443->8080/tcp, 25->25/tcp"
    assert "wanted: 443->8080/tcp" in missing["evidence"]
    assert "connections from phones end at the router" in missing["cause"]
    command = f"natsync portmap add 443:8080/tcp --config {deployment}"
    assert f"`{command}`" in missing["fix"]  # the user's file, not natsync.toml

    run_as_printed(world, command)
    code, report = doctor(world, deployment)
    missing = finding(report, "inside", "Router port mapping missing")
    assert missing["title"] == "Router port mapping missing: 25->25/tcp"
    command = f"natsync portmap add 25/tcp --config {deployment}"
    assert f"`{command}`" in missing["fix"]
    assert f"router has: 443->{LAN_HOST}:8080/tcp" in missing["evidence"]

    run_as_printed(world, command)
    code, report = doctor(world, deployment)
    mapped = finding(report, "inside", "The router forwards the configured ports")
    assert mapped["severity"] == "ok"
    assert f"router has: 25->{LAN_HOST}:25/tcp" in mapped["evidence"]
    # and the mapping is real: the internet reaches the LAN server through the public address
    assert world.inet_connect(443, "hello") == "lan says hello"


def hairpin_rules(world: World) -> str:
    """The hairpin rule many routers lack: the public address's forward applied to packets from
    the LAN too, and the source rewritten to the router so that answers come back through it
    (not straight from server to client, which would drop them as strangers). Accepted in the
    router's own forward chain: its policy drops LAN-to-LAN forwarding otherwise."""
    lab = world.lab
    return f"""
table ip doctor_hairpin {{
  chain prerouting {{
    type nat hook prerouting priority -101; policy accept;
    iifname "{lab.router_lan_if}" ip daddr {PUBLIC} tcp dport 443 dnat to {LAN_HOST}:8080
  }}
  chain postrouting {{
    type nat hook postrouting priority 99; policy accept;
    iifname "{lab.router_lan_if}" oifname "{lab.router_lan_if}" ip daddr {LAN_HOST} masquerade
  }}
}}
table inet miniupnpd {{
  chain forward {{
    iifname "{lab.router_lan_if}" oifname "{lab.router_lan_if}" accept comment "{HAIRPIN}"
  }}
}}
"""


def remove_hairpin(world: World) -> None:
    lab = world.lab
    lab.ns(lab.router, "nft", "delete", "table", "ip", "doctor_hairpin", check=False)
    chain = lab.ns(lab.router, "nft", "-a", "list", "chain", "inet", "miniupnpd", "forward")
    for line in chain.stdout.splitlines():
        if HAIRPIN in line and "# handle " in line:
            handle = line.rsplit("# handle ", 1)[1].strip()
            lab.ns(
                lab.router,
                "nft",
                "delete",
                "rule",
                "inet",
                "miniupnpd",
                "forward",
                "handle",
                handle,
            )


def test_hairpin_nat_seen_from_the_lan_then_fixed(
    world: World, unmapped: Path, lan_server: int
) -> None:
    deployment = unmapped
    portmap(world, deployment, "add", "443:8080/tcp")
    assert world.inet_connect(443, "hello") == "lan says hello"  # outside: the forward works
    code, report = doctor(world, deployment)
    assert code == 2
    reach = finding(report, "reach", "HTTPS port 443")
    assert reach["severity"] == "fail"
    assert reach["title"] == "HTTPS port 443 is unreachable"
    assert any(e.startswith(f"{PUBLIC} port 443: refused") for e in reach["evidence"])
    assert "hairpin NAT" in reach["cause"]
    assert "phones outside connect fine" in reach["cause"]
    assert "split-horizon DNS" in reach["fix"]
    assert "hairpin / NAT loopback" in reach["fix"]

    rules = world.lab.dir / "hairpin.nft"
    rules.write_text(hairpin_rules(world))
    world.lab.ns(world.lab.router, "nft", "-f", str(rules))
    try:
        code, report = doctor(world, deployment)
        reach = finding(report, "reach", "HTTPS port 443")
        assert reach["severity"] == "ok", reach
        assert reach["title"] == "HTTPS port 443 accepts connections"
        # past reach now: the LAN test server speaks no TLS, which the doctor says next
        assert finding(report, "tls", "")["severity"] == "fail"
    finally:
        remove_hairpin(world)
