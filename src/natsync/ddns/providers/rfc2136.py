"""RFC 2136 dynamic updates signed with TSIG, behind the updater interface.

Writes are compare-and-swap (natsync.ddns.update.compare_and_swap: the RRset must still be what
we read, RFC 2136 section 2.4); the record is read and confirmed at the zone's primary itself.
TXT values for DNS-01 are added and deleted one by one (RFC 2136 sections 2.5.1 and 2.5.4), so
two challenges at the same owner can coexist.
"""

from __future__ import annotations

from typing import Any

import dns.name
import dns.rcode
import dns.update

from natsync.ddns.providers.base import DnsUpdater, Served, fqdn, quote_txt, secret_digest
from natsync.ddns.update import (
    DnsServer,
    _exchange,
    _rcode_error,
    compare_and_swap,
    read_published,
)

#: TTL of DNS-01 TXT records: short, so a resolver that cached a stale one forgets it soon.
TXT_TTL = 60


class Rfc2136Updater(DnsUpdater):
    kind = "rfc2136"
    #: A compare-and-swap server answers at once; there is no abuse rule to respect.
    resend_after = 0.0

    def __init__(self, server: DnsServer, **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self.server = server

    def identity(self) -> tuple[str, ...]:
        key = self.server.key
        return (
            self.server.host,
            str(self.server.port),
            self.server.zone,
            key.name if key else "",
            secret_digest(key.secret.hex()) if key else "",
        )

    def current(self, name: str, rdtype: str) -> Served:
        published = read_published(self.server, fqdn(name), rdtype)
        return Served(published.values, published.ttl)

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        compare_and_swap(self.server, fqdn(name), rdtype, before.values, address, ttl)

    def _update(self) -> dns.update.UpdateMessage:
        key = self.server.key
        return dns.update.UpdateMessage(self.server.zone, keyring=key.to_dns() if key else None)

    def _send_update(self, update: dns.update.UpdateMessage, owner: str, what: str) -> None:
        answer = _exchange(self.server, update, what)
        if answer.rcode() != dns.rcode.NOERROR:
            raise _rcode_error(answer.rcode(), owner, self.server.zone)

    def add_txt(self, owner: str, value: str) -> None:
        update = self._update()
        update.add(dns.name.from_text(fqdn(owner)), TXT_TTL, "TXT", quote_txt(value))
        self._send_update(update, owner, f"add TXT {owner}")
        self.confirm(owner, "TXT", lambda s: quote_txt(value) in s.values)

    def remove_txt(self, owner: str, value: str) -> None:
        update = self._update()
        update.delete(dns.name.from_text(fqdn(owner)), "TXT", quote_txt(value))
        self._send_update(update, owner, f"remove TXT {owner}")
