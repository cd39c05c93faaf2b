"""The certificate manager: gets the public name's certificate on first start and keeps it renewed.

Two layers, as everywhere in natsync:

- :class:`Schedule` decides, sans I/O (``now`` passed in): when to renew (the window the CA
  suggests through ACME Renewal Information, RFC 9773, else two thirds into the lifetime, with
  jitter), when to ask the CA again (``Retry-After``), how long to back off after a failure,
  and how healthy the certificate is. :func:`choose_challenges` decides, also sans I/O, which
  challenge types to try and says why.
- :class:`CertificateManager` does the I/O: reads the certificate file, talks ACME
  (:mod:`natsync.cert.acme`), installs the result and runs the reload hooks (the edge's reload,
  the server's :class:`natsync.cert.reload.CertReloader`, or a SIGHUP), and publishes a
  :class:`CertStatus` for ``/healthz`` and ``natsync cert status``.

Entry points for a supervisor (``natsync run``)::

    manager = CertificateManager(settings, challenges=store, dns=publisher,
                                 on_installed=[edge_reload_hook(running_edge)])
    task = asyncio.create_task(manager.run(stop_event))   # returns when stop_event is set
    manager.status()                                       # a CertStatus, any time

The challenge store is the one the edge answers from (``start_edge(..., challenges=store)``);
a manager in another process writes the same challenges to ``<data>/acme/challenges``, which the
edge reads when ``edge.challenge_dir`` names it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.cert.acme import (
    AccountStore,
    AcmeClient,
    AcmeError,
    ChallengeFailed,
    Dns01Solver,
    Http01Solver,
    Issued,
    Solver,
    Stats,
    TlsAlpn01Solver,
    _atomic_write,
    obtain,
    resolve_directory,
)
from natsync.cert.acme_responders import ChallengeStore
from natsync.cert.ari import AriError, RenewalInfo, cert_id
from natsync.cert.jose import self_signed_builder
from natsync.cert.settings import (
    ACME_DIR,
    CHALLENGE_CHOICES,
    ManagerSettings,
    parse_cert_table,
    parse_ports_open,
)
from natsync.errors import ConfigError, NatsyncError

log = logging.getLogger(__name__)

#: Fallback renewal point without ARI: two thirds into the lifetime (a 90-day certificate is
#: renewed with 30 days left: room for many failed attempts before it expires).
FALLBACK_FRACTION = 2 / 3
#: Jitter before the fallback point, as a fraction of the lifetime (90 days: up to 3 days
#: earlier), so hosts set up the same day do not all ask the CA in the same second.
FALLBACK_JITTER = 1 / 30
#: Backoff after a failed renewal: first wait, doubling, capped. Let's Encrypt allows 5 failed
#: validations per name per hour: 3, 6, 12, 24, 48 minutes (even all 20 % short) puts the sixth
#: attempt past the hour when each attempt tries one challenge type.
RETRY_FIRST = dt.timedelta(minutes=3)
RETRY_MAX = dt.timedelta(hours=6)
#: Random part of each backoff (+/- this fraction).
RETRY_JITTER = 0.2
#: Backoff for failed renewalInfo requests (RFC 9773 section 4.3.3: retry with backoff).
ARI_RETRY_FIRST = dt.timedelta(minutes=1)
#: Wait after a step failed in an unexpected way (not an ACME or network failure).
UNEXPECTED_RETRY = dt.timedelta(minutes=5)
#: Expiry "comes close" when less than this fraction of the lifetime is left (90 days: 9 days):
#: from there a failure is logged as an error every attempt and /healthz turns unhealthy.
URGENT_FRACTION = 1 / 10
#: Longest single sleep of the run loop: it wakes at least hourly to look at the clock again
#: (suspend, clock changes) and at the certificate file (replaced by hand).
MAX_SLEEP = 3600.0
STATUS_FILE = "status.json"

#: The placeholder certificate the edge starts with before the first certificate arrives (it
#: must listen on 443 to answer TLS-ALPN-01): self-signed, marked by this organization name.
PLACEHOLDER_ORG = "natsync placeholder (no certificate yet)"
PLACEHOLDER_LIFETIME = dt.timedelta(days=7)


def is_placeholder(cert: x509.Certificate) -> bool:
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(attr.value == PLACEHOLDER_ORG for attr in orgs)


def ensure_placeholder(
    cert_path: Path, key_path: Path, names: Sequence[str], now: dt.datetime
) -> bool:
    """Write a self-signed placeholder for *names* unless a certificate is there; True when
    written. The manager ignores it (it orders at once), phones refuse it."""
    if cert_path.exists() and key_path.exists():
        return False
    names = [n for n in names if not n.startswith("*.")] or ["localhost"]
    first = names[0]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLACEHOLDER_ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, first),
        ]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = now - dt.timedelta(minutes=5), now + PLACEHOLDER_LIFETIME
    cert = (
        self_signed_builder(subject, key, start, end)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("wrote a placeholder certificate %s until the first one arrives", cert_path)
    return True


class State(enum.StrEnum):
    """How the certificate stands, as /healthz and ``natsync cert status`` show it."""

    OBTAINING = "obtaining"  # no certificate yet; the first order is under way or retried
    VALID = "valid"  # valid, renewal not due yet
    RENEWING = "renewing"  # renewal due; attempts under way or backing off
    EXPIRING = "expiring"  # close to expiry without a successful renewal (loud)
    EXPIRED = "expired"


HEALTHY_STATES = frozenset({State.VALID, State.RENEWING})


# --- the sans-I/O schedule -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Renew:
    """Order a certificate now."""


@dataclass(frozen=True, slots=True)
class CheckAri:
    """Ask the CA's renewalInfo resource now."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do before *until*."""

    until: dt.datetime


