"""NAT-PMP (RFC 6886): the codec (sans-I/O) and a small blocking UDP client.

The codec builds requests and parses answers as bytes; :class:`NatPmpClient` sends them to the
gateway on UDP port 5351 with the retransmission schedule of RFC 6886 section 3.1, shortened
(see :data:`MAX_ATTEMPTS`) because a router on the LAN answers in milliseconds or not at all.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable

#: RFC 6886 section 3: the server listens on UDP port 5351 of the default gateway.
NATPMP_PORT = 5351
#: RFC 6886 section 3: version 0 (PCP, RFC 6887, is version 2 on the same port).
NATPMP_VERSION = 0
#: RFC 6886 section 3.1: first retransmission after 250 ms, doubling each time.
INITIAL_TIMEOUT = 0.25
#: RFC 6886 allows 9 attempts (about 64 s in all); a LAN router that has not answered after
#: four (3.75 s) is not going to, and a user waiting on `natsync portmap add` deserves an answer.
MAX_ATTEMPTS = 4
#: RFC 6886 section 3.3: the recommended lifetime of a mapping is 7200 s.
DEFAULT_LIFETIME = 7200
#: Largest NAT-PMP answer (a mapping response is 16 bytes); anything longer is not NAT-PMP.
MAX_RESPONSE = 16


class Opcode(IntEnum):
    """RFC 6886 sections 3.2 and 3.3: request opcodes; an answer carries opcode + 128."""

    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class ResultCode(IntEnum):
    """RFC 6886 section 3.5: result codes."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


#: What each refusal means for the person running natsync.
RESULT_WORDS: dict[int, str] = {
    ResultCode.UNSUPPORTED_VERSION: "the router does not speak NAT-PMP version 0",
    ResultCode.NOT_AUTHORIZED: (
        "the router refused: NAT-PMP is switched off or this mapping is not allowed "
        "(check the router's port-mapping permissions)"
    ),
    ResultCode.NETWORK_FAILURE: (
        "the router has no usable public address (its WAN side is down, or its own address is "
        "private: carrier-grade or double NAT, so port forwarding cannot work here)"
    ),
    ResultCode.OUT_OF_RESOURCES: "the router has no room for more mappings (out of resources)",
    ResultCode.UNSUPPORTED_OPCODE: "the router does not support this NAT-PMP request",
}


def result_words(code: int) -> str:
    """Plain words for a NAT-PMP result code, including codes RFC 6886 does not define."""
    return RESULT_WORDS.get(code, f"the router answered with unknown NAT-PMP result code {code}")


@dataclass(frozen=True, slots=True)
class ExternalAddress:
    """The answer to an external-address request (RFC 6886 section 3.2)."""

    address: ipaddress.IPv4Address
    epoch: int


@dataclass(frozen=True, slots=True)
class Mapping:
    """The answer to a mapping request (RFC 6886 section 3.3)."""

    protocol: str
    internal_port: int
    external_port: int
    lifetime: int
    epoch: int


def encode_external_address_request() -> bytes:
    return struct.pack("!BB", NATPMP_VERSION, Opcode.EXTERNAL_ADDRESS)


def encode_mapping_request(
    protocol: str, internal_port: int, external_port: int, lifetime: int
) -> bytes:
    """A mapping request; lifetime 0 with external port 0 deletes (RFC 6886 section 3.4)."""
    opcode = _opcode(protocol)
    for port in (internal_port, external_port):
        if not 0 <= port <= 65535:
            raise PortMapError(f"port {port} is outside 0..65535")
    if not 0 <= lifetime <= 0xFFFFFFFF:
        raise PortMapError(f"lifetime {lifetime} does not fit NAT-PMP's 32 bits")
    return struct.pack("!BBHHHI", NATPMP_VERSION, opcode, 0, internal_port, external_port, lifetime)


def _opcode(protocol: str) -> Opcode:
    match protocol.lower():
        case "tcp":
            return Opcode.MAP_TCP
        case "udp":
            return Opcode.MAP_UDP
    raise PortMapError(f"protocol must be tcp or udp, not {protocol!r}")


def _check_header(data: bytes, opcode: Opcode, size: int) -> None:
    if len(data) < 4:
        raise PortMapError(f"NAT-PMP answer too short ({len(data)} bytes)")
    version, op, result = struct.unpack_from("!BBH", data)
    if version != NATPMP_VERSION or op != 128 + opcode:
        raise PortMapError(
            f"not a NAT-PMP answer to opcode {int(opcode)} (version {version}, op {op})"
        )
    if result != ResultCode.SUCCESS:
        raise MappingRefused(result_words(result), code=result)
    if len(data) < size:
        raise PortMapError(f"NAT-PMP answer too short ({len(data)} bytes, need {size})")


def decode_external_address_response(data: bytes) -> ExternalAddress:
    _check_header(data, Opcode.EXTERNAL_ADDRESS, 12)
    epoch, raw = struct.unpack_from("!I4s", data, 4)
    return ExternalAddress(ipaddress.IPv4Address(raw), epoch)


def decode_mapping_response(data: bytes, protocol: str) -> Mapping:
    opcode = _opcode(protocol)
    _check_header(data, opcode, 16)
    epoch, internal, external, lifetime = struct.unpack_from("!IHHI", data, 4)
    return Mapping(protocol.lower(), internal, external, lifetime, epoch)


class NatPmpClient:
    """Blocking NAT-PMP client for one gateway; the one place this module touches sockets."""

    def __init__(
        self,
        gateway: str,
        *,
        port: int = NATPMP_PORT,
        initial_timeout: float = INITIAL_TIMEOUT,
        attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.gateway = gateway
        self.port = port
        self.initial_timeout = initial_timeout
        self.attempts = attempts

    def _exchange(self, request: bytes) -> bytes:
        timeout = self.initial_timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((self.gateway, self.port))
            for _ in range(self.attempts):
                sock.send(request)
                sock.settimeout(timeout)
                try:
                    data = sock.recv(MAX_RESPONSE)
                except TimeoutError:
                    timeout *= 2
                    continue
                except OSError as exc:
                    reason = os.strerror(exc.errno or 0)
                    raise RouterUnreachable(
                        f"NAT-PMP to {self.gateway}:{self.port} failed: {reason}"
                    ) from exc
                if len(data) >= 2 and data[1] == request[1] + 128:
                    return data
        raise RouterUnreachable(
            f"no NAT-PMP answer from {self.gateway}:{self.port} after {self.attempts} tries "
            "(the router does not speak NAT-PMP, or it is switched off)"
        )

    def external_address(self) -> ExternalAddress:
        return decode_external_address_response(self._exchange(encode_external_address_request()))

    def map(self, protocol: str, internal_port: int, external_port: int, lifetime: int) -> Mapping:
        request = encode_mapping_request(protocol, internal_port, external_port, lifetime)
        return decode_mapping_response(self._exchange(request), protocol)

    def unmap(self, protocol: str, internal_port: int) -> None:
        self.map(protocol, internal_port, 0, 0)
