"""RFC 2136 dynamic updates, signed with TSIG (RFC 8945, HMAC-SHA256), confirmed by asking the
authoritative server directly.

Each change is a compare-and-swap: the update carries a prerequisite (RFC 2136 section 2.4)
that the RRset is exactly what we read a moment ago (or absent), then replaces it. If another
updater changed the record in between, the server answers NXRRSET/YXRRSET and nothing is
overwritten; we read again and decide again, so two updaters cannot silently undo each other.

The key secret is read from a file and never logged or printed (TsigKey's repr hides it).
"""

from __future__ import annotations

import base64
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from natsync.ddns.errors import DnsUpdateError, PrerequisiteFailed
from natsync.errors import ConfigError

log = logging.getLogger(__name__)

#: Attempts for one record before the failure is reported as an error (first try included).
MAX_ATTEMPTS = 4
#: Exponential backoff: BACKOFF_BASE * 2**attempt seconds, capped, with "equal jitter" (half
#: fixed, half random) so two updaters that failed together do not retry in lockstep.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: TSIG algorithms accepted in key files (RFC 8945 section 6: HMAC-SHA256 is mandatory).
ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha512": dns.tsig.HMAC_SHA512}

_KEY_RE = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>.*?)\}\s*;', re.DOTALL | re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r}, secret=<hidden>)"

    def to_dns(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm])


def parse_key(text: str) -> TsigKey:
    """A key in BIND's format (as written by ``tsig-keygen -a hmac-sha256 NAME``)."""
    match = _KEY_RE.search(text)
    if not match:
        raise ConfigError('the TSIG key file has no key "NAME" { algorithm ...; secret "..."; };')
    body = match.group("body")
    algorithm = re.search(r"algorithm\s+\"?([\w-]+)\"?\s*;", body)
    secret = re.search(r'secret\s+"([^"]+)"\s*;', body)
    if not algorithm or not secret:
        raise ConfigError("the TSIG key file must give both algorithm and secret")
    name = algorithm.group(1).lower()
    if name not in ALGORITHMS:
        raise ConfigError(f"TSIG algorithm {name} is not supported; use hmac-sha256")
    try:
        raw = base64.b64decode(secret.group(1), validate=True)
    except ValueError:
        raise ConfigError("the TSIG key file's secret is not valid base64") from None
    return TsigKey(match.group("name"), name, raw)