Action = Renew | CheckAri | Wait


def backoff(failures: int, first: dt.timedelta, jitter: float) -> dt.timedelta:
    """Wait after *failures* failures in a row: *first* doubling, capped at RETRY_MAX, with
    *jitter* in [-1, 1] scaling it by up to RETRY_JITTER."""
    base: dt.timedelta = min(first * float(2 ** max(failures - 1, 0)), RETRY_MAX)
    return base * (1 + RETRY_JITTER * jitter)


@dataclass
class Schedule:
    """When to renew, when to ask the CA, how long to back off. Times in, decisions out.

    *draw* is a number in [0, 1) drawn once per certificate: where in the window this host
    renews (RFC 9773 section 4.2: a uniformly random time within the suggested window).
    """

    draw: float = 0.5
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    #: None: not known yet whether the CA offers ARI; False: it does not.
    ari_offered: bool | None = None
    ari: RenewalInfo | None = None
    ari_next: dt.datetime | None = None
    ari_failures: int = 0
    failures: int = 0
    retry_at: dt.datetime | None = None
    last_error: str = ""
    #: Renew at the next step whatever the window says (an operator asked; one attempt).
    forced: bool = False

    # -- what we know

    def certificate(self, not_before: dt.datetime, not_after: dt.datetime, draw: float) -> None:
        """A (new) certificate is in place: forget the old one's window and failures; ask the
        CA about the new one at once (RFC 9773 section 4.3)."""
        self.not_before, self.not_after, self.draw = not_before, not_after, draw
        self.ari, self.ari_next, self.ari_failures = None, None, 0
        self.failures, self.retry_at, self.last_error = 0, None, ""
        self.forced = False

    def ari_answer(self, info: RenewalInfo | None, now: dt.datetime) -> None:
        """The CA's renewalInfo answer (None: the CA offers no ARI)."""
        if info is None:
            self.ari_offered = False
            return
        self.ari_offered = True
        self.ari, self.ari_failures = info, 0
        self.ari_next = now + info.retry_after

    def ari_failed(self, now: dt.datetime, jitter: float) -> None:
        """No usable answer: keep the last good window (or the fallback) and ask again later
        (section 4.3.3)."""
        self.ari_failures += 1
        self.ari_next = now + backoff(self.ari_failures, ARI_RETRY_FIRST, jitter)

    def failed(self, error: str, now: dt.datetime, jitter: float) -> None:
        self.failures += 1
        self.last_error = error
        self.forced = False
        self.retry_at = now + backoff(self.failures, RETRY_FIRST, jitter)

    # -- decisions

    @property
    def lifetime(self) -> dt.timedelta | None:
        if self.not_before is None or self.not_after is None:
            return None
        return self.not_after - self.not_before

    def renew_at(self) -> dt.datetime | None:
        """When to renew: in the CA's window when it gave one, else two thirds into the
        lifetime less up to FALLBACK_JITTER of it; None without a certificate (now)."""
        if self.not_before is None or self.not_after is None:
            return None
        if self.ari is not None:
            return self.ari.start + (self.ari.end - self.ari.start) * self.draw
        lifetime = self.not_after - self.not_before
        return (
            self.not_before
            + lifetime * FALLBACK_FRACTION
            - lifetime * (FALLBACK_JITTER * self.draw)
        )

    @property
    def source(self) -> str:
        """Where renew_at comes from: 'ari' or 'lifetime'."""
        return "ari" if self.ari is not None else "lifetime"

    def next_action(self, now: dt.datetime) -> Action:
        if self.forced:
            return Renew()
        due = self.renew_at()
        if due is None or now >= due:
            if self.retry_at is not None and now < self.retry_at:
                return Wait(self.retry_at)
            return Renew()
        expired = self.not_after is not None and now >= self.not_after
        if self.ari_offered is not False and not expired:
            # Section 4.3: never ask about an expired certificate.
            if self.ari_next is None or now >= self.ari_next:
                return CheckAri()
            return Wait(min(due, self.ari_next))
        return Wait(due)

    def state(self, now: dt.datetime) -> State:
        if self.not_after is None or self.not_before is None:
            return State.OBTAINING
        if now >= self.not_after:
            return State.EXPIRED
        due = self.renew_at()
        if due is not None and now < due:
            return State.VALID
        lifetime = self.not_after - self.not_before
        if self.not_after - now <= lifetime * URGENT_FRACTION:
            return State.EXPIRING
        return State.RENEWING


