from __future__ import annotations

import ipaddress

from natsync.ddns.agreement import CGNAT_WORDS, VerdictKind, judge
from natsync.ddns.sources import NO_PUBLIC_ADDRESS, Observation, Source


def seen(source: Source, address: str, via: str = "x") -> Observation:
    ip = ipaddress.ip_address(address)
    return Observation(source, via, ip.version, address=ip)


def test_router_and_stun_agree() -> None:
    verdict = judge(
        [seen(Source.NATPMP, "192.0.3.10"), seen(Source.STUN, "192.0.3.10", "stun1")], 4
    )
    assert verdict.kind == VerdictKind.AGREE
    assert str(verdict.address) == "192.0.3.10"
    assert verdict.port_forwarding_possible


def test_router_with_shared_address_is_carrier_grade_nat() -> None:
    verdict = judge(
        [
            seen(Source.UPNP, "100.64.0.10"),
            seen(Source.STUN, "203.0.114.9", "stun1"),
            seen(Source.STUN, "203.0.114.9", "stun2"),
        ],
        4,
    )
    assert verdict.kind == VerdictKind.CGNAT
    assert verdict.summary == CGNAT_WORDS
    assert not verdict.port_forwarding_possible
    assert "100.64.0.10 (from upnp) is shared carrier-grade NAT space" in verdict.evidence[0]


def test_router_with_private_address_is_double_nat() -> None:
    verdict = judge([seen(Source.NATPMP, "192.168.1.2"), seen(Source.STUN, "203.0.114.9")], 4)
    assert verdict.kind == VerdictKind.CGNAT
    assert "private (RFC 1918)" in verdict.evidence[0]
    # the outside address is still the best guess of the public address
    assert str(verdict.address) == "203.0.114.9"


def test_router_public_address_differing_from_stun_means_another_nat() -> None:
    verdict = judge([seen(Source.NATPMP, "203.0.114.1"), seen(Source.STUN, "203.0.114.9", "s")], 4)
    assert verdict.kind == VerdictKind.CGNAT
    assert any("router says its external address is 203.0.114.1" in e for e in verdict.evidence)


def test_router_without_public_address_is_reported() -> None:
    refused = Observation(
        Source.NATPMP, "192.168.1.1", 4, error="no usable public address", refusal=NO_PUBLIC_ADDRESS
    )
    verdict = judge([refused, seen(Source.STUN, "203.0.114.9")], 4)
    assert verdict.kind == VerdictKind.CGNAT
    assert any("says it has no usable public address" in e for e in verdict.evidence)


def test_outside_sources_disagree_majority_wins_and_is_explained() -> None:
    verdict = judge(
        [
            seen(Source.STUN, "203.0.114.9", "s1"),
            seen(Source.ECHO, "203.0.114.7", "e1"),
            seen(Source.STUN, "203.0.114.7", "s2"),
        ],
        4,
    )
    assert verdict.kind == VerdictKind.DISAGREE
    assert str(verdict.address) == "203.0.114.7"
    assert "stun s1 says 203.0.114.9" in verdict.summary


def test_nothing_known_publishes_nothing() -> None:
    failed = Observation(Source.STUN, "s1", 4, error="did not answer")
    verdict = judge([failed], 4)
    assert verdict.kind == VerdictKind.NO_ADDRESS
    assert verdict.address is None
    assert "s1" in verdict.evidence[0]
    assert "did not answer" in verdict.evidence[0]


def test_families_are_judged_independently() -> None:
    observations = [seen(Source.STUN, "203.0.114.9"), seen(Source.STUN, "2a00:1450::5")]
    assert str(judge(observations, 4).address) == "203.0.114.9"
    assert str(judge(observations, 6).address) == "2a00:1450::5"


def test_public_interface_means_no_nat() -> None:
    verdict = judge([seen(Source.INTERFACE, "2a00:1450::5", "eth0")], 6)
    assert verdict.kind == VerdictKind.AGREE
    assert "no NAT" in verdict.summary
