"""What a TLS client offers in its ClientHello: the server name (SNI) and the ALPN protocols.

TLS-ALPN-01 (RFC 8737 section 3) needs both before the certificate is chosen: the validation
certificate goes only to a handshake that names the host *and* offers the ``acme-tls/1``
protocol; every other handshake naming the host (a phone) gets the real certificate. Python's
SNI callback sees the name but not the ALPN list, so the edge reads the ClientHello bytes
itself (:class:`natsync.cert.acme_responders.HelloPeekingSSLObject`) and asks this parser.

Sans-I/O: bytes in (the start of what the client sent), :class:`ClientHello` out, or
:data:`INCOMPLETE` when more bytes are needed, or :class:`ClientHelloError` when it is not a
ClientHello this parser understands (the caller then falls back to SNI alone). Record layer:
RFC 8446 section 5.1 (and RFC 5246 section 6.2.1); ClientHello: RFC 8446 section 4.1.2;
server_name: RFC 6066 section 3; ALPN: RFC 7301 section 3.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from natsync.errors import NatsyncError

#: TLS record content type "handshake" and handshake type "client_hello".
HANDSHAKE = 22
CLIENT_HELLO = 1
#: Extension numbers (IANA TLS ExtensionType values).
EXT_SERVER_NAME = 0
EXT_ALPN = 16
#: A ClientHello longer than this is not read (with post-quantum key shares they reach ~2 KB;
#: a record holds at most 2^14 bytes, RFC 8446 section 5.1).
MAX_HELLO = 1 << 16


class ClientHelloError(NatsyncError):
    """The bytes are not a ClientHello this parser can read."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None
    alpn: tuple[str, ...]


class _Incomplete:
    def __repr__(self) -> str:
        return "INCOMPLETE"


#: More bytes are needed before the ClientHello can be read.
INCOMPLETE = _Incomplete()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ClientHelloError("the ClientHello ends inside a field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _handshake_bytes(data: bytes) -> bytes | _Incomplete:
    """The handshake message carried by the leading records of *data*, once whole."""
    message = b""
    pos = 0
    while True:
        if len(data) - pos < 5:
            return INCOMPLETE
        if data[pos] != HANDSHAKE:
            raise ClientHelloError("not a TLS handshake record")
        if data[pos + 1] != 3:
            raise ClientHelloError("not a TLS record version")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > 1 << 14:
            raise ClientHelloError("a TLS record length out of range")
        if len(data) - pos - 5 < length:
            return INCOMPLETE
        message += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                raise ClientHelloError("the first handshake message is not a ClientHello")
            whole = 4 + int.from_bytes(message[1:4], "big")
            if whole > MAX_HELLO:
                raise ClientHelloError("the ClientHello is too long")
            if len(message) >= whole:
                return message[4:whole]


def parse_client_hello(data: bytes) -> ClientHello | _Incomplete:
    """The server name and ALPN protocols offered by the ClientHello at the start of *data*."""
    body = _handshake_bytes(data)
    if isinstance(body, _Incomplete):
        return body
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.done:  # no extensions at all (old clients)
        return ClientHello(None, ())
    extensions = _Reader(r.vector(2))
    name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while not extensions.done:
        kind = extensions.number(2)
        value = _Reader(extensions.vector(2))
        if kind in seen:  # RFC 8446 section 4.2: at most one of each type
            raise ClientHelloError(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == EXT_SERVER_NAME:
            names = _Reader(value.vector(2))
            while not names.done:
                name_type = names.number(1)
                host = names.vector(2)
                if name_type == 0 and name is None:
                    try:
                        name = host.decode("ascii").lower().rstrip(".")
                    except UnicodeDecodeError:
                        raise ClientHelloError("the server name is not ASCII") from None
        elif kind == EXT_ALPN:
            protocols = _Reader(value.vector(2))
            found: list[str] = []
            while not protocols.done:
                protocol = protocols.vector(1)
                if not protocol:
                    raise ClientHelloError("an empty ALPN protocol name")
                found.append(protocol.decode("latin-1"))
            alpn = tuple(found)
    return ClientHello(name or None, alpn)


__all__ = ["INCOMPLETE", "ClientHello", "ClientHelloError", "parse_client_hello"]
