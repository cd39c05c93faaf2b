"""The article's scenarios end to end, on one lab run shared by the module and reset between
scenarios. Each shows the failure, then the fix working; what the doctor says is asserted on
its real `--json` report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.runner import Lab
from natsync.lab.scenarios import registry
from natsync.lab.world import MX_NAME, PUBLIC_NAME, World, finding
from tests.lab.conftest import require_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab()
    lab = Lab(tmp_path_factory.mktemp("lab"))
    world = World(lab)
    try:
        lab.build()
        world.start()
        yield world
    finally:
        lab.close()


@pytest.fixture
def play(world: World) -> Iterator[Any]:
    def run(name: str) -> Narration:
        narr = Narration(name)
        registry()[name][1](world, narr)
        failed = [s for s in narr.steps if not s.passed]
        assert not failed, "\n".join(f"{s.title}: {s.detail}" for s in failed)
        return narr

    yield run
    world.reset()


def get(report: dict[str, Any], check: str, title: str = "") -> dict[str, Any]:
    found = finding(report, check, title)
    assert found is not None, f"no {check} finding {title!r}: {report['findings']}"
    return found


def test_port_forward(play: Any) -> None:
    narr = play("port-forward")
    titles = [s.title for s in narr.steps]
    assert [s.expect_ok for s in narr.steps] == [False, False, True, True, True]
    assert "refused" in narr.steps[0].detail.lower()
    assert narr.steps[2].detail == "accepted"
    assert "through the router" in titles[3]
    closed = get(narr.reports["no-forward"], "reach", "HTTPS port 443")
    assert closed["severity"] == "fail"
    assert closed["title"] == "HTTPS port 443 is unreachable"
    assert any(e.startswith(f"{t.PUBLIC} port 443: refused") for e in closed["evidence"])
    assert narr.reports["no-forward"]["exit_status"] == 2
    opened = get(narr.reports["forwarded"], "reach", "HTTPS port 443")
    assert opened["severity"] == "ok"
    assert get(narr.reports["forwarded"], "session")["severity"] == "ok"


def test_certificate_mismatch(play: Any) -> None:
    narr = play("certificate-mismatch")
    assert "Hostname mismatch" in narr.steps[0].detail
    tls = get(narr.reports["mismatch"], "tls")
    assert tls["severity"] == "fail"
    assert tls["title"] == f"The certificate does not cover {PUBLIC_NAME}"
    assert "names what the server is (exchange.corp.lan, 192.168.77.2)" in tls["cause"]
    assert f"not what the phone connects to ({PUBLIC_NAME})" in tls["cause"]
    # fix (a): the hosts entry answered (there was no DNS cache to ask)
    assert "from the hosts file" in narr.steps[2].detail
    # fix (b): the edge pinned the server's certificate, and the phone sees the public name's
    assert narr.steps[3].detail.startswith("pinned sha256:")
    edge_tls = get(narr.reports["edge"], "tls")
    assert edge_tls["severity"] == "ok"
    assert edge_tls["title"] == f"The certificate at {t.PUBLIC} port 443 is valid for {PUBLIC_NAME}"
    assert get(narr.reports["edge"], "session")["severity"] == "ok"
    # fix (c): pebble validated http-01 for real: refused at the router without the port 80
    # forward, through it with the forward; the phone trusts only pebble's root
    assert [s.expect_ok for s in narr.steps[5:]] == [False, True, True, True]
    assert f"dial tcp {t.PUBLIC}:80: connect: connection refused" in narr.steps[5].detail
    issued = narr.reports["acme"]
    assert issued["status"] == "issued"
    assert issued["challenges_answered"] == 1  # a fresh lab: no authorization to reuse
    (leaf, *chain) = x509.load_pem_x509_certificates(Path(issued["cert"]).read_bytes())
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == [PUBLIC_NAME]
    assert leaf.issuer.rfc4514_string().startswith("CN=Pebble Intermediate CA")
    assert chain, "the server sends pebble's intermediate with the leaf"
    assert "from the hosts file" not in narr.steps[7].detail
    acme_tls = get(narr.reports["acme-doctor"], "tls")
    assert acme_tls["severity"] == "ok"
    assert acme_tls["title"] == f"The certificate at {t.PUBLIC} port 443 is valid for {PUBLIC_NAME}"
    assert get(narr.reports["acme-doctor"], "session")["severity"] == "ok"


def test_dynamic_address(play: Any) -> None:
    narr = play("dynamic-address")
    stale = get(narr.reports["stale-record"], "names", "DNS does not point at the current")
    assert stale["severity"] == "fail"
    assert f"public address now: {t.PUBLIC_NEXT}" in stale["evidence"]
    assert narr.reports["ttl-recovery"]["seconds"] < 3 + 6
    sticky = get(narr.reports["sticky-cache"], "names", "Stale DNS")
    assert sticky["severity"] == "fail"
    assert sticky["title"] == f"Stale DNS: the phone's resolver still hands out {t.PUBLIC_NEXT}"
    assert "DNS caches sit behind a changed address" in sticky["cause"]


def test_direct_push_timeout(play: Any) -> None:
    narr = play("direct-push-timeout")
    cut = get(narr.reports["cut"], "push")
    assert cut["severity"] == "fail"
    assert cut["title"].startswith("Something on the path cuts a waiting Ping: idle connections")
    assert "NAT idle timeouts cut Direct Push" in cut["cause"]
    measured = cut["data"]["idle_cut"]
    assert measured["method"] == "probes"
    assert measured["survived"] - 0.2 <= 8 <= measured["cut"] + 0.2  # the router's 8 s
    assert measured["cut"] - measured["survived"] <= measured["precision"] == 0.5
    advised = cut["data"]["advice"]["server.max_idle_path_seconds"]
    assert 0 < advised <= 8
    assert f"`max_idle_path_seconds = {advised}`" in cut["fix"]
    assert "heartbeat_max" not in cut["fix"]
    capped = get(narr.reports["capped"], "push")
    assert capped["severity"] == "ok"
    assert capped["title"] == f"A waiting Ping survived its whole heartbeat ({advised - 5} s)"
    assert narr.reports["push-capped"]["push"]["heartbeat"] == advised - 5
    assert narr.reports["push-capped"]["push"]["changed"]


def test_hairpin(play: Any) -> None:
    narr = play("hairpin")
    reach = get(narr.reports["hairpin"], "reach", "HTTPS port 443")
    assert reach["severity"] == "fail"
    assert "hairpin NAT" in reach["cause"]
    assert get(narr.reports["hairpin-rule"], "reach", "HTTPS port 443")["severity"] == "ok"
    assert get(narr.reports["split-horizon"], "reach", "HTTPS port 443")["severity"] == "ok"


def test_carrier_grade_nat(play: Any) -> None:
    narr = play("carrier-grade-nat")
    assert narr.reports["ddns-cgnat"]["verdict"] == "cgnat"
    assert narr.reports["ddns-cgnat"]["port_forwarding_possible"] is False
    inside = get(narr.reports["doctor-cgnat"], "inside", "Carrier-grade")
    assert inside["severity"] == "fail"
    assert inside["title"] == "Carrier-grade NAT: phones cannot reach this network"
    # the relay fix: DNS follows the relay ([ddns] source relay, from the [tunnel] table) ...
    assert narr.reports["ddns-relay"] == {PUBLIC_NAME: [t.VPS], MX_NAME: [t.VPS]}
    # ... the phone dialled the VPS, synced, and got the second phone's mail by push
    assert narr.reports["relay-sync"]["address"] == t.VPS
    assert narr.reports["relay-sync"]["ok"] is True
    assert narr.reports["relay-push"]["push"]["changed"] is True
    assert narr.reports["relay-push"]["mail"]["sent"] == "through the relay"
    # mail from the internet: MX on the VPS, through the relay's port 25 and the tunnel
    mail = narr.reports["relay-mail"]["mail"]
    assert mail["address"] == t.VPS
    assert mail["ok"] is True
    assert narr.reports["relay-mail"]["push"]["changed"] is True
    # the doctor follows the relay path, and names the tunnel when it is cut
    whole = get(narr.reports["doctor-relay"], "relay")
    assert whole["severity"] == "ok"
    assert whole["evidence"][0] == "DNS ok → relay ok → tunnel ok → home edge ok → server ok"
    assert get(narr.reports["doctor-relay"], "inside", "Carrier-grade")["severity"] == "ok"
    cut = get(narr.reports["doctor-relay-cut"], "relay")
    assert cut["severity"] == "fail"
    assert cut["title"] == "The relay path is broken at the tunnel"
    assert cut["data"]["hops"] == {
        "DNS": True, "relay": True, "tunnel": False, "home edge": True, "server": True,
    }  # fmt: skip
    assert "UDP to" in cut["fix"]
    # from the phone, with --relay: the relay answers, what is behind it does not
    assert get(narr.reports["doctor-relay-outside"], "relay")["severity"] == "ok"
    beyond = get(narr.reports["doctor-relay-outside-cut"], "relay")
    assert beyond["title"] == "The relay path is broken at the tunnel or home edge"
    # the IPv6 fix: the phone dialled the LAN host's own IPv6 address through the pinhole
    assert narr.reports["ipv6-sync"]["address"] == t.LAN6_HOST
    # the doctor's IPv6 path: closed before the pinhole (with the pcp6 fix), open after
    closed = get(narr.reports["doctor-ipv6-closed"], "ipv6", "Port 443")
    assert closed["severity"] == "fail"
    assert "natsync portmap add 443/tcp --method pcp6" in closed["fix"]
    assert get(narr.reports["doctor-ipv6-closed"], "ipv6", "No phone")["severity"] == "fail"
    opened = narr.reports["doctor-ipv6-open"]
    assert get(opened, "ipv6", "Port 443 accepts")["severity"] == "ok"
    assert get(opened, "ipv6", "TLS over IPv6 works")["severity"] == "ok"
    verdict = get(opened, "ipv6", "Only phones on IPv6-capable networks")
    assert verdict["data"]["reach"] == {"ipv4": False, "ipv6": True}
    inside = narr.reports["doctor-ipv6-inside"]
    current = get(inside, "ipv6", "The AAAA record")
    assert (
        current["title"]
        == f"The AAAA record of {PUBLIC_NAME} names this host's current IPv6 address"
    )
    here = get(inside, "ipv6", "Port 443 answers over IPv6 here")
    assert any("does not cross the router's IPv6 firewall" in e for e in here["evidence"])
    assert any(
        e.startswith("the router's IPv6 firewall (UPnP): firewall on") for e in here["evidence"]
    )
    assert narr.reports["ipv6-push"]["push"]["changed"] is True


def test_from_scratch(play: Any) -> None:
    narr = play("from-scratch")
    assert all(step.expect_ok for step in narr.steps)  # every step is a thing that must work
    titles = " ".join(step.title for step in narr.steps)
    for part in ("detects the router", "pebble issues", "by push", "record follows",
                 "self-check runs again", "syncs again", "not cut"):  # fmt: skip
        assert part in titles


def test_dns_provider(play: Any) -> None:
    """The issue's lab proof for DNS providers and certificates: from scratch, dyndns2 keeps
    the record in BIND, port 80 is blocked at the router, the certificate comes by DNS-01,
    the phone syncs."""
    narr = play("dns-provider")
    assert all(s.expect_ok for s in narr.steps)
    assert len(narr.steps) == 7
    assert "good" in narr.steps[2].detail
    assert "with dns-01" in narr.steps[3].detail
    assert narr.reports["dns-provider-sync"]["ok"] is True
    assert narr.reports["dns-provider-sync"]["address"] == t.PUBLIC_NEXT