# --- choosing a challenge --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    challenge: str
    reason: str


def choose_challenges(
    setting: str,
    *,
    http_reachable: bool | None,
    tls_reachable: bool | None,
    dns_available: bool,
    wildcard: bool = False,
    ip_identifiers: bool = False,
) -> list[Candidate]:
    """The challenge types to try, in order, each with why; ConfigError when none can work.

    ``*_reachable``: whether ports 80 / 443 reach the edge from outside (from the router's
    forwards or a probe): True, False, or None (unknown). Known-good ports come first, then
    DNS-01 when a DNS updater is configured, then ports nobody knows about; ports known to be
    closed are left out. Wildcards need DNS-01 (RFC 8555 section 7.1.3); IP addresses cannot
    use it (RFC 8738 section 7).
    """
    if setting not in CHALLENGE_CHOICES:
        raise ConfigError(f"challenge {setting!r}: use one of {', '.join(CHALLENGE_CHOICES)}")
    if setting != "auto":
        if setting == "dns-01" and not dns_available:
            raise ConfigError("challenge dns-01 needs a DNS updater (RFC 2136 or a provider)")
        return [Candidate(setting, "configured")]
    if wildcard:
        if not dns_available:
            raise ConfigError("a wildcard name needs dns-01, and no DNS updater is configured")
        return [Candidate("dns-01", "a wildcard name can only be validated through DNS")]
    out: list[Candidate] = []
    if tls_reachable:
        out.append(Candidate("tls-alpn-01", "port 443 reaches the edge from outside"))
    if http_reachable:
        out.append(Candidate("http-01", "port 80 reaches the edge from outside"))
    if dns_available and not ip_identifiers:
        why = "a DNS updater is configured"
        if tls_reachable is False and http_reachable is False:
            why += " and ports 80 and 443 are closed from outside"
        out.append(Candidate("dns-01", why))
    if tls_reachable is None:
        out.append(Candidate("tls-alpn-01", "port 443 may reach the edge (not known)"))
    if http_reachable is None:
        out.append(Candidate("http-01", "port 80 may reach the edge (not known)"))
    if not out:
        raise ConfigError(
            "no ACME challenge can work: ports 80 and 443 are closed from outside and no DNS "
            "updater is configured; open (forward) port 443 or 80 to the edge, or configure "
            "a DNS provider for dns-01"
        )
    return out


