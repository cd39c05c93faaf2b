"""The PCP address source against a PCP/NAT-PMP gateway played on loopback: what it sends (a
short-lived MAP of a port it holds, then the delete) and how each answer becomes evidence."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natsync.ddns.agreement import VerdictKind, judge
from natsync.ddns.settings import load_ddns
from natsync.ddns.sources import (
    NO_PUBLIC_ADDRESS,
    PCP_PROBE_LIFETIME,
    ROUTER_SOURCES,
    Observation,
    Source,
    from_pcp,
)
from natsync.errors import ConfigError
from natsync.portmap.pcp import PcpResult


@dataclass
class Gateway:
    """A UDP responder on 127.0.0.1 speaking just enough PCP (version 2) and NAT-PMP (0)."""

    port: int = 0
    #: PCP result for a MAP with a lifetime (a delete always succeeds).
    result: int = PcpResult.SUCCESS
    external: str = "192.0.3.10"
    #: Answer PCP with a NAT-PMP "unsupported version" instead (a NAT-PMP-only router).
    natpmp_only: bool = False
    natpmp_result: int = 0
    natpmp_address: str = "192.0.3.10"
    #: (lifetime, nonce, protocol, internal port, external port) of each PCP request.
    maps: list[tuple[int, bytes, int, int, int]] = field(default_factory=list)
    natpmp_asked: int = 0

    def answer(self, data: bytes) -> bytes:
        if data[0] == 0:
            self.natpmp_asked += 1
            address = ipaddress.IPv4Address(self.natpmp_address).packed
            return struct.pack("!BBHI", 0, 128, self.natpmp_result, 7) + address
        if self.natpmp_only:
            return struct.pack("!BBHI", 0, 128 | data[1], 1, 7)
        (lifetime,) = struct.unpack_from("!I", data, 4)
        nonce = data[24:36]
        proto, internal, external = struct.unpack_from("!B3xHH", data, 36)
        self.maps.append((lifetime, nonce, proto, internal, external))
        result = self.result if lifetime else PcpResult.SUCCESS
        granted = external or internal
        header = struct.pack("!BBBBII", 2, 0x81, 0, result, lifetime, 77) + bytes(12)
        body = nonce + struct.pack("!B3xHH", proto, internal, granted)
        return header + body + ipaddress.IPv6Address(f"::ffff:{self.external}").packed


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    state = Gateway(port=sock.getsockname()[1])
    stopping = threading.Event()

    def serve() -> None:
        sock.settimeout(0.05)
        while not stopping.is_set():
            try:
                data, peer = sock.recvfrom(1100)
            except TimeoutError:
                continue
            sock.sendto(state.answer(data), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stopping.set()
        thread.join(2)
        sock.close()


def probe(gateway: Gateway) -> Observation:
    return from_pcp("127.0.0.1", port=gateway.port)


def test_maps_a_held_port_briefly_reads_the_address_and_deletes_the_mapping(
    gateway: Gateway,
) -> None:
    observation = probe(gateway)
    assert observation == Observation(
        Source.PCP, "127.0.0.1", 4, address=ipaddress.IPv4Address("192.0.3.10")
    )
    assert observation.describe() == "pcp (127.0.0.1) sees 192.0.3.10"
    (created, deleted) = gateway.maps
    lifetime, nonce, proto, internal, external = created
    assert lifetime == PCP_PROBE_LIFETIME
    assert (proto, external) == (17, 0)  # UDP, no external port suggested
    assert internal >= 1024  # an ephemeral port this process held, not port 0 ("all ports")
    # the delete names the same mapping: same nonce and internal port, lifetime 0
    assert deleted == (0, nonce, 17, internal, 0)
    assert gateway.natpmp_asked == 0


def test_network_failure_means_no_public_address(gateway: Gateway) -> None:
    gateway.result = PcpResult.NETWORK_FAILURE
    observation = probe(gateway)
    assert observation.address is None
    assert observation.refusal == NO_PUBLIC_ADDRESS
    assert "no usable public address" in observation.error
    assert len(gateway.maps) == 1  # nothing was created, so nothing is deleted


def test_no_resources_from_a_router_with_a_shared_address_is_carrier_grade_nat(
    gateway: Gateway,
) -> None:
    # what miniupnpd does when its WAN address is 100.64.x.x: PCP 8, NAT-PMP tells the truth
    gateway.result = PcpResult.NO_RESOURCES
    gateway.natpmp_address = "100.64.0.10"
    observation = probe(gateway)
    assert observation.refusal == NO_PUBLIC_ADDRESS
    assert observation.error.startswith("the router has no room for more mappings; ")
    assert "100.64.0.10, which is shared carrier-grade NAT space" in observation.error
    verdict = judge([observation], 4)
    assert verdict.kind == VerdictKind.CGNAT
    assert not verdict.port_forwarding_possible
    assert verdict.evidence[0].startswith("the router (pcp) says it has no usable public address")


def test_refusal_with_nat_pmp_network_failure_is_no_public_address(gateway: Gateway) -> None:
    gateway.result = PcpResult.NOT_AUTHORIZED
    gateway.natpmp_result = 3
    observation = probe(gateway)
    assert observation.refusal == NO_PUBLIC_ADDRESS
    assert "PCP mapping is not allowed" in observation.error
    assert "asked with NAT-PMP, the router says: the router has no usable public" in (
        observation.error
    )


def test_refusal_on_a_router_with_a_public_address_is_just_a_refusal(gateway: Gateway) -> None:
    gateway.result = PcpResult.NO_RESOURCES
    observation = probe(gateway)
    assert observation == Observation(
        Source.PCP, "127.0.0.1", 4, error="the router has no room for more mappings"
    )
    assert gateway.natpmp_asked == 1
    verdict = judge([observation], 4)
    assert verdict.kind == VerdictKind.NO_ADDRESS


def test_unspecified_external_address_is_no_public_address(gateway: Gateway) -> None:
    gateway.external = "0.0.0.0"
    observation = probe(gateway)
    assert observation.address is None
    assert observation.refusal == NO_PUBLIC_ADDRESS
    assert observation.error == "the router reports 0.0.0.0 as its external address"


def test_a_nat_pmp_only_router_is_named_as_such(gateway: Gateway) -> None:
    gateway.natpmp_only = True
    observation = probe(gateway)
    assert observation.error == "the router speaks NAT-PMP only, not PCP (use the natpmp source)"
    assert observation.refusal == ""


def test_a_gateway_that_is_not_there_is_said_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    observation = from_pcp("127.0.0.1", port=port)  # nothing listens: ICMP port unreachable
    assert observation.address is None
    assert observation.error.startswith(f"PCP to 127.0.0.1:{port} failed")


def test_pcp_is_a_router_source_judged_like_the_others() -> None:
    assert Source.PCP in ROUTER_SOURCES
    shared = Observation(Source.PCP, "gw", 4, address=ipaddress.IPv4Address("100.64.0.10"))
    stun = Observation(Source.STUN, "s", 4, address=ipaddress.IPv4Address("203.0.114.9"))
    verdict = judge([shared, stun], 4)
    assert verdict.kind == VerdictKind.CGNAT
    assert "100.64.0.10 (from pcp) is shared carrier-grade NAT space" in verdict.evidence[0]
    public = Observation(Source.PCP, "gw", 4, address=ipaddress.IPv4Address("203.0.114.9"))
    verdict = judge([public, stun], 4)
    assert verdict.kind == VerdictKind.AGREE
    assert str(verdict.address) == "203.0.114.9"


def test_pcp_is_selectable_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "natsync.toml"
    config.write_text('[ddns]\nsources = ["pcp", "stun"]\nrouter = "192.168.1.1"\n')
    settings = load_ddns(config)
    assert settings.sources == (Source.PCP, Source.STUN)
    config.write_text('[ddns]\nsources = ["pcp", "carrier-pigeon"]\n')
    with pytest.raises(ConfigError, match="natpmp, upnp, pcp, stun"):
        load_ddns(config)
