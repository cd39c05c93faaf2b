"""STUN Binding (RFC 8489, compatible with RFC 5389): the codec (sans-I/O) and a UDP query.

We send a Binding request and read XOR-MAPPED-ADDRESS (RFC 8489 section 14.2) from the success
response, falling back to MAPPED-ADDRESS (section 14.1) for RFC 3489-era servers. The
transaction ID is an argument so the codec stays deterministic in tests.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from enum import IntEnum

from natsync.config import port_of
from natsync.ddns.errors import SourceError
from natsync.portmap.netinfo import IPAddress

#: RFC 8489 section 5: the magic cookie, fixed in every message.
MAGIC_COOKIE = 0x2112A442
#: RFC 8489 section 5: 20-byte header, 96-bit transaction ID.
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12
#: RFC 8489 section 6.2.1: first retransmission after RTO (500 ms recommended), doubling. We
#: keep three attempts (3.5 s) because a configured list holds more servers to try.
INITIAL_RTO = 0.5
MAX_ATTEMPTS = 3
#: Largest answer read; a Binding success response is well under 548 bytes (section 6.1).
MAX_MESSAGE = 1500
#: Default STUN port (RFC 8489 section 9).
DEFAULT_PORT = 3478


class MessageType(IntEnum):
    """RFC 8489 section 5 / 18.2: Binding method, request and response classes."""

    BINDING_REQUEST = 0x0001
    BINDING_SUCCESS = 0x0101
    BINDING_ERROR = 0x0111


class Attribute(IntEnum):
    """RFC 8489 section 18.3: the attributes we read."""

    MAPPED_ADDRESS = 0x0001
    ERROR_CODE = 0x0009
    XOR_MAPPED_ADDRESS = 0x0020


class Family(IntEnum):
    """RFC 8489 section 14.1: address family in (XOR-)MAPPED-ADDRESS."""

    IPV4 = 0x01
    IPV6 = 0x02


def new_transaction_id() -> bytes:
    return os.urandom(TRANSACTION_ID_SIZE)


def encode_binding_request(transaction_id: bytes) -> bytes:
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise ValueError("a STUN transaction ID is 12 bytes")
    return struct.pack("!HHI", MessageType.BINDING_REQUEST, 0, MAGIC_COOKIE) + transaction_id


def _address(value: bytes, xor: bool, transaction_id: bytes) -> tuple[IPAddress, int]:
    if len(value) < 4:
        raise SourceError("STUN address attribute too short")
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if family == Family.IPV4 and len(raw) == 4:
        mask = struct.pack("!I", MAGIC_COOKIE)
    elif family == Family.IPV6 and len(raw) == 16:
        mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    else:
        raise SourceError(f"STUN address attribute with family {family} and {len(raw)} bytes")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    return ipaddress.ip_address(raw), port


def decode_binding_response(data: bytes, transaction_id: bytes) -> tuple[IPAddress, int]:
    """(address, port) the server saw us from; raises SourceError for anything else."""
    if len(data) < HEADER_SIZE:
        raise SourceError(f"STUN answer too short ({len(data)} bytes)")
    mtype, length, cookie = struct.unpack_from("!HHI", data)
    if mtype & 0xC000 or cookie != MAGIC_COOKIE or data[8:HEADER_SIZE] != transaction_id:
        raise SourceError("not a STUN answer to our request (cookie or transaction ID differs)")
    if HEADER_SIZE + length > len(data) or length % 4:
        raise SourceError("STUN answer length does not match its header")
    attributes: dict[int, bytes] = {}
    offset = HEADER_SIZE
    end = HEADER_SIZE + length
    while offset + 4 <= end:
        atype, alen = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4 : offset + 4 + alen]
        if len(value) != alen:
            raise SourceError("STUN attribute runs past the end of the message")
        attributes.setdefault(atype, value)
        offset += 4 + alen + (-alen % 4)
    if mtype == MessageType.BINDING_ERROR:
        error = attributes.get(Attribute.ERROR_CODE, b"")
        code = (error[2] & 0x07) * 100 + error[3] if len(error) >= 4 else 0
        reason = error[4:].decode("utf-8", "replace")
        raise SourceError(f"STUN server answered error {code} {reason}".strip())
    if mtype != MessageType.BINDING_SUCCESS:
        raise SourceError(f"unexpected STUN message type {mtype:#06x}")
    if Attribute.XOR_MAPPED_ADDRESS in attributes:
        return _address(attributes[Attribute.XOR_MAPPED_ADDRESS], True, transaction_id)
    if Attribute.MAPPED_ADDRESS in attributes:
        return _address(attributes[Attribute.MAPPED_ADDRESS], False, transaction_id)
    raise SourceError("STUN answer carries no mapped address")


def parse_server(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(DEFAULT_PORT)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        return text, DEFAULT_PORT
    number = port_of(port)
    if not number:
        raise SourceError(f"STUN server {text!r}: the port is not a number from 1 to 65535")
    return host, number


def query(server: str, family: int = socket.AF_INET, attempts: int = MAX_ATTEMPTS) -> IPAddress:
    """Ask one STUN server which address it sees us from (the I/O adapter)."""
    host, port = parse_server(server)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise SourceError(f"STUN server {server}: cannot resolve ({exc})") from exc
    sockaddr = infos[0][4]
    transaction_id = new_transaction_id()
    request = encode_binding_request(transaction_id)
    rto = INITIAL_RTO
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            raise SourceError(f"STUN server {server}: {exc.strerror}") from exc
        for _ in range(attempts):
            sock.send(request)
            sock.settimeout(rto)
            try:
                data = sock.recv(MAX_MESSAGE)
            except TimeoutError:
                rto *= 2
                continue
            except OSError as exc:
                raise SourceError(f"STUN server {server}: {exc.strerror}") from exc
            try:
                return decode_binding_response(data, transaction_id)[0]
            except SourceError:
                if data[8:HEADER_SIZE] != transaction_id:
                    continue  # a stray or late answer to an earlier request
                raise
    raise SourceError(f"STUN server {server} did not answer after {attempts} tries")
