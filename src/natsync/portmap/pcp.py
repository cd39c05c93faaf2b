"""PCP (RFC 6887), the MAP and PEER opcodes: the codec (sans-I/O) and a small blocking UDP
client.

PCP is NAT-PMP's successor on the same gateway port (5351). A MAP request asks for an inbound
mapping and the answer carries the assigned external port *and address*, so PCP is both a
port-mapping backend and an address source. A PEER request (section 12) names one remote peer:
it creates or extends the mapping of a single outbound flow, which lets in that peer only.
natsync's servers need MAP (anyone may connect), and no part sends PEER: the codec and
:meth:`PcpClient.peer` are here, tested against Debian's miniupnpd, whose nftables backend
creates a PEER mapping over IPv4 but cannot delete it and refuses PEER over IPv6 (why natsync
keeps to MAP: docs/ipv6.md, "PCP MAP, not PEER").

A mapping is identified by a 96-bit nonce that must match when it is renewed or deleted
(section 11.1); we derive it from /etc/machine-id and the mapping, so ``natsync portmap remove``
in a later process can delete what ``add`` created, without storing state. An off-path
attacker cannot guess it (machine-id is not on the wire).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable

#: RFC 6887 section 19.1: the server port, shared with NAT-PMP.
PCP_PORT = 5351
#: RFC 6887 section 9: version 2 (NAT-PMP servers answer version 0, "unsupported version").
PCP_VERSION = 2
#: RFC 6887 section 8.1.1 starts retransmitting at 3 s; a LAN gateway answers in milliseconds,
#: so we use NAT-PMP's 250 ms schedule (RFC 6886 section 3.1) and stop after four tries.
INITIAL_TIMEOUT = 0.25
MAX_ATTEMPTS = 4
#: Header (24) + MAP body (36), section 11.1; answers of other opcodes or with options are longer
#: but capped by the 1100-byte maximum PCP message (section 7).
MAP_SIZE = 60
#: Header (24) + PEER body (56), section 12.1: the MAP fields, then the remote peer's port and
#: address.
PEER_SIZE = 80
MAX_MESSAGE = 1100
NONCE_SIZE = 12
MACHINE_ID = Path("/etc/machine-id")


class PcpOpcode(IntEnum):
    """RFC 6887 section 19.2."""

    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class PcpResult(IntEnum):
    """RFC 6887 section 7.4: result codes."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


RESULT_WORDS: dict[int, str] = {
    PcpResult.UNSUPP_VERSION: "the router does not speak PCP version 2",
    PcpResult.NOT_AUTHORIZED: (
        "the router refused: PCP mapping is not allowed for this port or this client "
        "(check the router's port-mapping permissions)"
    ),
    PcpResult.MALFORMED_REQUEST: "the router could not parse the PCP request",
    PcpResult.UNSUPP_OPCODE: "the router does not support PCP MAP",
    PcpResult.NETWORK_FAILURE: (
        "the router has no usable public address (its WAN side is down, or its own address is "
        "private: carrier-grade or double NAT, so port forwarding cannot work here)"
    ),
    PcpResult.NO_RESOURCES: "the router has no room for more mappings",
    PcpResult.UNSUPP_PROTOCOL: "the router cannot map this protocol",
    PcpResult.USER_EX_QUOTA: "this computer has used up its quota of mappings on the router",
    PcpResult.CANNOT_PROVIDE_EXTERNAL: (
        "the router refused: the requested external port is taken or not allowed"
    ),
    PcpResult.ADDRESS_MISMATCH: (
        "the router sees this computer at another address than the request says (another NAT "
        "between this computer and the router?)"
    ),
}

_PROTOCOLS = {"tcp": 6, "udp": 17}


def result_words(code: int) -> str:
    return RESULT_WORDS.get(code, f"the router answered with PCP result code {code}")


