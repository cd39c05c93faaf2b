"""Answering ACME challenges: one store of pending challenges, and two tiny loopback-capable
responders that serve from it (HTTP-01, RFC 8555 section 8.3; TLS-ALPN-01, RFC 8737).

The store is the interface the edge serves from, too. How the edge plugs in:

- HTTP-01: for a request ``GET /.well-known/acme-challenge/<token>`` on port 80, call
  :func:`http01_answer` with the path: it returns the body to send (``200``,
  ``Content-Type: application/octet-stream``) or None (answer ``404``). No other path is
  touched, and the answer needs no TLS.
- TLS-ALPN-01 (RFC 8737 section 3): the listening context's ``sslobject_class`` is (or
  derives from) :class:`HelloPeekingSSLObject`, which reads the client's ClientHello before
  OpenSSL does; in the ``sni_callback``, when :func:`offers_acme_tls` says the handshake
  offers ALPN ``acme-tls/1``, call ``store.alpn_context_for(server_name)`` and, when it returns
  a context, set ``ssl_object.context`` to it. That context presents the validation
  certificate (with the critical acmeIdentifier extension) and selects ``acme-tls/1``. Every
  other handshake naming the host, a phone's, gets the real certificate, even during a
  validation.

The ACME client (:mod:`natsync.cert.acme`) puts a challenge in before telling the server to
validate, and removes it once the authorization is valid or invalid.

When the certificate manager and the edge run in different processes, both make a store on the
same *spool* directory (``edge.challenge_dir``): the writer also leaves each challenge there as
a file (``http-01/<token>``, ``tls-alpn-01/<name>``, mode 0600), and the reader looks there
when its memory has nothing. The TLS-ALPN-01 directory is read again only when its
modification time changes, so a handshake costs one ``stat``.
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
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives import serialization

from natsync.cert.client_hello import INCOMPLETE, ClientHello, ClientHelloError, parse_client_hello
from natsync.cert.jose import ACME_TLS_ALPN, alpn_certificate
from natsync.errors import NatsyncError

log = logging.getLogger(__name__)

#: RFC 8555 section 8.3: the path prefix HTTP-01 validation requests use.
HTTP01_PREFIX = "/.well-known/acme-challenge/"
#: Longest request head the HTTP-01 responder reads: a validation request is ~200 bytes.
MAX_REQUEST_HEAD = 8192
#: Seconds a client may take to send its request head (a stalled peer is dropped).
REQUEST_TIMEOUT = 10.0
#: Longest token accepted (RFC 8555 section 8.3 asks for 128 bits of entropy, ~43 characters).
MAX_TOKEN = 256
#: Longest key authorization read back from the spool (token "." 43-character thumbprint).
MAX_KEY_AUTHORIZATION = 512
#: Longest spooled TLS-ALPN-01 certificate + key file.
MAX_SPOOLED_PEM = 16 * 1024
#: Spool subdirectories.
HTTP_SPOOL = "http-01"
ALPN_SPOOL = "tls-alpn-01"
#: Host header characters accepted when building the HTTPS redirect (a name or an address).
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
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


def _valid_token(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN and set(token) <= _TOKEN_CHARS


class ChallengeStore:
    """Pending challenges: HTTP-01 tokens and TLS-ALPN-01 certificates by name. Thread-safe,
    so a responder on another thread or in the edge process can serve while the client runs;
    with a *spool* directory, also across processes (see the module text)."""

    def __init__(self, spool: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._http: dict[str, str] = {}
        self._alpn: dict[str, AlpnChallenge] = {}
        self.spool = spool
        self._spooled_alpn: dict[str, AlpnChallenge] = {}
        self._spool_mtime = -1
        if spool is not None:
            for sub in (HTTP_SPOOL, ALPN_SPOOL):
                (spool / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def _spool_write(self, sub: str, name: str, data: bytes) -> None:
        if self.spool is None:
            return
        path = self.spool / sub / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def _spool_remove(self, sub: str, name: str) -> None:
        if self.spool is not None:
            (self.spool / sub / name).unlink(missing_ok=True)

    # HTTP-01
    def put(self, token: str, key_authorization: str) -> None:
        if not _valid_token(token):
            raise NatsyncError(
                f"the ACME server sent a challenge token that is not base64url: {token[:80]!r}"
            )
        with self._lock:
            self._http[token] = key_authorization
        self._spool_write(HTTP_SPOOL, token, key_authorization.encode("ascii"))

    def get(self, token: str) -> str | None:
        with self._lock:
            found = self._http.get(token)
        if found is None and self.spool is not None and _valid_token(token):
            try:
                data = (self.spool / HTTP_SPOOL / token).read_bytes()[:MAX_KEY_AUTHORIZATION]
            except OSError:
                return None
            found = data.decode("ascii", "replace")
        return found

    def remove(self, token: str) -> None:
        with self._lock:
            self._http.pop(token, None)
        if _valid_token(token):
            self._spool_remove(HTTP_SPOOL, token)

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
        name = alpn_server_name(identifier)
        with self._lock:
            self._alpn[name] = AlpnChallenge(cert_pem, key_pem, context)
        self._spool_write(ALPN_SPOOL, name, cert_pem + key_pem)

    def _find_alpn(self, name: str) -> AlpnChallenge | None:
        name = name.lower().rstrip(".")
        with self._lock:
            found = self._alpn.get(name)
        if found is None and self.spool is not None:
            found = self._spooled().get(name)
        return found

    def _spooled(self) -> dict[str, AlpnChallenge]:
        """The spool's TLS-ALPN-01 challenges, read again when the directory changed."""
        assert self.spool is not None
        directory = self.spool / ALPN_SPOOL
        try:
            mtime = directory.stat().st_mtime_ns
        except OSError:
            return {}
        with self._lock:
            if mtime == self._spool_mtime:
                return self._spooled_alpn
        found: dict[str, AlpnChallenge] = {}
        for path in directory.iterdir():
            if path.name.startswith("."):
                continue
            try:
                data = path.read_bytes()[:MAX_SPOOLED_PEM]
                cut = data.index(b"-----BEGIN PRIVATE KEY-----")
                cert_pem, key_pem = data[:cut], data[cut:]
                found[path.name] = AlpnChallenge(
                    cert_pem, key_pem, _alpn_context(cert_pem, key_pem)
                )
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("ignoring spooled TLS-ALPN-01 challenge %s: %s", path, exc)
        with self._lock:
            self._spooled_alpn, self._spool_mtime = found, mtime
        return found

    def alpn_certificate_for(self, name: str) -> tuple[bytes, bytes] | None:
        """(certificate PEM, key PEM) answering TLS-ALPN-01 for SNI *name*, if pending."""
        found = self._find_alpn(name)
        return (found.cert_pem, found.key_pem) if found else None

    def alpn_context_for(self, name: str | None) -> ssl.SSLContext | None:
        if not name:
            return None
        found = self._find_alpn(name)
        return found.context if found else None

    def remove_alpn(self, identifier: str) -> None:
        name = alpn_server_name(identifier)
        with self._lock:
            self._alpn.pop(name, None)
        self._spool_remove(ALPN_SPOOL, name)


