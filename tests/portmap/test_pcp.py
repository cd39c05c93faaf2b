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
