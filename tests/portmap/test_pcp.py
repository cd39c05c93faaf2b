from __future__ import annotations

import ipaddress
import struct

import pytest

from natsync.portmap import pcp
from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable

NONCE = bytes(range(1, 13))


def answer(result: int = 0, *, nonce: bytes = NONCE, external: int = 443, proto: int = 6) -> bytes:
    header = struct.pack("!BBBBII", 2, 0x81, 0, result, 3600, 77) + bytes(12)
    body = nonce + struct.pack("!B3xHH", proto, 8443, external)
    return header + body + ipaddress.IPv6Address("::ffff:192.0.3.10").packed


def test_map_request_layout() -> None:
    data = pcp.encode_map_request(NONCE, "tcp", 8443, 443, 7200, "192.168.77.2")
    assert len(data) == 60
    assert data[:8] == bytes.fromhex("0201000000001c20")
    assert data[8:24] == ipaddress.IPv6Address("::ffff:192.168.77.2").packed
    assert data[24:36] == NONCE
    assert data[36:44] == bytes.fromhex("06000000 20fb 01bb".replace(" ", ""))
    assert data[44:60] == ipaddress.IPv6Address("::ffff:0.0.0.0").packed


def test_map_answer() -> None:
    mapping = pcp.decode_map_response(answer(), NONCE, "tcp")
    assert mapping == pcp.PcpMapping(
        "tcp", 8443, 443, ipaddress.IPv4Address("192.0.3.10"), 3600, 77
    )


@pytest.mark.parametrize(
    ("code", "words"),
    [(2, "refused"), (7, "carrier-grade or double NAT"), (11, "taken or not allowed"), (42, "42")],
)
def test_refusals_in_plain_words(code: int, words: str) -> None:
    with pytest.raises(MappingRefused, match=words) as caught:
        pcp.decode_map_response(answer(code), NONCE, "tcp")
    assert caught.value.code == code


def test_bad_answers() -> None:
    with pytest.raises(RouterUnreachable, match="NAT-PMP only"):
        pcp.decode_map_response(bytes.fromhex("00810001000000000000000000000000"), NONCE, "tcp")
    with pytest.raises(PortMapError, match="nonce"):
        pcp.decode_map_response(answer(nonce=bytes(12)), NONCE, "tcp")
    with pytest.raises(PortMapError, match="protocol 17"):
        pcp.decode_map_response(answer(proto=17), NONCE, "tcp")
    with pytest.raises(PortMapError, match="too short"):
        pcp.decode_map_response(answer()[:40], NONCE, "tcp")


def test_nonce_is_stable_per_mapping() -> None:
    first = pcp.mapping_nonce("tcp", 8443, "192.168.77.2")
    assert first == pcp.mapping_nonce("TCP", 8443, "192.168.77.2")
    assert first != pcp.mapping_nonce("tcp", 8444, "192.168.77.2")
    assert len(first) == pcp.NONCE_SIZE


def peer_answer(result: int = 0, *, peer: str = "192.0.2.1", peer_port: int = 9) -> bytes:
    header = struct.pack("!BBBBII", 2, 0x82, 0, result, 120, 77) + bytes(12)
    body = NONCE + struct.pack("!B3xHH", 17, 40000, 40001)
    external = ipaddress.IPv6Address("::ffff:100.64.0.10").packed
    return header + body + external + struct.pack("!H2x", peer_port) + _v4(peer)


def _v4(address: str) -> bytes:
    return ipaddress.IPv6Address(f"::ffff:{address}").packed


def test_peer_request_layout() -> None:
    """RFC 6887 section 12.1: the MAP fields, then the remote peer's port and address."""
    data = pcp.encode_peer_request(NONCE, "udp", 40000, 120, "192.168.77.2", "192.0.2.1", 9)
    assert len(data) == pcp.PEER_SIZE == 80
    assert data[:8] == bytes.fromhex("0202000000000078")  # version 2, opcode PEER, lifetime 120
    assert data[8:24] == _v4("192.168.77.2")
    assert data[24:36] == NONCE
    assert data[36:44] == bytes.fromhex("11000000 9c40 0000".replace(" ", ""))  # UDP, no ext port
    assert data[44:60] == _v4("0.0.0.0")
    assert data[60:64] == bytes.fromhex("00090000")
    assert data[64:80] == _v4("192.0.2.1")
    v6 = pcp.encode_peer_request(NONCE, "tcp", 1, 0, "2a0e:97c0:77::2", "2a0e:97c0:1::1", 443)
    assert v6[64:80] == ipaddress.IPv6Address("2a0e:97c0:1::1").packed
    # a delete suggests what was assigned (section 12.3)
    delete = pcp.encode_peer_request(
        NONCE, "udp", 40000, 0, "192.168.77.2", "192.0.2.1", 9, 40001, "100.64.0.10"
    )
    assert delete[4:8] == bytes(4)
    assert delete[40:44] == bytes.fromhex("9c409c41")
    assert delete[44:60] == _v4("100.64.0.10")


def test_peer_request_mistakes() -> None:
    with pytest.raises(PortMapError, match="own address family"):
        pcp.encode_peer_request(NONCE, "udp", 1, 60, "192.168.77.2", "2a0e::1", 9)
    with pytest.raises(PortMapError, match="remote peer's port"):
        pcp.encode_peer_request(NONCE, "udp", 1, 60, "192.168.77.2", "192.0.2.1", 0)
    with pytest.raises(PortMapError, match="needs addresses"):
        pcp.encode_peer_request(NONCE, "udp", 1, 60, "192.168.77.2", "peer", 9)


def test_peer_answer() -> None:
    mapping = pcp.decode_peer_response(peer_answer(), NONCE, "udp", "192.0.2.1", 9)
    assert mapping == pcp.PcpMapping(
        "udp", 40000, 40001, ipaddress.IPv4Address("100.64.0.10"), 120, 77
    )
    with pytest.raises(PortMapError, match="another remote peer"):
        pcp.decode_peer_response(peer_answer(peer_port=10), NONCE, "udp", "192.0.2.1", 9)
    with pytest.raises(PortMapError, match="not a PCP PEER answer"):
        pcp.decode_peer_response(answer(), NONCE, "udp", "192.0.2.1", 9)
    with pytest.raises(PortMapError, match="not a PCP MAP answer"):
        pcp.decode_map_response(peer_answer(), NONCE, "udp")
    with pytest.raises(MappingRefused, match="does not support PCP PEER") as caught:
        pcp.decode_peer_response(peer_answer(4), NONCE, "udp", "192.0.2.1", 9)
    assert caught.value.code == 4
    with pytest.raises(PortMapError, match="too short"):
        pcp.decode_peer_response(peer_answer()[:70], NONCE, "udp", "192.0.2.1", 9)
