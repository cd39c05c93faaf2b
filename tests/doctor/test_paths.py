"""The IPv6 check and the relay check over hand-made evidence (pure): every branch, its cause
and its fix."""

from __future__ import annotations

from natsync.doctor.evidence import (
    Connect,
    Ipv6Evidence,
    RelayEvidence,
    TlsEvidence,
    TunnelEvidence,
)
from natsync.doctor.findings import Check, Finding, Severity
from natsync.doctor.inside import check_nat
from natsync.doctor.ipv6 import check_ipv6
from natsync.doctor.relay import HANDSHAKE_STALE, check_relay, handshake_age

V4 = "198.51.100.7"
V6 = "2001:db8:77::2"
RELAY = "203.0.113.10"


def ok4() -> Connect:
    return Connect(V4, 443, True, "", 0.01)


def tls6(verified: bool = True) -> TlsEvidence:
    return TlsEvidence(
        V6,
        443,
        "eas.example.org",
        "the CA file ca.pem",
        verified=verified,
        verify_message="" if verified else "certificate has expired",
        protocol="TLSv1.3",
    )


def v6(**kw: object) -> list[Finding]:
    base: dict[str, object] = {"name": "eas.example.org", "port": 443, "a": (V4,), "aaaa": (V6,)}
    base.update(kw)
    return check_ipv6(Ipv6Evidence(**base))  # type: ignore[arg-type]


def verdict(findings: list[Finding]) -> Finding:
    return findings[-1]


def test_ipv6_closed_firewall_fails_with_the_pcp6_pinhole() -> None:
    found = v6(
        over4=(Connect(V4, 443, False, "timeout", 2.0),),
        over6=(Connect(V6, 443, False, "timeout", 2.0),),
    )
    port = next(f for f in found if f.title.startswith("Port 443"))
    assert port.severity == Severity.FAIL
    assert "router's IPv6 firewall" in port.title
    assert "`natsync portmap add 443/tcp --method pcp6 --config natsync.toml`" in port.fix
    last = verdict(found)
    assert last.severity == Severity.FAIL
    assert last.title.startswith("No phone can reach")
    assert last.data == {"reach": {"ipv4": False, "ipv6": False}}


def test_ipv6_only_reaches_ipv6_capable_networks() -> None:
    found = v6(
        over4=(Connect(V4, 443, False, "timeout", 2.0),),
        over6=(Connect(V6, 443, True, "", 0.01),),
        tls6=tls6(),
    )
    assert [f.severity for f in found[:3]] == [Severity.OK] * 3
    assert found[0].title == "eas.example.org has an AAAA record"
    assert found[2].title.startswith("TLS over IPv6 works")
    last = verdict(found)
    assert last.severity == Severity.WARN
    assert last.title == "Only phones on IPv6-capable networks can reach the server"
    assert "natsync relay init" in last.fix
    assert last.data["reach"] == {"ipv4": False, "ipv6": True}


def test_ipv6_both_families_is_every_phone() -> None:
    found = v6(over4=(ok4(),), over6=(Connect(V6, 443, True),), tls6=tls6())
    assert all(f.severity == Severity.OK for f in found)
    assert verdict(found).title.startswith("Phones on every network")


def test_ipv6_tls_failing_only_over_ipv6() -> None:
    found = v6(over4=(ok4(),), over6=(Connect(V6, 443, True),), tls6=tls6(verified=False))
    bad = next(f for f in found if f.title.startswith("TLS over IPv6 fails"))
    assert bad.severity == Severity.FAIL
    assert "expired" in bad.evidence[0]
    last = verdict(found)
    assert last.severity == Severity.WARN
    assert "AAAA record leads nowhere" in last.title


def test_ipv6_refused_means_nothing_listens_on_ipv6() -> None:
    found = v6(over4=(ok4(),), over6=(Connect(V6, 443, False, "refused"),))
    bad = next(f for f in found if f.severity == Severity.FAIL)
    assert bad.title == "Nothing listens on port 443 over IPv6"
    assert '[edge] listen = "*:443"' in bad.fix


def test_ipv6_no_route_here_is_not_tested() -> None:
    found = v6(over4=(ok4(),), over6=(Connect(V6, 443, False, "unreachable"),))
    assert found[1].severity == Severity.SKIP
    assert "no route" in found[1].cause
    last = verdict(found)
    assert last.severity == Severity.OK
    assert last.data["reach"] == {"ipv4": True, "ipv6": None}


def test_ipv6_inside_stale_and_missing_aaaa() -> None:
    stale = v6(host6=("2001:db8:99::2",), over4=(ok4(),))
    assert stale[0].severity == Severity.FAIL
    assert "not this host's current IPv6 address" in stale[0].title
    assert "`natsync ddns update --config natsync.toml`" in stale[0].fix
    missing = v6(aaaa=(), host6=(V6,), over4=(ok4(),))
    assert missing[0].severity == Severity.WARN
    assert "no AAAA record" in missing[0].title
    assert "families = [4, 6]" in missing[0].fix
    current = v6(host6=(V6,), over4=(ok4(),), over6=(Connect(V6, 443, True),), firewall="x")
    assert current[0].severity == Severity.OK
    assert "current" in current[0].title
    assert any("does not cross the router's IPv6 firewall" in e for e in current[1].evidence)
    assert verdict(current).data["reach"] == {"ipv4": True, "ipv6": None}


