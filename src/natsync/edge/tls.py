"""TLS on both sides of the edge: certificates per name toward phones, verified TLS to the server.

**Toward phones** (:class:`SiteContexts`): one ``SSLContext`` per configured certificate, chosen
by SNI (the first is the default for clients without SNI); TLS 1.2 and 1.3 only, ECDHE with
AES-GCM or ChaCha20 (the "intermediate" profile every phone since 2014 speaks), the whole chain
from the certificate file sent. The listening context only dispatches: its SNI callback swaps in
the current per-name context, so a reload (SIGHUP) changes what *new* handshakes get and leaves
every open connection alone.

**Toward the server** (:class:`BackendTrust`): always verified, unless the configuration says
``insecure_backend = true``.

* With a CA file: OpenSSL verifies the chain and the name (``check_hostname``) in the handshake.
* With a pin (SHA-256 of the server's leaf certificate, what ``trust-backend`` writes): the
  handshake runs with ``CERT_NONE`` and the edge compares the fingerprint of the certificate the
  server presented *after the handshake and before a single request byte is written*. This is
  sound because the handshake proves the server holds the private key of the certificate it
  presented (TLS 1.3 CertificateVerify; in TLS 1.2 the ECDHE key exchange the edge insists on is
  signed with that key), and the fingerprint covers the whole certificate, public key included:
  nobody can present the pinned certificate without its key. The pin names exactly one
  certificate, which is what an operator confirmed; chain and name checks would add nothing (and
  break the article's case: a server certificate naming what the server *is*). The other
  possible design, the pinned certificate as the only trust anchor with ``PARTIAL_CHAIN`` and a
  name check, needs the certificate itself on disk, fails on a name mismatch that is harmless
  under a pin, and turns a pinned self-signed CA:TRUE certificate into a CA that may sign others.
* Pin and CA file together: both must hold.

TLS sessions toward the server are resumed (saves a full handshake per new pooled connection):
each :class:`BackendTrust` owns its own context and its own cached session, so a session made
under one trust policy is never offered under another (nginx's shared session cache mixes them,
see docs/edge.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from natsync.cert import policy
from natsync.cert.acme_responders import ChallengeStore, offers_acme_tls
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.http import PURE_PYTHON_ENV
from natsync.edge.tickets import _tickets as _c_tls
from natsync.errors import ConfigError, NatsyncError

log = logging.getLogger("natsync.edge")
P = TypeVar("P", bound=asyncio.BaseProtocol)

#: TLS 1.2 suites offered to phones and to the server (natsync.cert.policy, shared with the
#: server's own listeners).
CIPHERS = policy.CIPHERS
#: Seconds for the TCP connection to the server before answering 503: a server that is down
#: (refuses, or nothing answers its address) gets the phone a 503 "within a second" (issue 5).
BACKEND_CONNECT_TIMEOUT = 0.9
#: Seconds for the TLS handshake once TCP is up. The server's kernel took the connection, so it
#: is there, maybe busy: on a loaded 2-core machine its loop reached a handshake after more
#: than 0.9 s (the soak's only 5xx, issue 19). HAProxy's usual ``timeout connect`` is 5 s (nginx's
#: ``proxy_connect_timeout``, which covers the upstream handshake too, 60 s); a server that
#: takes the TCP connection and never handshakes still gets the phone a 503 after this.
BACKEND_HANDSHAKE_TIMEOUT = 5.0


class BackendCertError(NatsyncError):
    """The server presented a certificate the edge does not trust."""

    http_status = 502


def fingerprint(der: bytes) -> str:
    """``sha256:AB:CD:...`` of a DER certificate (the form openssl x509 -fingerprint prints)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "sha256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def _count_certs(path: Path) -> int:
    try:
        return path.read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    except OSError as exc:
        raise ConfigError(f"cannot read certificate file {path}: {exc.strerror}") from exc


def _key_type(site: SiteCert) -> str:
    """``ECDSA``, ``RSA``, ... of the leaf certificate in *site*'s file (for ECDSA-first)."""
    key = x509.load_pem_x509_certificates(site.cert.read_bytes())[0].public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    return type(key).__name__