def _mapped(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{ip}").packed
    return ip.packed


def _unmapped(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.IPv6Address(raw)
    return ip.ipv4_mapped or ip


@dataclass(frozen=True, slots=True)
class PcpMapping:
    protocol: str
    internal_port: int
    external_port: int
    external_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    lifetime: int
    epoch: int


def encode_map_request(
    nonce: bytes,
    protocol: str,
    internal_port: int,
    external_port: int,
    lifetime: int,
    client_address: str,
) -> bytes:
    """A MAP request (sections 7.1 and 11.1); lifetime 0 deletes the mapping."""
    if len(nonce) != NONCE_SIZE:
        raise PortMapError("a PCP nonce is 12 bytes")
    if protocol.lower() not in _PROTOCOLS:
        raise PortMapError(f"protocol must be tcp or udp, not {protocol!r}")
    header = struct.pack("!BBHI", PCP_VERSION, PcpOpcode.MAP, 0, lifetime) + _mapped(client_address)
    any_address = _mapped("0.0.0.0" if ":" not in client_address else "::")  # noqa: S104
    body = (
        nonce
        + struct.pack("!B3xHH", _PROTOCOLS[protocol.lower()], internal_port, external_port)
        + any_address
    )
    return header + body


def encode_peer_request(
    nonce: bytes,
    protocol: str,
    internal_port: int,
    lifetime: int,
    client_address: str,
    peer_address: str,
    peer_port: int,
    external_port: int = 0,
    external_address: str = "",
) -> bytes:
    """A PEER request (section 12.1) for the flow from *internal_port* to the remote peer. A new
    one suggests no external port or address; a renewal or a delete (lifetime 0, section 15)
    suggests the ones assigned (section 12.3; miniupnpd finds the mapping to delete by them)."""
    try:
        peer, client = ipaddress.ip_address(peer_address), ipaddress.ip_address(client_address)
    except ValueError as exc:
        raise PortMapError(f"a PCP PEER request needs addresses: {exc}") from exc
    if peer.version != client.version:
        raise PortMapError("a PCP PEER request names a peer of the client's own address family")
    if not 0 < peer_port <= 65535:
        raise PortMapError("a PCP PEER request names the remote peer's port (1-65535)")
    start = encode_map_request(
        nonce, protocol, internal_port, external_port, lifetime, client_address
    )
    header = start[:1] + bytes([PcpOpcode.PEER]) + start[2:44]
    suggested = _mapped(external_address) if external_address else start[44:60]
    return header + suggested + struct.pack("!H2x", peer_port) + _mapped(peer_address)


def _check_answer(data: bytes, opcode: PcpOpcode, size: int) -> None:
    """Raise unless *data* is a successful PCP answer to *opcode* of at least *size* bytes."""
    if len(data) < 4:
        raise PortMapError(f"PCP answer too short ({len(data)} bytes)")
    version, answered, _, result = struct.unpack_from("!BBBB", data)
    if version == 0:
        raise RouterUnreachable("the router speaks NAT-PMP only, not PCP (use --method natpmp)")
    if version != PCP_VERSION or answered != 0x80 | opcode:
        raise PortMapError(
            f"not a PCP {opcode.name} answer (version {version}, opcode {answered:#x})"
        )
    if result == PcpResult.UNSUPP_OPCODE:
        raise MappingRefused(f"the router does not support PCP {opcode.name}", code=result)
    if result != PcpResult.SUCCESS:
        raise MappingRefused(result_words(result), code=result)
    if len(data) < size:
        raise PortMapError(f"PCP {opcode.name} answer too short ({len(data)} bytes)")


def decode_peer_response(
    data: bytes, nonce: bytes, protocol: str, peer_address: str, peer_port: int
) -> PcpMapping:
    """The PEER answer (section 12.2): the flow's external address and port, its lifetime."""
    _check_answer(data, PcpOpcode.PEER, PEER_SIZE)
    mapping = _decode_mapping(data, nonce, protocol)
    (port,) = struct.unpack_from("!H", data, 60)
    if port != peer_port or _unmapped(data[64:80]) != ipaddress.ip_address(peer_address):
        raise PortMapError("PCP PEER answer names another remote peer")
    return mapping


def decode_map_response(data: bytes, nonce: bytes, protocol: str) -> PcpMapping:
    _check_answer(data, PcpOpcode.MAP, MAP_SIZE)
    return _decode_mapping(data, nonce, protocol)


def _decode_mapping(data: bytes, nonce: bytes, protocol: str) -> PcpMapping:
    """The fields MAP and PEER answers share (sections 11.1 and 12.1)."""
    lifetime, epoch = struct.unpack_from("!II", data, 4)
    if data[24:36] != nonce:
        raise PortMapError("PCP answer carries another mapping's nonce")
    proto, internal, external = struct.unpack_from("!B3xHH", data, 36)
    if proto != _PROTOCOLS.get(protocol.lower()):
        raise PortMapError(f"PCP answer is for protocol {proto}, not {protocol}")
    return PcpMapping(protocol.lower(), internal, external, _unmapped(data[44:60]), lifetime, epoch)


def mapping_nonce(protocol: str, internal_port: int, client_address: str) -> bytes:
    """The nonce of one mapping: stable across processes on this machine, unguessable off it."""
    try:
        secret = MACHINE_ID.read_bytes().strip()
    except OSError:
        secret = b""
    if not secret:
        return os.urandom(NONCE_SIZE)
    message = f"natsync-pcp|{protocol.lower()}|{internal_port}|{client_address}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[:NONCE_SIZE]


class PcpClient:
    """Blocking PCP client for one gateway; the one place this module touches sockets."""

    def __init__(
        self,
        gateway: str,
        *,
        port: int = PCP_PORT,
        initial_timeout: float = INITIAL_TIMEOUT,
        attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.gateway = gateway
        self.port = port
        self.initial_timeout = initial_timeout
        self.attempts = attempts

    @property
    def family(self) -> socket.AddressFamily:
        """IPv6 toward an IPv6 gateway: RFC 6887 section 8.1, the PCP client's address in the
        request must be the packet's source (the address whose port is opened)."""
        return socket.AF_INET6 if ":" in self.gateway else socket.AF_INET

    def _target(self) -> tuple[object, ...]:
        info = socket.getaddrinfo(self.gateway, self.port, self.family, socket.SOCK_DGRAM)
        return tuple(info[0][4])

    def client_address(self) -> str:
        with socket.socket(self.family, socket.SOCK_DGRAM) as sock:
            sock.connect(self._target())
            return str(sock.getsockname()[0]).split("%", maxsplit=1)[0]

    def _client(self) -> str:
        try:
            return self.client_address()
        except OSError as exc:  # no route to the gateway (e.g. no IPv6 route): nothing to ask
            raise RouterUnreachable(
                f"PCP to {self.gateway}:{self.port}: {exc.strerror or exc} (no route to the router)"
            ) from exc

    def map(
        self, protocol: str, internal_port: int, external_port: int, lifetime: int
    ) -> PcpMapping:
        client = self._client()
        nonce = mapping_nonce(protocol, internal_port, client)
        request = encode_map_request(
            nonce, protocol, internal_port, external_port, lifetime, client
        )
        return self._ask(request, nonce, lambda data: decode_map_response(data, nonce, protocol))

    def peer(
        self,
        protocol: str,
        internal_port: int,
        peer_address: str,
        peer_port: int,
        lifetime: int,
        assigned: PcpMapping | None = None,
    ) -> PcpMapping:
        """Create the mapping of the flow from *internal_port* to the remote peer (section 12),
        or renew or (lifetime 0) delete the one *assigned* earlier."""
        client = self._client()
        nonce = mapping_nonce(f"{protocol}|peer|{peer_address}|{peer_port}", internal_port, client)
        request = encode_peer_request(
            nonce, protocol, internal_port, lifetime, client, peer_address, peer_port,
            assigned.external_port if assigned else 0,
            str(assigned.external_address) if assigned else "",
        )  # fmt: skip
        return self._ask(
            request,
            nonce,
            lambda data: decode_peer_response(data, nonce, protocol, peer_address, peer_port),
        )

    def _ask(
        self, request: bytes, nonce: bytes, decode: Callable[[bytes], PcpMapping]
    ) -> PcpMapping:
        """Send *request* with retransmissions (section 8.1.1) until an answer to it comes."""
        timeout = self.initial_timeout
        with socket.socket(self.family, socket.SOCK_DGRAM) as sock:
            sock.connect(self._target())
            for _ in range(self.attempts):
                sock.send(request)
                sock.settimeout(timeout)
                try:
                    data = sock.recv(MAX_MESSAGE)
                except TimeoutError:
                    timeout *= 2
                    continue
                except OSError as exc:
                    raise RouterUnreachable(
                        f"PCP to {self.gateway}:{self.port} failed: {exc.strerror}"
                    ) from exc
                if len(data) >= 36 and data[0] == PCP_VERSION and data[24:36] != nonce:
                    continue  # an answer to an earlier or another request
                return decode(data)
        raise RouterUnreachable(
            f"no PCP answer from {self.gateway}:{self.port} after {self.attempts} tries "
            "(the router does not speak PCP, or it is switched off)"
        )

    def unmap(self, protocol: str, internal_port: int) -> None:
        self.map(protocol, internal_port, 0, 0)
