"""Both families held as one (natsync.portmap.holder), with the router replaced by a recorder:
the schedule, the fallback of ipv6 = "auto", the skipped translated ports and the status. The
real router (miniupnpd in the lab) holds both under `natsync run` in tests/run/test_portmap_part.py.
"""

from __future__ import annotations

import threading

import pytest

from natsync.portmap.errors import MappingRefused, PortMapError
from natsync.portmap.holder import Deferred, Member, PinholeFallback, PortMapSet, open_set
from natsync.portmap.manager import Granted, MappingSpec, MapResult, PortMapper


class Router:
    def __init__(self, name: str, refuse_below: int = 0) -> None:
        self.name = name
        self.refuse_below = refuse_below
        self.held: dict[MappingSpec, int] = {}
        self.next_id = 1

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        if spec.internal_port < self.refuse_below:
            raise MappingRefused("policy (UPnP error 606)", code=606)
        uid = self.held.setdefault(spec, self.next_id)
        self.next_id += 1
        return Granted(spec.external_port, lifetime, unique_id=uid)

    def unmap(self, spec: MappingSpec) -> None:
        del self.held[spec]


HTTPS, HIGH = MappingSpec("tcp", 443, 443), MappingSpec("tcp", 18443, 18443)


def test_auto_uses_upnp_pinholes_where_allowed_and_pcp_below_1024() -> None:
    upnp6, pcp6 = Router("upnp6", refuse_below=1024), Router("pcp6")
    auto = PinholeFallback([Deferred("upnp6", lambda: upnp6), Deferred("pcp6", lambda: pcp6)])
    mapper = PortMapper(auto, lifetime=100)
    results = mapper.ensure([HTTPS, HIGH], now=0)
    assert [(r.spec, r.action, r.method) for r in results] == [
        (HTTPS, "created", "pcp6"),
        (HIGH, "created", "upnp6"),
    ]
    assert set(upnp6.held) == {HIGH}
    assert set(pcp6.held) == {HTTPS}
    renewed = mapper.ensure([HTTPS, HIGH], now=50)  # renewed by the way that made each
    assert [r.method for r in renewed] == ["pcp6", "upnp6"]
    assert [r.action for r in mapper.release_all()] == ["removed", "removed"]
    assert upnp6.held == {}
    assert pcp6.held == {}


def test_a_way_that_cannot_open_is_a_failed_round_then_retried() -> None:
    tries: list[int] = []

    def no_ipv6() -> Router:
        tries.append(1)
        raise PortMapError("no IPv6 default route")

    auto = PinholeFallback([Deferred("upnp6", no_ipv6), Deferred("pcp6", no_ipv6)])
    (result,) = PortMapper(auto).ensure([HIGH], now=0)
    assert result.action == "failed"
    assert result.detail == "upnp6/pcp6: no IPv6 default route"  # said once for both
    PortMapper(auto).ensure([HIGH], now=1)
    assert len(tries) == 4  # opened again, not cached as broken


def test_the_set_holds_both_families_renews_each_on_its_schedule_and_reports_status() -> None:
    v4, v6 = Router("upnp"), Router("pcp6")
    specs = [MappingSpec.parse("443/tcp"), MappingSpec.parse("587:8587/tcp")]
    held = PortMapSet(
        [
            Member(4, PortMapper(Deferred("upnp", lambda: v4), lifetime=100), specs),
            Member(6, PortMapper(Deferred("pcp6", lambda: v6), lifetime=40), specs[:1],
                   [(specs[1], "translated")]),
        ]
    )  # fmt: skip
    first = held.ensure(now=1000)
    assert [(r.method, r.action) for r in first] == [
        ("upnp", "created"),
        ("upnp", "created"),
        ("pcp6", "created"),
    ]
    assert held.wait(now=1000) == 20  # the IPv6 lease (40 s) is due first
    assert [r.action for r in held.ensure(now=1020)] == ["kept", "kept", "renewed"]
    doc = held.status(now=1020)
    assert doc["healthy"] is True
    by = {(e["family"], e["mapping"]): e for e in doc["mappings"]}
    assert by[(6, "443->443/tcp")]["state"] == "open"
    assert by[(6, "443->443/tcp")]["expires_at"] == 1060
    assert by[(6, "443->443/tcp")]["unique_id"] == 1
    assert by[(6, "587->8587/tcp")]["state"] == "skipped"
    assert by[(4, "587->8587/tcp")]["method"] == "upnp"
    assert [r.action for r in held.release_all()] == ["removed"] * 3
    after = held.status(now=1021)["mappings"]
    assert {e["state"] for e in after} == {"removed", "skipped"}


def test_hold_reports_each_round_and_removes_both_at_stop() -> None:
    v4, v6 = Router("natpmp"), Router("upnp6")
    held = PortMapSet(
        [
            Member(4, PortMapper(Deferred("natpmp", lambda: v4)), [HTTPS]),
            Member(6, PortMapper(Deferred("upnp6", lambda: v6)), [HIGH]),
        ]
    )
    stop = threading.Event()
    rounds: list[list[MapResult]] = []

    def on_round(results: list[MapResult]) -> None:
        rounds.append(results)
        stop.set()

    reported: list[str] = []
    held.hold(stop, lambda r: reported.append(r.action), lambda: 0.0, 0.0, on_round)
    assert reported == ["created", "created", "removed", "removed"]
    assert [[r.action for r in rnd] for rnd in rounds] == [
        ["created", "created"],
        ["removed", "removed"],
    ]
    assert v4.held == {}
    assert v6.held == {}


def test_open_set_from_settings() -> None:
    both = open_set("upnp", "auto", ["443/tcp", "80:8080/tcp"], 3600, "192.168.1.1")
    assert [m.family for m in both.members] == [4, 6]
    assert both.methods == ["upnp", "upnp6|pcp6"]
    assert [str(s) for s, _ in both.members[1].skipped] == ["80->8080/tcp"]
    alone = open_set("pcp6", "off", ["443/tcp"], 3600)
    assert [m.family for m in alone.members] == [6]
    with pytest.raises(PortMapError, match="opens IPv6 only"):
        open_set("pcp6", "auto", ["443/tcp"], 3600)
    with pytest.raises(PortMapError, match=r"portmap\.ipv6"):
        open_set("upnp", "yes", ["443/tcp"], 3600)


def test_renewal_refused_leaves_the_lease_and_says_so_in_the_status() -> None:
    router = Router("upnp6")
    held = PortMapSet([Member(6, PortMapper(Deferred("upnp6", lambda: router), 100), [HIGH])])
    held.ensure(now=0)
    router.refuse_below = 65536
    held.ensure(now=50)
    (entry,) = held.status(now=50)["mappings"]
    assert entry["state"] == "renew-failing"
    assert "606" in entry["detail"]
    assert held.status(now=50)["healthy"] is False
    # asked again after half the time the lease has left (25 s), then 12.5 s ... not at once
    assert held.wait(now=50) == 25
    held.ensure(now=75)
    assert held.wait(now=75) == 12.5
    router.refuse_below = 0
    assert held.ensure(now=88)[0].action == "renewed"
    assert held.wait(now=88) == 50
