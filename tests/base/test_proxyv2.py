"""The PROXY v2 codec: what haproxy's proxy-protocol.txt (section 2.2) says a header is, and
that a parser fed anything decodes or raises ProxyHeaderError — whole or byte by byte."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.base.proxyv2 import (
    FIXED_LENGTH,
    SIGNATURE,
    TCP4,
    TCP6,
    ProxyHeader,
    ProxyHeaderError,
    build_header,
    parse_header,
)


def test_ipv4_header_is_the_documented_28_bytes_and_reads_back() -> None:
    header = build_header(("198.51.100.7", 50000), ("203.0.113.10", 443))
    assert header[:12] == SIGNATURE
    assert header[12] == 0x21  # version 2, PROXY
    assert header[13] == TCP4
    assert struct.unpack("!H", header[14:16]) == (12,)
    assert len(header) == 28
    assert parse_header(header + b"\x16\x03\x01rest") == (
        ProxyHeader(("198.51.100.7", 50000), ("203.0.113.10", 443)),
        28,
    )


def test_ipv6_and_mixed_families() -> None:
    six = build_header(("2001:db8::7", 1), ("2001:db8::10", 443))
    assert six[13] == TCP6
    assert len(six) == FIXED_LENGTH + 36
    assert parse_header(six) == (ProxyHeader(("2001:db8::7", 1), ("2001:db8::10", 443)), 52)
    mixed = build_header(("198.51.100.7", 2), ("2001:db8::10", 443))
    header, _ = parse_header(mixed) or (None, 0)
    assert header == ProxyHeader(("198.51.100.7", 2), ("2001:db8::10", 443))


def test_local_command_carries_no_client() -> None:
    local = SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    assert parse_header(local) == (ProxyHeader(None, None), 16)


def test_tlvs_after_the_addresses_are_skipped() -> None:
    header = build_header(("192.0.2.1", 1), ("192.0.2.2", 2))
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP
    grown = header[:14] + struct.pack("!H", 12 + len(tlv)) + header[16:] + tlv
    assert parse_header(grown) == (ProxyHeader(("192.0.2.1", 1), ("192.0.2.2", 2)), len(grown))


def test_every_prefix_asks_for_more() -> None:
    header = build_header(("192.0.2.1", 1), ("192.0.2.2", 2))
    for cut in range(len(header)):
        assert parse_header(header[:cut]) is None


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GET / HTTP/1.1\r\n", "signature"),
        (b"\x16\x03\x01\x02\x00", "signature"),
        (SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
        (SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command"),
        (SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "not TCP"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "needs 12"),
        (SIGNATURE + b"\x21\x11\xff\xff", "too many"),
    ],
)
def test_what_is_not_a_tcp_proxy_v2_header_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(ProxyHeaderError, match=words):
        parse_header(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for chunk in (data, SIGNATURE + data, SIGNATURE + b"\x21" + data):
        with contextlib.suppress(ProxyHeaderError):
            parse_header(chunk)


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(v=4) | st.ip_addresses(v=6),
    st.ip_addresses(v=4) | st.ip_addresses(v=6),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_build_then_parse_round_trips(src: object, dst: object, sport: int, dport: int) -> None:
    header = build_header((str(src), sport), (str(dst), dport))
    parsed = parse_header(header)
    assert parsed is not None
    assert parsed[1] == len(header)
    assert parsed[0].source is not None
    assert parsed[0].destination is not None
    assert parsed[0].source[1] == sport
    assert parsed[0].destination[1] == dport
