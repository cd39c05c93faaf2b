"""A Duck DNS server, written from www.duckdns.org/spec.jsp ("HTTP API Specification"):

* ``GET /update?domains=D1,D2&token=T[&ip=][&ipv6=][&verbose=true][&clear=true]``: domains are
  subnames (the ``.duckdns.org`` part may be left out); ``ip`` takes an IPv4 or an IPv6 address
  and, when empty, is detected (IPv4 only); giving ``ipv6`` turns that detection off;
  ``clear=true`` clears both records. ``OK`` or ``KO``; with ``verbose=true`` an OK carries the
  addresses and ``UPDATED`` or ``NOCHANGE``.
* TXT ("TXT record" part of the same page): ``&txt=VALUE`` sets the domain's one TXT record,
  ``&txt=&clear=true`` clears it; verbose answers ``OK``, the TXT, ``UPDATED``/``NOCHANGE``.

Records go to a RecordStore (a real BIND serving duckdns.org in the tests), with TTL 60 as Duck
DNS serves them, at the domain and, as a wildcard, at every name below it (Duck DNS answers
``anything.myhome.duckdns.org`` like ``myhome.duckdns.org``: that is how its one TXT record
answers ``_acme-challenge.myhome.duckdns.org``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tests.ddns.fake_http import RecordStore, Reply, Request

SUFFIX = ".duckdns.org"
#: What Duck DNS's own servers answer as TTL.
SERVED_TTL = 60


@dataclass
class DuckdnsServer:
    store: RecordStore
    token: str
    #: Subnames this account holds.
    domains: set[str]
    client_address: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)

    def updates(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/update"]

    def handle(self, request: Request) -> Reply:
        if request.path != "/update":
            return Reply(404, "not found")
        q = request.query
        names = [d.lower().removesuffix(SUFFIX) for d in q.get("domains", "").split(",") if d]
        if q.get("token") != self.token or not names or not set(names) <= self.domains:
            return Reply(200, "KO")
        verbose = q.get("verbose") == "true"
        clear = q.get("clear") == "true"
        if "txt" in q:
            value = "" if clear else q["txt"]
            changed = self._put(names, "TXT", f'"{value}"' if value else "")
            return Reply(200, f"OK\n{value}\n{changed}" if verbose else "OK")
        if clear:
            a = self._put(names, "A", "")
            aaaa = self._put(names, "AAAA", "")
            return Reply(200, f"OK\n\n\n{'UPDATED' if 'UPDATED' in (a, aaaa) else 'NOCHANGE'}")
        ip, ipv6 = q.get("ip", ""), q.get("ipv6", "")
        if not ip and not ipv6:
            ip = self.client_address
        try:
            parsed = [ipaddress.ip_address(a) for a in (ip, ipv6) if a]
        except ValueError:
            return Reply(200, "KO")
        if ipv6 and ipaddress.ip_address(ipv6).version != 6:
            return Reply(200, "KO")
        results = [self._put(names, "A" if a.version == 4 else "AAAA", str(a)) for a in parsed]
        changed = "UPDATED" if "UPDATED" in results else "NOCHANGE"
        v4 = next((str(a) for a in parsed if a.version == 4), "")
        v6 = next((str(a) for a in parsed if a.version == 6), "")
        return Reply(200, f"OK\n{v4}\n{v6}\n{changed}" if verbose else "OK")

    def _put(self, names: list[str], rdtype: str, value: str) -> str:
        changed = "NOCHANGE"
        for name in names:
            wanted = {value} if value else set()
            for full in (name + SUFFIX, "*." + name + SUFFIX):
                if self.store.get(full, rdtype)[0] != wanted:
                    self.store.put(full, rdtype, wanted, SERVED_TTL)
                    changed = "UPDATED"
        return changed