class HelloPeekingSSLObject(ssl.SSLObject):
    """A server-side ``SSLObject`` that reads the ClientHello from its incoming memory BIO
    before OpenSSL does, putting the bytes back unchanged, so that the SNI callback can see
    the ALPN protocols the client offers (``client_hello``; RFC 8737 section 3 serves the
    validation certificate only to a handshake offering ``acme-tls/1``).

    asyncio's and uvloop's TLS transports write what arrives into the BIO and then call
    ``do_handshake``; after a call that needs more data OpenSSL has consumed everything in the
    BIO, so the bytes seen so far plus what the BIO holds now are the client's stream from its
    first byte. Peeking stops once the ClientHello is read (or found unreadable: then
    ``client_hello`` stays None and the caller decides by SNI alone).
    """

    client_hello: ClientHello | None = None

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Self:
        obj: Self = super()._create(*args, **kwargs)  # type: ignore[misc]
        server_side = kwargs.get("server_side", args[2] if len(args) > 2 else False)
        if server_side:
            incoming = kwargs.get("incoming", args[0] if args else None)
            vars(obj).update(_hello_bio=incoming, _hello_seen=b"")
        return obj

    def do_handshake(self) -> None:
        bio = vars(self).get("_hello_bio")
        if bio is not None:
            self._peek_hello(bio)
        super().do_handshake()

    def _peek_hello(self, bio: ssl.MemoryBIO) -> None:
        pending = bio.read()
        if pending:
            try:
                bio.write(pending)
            except ssl.SSLError:  # the peer's EOF came with it: the connection is ending
                vars(self)["_hello_bio"] = None
                return
        seen = vars(self)["_hello_seen"] + pending
        try:
            hello = parse_client_hello(seen)
        except ClientHelloError as exc:
            log.debug("ClientHello not readable (%s): choosing by SNI alone", exc.message)
            vars(self)["_hello_bio"] = None
            return
        if hello is INCOMPLETE:
            vars(self)["_hello_seen"] = seen
            return
        assert isinstance(hello, ClientHello)
        vars(self).update(client_hello=hello, _hello_bio=None, _hello_seen=b"")


