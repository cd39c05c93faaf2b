from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from natsync.portmap import natpmp
from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable


def test_external_address_request_bytes() -> None:
    assert natpmp.encode_external_address_request() == b"\x00\x00"


def test_mapping_request_bytes() -> None:
    assert natpmp.encode_mapping_request("tcp", 8443, 443, 7200) == bytes.fromhex(
        "00 02 0000 20fb 01bb 00001c20".replace(" ", "")
    )
    # RFC 6886 section 3.4: delete = lifetime 0 and external port 0
    assert natpmp.encode_mapping_request("udp", 53, 0, 0) == bytes.fromhex(
        "000100000035000000000000"
    )


def test_decode_answers() -> None:
    answer = natpmp.decode_external_address_response(bytes.fromhex("00800000000000070c000309"))
    assert answer == natpmp.ExternalAddress(ipaddress.IPv4Address("12.0.3.9"), 7)
    mapping = natpmp.decode_mapping_response(
        bytes.fromhex("00820000 00000009 20fb 01bb 00000e10".replace(" ", "")), "tcp"
    )
    assert mapping == natpmp.Mapping("tcp", 8443, 443, 3600, 9)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (2, "refused"),
        (3, "carrier-grade or double NAT"),
        (4, "out of resources"),
        (99, "unknown NAT-PMP result code 99"),
    ],
)
def test_refusals_in_plain_words(code: int, words: str) -> None:
    data = struct.pack("!BBHI4s", 0, 128, code, 1, b"\0\0\0\0")
    with pytest.raises(MappingRefused, match=words) as caught:
        natpmp.decode_external_address_response(data)
    assert caught.value.code == code


def test_wrong_opcode_or_short_answer() -> None:
    with pytest.raises(PortMapError, match="not a NAT-PMP answer"):
        natpmp.decode_mapping_response(bytes.fromhex("0081" + "00" * 14), "tcp")
    with pytest.raises(PortMapError, match="too short"):
        natpmp.decode_external_address_response(b"\x00\x80\x00\x00")
    with pytest.raises(PortMapError, match="tcp or udp"):
        natpmp.encode_mapping_request("sctp", 1, 1, 1)


@pytest.fixture
def silent_gateway() -> Iterator[int]:
    """A UDP socket on loopback that reads requests and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_client_gives_up_after_its_attempts(silent_gateway: int) -> None:
    client = natpmp.NatPmpClient("127.0.0.1", port=silent_gateway, initial_timeout=0.02, attempts=3)
    with pytest.raises(RouterUnreachable, match="after 3 tries"):
        client.external_address()


def test_client_retransmits_until_answered() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[bytes] = []

    def gateway() -> None:
        for _ in range(2):
            data, peer = sock.recvfrom(64)
            seen.append(data)
        sock.sendto(bytes.fromhex("008000000000002ac0000363"), peer)

    thread = threading.Thread(target=gateway)
    thread.start()
    try:
        client = natpmp.NatPmpClient("127.0.0.1", port=sock.getsockname()[1], initial_timeout=0.05)
        answer = client.external_address()
    finally:
        thread.join(5)
        sock.close()
    assert str(answer.address) == "192.0.3.99"
    assert seen == [b"\x00\x00", b"\x00\x00"]
