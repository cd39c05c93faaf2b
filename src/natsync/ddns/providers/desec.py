"""deSEC (desec.readthedocs.io), REST API at https://desec.io/api/v1 with token auth.

* Auth (Authentication, "Token-based authentication"): ``Authorization: Token TOKEN``.
* Domain (Domain Management): ``GET /domains/{name}/`` gives ``minimum_ttl``, the smallest TTL
  the domain's RRsets may have (3600 s unless deSEC lowered it for the domain); a lower
  ``ddns.ttl`` is raised to it and natsync says so. ``GET /domains/?owns_qname=NAME`` finds the
  domain a name belongs to.
* RRsets (Retrieving and Creating DNS Records): ``GET /domains/{name}/rrsets/{subname}/{type}/``
  (``@`` for the apex; 404 when absent); bulk ``PATCH /domains/{name}/rrsets/`` with a list of
  ``{"subname", "type", "ttl", "records"}`` creates or changes an RRset, and ``records: []``
  deletes it. TXT records are given in presentation format (quoted).
* Rate limits (Rate Limits, "API Request Throttling"): RRset writes are limited per domain to
  2/s, 15/min, 100/h and 300/day (``dns_api_per_domain_expensive``), reads to 10/s and 50/min;
  a throttled request gets HTTP 429 with ``Retry-After`` seconds, and natsync sends nothing to
  deSEC before then. Writes happen only when the address changed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlencode

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import DesecSettings
from natsync.ddns.providers.base import (
    ApiUpdater,
    Authoritative,
    Http,
    HttpAnswer,
    Served,
    normalise,
    quote_txt,
    secret_digest,
)

log = logging.getLogger(__name__)

#: Domain Management, field ``minimum_ttl``: the value unless deSEC set another for the domain.
DEFAULT_MINIMUM_TTL = 3600
#: A 429 without a usable Retry-After: the shortest window of the write limit is a minute.
DEFAULT_RETRY_AFTER = 60.0


class DesecUpdater(ApiUpdater):
    kind = "desec"
    label = "deSEC"
    default_wait = DEFAULT_RETRY_AFTER

    def __init__(
        self, settings: DesecSettings, authoritative: Authoritative | None, **kwargs: Any
    ) -> None:
        super().__init__(authoritative if settings.confirm == "dns" else None, **kwargs)
        self.settings = settings
        self.http = Http(settings.timeout, settings.ca_file)
        self.api = settings.api
        self._domains: dict[str, str] = {}
        self._minimum: dict[str, int] = {}
        self.notes: list[str] = []

    def identity(self) -> tuple[str, ...]:
        s = self.settings
        return (s.api, s.domain, secret_digest(s.token.value))

    def authorization(self) -> str:
        return f"Token {self.settings.token.value}"

    def _result(self, answer: HttpAnswer, what: str) -> Any:
        if answer.status == 204:
            return None
        if answer.status == 404:
            return _NOT_FOUND
        data = answer.json(f"deSEC {what}")
        if answer.status < 300:
            return data
        detail = data.get("detail") if isinstance(data, dict) else None
        told = str(detail) if detail else str(data)[:300]
        if answer.status in (401, 403):
            raise DnsUpdateError(
                f"deSEC {what}: the token is not accepted or may not change this (HTTP "
                f"{answer.status}: {told}); fix ddns.desec.token. natsync sends nothing more "
                "until the configuration changes",
                fatal=True,
            )
        raise DnsUpdateError(f"deSEC {what}: HTTP {answer.status}: {told}", fatal=True)

    def domain(self, name: str) -> str:
        n = normalise(name)
        if self.settings.domain:
            if n != self.settings.domain and not n.endswith("." + self.settings.domain):
                raise DnsUpdateError(f"{name} is not inside ddns.desec.domain", fatal=True)
            return self.settings.domain
        if n not in self._domains:
            found = self.call("GET", f"/domains/?{urlencode({'owns_qname': n})}", "domain lookup")
            if not isinstance(found, list) or not found or not isinstance(found[0], dict):
                raise DnsUpdateError(
                    f"deSEC: no domain of this account holds {name}; check ddns.names",
                    fatal=True,
                )
            self._domains[n] = normalise(str(found[0].get("name", "")))
        return self._domains[n]

    def subname(self, name: str) -> str:
        domain = self.domain(name)
        n = normalise(name)
        return "" if n == domain else n[: -len(domain) - 1]

    def minimum_ttl(self, name: str) -> int:
        domain = self.domain(name)
        if domain not in self._minimum:
            info = self.call("GET", f"/domains/{quote(domain)}/", "reading the domain")
            value = info.get("minimum_ttl") if isinstance(info, dict) else None
            self._minimum[domain] = value if isinstance(value, int) else DEFAULT_MINIMUM_TTL
        return self._minimum[domain]

    def _path(self, name: str, rdtype: str) -> str:
        subname = quote(self.subname(name) or "@", safe="@")  # "@": the apex
        return f"/domains/{quote(self.domain(name))}/rrsets/{subname}/{rdtype}/"

    def read_api(self, name: str, rdtype: str) -> Served:
        found = self.call("GET", self._path(name, rdtype), f"reading {name} {rdtype}")
        if found is _NOT_FOUND or not isinstance(found, dict):
            return Served(frozenset(), None)
        records = found.get("records")
        ttl = found.get("ttl")
        return Served(
            frozenset(str(r) for r in records) if isinstance(records, list) else frozenset(),
            ttl if isinstance(ttl, int) else None,
        )

    def current(self, name: str, rdtype: str) -> Served:
        if self.authoritative is not None:
            return self.authoritative.read(name, rdtype)
        return self.read_api(name, rdtype)

    def effective_ttl(self, name: str, ttl: int) -> int:
        minimum = self.minimum_ttl(name)
        if ttl < minimum:
            note = (
                f"deSEC's minimum TTL for {self.domain(name)} is {minimum} s; using it instead of "
                f"ddns.ttl {ttl}"
            )
            if note not in self.notes:
                log.warning("%s", note)
                self.notes.append(note)
            return minimum
        return ttl

    def _write(self, name: str, rdtype: str, records: list[str], ttl: int, what: str) -> None:
        body = [{"subname": self.subname(name), "type": rdtype, "ttl": ttl, "records": records}]
        self.call("PATCH", f"/domains/{quote(self.domain(name))}/rrsets/", what, body)

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        self._write(name, rdtype, [address], ttl, f"changing {name} {rdtype}")

    def add_txt(self, owner: str, value: str) -> None:
        held = self.read_api(owner, "TXT").values
        if quote_txt(value) not in held:
            self._write(
                owner,
                "TXT",
                sorted(held | {quote_txt(value)}),
                self.minimum_ttl(owner),
                f"adding TXT {owner}",
            )
        self.confirm(owner, "TXT", lambda s: quote_txt(value) in s.values)

    def remove_txt(self, owner: str, value: str) -> None:
        held = self.read_api(owner, "TXT")
        if quote_txt(value) in held.values:
            self._write(
                owner,
                "TXT",
                sorted(held.values - {quote_txt(value)}),
                held.ttl or self.minimum_ttl(owner),
                f"removing TXT {owner}",
            )


class _NotFound:
    pass


_NOT_FOUND = _NotFound()