def _site_context(sites: Sequence[SiteCert]) -> ssl.SSLContext:
    """One context serving every certificate of *sites* (the same names): one per key type,
    OpenSSL choosing per handshake — ECDSA when the client's signature algorithms allow it,
    RSA otherwise (ECDSA-first: a P-256 signature costs the edge a fraction of an RSA one)."""
    context = policy.server_context()
    context.set_alpn_protocols(["http/1.1"])
    seen: dict[str, SiteCert] = {}
    for site in sites:
        try:
            context.load_cert_chain(str(site.cert), str(site.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load certificate {site.cert} with key {site.key}: {exc}"
            ) from exc
        kind = _key_type(site)
        if kind in seen:
            raise ConfigError(
                f"{seen[kind].cert} and {site.cert} are both {kind} certificates for "
                f"{', '.join(site.names)}: give one certificate per key type (ECDSA and RSA)"
            )
        seen[kind] = site
        _warn_without_chain(site)
    return context


def _warn_without_chain(site: SiteCert) -> None:
    if _count_certs(site.cert) == 1:
        cert = x509.load_pem_x509_certificate(site.cert.read_bytes())
        if cert.issuer != cert.subject:
            log.warning(
                "%s holds no chain, only the leaf: phones that do not know its issuer will "
                "refuse it; append the intermediate certificate(s) to the file",
                site.cert,
            )


def same_names(sites: Sequence[SiteCert]) -> list[list[SiteCert]]:
    """*sites* grouped by their names (in the order of first appearance): certificates for the
    same names are served together, one per key type."""
    groups: dict[frozenset[str], list[SiteCert]] = {}
    for site in sites:
        groups.setdefault(frozenset(n.lower() for n in site.names), []).append(site)
    return list(groups.values())


class SiteContexts:
    """The phone-facing TLS contexts, by SNI name, swappable on reload.

    With a challenge store (*challenges*), a handshake that names a host whose ACME
    TLS-ALPN-01 validation is pending and offers ALPN ``acme-tls/1`` (RFC 8737 section 3; the
    offer peeked at in the ClientHello by natsync.edge.transport) gets the validation certificate
    and ``acme-tls/1`` instead; a phone's handshake naming the host gets the real one.
    """

    def __init__(self, sites: Sequence[SiteCert], challenges: ChallengeStore | None = None) -> None:
        if not sites:
            raise ConfigError("the edge needs at least one certificate ([[edge.certificates]])")
        self.challenges = challenges
        self.sites = tuple(sites)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self.handshakes = 0
        self.reload()
        #: The context handshakes start on: the default one of the first load, so a handshake
        #: for the default names needs no swap (after a reload, every handshake swaps to the
        #: reloaded contexts).
        self.listening = self.context_for(None)
        self.listening.sni_callback = self._select
        #: OpenSSL notes each ClientHello's ALPN offer for _select (the C module): no peeking
        self.alpn_probe = challenges is not None and _probe_alpn(self.listening)

    def reload(self) -> None:
        """Load every certificate file again; on any error keep the old ones and raise."""
        by_name: dict[str, ssl.SSLContext] = {}
        default = None
        for group in same_names(self.sites):
            context = _site_context(group)
            default = default or context
            for name in group[0].names:
                by_name.setdefault(name.lower(), context)
        self._by_name, self._default = by_name, default

    def context_for(self, name: str | None) -> ssl.SSLContext:
        assert self._default is not None
        if name:
            name = name.lower()
            found = self._by_name.get(name)
            if found is None and "." in name:
                found = self._by_name.get("*." + name.split(".", 1)[1])
            if found is not None:
                return found
        return self._default

    def _select(self, sslobj: Any, name: str | None, _context: ssl.SSLContext) -> None:
        self.handshakes += 1
        if self.challenges is not None and name:
            challenge = self.challenges.alpn_context_for(name)
            if challenge is not None and self._offers_acme_tls(sslobj):
                log.info("TLS-ALPN-01: presenting the ACME validation certificate for %s", name)
                sslobj.context = challenge
                return
        chosen = self.context_for(name)
        if chosen is not self.listening:
            sslobj.context = chosen

    def _offers_acme_tls(self, sslobj: Any) -> bool:
        if self.alpn_probe and _c_tls is not None:
            seen = _c_tls.offers_acme_tls(sslobj._sslobj)
            if seen is not None:
                return bool(seen)
        return offers_acme_tls(sslobj)  # what the transport peeked at (or "unknown": True)


def _probe_alpn(context: ssl.SSLContext) -> bool:
    """Have OpenSSL note each ClientHello's ALPN offer on *context* (natsync.edge._tickets);
    False without the C module, or on a Python whose ``_ssl`` layout it does not know (then the
    transport peeks at each ClientHello instead)."""
    if _c_tls is None or os.environ.get(PURE_PYTHON_ENV):
        return False
    try:
        _c_tls.probe_alpn(context)
    except (RuntimeError, TypeError) as exc:
        log.warning("TLS-ALPN-01 falls back to peeking at each ClientHello: %s", exc)
        return False
    return True


class _SessionContext(ssl.SSLContext):
    """A client context that keeps its last good session (``cached_session``): the edge's
    transport offers it on every new connection (open_backend), and so does ``wrap_bio`` (for
    asyncio's and uvloop's TLS transports: the health checks' tests, the memory bench)."""

    cached_session: ssl.SSLSession | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self.cached_session
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


@dataclass(frozen=True, slots=True)
class Policy:
    pin: str
    ca_file: Path | None
    insecure: bool


class BackendTrust:
    """How the edge checks the server: context to connect with, and the check after it."""

    def __init__(self, config: EdgeConfig, backend: str | None = None) -> None:
        """Trust toward *backend* (default: ``config.backend``); one per server, so each has
        its own cached session (a session is only worth offering to the server that made it)."""
        config.check_backend_trust()
        self.policy = Policy(config.backend_pin, config.backend_ca, config.insecure_backend)
        self.server_name = config.server_name
        self.backend = backend or config.backend
        context = _SessionContext(ssl.PROTOCOL_TLS_CLIENT)
        policy.apply_policy(context)
        if config.backend_ca is not None:
            try:
                context.load_verify_locations(cafile=str(config.backend_ca))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load edge.backend_ca {config.backend_ca}: {exc}"
                ) from exc
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.context = context
        if self.policy.insecure and not (self.policy.pin or self.policy.ca_file) and not backend:
            log.warning(
                "insecure_backend = true: the server's certificate is NOT checked; anyone "
                "between the edge and %s can read every password",
                self.backend,
            )

    def check(self, sslobj: ssl.SSLObject | None) -> None:
        """After the handshake, before any request byte: the pin, when there is one."""
        if not self.policy.pin:
            return
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            raise BackendCertError(
                f"the server at {self.backend} presented no certificate; expected the pinned "
                f"{self.policy.pin}"
            )
        seen = fingerprint(der)
        if seen != self.policy.pin:
            raise BackendCertError(
                f"the server at {self.backend} presented certificate {seen}, not the pinned "
                f"{self.policy.pin}: if its certificate was renewed, pin the new one with "
                f"`natsync edge trust-backend {self.backend}`; otherwise something else answers "
                "at that address"
            )

    def remember(self, sslobj: ssl.SSLObject | None) -> None:
        """Keep the connection's session to offer on the next connections to this server.

        Only a session that is news: none is kept yet, this connection made a full handshake
        (the kept one was refused, or it was not offered), or the kept one is past half its
        ticket's lifetime. Reading ``.session`` decodes a copy of the session, certificates
        included (CPython's TLS 1.3 workaround for OpenSSL), and each connection resumed from a
        copy keeps that copy alive; taking every resumed connection's session as the next one
        kept a decoded certificate chain per held Ping: about 10 KB after a phone's Syncs
        (issue 27; ``bench/edge_memory_bench.py --syncs 2``).
        """
        if sslobj is None:
            return
        kept = self.context.cached_session
        if kept is not None and sslobj.session_reused and not _ageing(kept, time.time()):
            return
        session = sslobj.session
        if session is not None:
            self.context.cached_session = session

    def describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the server at {self.backend} failed certificate verification against "
                f"{self.policy.ca_file} for name {self.server_name!r}: {exc.verify_message}"
            )
        return f"TLS to the server at {self.backend} failed: {exc}"


