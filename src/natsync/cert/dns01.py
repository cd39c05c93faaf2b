"""DNS-01 records through RFC 2136 dynamic updates, signed with TSIG: the same server, zone and
key file (BIND's ``key "name" { ... };`` format) as ``natsync ddns`` (natsync.ddns.update).

natsync.ddns.update replaces a whole RRset by compare-and-swap, which is right for one address
but wrong here: two authorizations for the same owner (``example.com`` and ``*.example.com``
both validate at ``_acme-challenge.example.com``) need two TXT values at once. So this module
adds and deletes single TXT values (RFC 2136 sections 2.5.1 and 2.5.4) with dnspython, and
confirms with natsync.ddns.update.read_published, which asks the authoritative server itself
(no cache), before the ACME server is told to look.

:class:`TxtPublisher` is the interface DNS-01 needs from any DNS updater (RFC 2136 here; the
provider updaters of natsync.ddns implement the same two methods): ``add_txt`` returns only
once the record is served, ``remove_txt`` withdraws one value and leaves others.
:class:`Rfc2136Publisher` is that interface over the functions below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.update import DnsServer, read_published

#: TTL of challenge records: short, so a resolver that cached a stale one forgets it soon.
TXT_TTL = 60
#: Seconds to wait for the authoritative server to answer with the new record.
CONFIRM_TIMEOUT = 10.0
CONFIRM_INTERVAL = 0.1


@runtime_checkable
class TxtPublisher(Protocol):
    """Publishes DNS-01 TXT records through some DNS updater (blocking calls; the ACME client
    runs them in a thread). *owner* is the full name (``_acme-challenge.<name>.``)."""

    def add_txt(self, owner: str, value: str) -> None:
        """Add *value* at *owner*; return once the zone's servers answer it."""
        ...

    def remove_txt(self, owner: str, value: str) -> None:
        """Remove the one *value* at *owner*; other values stay."""
        ...


@dataclass(frozen=True, slots=True)
class Rfc2136Publisher:
    """TxtPublisher by RFC 2136 update with TSIG to the zone's primary."""

    server: DnsServer
    confirm_timeout: float = CONFIRM_TIMEOUT

    def add_txt(self, owner: str, value: str) -> None:
        add_txt(self.server, owner, value, confirm_timeout=self.confirm_timeout)

    def remove_txt(self, owner: str, value: str) -> None:
        remove_txt(self.server, owner, value)

    def describe(self) -> str:
        return f"RFC 2136 to {self.server.host}:{self.server.port} (zone {self.server.zone})"


def _quoted(value: str) -> str:
    return '"' + value + '"'


def _send(server: DnsServer, update: dns.update.UpdateMessage, what: str) -> None:
    try:
        answer = dns.query.tcp(update, server.host, port=server.port, timeout=server.timeout)
    except dns.tsig.PeerError as exc:
        raise DnsUpdateError(
            f"{what}: the server rejected our TSIG signature ({type(exc).__name__}); the key "
            "file does not match the server's key"
        ) from exc
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        raise DnsUpdateError(
            f"{what}: cannot reach {server.host}:{server.port} ({exc or type(exc).__name__})",
            retryable=True,
        ) from exc
    rcode = answer.rcode()
    if rcode == dns.rcode.REFUSED:
        raise DnsUpdateError(
            f"{what}: the server refused it; its update-policy must let this key change TXT "
            "records of _acme-challenge names"
        )
    if rcode == dns.rcode.NOTZONE:
        raise DnsUpdateError(f"{what}: the name is not inside the zone {server.zone}")
    if rcode == dns.rcode.NOTAUTH:
        raise DnsUpdateError(f"{what}: the server is not authoritative for {server.zone}")
    if rcode != dns.rcode.NOERROR:
        raise DnsUpdateError(f"{what}: the server answered {dns.rcode.to_text(rcode)}")


def add_txt(
    server: DnsServer,
    owner: str,
    value: str,
    *,
    ttl: int = TXT_TTL,
    sleep: Callable[[float], None] = time.sleep,
    confirm_timeout: float = CONFIRM_TIMEOUT,
) -> None:
    """Add the TXT *value* at *owner* and wait until the authoritative server answers it."""
    update = dns.update.UpdateMessage(
        server.zone, keyring=server.key.to_dns() if server.key else None
    )
    update.add(dns.name.from_text(owner), ttl, "TXT", _quoted(value))
    _send(server, update, f"adding TXT {owner}")
    deadline = time.monotonic() + confirm_timeout
    while _quoted(value) not in read_published(server, owner, "TXT").values:
        if time.monotonic() > deadline:
            raise DnsUpdateError(
                f"the server accepted TXT {owner} but does not answer it after "
                f"{confirm_timeout:.0f} s",
                retryable=True,
            )
        sleep(CONFIRM_INTERVAL)


def remove_txt(server: DnsServer, owner: str, value: str) -> None:
    """Delete the one TXT *value* at *owner* (others, of concurrent orders, stay)."""
    update = dns.update.UpdateMessage(
        server.zone, keyring=server.key.to_dns() if server.key else None
    )
    update.delete(dns.name.from_text(owner), "TXT", _quoted(value))
    _send(server, update, f"removing TXT {owner}")
