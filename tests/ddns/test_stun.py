from __future__ import annotations

import contextlib
import ipaddress
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync.ddns import stun
from natsync.ddns.errors import SourceError
from tests.ddns.servers import free_port, run_stun

# RFC 5769 section 2.2 (sample IPv4 response): transaction ID and the XOR-MAPPED-ADDRESS value
# for 192.0.2.1 port 32853.
RFC5769_TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
RFC5769_XOR_MAPPED_V4 = bytes.fromhex("0001a147e112a643")


def message(mtype: int, txid: bytes, *attributes: tuple[int, bytes]) -> bytes:
    body = b""
    for atype, value in attributes:
        body += struct.pack("!HH", atype, len(value)) + value + b"\0" * (-len(value) % 4)
    return struct.pack("!HHI", mtype, len(body), stun.MAGIC_COOKIE) + txid + body


def test_binding_request_bytes() -> None:
    assert stun.encode_binding_request(RFC5769_TXID) == (
        bytes.fromhex("0001 0000 2112a442".replace(" ", "")) + RFC5769_TXID
    )


def test_rfc5769_ipv4_vector() -> None:
    data = message(0x0101, RFC5769_TXID, (0x8022, b"test vector "), (0x0020, RFC5769_XOR_MAPPED_V4))
    assert stun.decode_binding_response(data, RFC5769_TXID) == (
        ipaddress.ip_address("192.0.2.1"),
        32853,
    )


def test_ipv6_xor_uses_cookie_and_transaction_id() -> None:
    address = ipaddress.IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")
    mask = int.from_bytes(struct.pack("!I", stun.MAGIC_COOKIE) + RFC5769_TXID, "big")
    xored = (int(address) ^ mask).to_bytes(16, "big")
    value = struct.pack("!BBH", 0, 2, 32853 ^ 0x2112) + xored
    data = message(0x0101, RFC5769_TXID, (0x0020, value))
    assert stun.decode_binding_response(data, RFC5769_TXID) == (address, 32853)


def test_plain_mapped_address_from_old_servers() -> None:
    value = struct.pack("!BBH", 0, 1, 4000) + bytes([198, 51, 100, 7])
    data = message(0x0101, RFC5769_TXID, (0x0001, value))
    assert stun.decode_binding_response(data, RFC5769_TXID) == (
        ipaddress.ip_address("198.51.100.7"),
        4000,
    )


def test_error_response_is_reported_with_its_code() -> None:
    value = bytes([0, 0, 4, 0]) + b"Bad Request"
    data = message(0x0111, RFC5769_TXID, (0x0009, value))
    with pytest.raises(SourceError, match="error 400 Bad Request"):
        stun.decode_binding_response(data, RFC5769_TXID)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x01\x01\x00", "too short"),
        (message(0x0101, b"x" * 12, (0x0020, RFC5769_XOR_MAPPED_V4)), "transaction ID"),
        (message(0x0101, RFC5769_TXID), "no mapped address"),
        (message(0x0101, RFC5769_TXID, (0x0020, b"\0\1")), "too short"),
    ],
)
def test_malformed_answers_raise_source_error(data: bytes, words: str) -> None:
    with pytest.raises(SourceError, match=words):
        stun.decode_binding_response(data, RFC5769_TXID)


def test_length_beyond_the_datagram_is_refused() -> None:
    data = bytearray(message(0x0101, RFC5769_TXID, (0x0020, RFC5769_XOR_MAPPED_V4)))
    data[2:4] = struct.pack("!H", 400)
    with pytest.raises(SourceError, match="length"):
        stun.decode_binding_response(bytes(data), RFC5769_TXID)


@given(st.binary(max_size=120))
def test_decoder_raises_only_source_error(tail: bytes) -> None:
    data = struct.pack("!HHI", 0x0101, len(tail), stun.MAGIC_COOKIE) + RFC5769_TXID + tail
    with contextlib.suppress(SourceError):
        stun.decode_binding_response(data, RFC5769_TXID)


def test_parse_server() -> None:
    assert stun.parse_server("stun.example.net") == ("stun.example.net", 3478)
    assert stun.parse_server("192.0.2.1:19302") == ("192.0.2.1", 19302)
    assert stun.parse_server("[2001:db8::1]:3479") == ("2001:db8::1", 3479)
    for bad in ("stun.example.net:x", "stun.example.net:3²", "[2001:db8::1]:0", "h:99999"):
        with pytest.raises(stun.SourceError, match="port"):
            stun.parse_server(bad)


def test_query_a_real_coturn_on_loopback(tmp_path: Path) -> None:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed: make apt-test installs it")
    port = free_port()
    with run_stun(tmp_path, port=port):
        assert stun.query(f"127.0.0.1:{port}") == ipaddress.ip_address("127.0.0.1")


def test_query_without_a_server_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="STUN server"):
        stun.query(f"127.0.0.1:{free_port()}", attempts=1)