def _ageing(session: ssl.SSLSession, now: float) -> bool:
    """Past half its life: its ticket's lifetime hint (the server's word), else its timeout."""
    life = session.ticket_lifetime_hint or session.timeout
    return now - session.time > life / 2


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What trust-backend shows about a server's certificate."""

    der: bytes
    cert: x509.Certificate
    chain_length: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.cert.issuer.rfc4514_string()

    @property
    def names(self) -> list[str]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        dns = san.value.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]
        return [*dns, *ips]


async def fetch_certificate(
    host: str, port: int, server_name: str, timeout: float = 10.0
) -> PeerCertificate:
    """Connect without verifying (this is how a certificate is *looked at*) and return it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=server_name),
            timeout,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise NatsyncError(f"cannot open TLS to {host}:{port}: {exc}") from exc
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            raise NatsyncError(f"{host}:{port} presented no certificate")
        chain = 1
        get_chain = getattr(sslobj, "get_unverified_chain", None)  # Python 3.13+
        if get_chain is not None:
            chain = len(get_chain() or [der])
        return PeerCertificate(der, x509.load_der_x509_certificate(der), chain)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def open_backend(
    factory: Callable[[], P],
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, P]:
    """A new connection to a server, in two steps with their own deadlines: TCP within
    :data:`BACKEND_CONNECT_TIMEOUT`, then the TLS handshake within
    :data:`BACKEND_HANDSHAKE_TIMEOUT` (the edge's own transport, natsync.edge.transport,
    offering the context's cached session). Raises ``TimeoutError`` naming the step,
    ``OSError`` (refused, unreachable) or ``ssl.SSLError`` (the handshake failed)."""
    from natsync.edge.transport import connect_tls

    loop = asyncio.get_running_loop()
    sock = await _tcp_connect(loop, host, port, loop.time() + BACKEND_CONNECT_TIMEOUT)
    if context is None:  # plain TCP (tests of the plumbing only: the edge always has TLS)
        try:
            return await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
    made: list[P] = []

    def make() -> P:
        made.append(factory())
        return made[0]

    try:
        transport = await connect_tls(
            make,
            sock,
            context,
            server_hostname,
            BACKEND_HANDSHAKE_TIMEOUT,
            getattr(context, "cached_session", None),
        )
    except TimeoutError:
        raise TimeoutError(
            f"TCP connected but no TLS handshake within {BACKEND_HANDSHAKE_TIMEOUT:g} s"
        ) from None
    return transport, made[0]


async def _tcp_connect(
    loop: asyncio.AbstractEventLoop, host: str, port: int, deadline: float
) -> socket.socket:
    """A connected non-blocking socket to *host* (each of its addresses in turn) by *deadline*
    (loop time), else ``TimeoutError``.

    The deadline judges the server, not the edge: when the edge's own loop was busy past the
    deadline (thousands of phones handshaking at once after an address change, on a loaded
    machine), the timer and the connection's completion are seen in the same turn, the timer
    first. So a socket found connected when the deadline fires is used: the server answered
    in time, the edge looked late (one 503 of the soak's 2,000-phone address change)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        infos: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = [
            (socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))
        ]
    except OSError:  # a name: resolved (within the deadline too)
        try:
            async with asyncio.timeout_at(deadline):
                found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise TimeoutError(
                f"no address for {host} within {BACKEND_CONNECT_TIMEOUT:g} s"
            ) from None
        infos = [(family, address) for family, _, _, _, address in found]
    error: OSError = OSError(f"{host} has no address")
    for family, address in infos:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.sock_connect(sock, address)
            except TimeoutError:
                if _connected(sock):  # in time; the edge looked late
                    return sock
                raise
        except TimeoutError:
            sock.close()
            raise TimeoutError(f"no TCP connection within {BACKEND_CONNECT_TIMEOUT:g} s") from None
        except OSError as exc:  # refused, unreachable: the next address
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled: no half-open socket left behind
            sock.close()
            raise
        return sock
    raise error


def _connected(sock: socket.socket) -> bool:
    """Whether a non-blocking connect of *sock* has completed, looked at now (poll, not select:
    the edge's descriptors run past select's 1024)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        ready = poller.poll(0)
        return bool(ready) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    except (OSError, ValueError):  # whatever it is, not a connection to use
        return False
