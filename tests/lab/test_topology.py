"""The lab's plan, checked without root: what would be built, and that nothing of it touches
the host's own network."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.lab import topology as t


def _topo(**kw: object) -> t.Topology:
    return t.Topology(t.Names("ab12"), Path("/tmp/lab"), **kw)  # type: ignore[arg-type]


def test_names_carry_the_tag_and_fit_linux_interface_names() -> None:
    names = t.Names("zz99")
    assert names.namespaces == (
        "nslab-zz99-lan",
        "nslab-zz99-router",
        "nslab-zz99-inet",
        "nslab-zz99-phone",
        "nslab-zz99-vps",
    )
    interfaces = (
        names.lan_if,
        names.router_lan_if,
        names.wan_if,
        names.inet_if,
        names.inet_phone_if,
        names.phone_if,
        names.inet_vps_if,
        names.vps_if,
    )
    assert len(set(interfaces)) == 8
    assert all(len(i) <= t.IFNAME_MAX and "zz99" in i for i in interfaces)
    assert t.tag_of("nslab-zz99-router") == "zz99"
    assert t.tag_of("nslab-zz99-other") is None
    assert t.tag_of("ns-dd-1-lan") is None


@pytest.mark.parametrize("bad", ["", "a", "ABCD", "abc-d", "abcdefg", "ab cd"])
def test_a_tag_that_cannot_be_a_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="lab tag"):
        t.Names(bad)


def test_every_command_stays_inside_the_runs_namespaces() -> None:
    topo = _topo()
    ours = set(topo.names.namespaces)
    for command in t.plan_up(topo):
        assert command[0] == "ip"
        if command[1:3] == ("netns", "add"):
            assert command[3] in ours
        elif command[1] == "-n":
            assert command[2] in ours
        elif command[1:3] == ("netns", "exec"):
            assert command[3] in ours
        else:
            # only veth pairs are made in the root namespace, and both ends move at once
            assert command[1:3] == ("link", "add"), command
            assert "veth" in command
            assert command[4] == "netns"
            assert command[5] in ours
            assert command[-2] == "netns"
            assert command[-1] in ours


def test_no_namespace_has_a_route_out_of_the_lab() -> None:
    """Default routes point at lab addresses only: the LAN at the router, the phone at the
    internet host, the router and the VPS at the internet host; the internet host has none."""
    topo = _topo()
    n = topo.names
    defaults = {
        c[2]: c[-1]
        for c in t.plan_up(topo)
        if c[1] == "-n" and "default" in c and c[3] in ("route", "-4")
    }
    assert defaults == {
        n.ns(t.Role.LAN): t.LAN_ROUTER,
        n.ns(t.Role.PHONE): t.PHONE_GATEWAY,
        n.ns(t.Role.ROUTER): t.INET,
        n.ns(t.Role.VPS): t.VPS_GATEWAY,
    }
    assert not any(c[1] == "-n" and c[2] == n.ns(t.Role.INET) and "default" in c
                   for c in t.plan_up(topo))  # fmt: skip


def test_wan_renumbering_and_carrier_grade_nat() -> None:
    topo = _topo()
    router = topo.names.ns(t.Role.ROUTER)
    assert t.plan_wan_address(topo, t.PUBLIC_NEXT)[1] == (
        "ip", "-n", router, "addr", "add", f"{t.PUBLIC_NEXT}/24", "dev", topo.names.wan_if,
    )  # fmt: skip
    assert t.plan_wan_address(topo, t.CGNAT)[1][5] == f"{t.CGNAT}/10"
    assert t.plan_wan_address(topo, t.CGNAT)[2][-1] == t.INET_SHARED
    assert t.plan_wan_address(topo, t.CGNAT)[3][2] == topo.names.ns(t.Role.INET)


def test_router_rules_forward_masquerade_and_reset_forgotten_connections() -> None:
    topo = _topo(forwards=((443, t.LAN_HOST, 4443), (25, t.LAN_HOST, 25)))
    rules = t.router_ruleset(topo)
    wan = topo.names.wan_if
    local = "fib daddr type local"
    assert f'iifname "{wan}" {local} tcp dport 443 dnat ip to {t.LAN_HOST}:4443' in rules
    assert f'iifname "{wan}" {local} tcp dport 25 dnat ip to {t.LAN_HOST}:25' in rules
    assert f'oifname "{wan}" meta nfproto ipv4 masquerade' in rules
    assert "policy drop" in rules
    assert "ct state invalid meta l4proto tcp reject with tcp reset" in rules
    assert "dnat" not in t.router_ruleset(_topo()).split("masquerade")[0].replace(
        "ct status dnat accept", ""
    )


def test_conntrack_idle_is_a_sysctl_in_the_routers_namespace() -> None:
    topo = _topo(conntrack_idle=7)
    timeout, loose = t.plan_up(topo)[-2:]
    assert timeout[:4] == ("ip", "netns", "exec", topo.names.ns(t.Role.ROUTER))
    assert timeout[-1] == "net.netfilter.nf_conntrack_tcp_timeout_established=7"
    assert loose[-1] == "net.netfilter.nf_conntrack_tcp_loose=0"
    default = t.plan_conntrack_idle(topo, None)
    assert default[0][-1] == "net.netfilter.nf_conntrack_tcp_timeout_established=432000"
    assert default[1][-1] == "net.netfilter.nf_conntrack_tcp_loose=1"
    with pytest.raises(ValueError):
        t.plan_conntrack_idle(topo, 0)


def test_miniupnpd_maps_unprivileged_ports_unless_told() -> None:
    assert "allow 1024-65535 192.168.77.0/24 1024-65535" in t.miniupnpd_conf(_topo())
    assert "allow 1-65535 192.168.77.0/24 1-65535" in t.miniupnpd_conf(
        _topo(privileged_mappings=True)
    )


def test_hairpin_rule_rewrites_lan_traffic_to_the_public_address() -> None:
    topo = _topo()
    rules = t.hairpin_ruleset(topo, t.PUBLIC, 443, t.LAN_HOST, 443)
    lan_if = topo.names.router_lan_if
    assert f'iifname "{lan_if}" ip daddr {t.PUBLIC} tcp dport 443 dnat to {t.LAN_HOST}:443' in rules
    assert f'oifname "{lan_if}" ip daddr {t.LAN_HOST} masquerade' in rules


def test_the_internet_answers_what_a_carrier_nat_host_opened_but_never_dials_into_it() -> None:
    rules = t.inet_ruleset()
    assert rules.index("ct state established,related accept") < rules.index(
        "ip daddr 100.64.0.0/10 drop"
    )
