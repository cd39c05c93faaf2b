"""The PROXY protocol, version 2 (haproxy's proxy-protocol.txt, section 2.2), sans-I/O.

A TCP hop that is not the client (the edge's SMTP forward, ``natsync relay`` on a public server)
sends this binary header first on every connection it passes on, so the next hop learns the real
client's address. :func:`build_header` writes it; :func:`parse_header` reads it from the first
bytes of a connection and says how many bytes it used. A receiver must accept the header only
from hops it trusts (the relay's tunnel address), never from the internet: the header is a claim,
not a proof.

Only what TCP needs is read: the PROXY and LOCAL commands, TCP over IPv4 and IPv6. TLVs (section
2.2.7) are skipped. Anything else is refused with :class:`ProxyHeaderError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from natsync.errors import NatsyncError

#: The 12-byte signature that opens every v2 header (2.2).
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Fixed part: signature, version/command, family/transport, length.
FIXED_LENGTH = 16
#: Version 2 in the high nibble; the command in the low one (2.2: 0x0 LOCAL, 0x1 PROXY).
_VERSION = 0x20
_COMMAND_LOCAL = 0x0
_COMMAND_PROXY = 0x1
#: Address family and transport (2.2): TCP over IPv4 / IPv6.
TCP4 = 0x11
TCP6 = 0x21
#: Address block sizes for TCP4 / TCP6 (2.2: 12 and 36 bytes).
_ADDRESS_LENGTH = {TCP4: 12, TCP6: 36}
#: Largest header we accept. The length field allows 65535, but with only addresses and a few
#: TLVs a real header is far below this; a larger claim is a broken or hostile peer.
MAX_HEADER_LENGTH = 536


class ProxyHeaderError(NatsyncError):
    """The connection did not start with a valid PROXY v2 header (drop it: it is not our hop)."""

    http_status = 400


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the previous hop said: the client's and the original destination's addresses.

    ``source`` is None for a LOCAL header (a health check by the hop itself).
    """

    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def build_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """The PROXY v2 header announcing a TCP connection from *src* to *dst*."""
    src_ip = ipaddress.ip_address(src[0].split("%")[0])
    dst_ip = ipaddress.ip_address(dst[0].split("%")[0])
    if src_ip.version != dst_ip.version:  # mixed: say both in IPv6 (v4-mapped)
        src_ip = ipaddress.IPv6Address(f"::ffff:{src_ip}") if src_ip.version == 4 else src_ip
        dst_ip = ipaddress.IPv6Address(f"::ffff:{dst_ip}") if dst_ip.version == 4 else dst_ip
    family = TCP4 if src_ip.version == 4 else TCP6
    body = src_ip.packed + dst_ip.packed + struct.pack("!HH", src[1], dst[1])
    return SIGNATURE + struct.pack("!BBH", _VERSION | _COMMAND_PROXY, family, len(body)) + body


def parse_header(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of *data* and its length, or None when more bytes are needed.

    Raises ProxyHeaderError as soon as the bytes cannot be the start of a valid header, so a
    peer that is not a PROXY hop is dropped without waiting for more.
    """
    head = data[: len(SIGNATURE)]
    if SIGNATURE[: len(head)] != head:
        raise ProxyHeaderError("the connection did not start with a PROXY v2 signature")
    if len(data) < FIXED_LENGTH:
        return None
    version_command, family, length = struct.unpack_from("!BBH", data, len(SIGNATURE))
    if version_command & 0xF0 != _VERSION:
        raise ProxyHeaderError(f"PROXY header version {version_command >> 4} (only 2 is read)")
    command = version_command & 0x0F
    if command not in (_COMMAND_LOCAL, _COMMAND_PROXY):
        raise ProxyHeaderError(f"PROXY header command {command:#x} is not LOCAL or PROXY")
    if length > MAX_HEADER_LENGTH - FIXED_LENGTH:
        raise ProxyHeaderError(f"PROXY header claims {length} bytes of addresses (too many)")
    total = FIXED_LENGTH + length
    if len(data) < total:
        return None
    if command == _COMMAND_LOCAL:
        return ProxyHeader(None, None), total
    needed = _ADDRESS_LENGTH.get(family)
    if needed is None:
        raise ProxyHeaderError(f"PROXY header family/transport {family:#x} is not TCP")
    if length < needed:
        raise ProxyHeaderError(f"PROXY header address block is {length} bytes, needs {needed}")
    size = 4 if family == TCP4 else 16
    block = data[FIXED_LENGTH : FIXED_LENGTH + needed]
    src_ip = ipaddress.ip_address(block[:size])
    dst_ip = ipaddress.ip_address(block[size : 2 * size])
    src_port, dst_port = struct.unpack_from("!HH", block, 2 * size)
    return ProxyHeader((_text(src_ip), src_port), (_text(dst_ip), dst_port)), total


def _text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """v4-mapped IPv6 addresses (a mixed-family header) as the IPv4 address they carry."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
