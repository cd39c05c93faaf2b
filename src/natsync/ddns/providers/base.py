"""The one interface every DNS updater has, and what they share.

:class:`DnsUpdater` is what the runner uses: ``publish(name, rdtype, address, ttl)`` reads what
the record holds, sends an update only when it differs (providers block clients that repeat
themselves: Dyn's "nochg" rule, deSEC's and Cloudflare's rate limits), then confirms the new
record where it is served (the zone's authoritative servers, found by NS lookup, or the
provider's API) and reports the TTL the old record had: how long a phone may still hold the old
address.

:class:`TxtPublisher` is what DNS-01 needs (``natsync.cert``): ``add_txt`` returns once the TXT
value is served, ``remove_txt`` deletes that one value.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

import natsync
from natsync.ddns.errors import DnsUpdateError, PrerequisiteFailed, Unconfirmed

log = logging.getLogger(__name__)

#: An answer from a provider's HTTP API larger than this is not one we asked for.
MAX_HTTP_ANSWER = 1 << 20
#: How often the confirmation asks again while waiting for the new record.
CONFIRM_INTERVAL = 0.5
#: Attempts of one publish before its failure is reported (first try included); only failures
#: that may pass (network, 5xx, a lost compare-and-swap) are tried again.
MAX_ATTEMPTS = 4
#: Dyn's client policy asks for a User-Agent naming the client and its version
#: (help.dyn.com/remote-access-api/policies, "Required Client Behavior").
USER_AGENT = f"natsync/{natsync.__version__} ddns"


@runtime_checkable
class TxtPublisher(Protocol):
    """Publishes DNS-01 TXT records (RFC 8555 section 8.4)."""

    def add_txt(self, owner: str, value: str) -> None:
        """Add *value* at *owner*; return when it is served, else raise DnsUpdateError."""

    def remove_txt(self, owner: str, value: str) -> None:
        """Remove the one *value* at *owner* (other values stay)."""


@dataclass(frozen=True, slots=True)
class Served:
    """An RRset as served: its values in presentation format and its TTL (None: absent)."""

    values: frozenset[str]
    ttl: int | None


ABSENT = Served(frozenset(), None)


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    name: str
    rdtype: str
    #: "updated", "unchanged", or "pending" (sent before, not served yet: not sent again).
    result: str
    old: frozenset[str]
    #: TTL of the record before the update: caches may hold the old address this long.
    old_ttl: int | None
    new: str
    #: TTL of the record as served now.
    ttl: int | None
    attempts: int = 1
    note: str = ""


def normalise(name: str) -> str:
    return name.rstrip(".").lower()


def fqdn(name: str) -> str:
    return normalise(name) + "."


def quote_txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# Where records are served: the authoritative servers


class Authoritative:
    """Asks a zone's authoritative servers directly (no recursion, no cache).

    The servers are the configured ones (``ddns.confirm_servers``) or, by default, the zone's NS
    records, looked up through the system's resolver (or ``ddns.resolver``).
    """

    def __init__(
        self,
        servers: Iterable[tuple[str, int]] = (),
        *,
        resolver: tuple[str, int] | None = None,
        port: int = 53,
        timeout: float = 3.0,
    ) -> None:
        self.servers = tuple(servers)
        self.resolver = resolver
        self.port = port
        self.timeout = timeout
        self._found: dict[str, tuple[tuple[str, int], ...]] = {}

    def _resolver(self) -> dns.resolver.Resolver:
        if self.resolver is None:
            return dns.resolver.Resolver()
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.resolver[0]]
        r.port = self.resolver[1]
        r.lifetime = self.timeout
        return r

    def servers_for(self, name: str) -> tuple[tuple[str, int], ...]:
        if self.servers:
            return self.servers
        try:
            resolver = self._resolver()
            zone = dns.resolver.zone_for_name(fqdn(name), resolver=resolver)
            if zone.to_text() in self._found:
                return self._found[zone.to_text()]
            targets = [r.to_text() for r in resolver.resolve(zone, "NS")]
            found: list[tuple[str, int]] = []
            for target in targets:
                for rdtype in ("A", "AAAA"):
                    try:
                        found.extend(
                            (a.to_text(), self.port) for a in resolver.resolve(target, rdtype)
                        )
                    except dns.exception.DNSException:
                        continue
        except dns.exception.DNSException as exc:
            raise DnsUpdateError(
                f"cannot find the authoritative servers of {name} by NS lookup ({exc}); set "
                "ddns.confirm_servers",
                retryable=True,
            ) from exc
        if not found:
            raise DnsUpdateError(
                f"the NS records of {zone} name no server with an address; set "
                "ddns.confirm_servers",
                retryable=True,
            )
        self._found[zone.to_text()] = tuple(found)
        return tuple(found)

    def ask(self, host: str, port: int, name: str, rdtype: str) -> Served:
        query = dns.message.make_query(fqdn(name), rdtype)
        query.flags &= ~dns.flags.RD
        try:
            answer, _ = dns.query.udp_with_fallback(query, host, port=port, timeout=self.timeout)
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise DnsUpdateError(
                f"no answer from the authoritative server {host}:{port} for {name} {rdtype} "
                f"({exc or type(exc).__name__})",
                retryable=True,
            ) from exc
        if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsUpdateError(
                f"{host}:{port} answered {dns.rcode.to_text(answer.rcode())} for {name} {rdtype}",
                retryable=True,
            )
        qname = dns.name.from_text(fqdn(name))
        kind = dns.rdatatype.from_text(rdtype)
        for rrset in answer.answer:
            if rrset.name == qname and rrset.rdtype == kind:
                return Served(frozenset(r.to_text() for r in rrset), rrset.ttl)
        return ABSENT

    def read(self, name: str, rdtype: str) -> Served:
        """The record as the first server that answers serves it."""
        errors: list[str] = []
        for host, port in self.servers_for(name):
            try:
                return self.ask(host, port, name, rdtype)
            except DnsUpdateError as exc:
                errors.append(exc.message)
        raise DnsUpdateError("; ".join(errors), retryable=True)

    def read_all(self, name: str, rdtype: str) -> list[Served]:
        """The record as each server serves it (all must answer)."""
        return [self.ask(h, p, name, rdtype) for h, p in self.servers_for(name)]


# ---------------------------------------------------------------------------------------------
# HTTP APIs


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self, what: str) -> object:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise DnsUpdateError(
                f"{what}: the answer (HTTP {self.status}) is not JSON", retryable=True
            ) from exc

    def retry_after(self, default: float) -> float:
        """Seconds from a Retry-After header (RFC 9110 section 10.2.3, delay-seconds form)."""
        text = self.headers.get("retry-after", "")
        try:
            return max(0.0, float(text))
        except ValueError:
            return default


class Http:
    """A small HTTPS client: certificate verified (system CAs, or ``ca_file``), bounded answers,
    and error messages that never carry the URL's query (it may hold a token)."""

    def __init__(self, timeout: float, ca_file: Path | None = None) -> None:
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: object = None,
        what: str,
    ) -> HttpAnswer:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/plain"}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        # The scheme is https or http: checked in the settings (provider_settings._Table.url).
        request = urllib.request.Request(  # noqa: S310
            url, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in the settings
                request, timeout=self.timeout, context=self.context
            ) as response:
                return HttpAnswer(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read(MAX_HTTP_ANSWER),
                )
        except urllib.error.HTTPError as exc:
            return HttpAnswer(
                exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read(MAX_HTTP_ANSWER)
            )
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DnsUpdateError(
                f"{what}: cannot reach the provider ({reason})", retryable=True
            ) from exc