def _port_reached(result: Any) -> tuple[int, bool] | None:
    """(outside port 80/443, reachable) from one natsync.portmap ``MapResult``; None when it
    says nothing about them (another port, UDP, a removal)."""
    spec = result.spec
    if spec.protocol != "tcp" or spec.external_port not in (80, 443):
        return None
    if str(getattr(result, "method", "")).endswith("6"):
        # An IPv6 pinhole (upnp6, pcp6): ACME validators reach the name's A record through
        # the router's IPv4 mapping, which this does not tell about.
        return None
    if result.action in ("created", "renewed", "kept"):
        # A router may grant another outside port than asked: then 80/443 still do not reach.
        granted = getattr(result, "external_port", None)
        return spec.external_port, granted in (None, spec.external_port)
    if result.action == "failed":
        return spec.external_port, False
    return None


def reachability_from_portmap(results: Sequence[Any]) -> tuple[bool | None, bool | None]:
    """(port 80, port 443) reachable from outside, from what the router answered to
    natsync.portmap (``MapResult``: created / renewed / kept → True, failed → False); a port
    not asked about stays None (unknown). One success of a port outweighs a failure."""
    found: dict[int, bool] = {}
    for result in results:
        seen = _port_reached(result)
        if seen is None:
            continue
        port, ok = seen
        found[port] = found.get(port, False) or ok
    return found.get(80), found.get(443)


#: Where the portmap part leaves the router's last answers about ports 80 / 443 for the cert
#: part (another process): DATA_DIR/acme/REACHABILITY_FILE.
REACHABILITY_FILE = "reachability.json"


class ReachabilityFile:
    """What the router last said about ports 80 and 443, handed from the portmap part to the
    cert part of `natsync run` (two processes) through a small JSON file.

    The writer calls :meth:`note` with every ``MapResult`` as it reports it (the newest answer
    per port wins: a mapping that expired and could not be renewed turns the port closed);
    the reader calls :meth:`read` and passes the pair to
    :meth:`CertificateManager.set_reachability`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ACME_DIR / REACHABILITY_FILE
        self.ports: dict[int, bool] = {}

    def note(self, result: Any) -> None:
        seen = _port_reached(result)
        if seen is None or self.ports.get(seen[0]) is seen[1]:
            return
        self.ports[seen[0]] = seen[1]
        doc = {"http": self.ports.get(80), "tls": self.ports.get(443)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.path, json.dumps(doc).encode(), 0o644)
        except OSError as exc:  # the mapping itself matters more than this note
            log.warning("cannot record port reachability in %s: %s", self.path, exc)

    def clear(self) -> None:
        """Forget an earlier run's answers (the portmap part starts afresh)."""
        self.ports.clear()
        self.path.unlink(missing_ok=True)

    def read(self) -> tuple[bool | None, bool | None] | None:
        """(port 80, port 443) as last written, or None when nothing was."""
        try:
            doc = json.loads(self.path.read_bytes()[:4096])
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        http, tls = doc.get("http"), doc.get("tls")
        return (
            http if isinstance(http, bool) else None,
            tls if isinstance(tls, bool) else None,
        )


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertStatus:
    """What /healthz and ``natsync cert status`` show."""

    state: State
    healthy: bool
    names: tuple[str, ...]
    directory: str
    not_after: str | None
    renew_at: str | None
    renew_source: str
    next_check: str | None
    failures: int
    last_error: str
    challenge: str
    challenge_reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state"] = str(self.state)
        doc["names"] = list(self.names)
        return doc


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- settings and the I/O shell --------------------------------------------------------------


def settings_from_table(table: dict[str, Any], data_dir: Path) -> ManagerSettings:
    """The ``[cert]`` table of the deployment file as ManagerSettings (one parser for every
    command: :func:`natsync.cert.settings.parse_cert_table`)."""
    settings: ManagerSettings = parse_cert_table(table).manager_settings(data_dir)
    return settings


InstalledHook = Callable[[Path, Path], Awaitable[None] | None]


def edge_reload_hook(edge: Any) -> InstalledHook:
    """Reload an in-process edge (:class:`natsync.edge.app.RunningEdge`) after installing."""

    def hook(cert_path: Path, key_path: Path) -> None:
        if not edge.reload():
            raise AcmeError(f"the edge refused the new certificate {cert_path}; see its log")

    return hook


