"""Answering ACME challenges: one store of pending challenges, and two tiny loopback-capable
responders that serve from it (HTTP-01, RFC 8555 section 8.3; TLS-ALPN-01, RFC 8737).

The store is the interface the edge serves from, too. How the edge plugs in:

- HTTP-01: for a request ``GET /.well-known/acme-challenge/<token>`` on port 80, call
  :func:`http01_answer` with the path: it returns the body to send (``200``,
  ``Content-Type: application/octet-stream``) or None (answer ``404``). No other path is
  touched, and the answer needs no TLS.
- TLS-ALPN-01: in the edge's ``SSLContext.sni_callback``, call
  ``store.alpn_context_for(server_name)``; when it returns a context, set
  ``ssl_object.context`` to it. That context presents the challenge certificate and offers
  only ALPN ``acme-tls/1``. (Python's ``sni_callback`` cannot see the client's ALPN list, so
  while a challenge for a name is pending, i.e. the few seconds of a validation, ordinary
  clients naming it get the challenge certificate and fail; the challenge is removed as soon
  as the authorization is decided.)

The ACME client (:mod:`natsync.cert.acme`) puts a challenge in before telling the server to
validate, and removes it once the authorization is valid or invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from natsync.cert.jose import ACME_TLS_ALPN, alpn_certificate

log = logging.getLogger(__name__)

#: RFC 8555 section 8.3: the path prefix HTTP-01 validation requests use.
HTTP01_PREFIX = "/.well-known/acme-challenge/"
#: Longest request head the HTTP-01 responder reads: a validation request is ~200 bytes.
MAX_REQUEST_HEAD = 8192
#: Seconds a client may take to send its request head (a stalled peer is dropped).
REQUEST_TIMEOUT = 10.0
#: Tokens are base64url (RFC 8555 section 8.3); anything else in the path is refused.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class AlpnChallenge:
    """The certificate (PEM) and key (PEM) that answer TLS-ALPN-01 for one name."""

    cert_pem: bytes
    key_pem: bytes
    context: ssl.SSLContext


def alpn_server_name(identifier: str) -> str:
    """The SNI a validator sends for *identifier*: the name itself, or for an address its
    reverse-DNS name (RFC 8738 section 6)."""
    try:
        return ipaddress.ip_address(identifier).reverse_pointer.lower()
    except ValueError:
        return identifier.lower().rstrip(".")


class ChallengeStore:
    """Pending challenges: HTTP-01 tokens and TLS-ALPN-01 certificates by name. Thread-safe,
    so a responder on another thread or in the edge process can serve while the client runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: dict[str, str] = {}
        self._alpn: dict[str, AlpnChallenge] = {}

    # HTTP-01
    def put(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._http[token] = key_authorization

    def get(self, token: str) -> str | None:
        with self._lock:
            return self._http.get(token)

    def remove(self, token: str) -> None:
        with self._lock:
            self._http.pop(token, None)

    # TLS-ALPN-01
    def put_alpn(self, identifier: str, key_authorization: str, now: dt.datetime) -> None:
        cert, key = alpn_certificate(identifier, key_authorization, now)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        context = _alpn_context(cert_pem, key_pem)
        with self._lock:
            self._alpn[alpn_server_name(identifier)] = AlpnChallenge(cert_pem, key_pem, context)

    def alpn_certificate_for(self, name: str) -> tuple[bytes, bytes] | None:
        """(certificate PEM, key PEM) answering TLS-ALPN-01 for SNI *name*, if pending."""
        with self._lock:
            found = self._alpn.get(name.lower().rstrip("."))
        return (found.cert_pem, found.key_pem) if found else None

    def alpn_context_for(self, name: str | None) -> ssl.SSLContext | None:
        if not name:
            return None
        with self._lock:
            found = self._alpn.get(name.lower().rstrip("."))
        return found.context if found else None

    def remove_alpn(self, identifier: str) -> None:
        with self._lock:
            self._alpn.pop(alpn_server_name(identifier), None)


def _alpn_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context presenting the challenge certificate with ALPN acme-tls/1 only.

    ``load_cert_chain`` reads only files: the PEMs go through a private temporary directory
    that is removed at once.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8737 section 4: TLS 1.2 or later
    context.set_alpn_protocols([ACME_TLS_ALPN])
    with tempfile.TemporaryDirectory(prefix="natsync-alpn-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def http01_answer(store: ChallengeStore, path: str) -> bytes | None:
    """The body answering an HTTP-01 validation GET for *path*, or None (404)."""
    if not path.startswith(HTTP01_PREFIX):
        return None
    token = path[len(HTTP01_PREFIX) :].split("?", 1)[0]
    if not token or not set(token) <= _TOKEN_CHARS:
        return None
    answer = store.get(token)
    return answer.encode("ascii") if answer is not None else None


async def _serve_http01(
    store: ChallengeStore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    body: bytes | None = None
    if len(parts) == 3 and parts[0] in ("GET", "HEAD"):
        body = http01_answer(store, parts[1])
    if body is None:
        status, body = "404 Not Found", b"no such challenge\n"
    else:
        status = "200 OK"
    log.info("HTTP-01 %s -> %s", request_line, status)
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
        + (body if parts[0] != "HEAD" else b"")
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


async def start_http01_responder(
    store: ChallengeStore, host: str = "127.0.0.1", port: int = 80
) -> asyncio.Server:
    """Serve HTTP-01 answers from *store* on *host*:*port* (standalone, when no edge runs)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_http01(store, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)


async def start_tls_alpn01_responder(
    store: ChallengeStore, host: str = "127.0.0.1", port: int = 443
) -> asyncio.Server:
    """Answer TLS-ALPN-01 handshakes from *store* on *host*:*port*; other names get no
    certificate (the handshake fails), and nothing is served after the handshake."""
    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.set_alpn_protocols([ACME_TLS_ALPN])

    def pick(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        context = store.alpn_context_for(name)
        if context is None:
            log.info("TLS-ALPN-01: no challenge pending for %r", name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = context
        return None

    base.sni_callback = pick

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(reader.read(1), REQUEST_TIMEOUT)
        writer.close()

    return await asyncio.start_server(handle, host, port, ssl=base)