def offers_acme_tls(sslobj: Any) -> bool:
    """Whether the handshake of *sslobj* offers ALPN ``acme-tls/1`` (RFC 8737 section 3).
    Unknown (the ClientHello could not be read): True, so that a validation still works."""
    hello = getattr(sslobj, "client_hello", None)
    if hello is None:
        return True
    return ACME_TLS_ALPN in hello.alpn


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
    if not _valid_token(token):
        return None
    answer = store.get(token)
    return answer.encode("ascii") if answer is not None else None


def https_redirect(head: bytes, https_port: int) -> str | None:
    """The ``Location`` for a plain-HTTP request: the same host and path on HTTPS, or None
    when the request names no usable host."""
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[1].startswith("/"):
        return None
    host = ""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1")
            break
    if not host or not set(host) <= _HOST_CHARS or len(host) > 255:
        return None
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{parts[1]}"


async def _serve_http01(
    store: ChallengeStore,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    redirect_port: int | None = None,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    body: bytes | None = None
    extra = ""
    if len(parts) == 3 and parts[0] in ("GET", "HEAD"):
        body = http01_answer(store, parts[1])
    if body is not None:
        status = "200 OK"
    elif len(parts) == 3 and parts[1].startswith(HTTP01_PREFIX):
        status, body = "404 Not Found", b"no such challenge\n"
    elif redirect_port is not None and (location := https_redirect(head, redirect_port)):
        status, body = "301 Moved Permanently", b""
        extra = f"Location: {location}\r\n"
    elif redirect_port is not None:
        status, body = "400 Bad Request", b"this port only redirects to HTTPS\n"
    else:
        status, body = "404 Not Found", b"no such challenge\n"
    if len(parts) == 3 and parts[1].startswith(HTTP01_PREFIX):
        log.info("HTTP-01 %s -> %s", request_line, status)
    else:  # scanners knock on every port 80: not worth an INFO line each
        log.debug("port 80 %s -> %s", request_line[:200], status)
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
        + (body if parts[0] != "HEAD" else b"")
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


async def start_http01_responder(
    store: ChallengeStore,
    host: str = "127.0.0.1",
    port: int = 80,
    *,
    redirect_port: int | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Serve HTTP-01 answers from *store* on *host*:*port*. With *redirect_port* (the edge's
    port 80) every other request is redirected to HTTPS on that port; nothing else is served.
    *reuse_port*: several edge workers share the port (each reads the challenge spool)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_http01(store, reader, writer, redirect_port)

    return await asyncio.start_server(
        handle, host, port, limit=MAX_REQUEST_HEAD, reuse_port=reuse_port or None
    )


async def start_tls_alpn01_responder(
    store: ChallengeStore, host: str = "127.0.0.1", port: int = 443
) -> asyncio.Server:
    """Answer TLS-ALPN-01 handshakes from *store* on *host*:*port*; other names, and
    handshakes not offering ALPN ``acme-tls/1``, get no certificate (the handshake fails),
    and nothing is served after the handshake."""
    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.set_alpn_protocols([ACME_TLS_ALPN])
    base.sslobject_class = HelloPeekingSSLObject

    def pick(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        if not offers_acme_tls(sock):
            log.info("TLS-ALPN-01: a handshake for %r without acme-tls/1 refused", name)
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
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