def reloader_hook(reloader: Any) -> InstalledHook:
    """Reload a server's :class:`natsync.cert.reload.CertReloader` (serving directly)."""

    def hook(cert_path: Path, key_path: Path) -> None:
        reloader.reload(cert_path, key_path)

    return hook


class CertificateManager:
    """Obtains and renews one certificate; see the module text for how to run it."""

    def __init__(
        self,
        settings: ManagerSettings,
        *,
        challenges: ChallengeStore | None = None,
        dns: Any = None,
        on_installed: Sequence[InstalledHook] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        rng: random.Random | None = None,
        stand_in: Callable[[x509.Certificate], bool] | None = None,
    ) -> None:
        """*dns*: a :class:`natsync.ddns.providers.TxtPublisher` (enables dns-01).
        *stand_in*: says whether an installed certificate only stands in until the first
        order (like the placeholder; e.g. `natsync init`'s private-CA one)."""
        if not settings.names and not settings.ips:
            raise ConfigError("the certificate manager needs the public name")
        self.settings = settings
        self.directory_url = resolve_directory(settings.directory)
        self.challenges = challenges or ChallengeStore(spool=settings.acme_dir / "challenges")
        self.dns = dns
        self.on_installed = list(on_installed)
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.stand_in = stand_in
        self.schedule = Schedule(draw=self.rng.random())
        self.candidates = self._choose()
        #: Why no challenge can work now (after set_reachability), else None.
        self.no_challenge: ConfigError | None = None
        self.challenge = ""
        self.challenge_reason = ""
        self.accounts = AccountStore(settings.acme_dir / "accounts")
        self._cert: x509.Certificate | None = None
        self._wakeup = asyncio.Event()
        #: What the last order did on the wire (posts, badNonce retries, reused authorizations).
        self.last_stats: Stats | None = None
        self.load()

    # -- state

    def load(self) -> None:
        """Read the installed certificate (if any) into the schedule."""
        path = self.settings.cert_path
        try:
            leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
        except (OSError, ValueError):
            return
        if is_placeholder(leaf) or (self._cert is not None and leaf == self._cert):
            return
        if self.stand_in is not None and self.stand_in(leaf):
            return
        self._cert = leaf
        self.schedule.certificate(
            leaf.not_valid_before_utc, leaf.not_valid_after_utc, self.rng.random()
        )

    def status(self) -> CertStatus:
        now = self.clock()
        sched = self.schedule
        state = sched.state(now)
        action = sched.next_action(now)
        next_check = action.until if isinstance(action, Wait) else now
        renew_at = sched.renew_at()
        if state is State.OBTAINING:
            message = "obtaining the first certificate"
        elif state is State.VALID:
            message = f"valid; renewal at {renew_at:%Y-%m-%d %H:%M} UTC ({sched.source})"
        elif state is State.RENEWING:
            message = "renewal due; " + (
                f"{sched.failures} attempt(s) failed, next at {next_check:%Y-%m-%d %H:%M} UTC"
                if sched.failures
                else "renewing"
            )
        elif state is State.EXPIRING:
            message = (
                f"EXPIRES {sched.not_after:%Y-%m-%d %H:%M} UTC and renewal keeps failing: "
                f"{sched.last_error or 'no attempt has succeeded yet'}"
            )
        else:
            message = f"EXPIRED at {sched.not_after:%Y-%m-%d %H:%M} UTC; phones refuse it"
        if sched.failures and sched.last_error and state is not State.EXPIRING:
            message += f" (last error: {sched.last_error})"
        healthy = state in HEALTHY_STATES or (state is State.OBTAINING and not sched.failures)
        return CertStatus(
            state=state,
            healthy=healthy,
            names=(*self.settings.names, *self.settings.ips),
            directory=self.directory_url,
            not_after=_iso(sched.not_after),
            renew_at=_iso(renew_at),
            renew_source=sched.source,
            next_check=_iso(next_check),
            failures=sched.failures,
            last_error=sched.last_error,
            challenge=self.challenge,
            challenge_reason=self.challenge_reason,
            message=message,
        )

    def _save_status(self) -> None:
        """Leave the status where ``natsync cert status`` (another process) reads it."""
        doc = self.status().as_dict()
        _atomic_write(
            self.settings.acme_dir / STATUS_FILE, json.dumps(doc, indent=2).encode(), 0o644
        )

    # -- I/O

    def _ssl(self) -> ssl.SSLContext | None:
        if self.settings.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.settings.ca_file))

    def _client(self) -> AcmeClient:
        key = self.accounts.key(self.directory_url)
        return AcmeClient(
            self.directory_url,
            key,
            ssl_context=self._ssl(),
            account_url=self.accounts.account_url(self.directory_url),
        )

    def _solver(self, challenge: str) -> Solver:
        if challenge == "http-01":
            return Http01Solver(self.challenges)
        if challenge == "tls-alpn-01":
            return TlsAlpn01Solver(self.challenges, now=self.clock)
        return Dns01Solver(self.dns)

    async def _installed(self, cert_path: Path, key_path: Path) -> None:
        for hook in self.on_installed:
            result = hook(cert_path, key_path)
            if result is not None:
                await result

    async def renew_now(self) -> Issued:
        """One order, trying the challenge candidates in turn (the one that worked last time
        first); installs the certificate and runs the hooks. Raises the last error."""
        settings = self.settings
        if self.no_challenge is not None:
            raise self.no_challenge
        contact = [f"mailto:{settings.email}"] if settings.email else []
        ordered = sorted(self.candidates, key=lambda c: c.challenge != self.challenge)
        replaces = ""
        if self._cert is not None and self.schedule.ari_offered:
            try:
                replaces = cert_id(self._cert)
            except AriError:
                replaces = ""
        last: AcmeError | None = None
        async with self._client() as client:
            self.last_stats = client.stats
            try:
                for candidate in ordered:
                    log.info(
                        "ordering a certificate for %s from %s with %s (%s)",
                        ", ".join([*settings.names, *settings.ips]),
                        self.directory_url,
                        candidate.challenge,
                        candidate.reason,
                    )
                    try:
                        issued = await obtain(
                            client,
                            names=settings.names,
                            ips=settings.ips,
                            solver=self._solver(candidate.challenge),
                            out_dir=settings.out_dir,
                            basename=settings.basename,
                            key_type=settings.key_type,
                            contact=contact,
                            on_installed=self._installed,
                            replaces=replaces,
                        )
                    except ChallengeFailed as exc:
                        log.warning("%s did not work: %s", candidate.challenge, exc.message)
                        last = exc
                        continue
                    self.challenge, self.challenge_reason = candidate.challenge, candidate.reason
                    log.info(
                        "certificate installed: %s, valid until %s (challenge %s: %s)",
                        issued.cert_path,
                        issued.chain[0].not_valid_after_utc.isoformat(),
                        candidate.challenge,
                        candidate.reason,
                    )
                    self.load()
                    return issued
            finally:
                if client.kid:
                    self.accounts.save(self.directory_url, client.kid, client.key, contact)
        assert last is not None
        raise last

    async def check_ari(self) -> None:
        """Ask the CA when to renew (RFC 9773 section 4.2) and note the answer."""
        assert self._cert is not None
        now = self.clock()
        try:
            async with self._client() as client:
                info = await client.renewal_info(self._cert, now)
        except (AriError, AcmeError) as exc:
            self.schedule.ari_failed(now, self.rng.uniform(-1, 1))
            log.warning("renewal information unavailable (%s); asking again later", exc.message)
            return
        self.schedule.ari_answer(info, now)
        if info is not None:
            log.info(
                "the CA suggests renewing between %s and %s; renewal at %s%s",
                info.start.isoformat(),
                info.end.isoformat(),
                _iso(self.schedule.renew_at()),
                f" ({info.explanation_url})" if info.explanation_url else "",
            )

    async def step(self) -> Action:
        """Do what the schedule says now (order, ask the CA, or nothing); return the action."""
        self.load()
        now = self.clock()
        action = self.schedule.next_action(now)
        if isinstance(action, CheckAri):
            await self.check_ari()
        elif isinstance(action, Renew):
            try:
                await self.renew_now()
            except Exception as exc:  # the loop must outlive any one failure
                if not isinstance(exc, NatsyncError):
                    log.exception("certificate order failed unexpectedly")
                message = exc.message if isinstance(exc, NatsyncError) else repr(exc)
                now = self.clock()
                self.schedule.failed(message, now, self.rng.uniform(-1, 1))
                state = self.schedule.state(now)
                if state in (State.EXPIRING, State.EXPIRED):
                    log.error(
                        "CERTIFICATE %s: %s expires %s and renewal failed %d time(s): %s",
                        "EXPIRED" if state is State.EXPIRED else "EXPIRING",
                        ", ".join([*self.settings.names, *self.settings.ips]),
                        _iso(self.schedule.not_after),
                        self.schedule.failures,
                        message,
                    )
                else:
                    log.warning(
                        "certificate order failed (%d in a row), retrying at %s: %s",
                        self.schedule.failures,
                        _iso(self.schedule.retry_at),
                        message,
                    )
        return action

    def set_reachability(self, http_reachable: bool | None, tls_reachable: bool | None) -> None:
        """What is now known about ports 80 / 443 from outside (e.g. from
        :func:`reachability_from_portmap`): the challenge candidates are chosen again."""
        if (http_reachable, tls_reachable) == (
            self.settings.http_reachable,
            self.settings.tls_reachable,
        ):
            return
        self.settings = replace(
            self.settings, http_reachable=http_reachable, tls_reachable=tls_reachable
        )
        try:
            self.candidates = self._choose()
            self.no_challenge = None
        except ConfigError as exc:  # the router closed both ports and no DNS updater
            self.candidates, self.no_challenge = [], exc
            log.error("%s", exc.message)
        log.info(
            "ports from outside now: 80 %s, 443 %s; challenges: %s",
            _reach_word(http_reachable),
            _reach_word(tls_reachable),
            "; ".join(f"{c.challenge} ({c.reason})" for c in self.candidates) or "none",
        )

    def _choose(self) -> list[Candidate]:
        settings = self.settings
        return choose_challenges(
            settings.challenge,
            http_reachable=settings.http_reachable,
            tls_reachable=settings.tls_reachable,
            dns_available=self.dns is not None,
            wildcard=any(n.startswith("*.") for n in settings.names),
            ip_identifiers=bool(settings.ips),
        )

    def wake(self) -> None:
        """Re-evaluate at once (e.g. after `natsync cert renew` asked for it)."""
        self._wakeup.set()

    def renew_soon(self) -> None:
        """Order a new certificate at the next step, whatever the window (SIGUSR1 of
        `natsync run`); a failure falls back to the usual backoff."""
        self.schedule.forced = True
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Obtain and renew until *stop* is set. Never raises for ACME or network trouble:
        those are retried with backoff and shown in :meth:`status`."""
        log.info(
            "certificate manager for %s (directory %s, challenges: %s)",
            ", ".join([*self.settings.names, *self.settings.ips]),
            self.directory_url,
            "; ".join(f"{c.challenge} ({c.reason})" for c in self.candidates),
        )
        while not stop.is_set():
            try:
                action = await self.step()
                self._save_status()
            except Exception:  # the loop must outlive anything one step meets (a full disk)
                log.exception("the certificate manager's step failed; trying again shortly")
                action = Wait(self.clock() + UNEXPECTED_RETRY)
            if not isinstance(action, Wait):
                continue
            delay = (action.until - self.clock()).total_seconds()
            delay = min(max(delay, 0.0), MAX_SLEEP)
            self._wakeup.clear()
            if self.schedule.forced:  # renew_soon() during the step
                continue
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({stopped, woken}, timeout=delay, return_when="FIRST_COMPLETED")
            finally:
                stopped.cancel()
                woken.cancel()


def _reach_word(value: bool | None) -> str:
    return "unknown" if value is None else ("open" if value else "closed")


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The status a running manager last wrote, or None."""
    path = data_dir / ACME_DIR / STATUS_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


__all__ = [
    "CertStatus",
    "CertificateManager",
    "ManagerSettings",
    "ReachabilityFile",
    "Schedule",
    "State",
    "choose_challenges",
    "edge_reload_hook",
    "ensure_placeholder",
    "parse_ports_open",
    "reachability_from_portmap",
    "read_status",
    "reloader_hook",
    "settings_from_table",
]