def test_ipv6_no_aaaa_outside_is_only_the_verdict() -> None:
    found = v6(aaaa=(), over4=(ok4(),))
    assert len(found) == 1
    assert found[0].severity == Severity.OK
    assert "NAT64" in found[0].title


# -- the relay path


def tunnel(**kw: object) -> TunnelEvidence:
    base: dict[str, object] = {
        "interface": "natsync0",
        "relay_endpoint": f"{RELAY}:51820",
        "relay_address": "10.77.0.1",
        "handshake_age": 12.0,
        "relay_answer": Connect("10.77.0.1", 443, True),
    }
    base.update(kw)
    return TunnelEvidence(**base)  # type: ignore[arg-type]


def relay(**kw: object) -> Finding:
    base: dict[str, object] = {
        "name": "eas.example.org",
        "relay_addresses": (RELAY,),
        "published": (RELAY,),
        "relay_port": Connect(RELAY, 443, True),
        "tunnel": tunnel(),
        "edge": Connect("10.77.0.2", 8443, True),
        "servers": (Connect("192.168.1.10:443", 0, True),),
    }
    base.update(kw)
    (finding,) = check_relay(RelayEvidence(**base))  # type: ignore[arg-type]
    assert finding.check == Check.RELAY
    return finding


def test_relay_path_whole() -> None:
    found = relay()
    assert found.severity == Severity.OK
    assert found.evidence[0] == ("DNS ok → relay ok → tunnel ok → home edge ok → server ok")
    assert found.data["broken"] == ""


def test_relay_each_broken_hop_is_named_first() -> None:
    cases = {
        "DNS": {"published": ("100.64.0.10",)},
        "relay": {"relay_port": Connect(RELAY, 443, False, "refused")},
        "tunnel": {"tunnel": tunnel(relay_answer=Connect("10.77.0.1", 443, False, "timeout"))},
        "home edge": {"edge": Connect("10.77.0.2", 8443, False, "refused")},
        "server": {"servers": (Connect("192.168.1.10:443", 0, False, "refused"),)},
    }
    for hop, change in cases.items():
        found = relay(**change)
        assert found.severity == Severity.FAIL, hop
        assert found.title == f"The relay path is broken at the {hop}"
        assert found.data["broken"] == hop
        assert found.cause
        assert found.fix
    # a later hop broken too: the first one is named
    both = relay(published=(), edge=Connect("10.77.0.2", 8443, False, "refused"))
    assert both.data["broken"] == "DNS"


def test_relay_tunnel_words() -> None:
    fresh = relay(tunnel=tunnel(relay_answer=Connect("10.77.0.1", 443, False, "timeout")))
    assert "dropped it just now" in fresh.cause
    assert f"UDP to {RELAY}:51820" in fresh.fix
    old = relay(
        tunnel=tunnel(
            handshake_age=HANDSHAKE_STALE + 60,
            relay_answer=Connect("10.77.0.1", 443, False, "timeout"),
        )
    )
    assert "no handshake for a while" in old.cause
    down = relay(tunnel=tunnel(wg_error="Unable to access interface: No such device"))
    assert "`natsync relay dial --config natsync.toml`" in down.fix
    refused = relay(tunnel=tunnel(relay_answer=Connect("10.77.0.1", 443, False, "refused")))
    assert refused.severity == Severity.OK  # a reset came back through the tunnel


def test_handshake_age_from_wg_show() -> None:
    assert handshake_age("key1=\t0\n", 1000.0) is None
    assert handshake_age("key1=\t940\nkey2=\t900\n", 1000.0) == 60.0
    assert handshake_age("", 1000.0) is None


def test_cgnat_with_a_tunnel_is_not_a_failure() -> None:
    from natsync.doctor.evidence import NatEvidence

    (plain,) = check_nat(NatEvidence("cgnat", "x"))
    (relayed,) = check_nat(NatEvidence("cgnat", "x"), relayed=True)
    assert plain.severity == Severity.FAIL
    assert relayed.severity == Severity.OK
    assert "relay" in relayed.title


def test_relay_from_outside_tells_the_relay_from_what_is_behind_it() -> None:
    outside: dict[str, object] = {"tunnel": None, "edge": None, "servers": ()}
    whole = relay(**outside, through="")
    assert whole.severity == Severity.OK
    assert whole.data["hops"] == {
        "DNS": True, "relay": True, "tunnel": True, "home edge": True, "server": None,
    }  # fmt: skip
    cut = relay(**outside, through="no TLS handshake within 2 s")
    assert cut.title == "The relay path is broken at the tunnel or home edge"
    assert "`natsync doctor --config natsync.toml`" in cut.fix
    assert cut.data["hops"]["tunnel"] is False
    down = relay(**outside, relay_port=Connect(RELAY, 443, False, "timeout"), through=None)
    assert down.data["broken"] == "relay"


def test_relay_dns_fix_follows_what_ddns_publishes() -> None:
    home = relay(published=("100.64.0.10",), ddns_relay=False)
    assert home.data["broken"] == "DNS"
    assert "[ddns] publishes the home's own address (its sources have no relay)" in home.evidence
    assert 'sources = ["relay"]' in home.fix
    follows = relay(published=("100.64.0.10",), ddns_relay=True)
    assert "[ddns] publishes the relay's address (source relay)" in follows.evidence
    assert "natsync ddns update" in follows.fix
    none = relay(published=("100.64.0.10",))
    assert "static record" in none.fix
    assert relay(ddns_relay=True).severity == Severity.OK
