"""An ACME client (RFC 8555): account, order, challenges, finalize, download, renewal.

The flow (section 7.1 figure): get the directory; a nonce (HEAD newNonce); newAccount with the
JWK (200 when the key already has an account, 201 when created); newOrder for the identifiers
(DNS names, and IP addresses per RFC 8738); for each authorization that is still pending,
publish the chosen challenge (HTTP-01, TLS-ALPN-01 or DNS-01, through a :class:`Solver`), tell
the server to validate (POST ``{}`` to the challenge) and poll the authorization until it is
valid or invalid; poll the order until ready; finalize with a CSR; poll until valid; download
the chain (POST-as-GET, ``application/pem-certificate-chain``).

What servers do that a client must survive, all seen with pebble:

- ``badNonce`` (section 6.5): any nonce may be refused; the error carries a fresh nonce and
  the request is sent again, up to :data:`MAX_BAD_NONCE_RETRIES` times.
- Reused authorizations (section 7.1.3): a new order may come with authorizations that are
  already valid; those are not answered again.
- Asynchronous states (section 7.1.6): every wait is a poll bounded by a deadline, honouring
  ``Retry-After`` within :data:`MAX_POLL_INTERVAL`.

Time is passed in where it is judged (renewal); the clock is read only for poll deadlines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.cert import jose
from natsync.cert.acme_responders import ChallengeStore
from natsync.cert.ari import AriError, RenewalInfo, cert_id, parse_renewal_info
from natsync.cert.ca import PrivateKey, new_key
from natsync.errors import NatsyncError

log = logging.getLogger(__name__)

#: Times one request is re-sent after badNonce (pebble refuses 5% of nonces on purpose; ten in
#: a row at that rate is a one-in-10^13 event, so more means something else is wrong).
MAX_BAD_NONCE_RETRIES = 10
#: Longest wait for one authorization or order to leave a pending/processing state.
POLL_TIMEOUT = 60.0
#: First poll delay, and the cap on a server's Retry-After (a server asking for an hour would
#: leave a command hanging; we would rather report it).
POLL_INTERVAL = 0.2
MAX_POLL_INTERVAL = 10.0
#: Per-request HTTP timeout.
HTTP_TIMEOUT = 30.0
#: Renew when this fraction of the lifetime is left (a 90-day certificate: 30 days before),
#: which leaves room for several failed attempts before it expires.
RENEW_FRACTION = 1 / 3
#: Largest response body read (a chain is a few KB; a directory less).
MAX_RESPONSE = 1024 * 1024

PROBLEM_PREFIX = "urn:ietf:params:acme:error:"
CHALLENGE_TYPES = ("http-01", "tls-alpn-01", "dns-01")
#: Named ACME directories; any other value must be an https URL. Let's Encrypt is the default.
DIRECTORIES = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
DEFAULT_DIRECTORY = "production"


def resolve_directory(value: str) -> str:
    """``production`` / ``staging`` (Let's Encrypt) or an https URL, as a directory URL."""
    value = (value or DEFAULT_DIRECTORY).strip()
    if value in DIRECTORIES:
        return DIRECTORIES[value]
    if not value.startswith("https://"):
        raise AcmeError(
            f"ACME directory {value!r}: use production, staging or an https:// URL "
            "(RFC 8555 section 6.1 requires HTTPS)"
        )
    return value


class AcmeError(NatsyncError):
    """The ACME server refused a request, or an order could not be completed."""

    http_status = 502

    def __init__(
        self, message: str, *, problem: dict[str, Any] | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.problem = problem or {}
        self.status = status

    @property
    def problem_type(self) -> str:
        return str(self.problem.get("type", "")).removeprefix(PROBLEM_PREFIX)


class ChallengeFailed(AcmeError):
    """The ACME server could not validate a challenge: says which, for what, and why."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError as exc:
            raise AcmeError(f"the ACME server sent a body that is not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise AcmeError("the ACME server sent JSON that is not an object")
        return doc


def _problem_text(problem: dict[str, Any]) -> str:
    kind = str(problem.get("type", "")).removeprefix(PROBLEM_PREFIX) or "error"
    detail = str(problem.get("detail", "")).strip()
    subs = problem.get("subproblems") or []
    text = f"{detail} ({kind})" if detail else kind
    for sub in subs if isinstance(subs, list) else []:
        if isinstance(sub, dict):
            ident = sub.get("identifier", {}).get("value", "?")
            text += f"; {ident}: {sub.get('detail', '')}"
    return text


# --- account key storage ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountStore:
    """One ACME account per directory URL under *root*: ``<hash>/account.key`` (PEM, P-256,
    mode 0600) and ``<hash>/account.json`` (directory, account URL, public JWK, contact)."""

    root: Path

    def _dir(self, directory_url: str) -> Path:
        return self.root / hashlib.sha256(directory_url.encode()).hexdigest()[:16]

    def key(self, directory_url: str) -> ec.EllipticCurvePrivateKey:
        """The account key for *directory_url*, created on first use."""
        path = self._dir(directory_url) / "account.key"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise AcmeError(f"{path} is not an ECDSA P-256 account key")
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _atomic_write(path, data, 0o600)
        return key

    def account_url(self, directory_url: str) -> str | None:
        path = self._dir(directory_url) / "account.json"
        if not path.exists():
            return None
        url = json.loads(path.read_text()).get("url")
        return str(url) if url else None

    def save(
        self, directory_url: str, url: str, key: ec.EllipticCurvePrivateKey, contact: list[str]
    ) -> None:
        doc = {
            "directory": directory_url,
            "url": url,
            "jwk": jose.jwk(key.public_key()),
            "contact": contact,
        }
        _atomic_write(
            self._dir(directory_url) / "account.json", json.dumps(doc, indent=2).encode(), 0o600
        )


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write *path* so a reader sees the old file or the new one, never a mixture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- solvers ---------------------------------------------------------------------------------


class Solver(Protocol):
    """Publishes and withdraws one challenge type's answer."""

    challenge_type: str

    async def publish(self, identifier: str, token: str, key_authorization: str) -> None: ...

    async def withdraw(self, identifier: str, token: str, key_authorization: str) -> None: ...


@dataclass
class Http01Solver:
    """HTTP-01: the token store the edge (or the standalone responder) serves from."""

    store: ChallengeStore
    challenge_type: str = "http-01"

    async def publish(self, identifier: str, token: str, key_authorization: str) -> None:
        self.store.put(token, key_authorization)

    async def withdraw(self, identifier: str, token: str, key_authorization: str) -> None:
        self.store.remove(token)


@dataclass
class TlsAlpn01Solver:
    """TLS-ALPN-01: a challenge certificate per name in the store."""

    store: ChallengeStore
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    challenge_type: str = "tls-alpn-01"

    async def publish(self, identifier: str, token: str, key_authorization: str) -> None:
        self.store.put_alpn(identifier, key_authorization, self.now())

    async def withdraw(self, identifier: str, token: str, key_authorization: str) -> None:
        self.store.remove_alpn(identifier)


@dataclass
class Dns01Solver:
    """DNS-01: a TXT record at _acme-challenge.<name>, through any DNS updater
    (:class:`natsync.ddns.providers.TxtPublisher`: RFC 2136, or a provider's API)."""

    publisher: Any  # natsync.ddns.providers.TxtPublisher (imported lazily: dnspython is heavy)
    challenge_type: str = "dns-01"

    async def publish(self, identifier: str, token: str, key_authorization: str) -> None:
        owner = jose.dns01_name(identifier)
        value = jose.dns01_value(key_authorization)
        await asyncio.to_thread(self.publisher.add_txt, owner, value)

    async def withdraw(self, identifier: str, token: str, key_authorization: str) -> None:
        owner = jose.dns01_name(identifier)
        value = jose.dns01_value(key_authorization)
        await asyncio.to_thread(self.publisher.remove_txt, owner, value)


# --- the client ------------------------------------------------------------------------------


@dataclass
class Stats:
    """What happened on the wire, for logs and tests."""

    posts: int = 0
    bad_nonce_retries: int = 0
    challenges_answered: int = 0
    authorizations_reused: int = 0
    #: The payload of the last newOrder (``replaces`` shows here, RFC 9773 section 5).
    last_order: dict[str, Any] = field(default_factory=dict)


class AcmeClient:
    """One account at one ACME server. Use as ``async with AcmeClient(...) as client``."""

    def __init__(
        self,
        directory_url: str,
        account_key: ec.EllipticCurvePrivateKey,
        *,
        ssl_context: Any = None,
        account_url: str | None = None,
        poll_timeout: float = POLL_TIMEOUT,
    ) -> None:
        self.directory_url = directory_url
        self.key = account_key
        self.kid = account_url
        self.poll_timeout = poll_timeout
        self.stats = Stats()
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._directory: dict[str, Any] | None = None
        self._nonce: str | None = None

    async def __aenter__(self) -> AcmeClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
            headers={"User-Agent": "natsync-acme"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport

    async def _request(
        self, method: str, url: str, body: bytes | None = None, accept: str | None = None
    ) -> Response:
        if self._session is None:
            raise AcmeError("AcmeClient used outside 'async with'")
        headers = {}
        if body is not None:
            headers["Content-Type"] = "application/jose+json"
        if accept:
            headers["Accept"] = accept
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, ssl=self._ssl
            ) as resp:
                data = await resp.content.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise AcmeError(f"the ACME server's answer to {url} is too large")
                out = Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AcmeError(f"cannot reach the ACME server at {url}: {exc}") from exc
        nonce = out.headers.get("replay-nonce")
        if nonce:
            self._nonce = nonce
        return out

    async def directory(self) -> dict[str, Any]:
        if self._directory is None:
            resp = await self._request("GET", self.directory_url)
            if resp.status != 200:
                raise AcmeError(
                    f"{self.directory_url} is not an ACME directory (HTTP {resp.status})"
                )
            self._directory = resp.json()
        return self._directory

    def _take_nonce(self) -> str | None:
        """The nonce from the last response, used at most once (section 6.5)."""
        nonce, self._nonce = self._nonce, None
        return nonce

    async def _fresh_nonce(self) -> str:
        nonce = self._take_nonce()
        if nonce:
            return nonce
        url = (await self.directory())["newNonce"]
        resp = await self._request("HEAD", url)
        nonce = self._take_nonce()
        if not nonce:
            raise AcmeError(f"the ACME server gave no Replay-Nonce (HTTP {resp.status})")
        return nonce

    async def post(
        self,
        url: str,
        payload: dict[str, Any] | None,
        *,
        use_jwk: bool = False,
        accept: str | None = None,
    ) -> Response:
        """A signed POST (payload None: POST-as-GET), re-sent on badNonce; problems raise."""
        if not use_jwk and self.kid is None:
            raise AcmeError("no ACME account yet: register first")
        for attempt in range(MAX_BAD_NONCE_RETRIES + 1):
            nonce = await self._fresh_nonce()
            jws = jose.sign(
                self.key, payload, url=url, nonce=nonce, kid=None if use_jwk else self.kid
            )
            self.stats.posts += 1
            resp = await self._request("POST", url, json.dumps(jws).encode(), accept)
            if resp.status < 400:
                return resp
            problem = _problem(resp)
            if problem.get("type") == PROBLEM_PREFIX + "badNonce" and (
                attempt < MAX_BAD_NONCE_RETRIES
            ):
                self.stats.bad_nonce_retries += 1
                log.debug("badNonce from %s; retrying with the nonce it sent", url)
                continue
            raise AcmeError(
                f"the ACME server refused {url.rsplit('/', 2)[-2:]}: {_problem_text(problem)}",
                problem=problem,
                status=resp.status,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- account and orders

    async def register(self, contact: Sequence[str] = (), *, agree_tos: bool = True) -> str:
        """newAccount (section 7.3): the account URL (kid), existing or new."""
        payload: dict[str, Any] = {"termsOfServiceAgreed": agree_tos}
        if contact:
            payload["contact"] = list(contact)
        resp = await self.post((await self.directory())["newAccount"], payload, use_jwk=True)
        location = resp.headers.get("location")
        if not location:
            raise AcmeError("the ACME server created an account but sent no Location")
        self.kid = location
        return location

    async def get(self, url: str) -> dict[str, Any]:
        return (await self.post(url, None)).json()

    async def poll(self, url: str, done: Sequence[str], *, what: str) -> dict[str, Any]:
        """POST-as-GET *url* until its status is in *done* (or invalid), within the deadline."""
        deadline = time.monotonic() + self.poll_timeout
        delay = POLL_INTERVAL
        while True:
            resp = await self.post(url, None)
            doc = resp.json()
            status = doc.get("status")
            if status in done or status == "invalid":
                return doc
            if time.monotonic() + delay > deadline:
                raise AcmeError(
                    f"{what} is still {status} after {self.poll_timeout:.0f} s; try again later"
                )
            retry_after = resp.headers.get("retry-after", "")
            wait = float(retry_after) if retry_after.isascii() and retry_after.isdigit() else delay
            await asyncio.sleep(min(wait, MAX_POLL_INTERVAL))
            delay = min(delay * 1.5, MAX_POLL_INTERVAL)

    async def new_order(
        self, identifiers: Sequence[dict[str, str]], replaces: str = ""
    ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"identifiers": list(identifiers)}
        if replaces:
            payload["replaces"] = replaces  # RFC 9773 section 5
        self.stats.last_order = payload
        try:
            resp = await self.post((await self.directory())["newOrder"], payload)
        except AcmeError as exc:
            if not replaces or exc.problem_type != "alreadyReplaced":
                raise
            # Section 5: the certificate was already replaced by another order; a plain
            # order still gets this host its certificate.
            log.warning("the ACME server says %s was already replaced; ordering anew", replaces)
            return await self.new_order(identifiers)
        location = resp.headers.get("location")
        if not location:
            raise AcmeError("the ACME server created an order but sent no Location")
        return location, resp.json()

    async def renewal_info_url(self) -> str:
        """The directory's ``renewalInfo`` URL (RFC 9773 section 3), "" when not offered."""
        url = (await self.directory()).get("renewalInfo")
        return url.rstrip("/") if isinstance(url, str) and url.startswith("https://") else ""

    async def renewal_info(self, cert: x509.Certificate, now: dt.datetime) -> RenewalInfo | None:
        """The server's renewal window for *cert* (RFC 9773 section 4.2), None when the
        server offers no ARI; AriError when it answers something unusable."""
        base = await self.renewal_info_url()
        if not base:
            return None
        resp = await self._request("GET", f"{base}/{cert_id(cert)}")
        if resp.status != 200:
            raise AriError(f"renewalInfo answered HTTP {resp.status}")
        return parse_renewal_info(resp.body, resp.headers.get("retry-after"), now)

    async def authorize(self, authz_url: str, solver: Solver) -> None:
        """Make one authorization valid with *solver*, or raise ChallengeFailed."""
        authz = await self.get(authz_url)
        ident = authz.get("identifier", {}).get("value", "?")
        if authz.get("wildcard"):
            ident = "*." + ident
        status = authz.get("status")
        if status == "valid":
            self.stats.authorizations_reused += 1
            log.info("authorization for %s is already valid (reused)", ident)
            return
        if status != "pending":
            raise ChallengeFailed(f"the authorization for {ident} is {status}; start a new order")
        challenge = next(
            (c for c in authz.get("challenges", []) if c.get("type") == solver.challenge_type),
            None,
        )
        if challenge is None:
            offered = ", ".join(c.get("type", "?") for c in authz.get("challenges", []))
            raise ChallengeFailed(
                f"the ACME server does not offer {solver.challenge_type} for {ident} "
                f"(it offers {offered})"
            )
        token = str(challenge["token"])
        key_auth = jose.key_authorization(token, self.key.public_key())
        bare = ident.removeprefix("*.")
        await solver.publish(bare, token, key_auth)
        try:
            await self.post(challenge["url"], {})
            self.stats.challenges_answered += 1
            result = await self.poll(authz_url, ("valid",), what=f"the authorization of {ident}")
        finally:
            await solver.withdraw(bare, token, key_auth)
        if result.get("status") != "valid":
            failed: dict[str, Any] = next(
                (c for c in result.get("challenges", []) if c.get("type") == solver.challenge_type),
                {},
            )
            problem = failed.get("error") or {}
            raise ChallengeFailed(
                f"the ACME server could not validate {solver.challenge_type} for {ident}: "
                f"{_problem_text(problem) if problem else 'no reason given'}",
                problem=problem,
            )


def _problem(resp: Response) -> dict[str, Any]:
    try:
        doc = json.loads(resp.body)
    except ValueError:
        return {"detail": f"HTTP {resp.status}: {resp.body[:200]!r}"}
    return doc if isinstance(doc, dict) else {"detail": f"HTTP {resp.status}"}


# --- obtaining a certificate -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate obtained from the ACME server and written to disk."""

    cert_path: Path
    key_path: Path
    chain: tuple[x509.Certificate, ...]
    order_url: str


def identifiers(names: Sequence[str], ips: Sequence[str]) -> list[dict[str, str]]:
    out = [{"type": "dns", "value": n.lower().rstrip(".")} for n in names]
    out += [{"type": "ip", "value": str(ipaddress.ip_address(i))} for i in ips]
    if not out:
        raise AcmeError("an ACME order needs at least one --name or --ip")
    return out


def make_csr(
    key: PrivateKey, names: Sequence[str], ips: Sequence[str]
) -> x509.CertificateSigningRequest:
    sans: list[x509.GeneralName] = [x509.DNSName(n.lower().rstrip(".")) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    first = names[0] if names else str(ips[0])
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


ReloadHook = Callable[[Path, Path], Awaitable[None] | None]


async def obtain(
    client: AcmeClient,
    *,
    names: Sequence[str],
    ips: Sequence[str] = (),
    solver: Solver,
    out_dir: Path,
    basename: str = "server",
    key_type: str = "ec",
    contact: Sequence[str] = (),
    on_installed: ReloadHook | None = None,
    replaces: str = "",
) -> Issued:
    """Run one whole order and install the result as ``<basename>.pem`` / ``.key``.

    The files are replaced atomically (key first, then the chain), then *on_installed* runs
    (a hot-reload hook: the edge's SIGHUP, or a callback reloading an SSLContext).
    *replaces*: the ARI identifier of the certificate this one replaces (RFC 9773 section 5).
    """
    if client.kid is None:
        await client.register(contact)
    order_url, order = await client.new_order(identifiers(names, ips), replaces)
    for authz_url in order.get("authorizations", []):
        await client.authorize(authz_url, solver)
    order = await client.poll(order_url, ("ready", "valid"), what="the order")
    if order.get("status") == "invalid":
        raise AcmeError(f"the order became invalid: {_problem_text(order.get('error') or {})}")
    key = new_key(key_type)
    if order.get("status") == "ready":
        csr = make_csr(key, names, ips).public_bytes(serialization.Encoding.DER)
        await client.post(order["finalize"], {"csr": jose.b64u(csr)})
        order = await client.poll(order_url, ("valid",), what="the finalized order")
    if order.get("status") != "valid" or not order.get("certificate"):
        raise AcmeError(
            f"the order ended {order.get('status')}: {_problem_text(order.get('error') or {})}"
        )
    resp = await client.post(order["certificate"], None, accept="application/pem-certificate-chain")
    try:
        chain = tuple(x509.load_pem_x509_certificates(resp.body))
    except ValueError as exc:
        raise AcmeError(f"the ACME server's certificate download is not PEM: {exc}") from exc
    if chain[0].public_key() != key.public_key():
        raise AcmeError("the ACME server issued a certificate for another key")
    key_path = out_dir / f"{basename}.key"
    cert_path = out_dir / f"{basename}.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, resp.body, 0o644)
    log.info("installed %s (%s)", cert_path, ", ".join([*names, *ips]))
    if on_installed is not None:
        result = on_installed(cert_path, key_path)
        if result is not None:
            await result
    return Issued(cert_path, key_path, chain, order_url)


# --- renewal ---------------------------------------------------------------------------------


def renew_at(cert: x509.Certificate) -> dt.datetime:
    """When *cert* should be renewed: when a third of its lifetime is left."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - lifetime * RENEW_FRACTION


def renewal_due(cert: x509.Certificate, now: dt.datetime) -> bool:
    return now >= renew_at(cert)


def sighup_pid_file(pid_file: Path) -> Callable[[Path, Path], None]:
    """A reload hook that sends SIGHUP to the process named in *pid_file* (the edge reloads
    its certificate on SIGHUP without closing open connections)."""

    def hook(cert_path: Path, key_path: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise AcmeError(f"cannot read a process id from {pid_file}: {exc}") from exc
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError as exc:
            raise AcmeError(f"no process {pid} (from {pid_file}) to reload") from exc
        log.info("sent SIGHUP to %d to reload %s", pid, cert_path)

    return hook