# ---------------------------------------------------------------------------------------------
# The updater interface


class DnsUpdater(ABC):
    """One provider. Subclasses read (``current``) and write (``send``); this class decides
    whether to write, retries what may pass, and confirms."""

    #: The provider's name in the settings (``ddns.provider``).
    kind: ClassVar[str]
    #: Seconds before the same address is sent again while the record still does not serve it
    #: (an update the provider accepted but has not served yet is not sent twice).
    resend_after: ClassVar[float] = 3600.0
    #: Whether the provider takes a TTL from us.
    takes_ttl: ClassVar[bool] = True

    def __init__(
        self,
        authoritative: Authoritative | None,
        *,
        confirm_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        attempts: int = MAX_ATTEMPTS,
        backoff_base: float = 0.5,
    ) -> None:
        self.authoritative = authoritative
        self.confirm_timeout = confirm_timeout
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.attempts = attempts
        self.backoff_base = backoff_base

    # -- what subclasses give -------------------------------------------------------------

    @abstractmethod
    def identity(self) -> tuple[str, ...]:
        """What identifies this provider's configuration (secrets included: hashed below)."""

    @abstractmethod
    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        """Write the record (one request, or a few for an API)."""

    def current(self, name: str, rdtype: str) -> Served:
        """What the record holds now, where it is served."""
        if self.authoritative is None:
            raise DnsUpdateError(f"{self.kind}: no way to read {name} is configured")
        return self.authoritative.read(name, rdtype)

    def served_everywhere(self, name: str, rdtype: str) -> list[Served]:
        if self.authoritative is None:
            return [self.current(name, rdtype)]
        return self.authoritative.read_all(name, rdtype)

    def effective_ttl(self, name: str, ttl: int) -> int:
        """The TTL the provider will take for the configured *ttl*."""
        return ttl

    def ttl_ok(self, served: int | None, wanted: int) -> bool:
        return not self.takes_ttl or served == wanted

    # -- what the runner uses -------------------------------------------------------------

    def fingerprint(self) -> str:
        """Changes when the configuration changes: a "stop until the user acts" block is kept
        under this key, so fixing the configuration lifts it."""
        return hashlib.sha256("\0".join((self.kind, *self.identity())).encode()).hexdigest()[:16]

    def publish(
        self, name: str, rdtype: str, address: str, ttl: int, *, sent_recently: bool = False
    ) -> PublishOutcome:
        """Read, send if different (and not already sent), confirm; retried with backoff on
        failures that may pass."""
        from natsync.ddns.update import backoff_delay

        for attempt in range(1, self.attempts + 1):
            try:
                outcome = self._publish_once(name, rdtype, address, ttl, sent_recently)
            except DnsUpdateError as exc:
                again = exc.retryable or isinstance(exc, PrerequisiteFailed)
                if not again or attempt == self.attempts or exc.fatal or exc.retry_after:
                    raise
                delay = backoff_delay(attempt, self.rng, self.backoff_base)
                log.warning(
                    "%s: %s %s failed (%s); retry %d in %.2f s",
                    self.kind,
                    name,
                    rdtype,
                    exc.message,
                    attempt,
                    delay,
                )
                self.sleep(delay)
                continue
            return replace(outcome, attempts=attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _publish_once(
        self, name: str, rdtype: str, address: str, ttl: int, sent_recently: bool
    ) -> PublishOutcome:
        ttl = self.effective_ttl(name, ttl)
        before = self.current(name, rdtype)
        if before.values == {address} and self.ttl_ok(before.ttl, ttl):
            return PublishOutcome(
                name, rdtype, "unchanged", before.values, before.ttl, address, before.ttl
            )
        if sent_recently:
            return PublishOutcome(
                name,
                rdtype,
                "pending",
                before.values,
                before.ttl,
                address,
                before.ttl,
                note=f"{address} was sent already and is not served yet; not sent again "
                "(providers block clients that repeat an update)",
            )
        self.send(name, rdtype, address, ttl, before)
        after = self.confirm(
            name, rdtype, lambda s: s.values == {address} and self.ttl_ok(s.ttl, ttl)
        )
        return PublishOutcome(
            name, rdtype, "updated", before.values, before.ttl, address, after.ttl
        )

    def confirm(self, name: str, rdtype: str, good: Callable[[Served], bool]) -> Served:
        """Until every authoritative server (or the API) serves what *good* accepts."""
        deadline = time.monotonic() + self.confirm_timeout
        seen: list[Served] = []
        while True:
            try:
                seen = self.served_everywhere(name, rdtype)
            except DnsUpdateError as exc:
                if time.monotonic() > deadline:
                    raise Unconfirmed(
                        f"{self.kind} accepted {name} {rdtype} but it cannot be confirmed: "
                        f"{exc.message}"
                    ) from exc
                seen = []
            if seen and all(good(s) for s in seen):
                return seen[0]
            if time.monotonic() > deadline:
                shown = "; ".join(
                    f"{', '.join(sorted(s.values)) or 'nothing'} (TTL {s.ttl})" for s in seen
                )
                raise Unconfirmed(
                    f"{self.kind} accepted the change of {name} {rdtype}, but after "
                    f"{self.confirm_timeout:g} s it is served as {shown or 'unknown'}"
                )
            self.sleep(CONFIRM_INTERVAL)


class ApiUpdater(DnsUpdater):
    """A provider with a JSON API over HTTPS: the request, throttling (HTTP 429 with
    Retry-After, RFC 6585 section 4) and server errors handled once; :meth:`_result` reads the
    rest of the provider's answer."""

    #: The provider's name in messages.
    label: ClassVar[str]
    #: Seconds to wait after an HTTP 429 that gives no usable Retry-After.
    default_wait: ClassVar[float]
    http: Http
    api: str

    @abstractmethod
    def authorization(self) -> str:
        """The Authorization header's value."""

    @abstractmethod
    def _result(self, answer: HttpAnswer, what: str) -> Any:
        """The result of a non-throttled answer, or DnsUpdateError."""

    def call(self, method: str, path: str, what: str, body: object = None) -> Any:
        answer = self.http.request(
            method,
            f"{self.api}{path}",
            headers={"Authorization": self.authorization()},
            body=body,
            what=f"{self.label} {what}",
        )
        return self.read_answer(answer, what)

    def read_answer(self, answer: HttpAnswer, what: str) -> Any:
        if answer.status == 429:
            wait = answer.retry_after(self.default_wait)
            raise DnsUpdateError(
                f"{self.label} {what}: throttled (HTTP 429); next request in {wait:g} s",
                retry_after=wait,
            )
        if answer.status >= 500:
            raise DnsUpdateError(f"{self.label} {what}: HTTP {answer.status}", retryable=True)
        return self._result(answer, what)


def secret_digest(value: str) -> str:
    """A secret in a fingerprint: hashed, so the fingerprint reveals nothing."""
    return hashlib.sha256(value.encode()).hexdigest()