def load_key(path: Path) -> TsigKey:
    try:
        return parse_key(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read TSIG key file {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class DnsServer:
    """The zone's authoritative server: where updates go and where they are confirmed."""

    host: str
    port: int
    zone: str
    key: TsigKey | None
    timeout: float = 3.0


@dataclass(frozen=True, slots=True)
class Published:
    values: frozenset[str]
    ttl: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    rdtype: str
    old: frozenset[str]
    new: str
    changed: bool
    attempts: int


def _rcode_error(rcode: dns.rcode.Rcode, name: str, zone: str) -> DnsUpdateError:
    if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN):
        return PrerequisiteFailed(
            f"{name} changed on the server since we read it (another updater?); not overwritten"
        )
    if rcode == dns.rcode.REFUSED:
        return DnsUpdateError(
            f"the server refused the update of {name}: its update-policy does not allow this key "
            "to change this name (or it is not authoritative for the zone)"
        )
    if rcode == dns.rcode.NOTAUTH:
        return DnsUpdateError(
            f"the server is not authoritative for {zone} or did not accept our TSIG key"
        )
    if rcode == dns.rcode.NOTZONE:
        return DnsUpdateError(f"{name} is not inside the zone {zone}")
    return DnsUpdateError(
        f"the server answered {dns.rcode.to_text(rcode)} to the update of {name}",
        retryable=rcode == dns.rcode.SERVFAIL,
    )


def _exchange(server: DnsServer, message: dns.message.Message, what: str) -> dns.message.Message:
    try:
        return dns.query.tcp(message, server.host, port=server.port, timeout=server.timeout)
    except dns.tsig.PeerError as exc:
        raise DnsUpdateError(
            f"the server rejected our TSIG signature ({type(exc).__name__}): the key file does "
            "not match the key the server has for this name"
        ) from exc
    except dns.exception.Timeout as exc:
        raise DnsUpdateError(
            f"{what}: no answer from {server.host}:{server.port} within {server.timeout} s",
            retryable=True,
        ) from exc
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        raise DnsUpdateError(
            f"{what}: cannot reach {server.host}:{server.port} ({exc or type(exc).__name__})",
            retryable=True,
        ) from exc


def read_published(server: DnsServer, name: str, rdtype: str) -> Published:
    """What the authoritative server itself holds (no recursion, no cache)."""
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    answer = _exchange(server, query, f"query {name} {rdtype}")
    if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsUpdateError(
            f"the server answered {dns.rcode.to_text(answer.rcode())} to a query for {name}",
            retryable=True,
        )
    qname = dns.name.from_text(name)
    kind = dns.rdatatype.from_text(rdtype)
    for rrset in answer.answer:
        if rrset.name == qname and rrset.rdtype == kind:
            return Published(frozenset(r.to_text() for r in rrset), rrset.ttl)
    return Published(frozenset(), None)


def compare_and_swap(
    server: DnsServer, name: str, rdtype: str, expected: frozenset[str], new: str, ttl: int
) -> None:
    """Replace the RRset with *new* only if it is exactly *expected* (empty: absent)."""
    update = dns.update.UpdateMessage(
        server.zone, keyring=server.key.to_dns() if server.key else None
    )
    owner = dns.name.from_text(name)  # absolute: a bare string would be relative to the zone
    if expected:
        update.present(owner, rdtype, *sorted(expected))
    else:
        update.absent(owner, rdtype)
    update.replace(owner, ttl, rdtype, new)
    answer = _exchange(server, update, f"update {name} {rdtype}")
    if answer.rcode() != dns.rcode.NOERROR:
        raise _rcode_error(answer.rcode(), name, server.zone)


def publish_once(server: DnsServer, name: str, rdtype: str, address: str, ttl: int) -> Outcome:
    """Read, compare-and-swap if different, and confirm by reading again."""
    before = read_published(server, name, rdtype)
    if before.values == {address} and before.ttl == ttl:
        return Outcome(name, rdtype, before.values, address, changed=False, attempts=1)
    compare_and_swap(server, name, rdtype, before.values, address, ttl)
    after = read_published(server, name, rdtype)
    if after.values != {address} or after.ttl != ttl:
        raise DnsUpdateError(
            f"the server accepted the update of {name} but answers "
            f"{', '.join(sorted(after.values)) or 'nothing'} (TTL {after.ttl})",
            retryable=True,
        )
    return Outcome(name, rdtype, before.values, address, changed=True, attempts=1)


def backoff_delay(attempt: int, rng: random.Random, base: float = BACKOFF_BASE) -> float:
    """Delay before retry number *attempt* (1-based): exponential, capped, equal jitter."""
    delay = min(BACKOFF_CAP, base * 2.0 ** (attempt - 1))
    return delay / 2 + float(rng.uniform(0, delay / 2))


def publish(
    server: DnsServer,
    name: str,
    rdtype: str,
    address: str,
    ttl: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    attempts: int = MAX_ATTEMPTS,
    base: float = BACKOFF_BASE,
) -> Outcome:
    """:func:`publish_once`, retried with backoff on failures that may pass."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    for attempt in range(1, attempts + 1):
        try:
            outcome = publish_once(server, name, rdtype, address, ttl)
        except DnsUpdateError as exc:
            retry = exc.retryable or isinstance(exc, PrerequisiteFailed)
            if not retry or attempt == attempts:
                log.error("DNS update of %s %s failed: %s", name, rdtype, exc.message)
                raise
            delay = backoff_delay(attempt, rng, base)
            log.warning(
                "DNS update of %s %s failed (%s); retry %d in %.2f s",
                name,
                rdtype,
                exc.message,
                attempt,
                delay,
            )
            sleep(delay)
            continue
        return Outcome(outcome.name, rdtype, outcome.old, address, outcome.changed, attempt)
    raise AssertionError("unreachable")  # pragma: no cover
