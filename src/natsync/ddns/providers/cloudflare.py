"""Cloudflare API v4 (developers.cloudflare.com/api), with a scoped API token.

* Auth: ``Authorization: Bearer TOKEN``; the token needs Zone:Read and DNS:Edit on the zone.
* Zone: ``GET /zones?name=ZONE`` (Zones, "List Zones"); the zone of a name is found by asking
  for the name, then each parent, unless ``zone_id`` is configured.
* Records (DNS Records for a Zone): ``GET /zones/{id}/dns_records?type=&name=`` ("List"),
  ``POST /zones/{id}/dns_records`` ("Create"), ``PATCH /zones/{id}/dns_records/{rid}``
  ("Patch"), ``DELETE`` ("Delete"). ``ttl`` is 1 ("automatic") or 60..86400; ``proxied`` is
  always false: a proxied record would hand phones Cloudflare's addresses, not ours.
* Answers are ``{"success", "errors": [{"code", "message"}], "messages", "result"}``.
* Limits (developers.cloudflare.com/fundamentals/api/reference/limits): 1200 requests per five
  minutes per user; past it every call gets HTTP 429 for five minutes, with ``Retry-After``.
  natsync sends a few requests per change, and on 429 waits as told (five minutes if not told).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import CloudflareSettings
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

#: "If you exceed this limit, all API calls for the next five minutes will be blocked."
RATE_LIMIT_BLOCK = 300.0
#: TTL 1 means "automatic" (Cloudflare serves 300 s).
TTL_AUTO = 1
#: DNS-01 TXT records: Cloudflare's lowest explicit TTL.
TXT_TTL = 60


class CloudflareUpdater(ApiUpdater):
    kind = "cloudflare"
    label = "Cloudflare"
    default_wait = RATE_LIMIT_BLOCK

    def __init__(
        self,
        settings: CloudflareSettings,
        authoritative: Authoritative | None,
        zone: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(authoritative if settings.confirm == "dns" else None, **kwargs)
        self.settings = settings
        self.zone = normalise(zone)
        self.http = Http(settings.timeout, settings.ca_file)
        self.api = settings.api
        self._zone_ids: dict[str, str] = {}

    def identity(self) -> tuple[str, ...]:
        s = self.settings
        return (s.api, s.zone_id, self.zone, secret_digest(s.token.value))

    # -- API plumbing -----------------------------------------------------------------------

    def authorization(self) -> str:
        return f"Bearer {self.settings.token.value}"

    def _result(self, answer: HttpAnswer, what: str) -> Any:
        data = answer.json(f"Cloudflare {what}")
        if not isinstance(data, dict):
            raise DnsUpdateError(f"Cloudflare {what}: the answer is not an API v4 envelope")
        if answer.status < 300 and data.get("success") is True:
            return data.get("result")
        errors = data.get("errors")
        told = "; ".join(
            f"{e.get('code')}: {e.get('message')}"
            for e in (errors if isinstance(errors, list) else [])
            if isinstance(e, dict)
        )
        if answer.status in (401, 403):
            raise DnsUpdateError(
                f"Cloudflare {what}: the API token is not accepted or lacks permission "
                f"(HTTP {answer.status}: {told or 'no detail'}). Give ddns.cloudflare.token "
                "Zone:Read and DNS:Edit on this zone; natsync sends nothing more until the "
                "configuration changes",
                fatal=True,
            )
        raise DnsUpdateError(
            f"Cloudflare {what}: HTTP {answer.status}: {told or 'no detail'}", fatal=True
        )

    def zone_id(self, name: str) -> str:
        """The id of the zone holding *name*: asked for the name, then each parent, once."""
        if self.settings.zone_id:
            return self.settings.zone_id
        n = normalise(name)
        if n in self._zone_ids:
            return self._zone_ids[n]
        labels = n.split(".")
        candidates = (
            [self.zone] if self.zone else [".".join(labels[i:]) for i in range(len(labels) - 1)]
        )
        for candidate in candidates:
            zones = self.call("GET", f"/zones?{urlencode({'name': candidate})}", "zone lookup")
            if isinstance(zones, list) and zones and isinstance(zones[0], dict):
                zid = str(zones[0].get("id", ""))
                if zid:
                    self._zone_ids[n] = zid
                    return zid
        raise DnsUpdateError(
            f"Cloudflare: no zone of this token holds {name}; check ddns.names and the token's "
            "zone resources",
            fatal=True,
        )

    def records(self, name: str, rdtype: str) -> list[dict[str, Any]]:
        zid = self.zone_id(name)
        query = urlencode({"type": rdtype, "name": normalise(name), "per_page": "100"})
        found = self.call("GET", f"/zones/{quote(zid)}/dns_records?{query}", f"reading {name}")
        if not isinstance(found, list):
            raise DnsUpdateError(f"Cloudflare: the record list of {name} is not a list")
        return [r for r in found if isinstance(r, dict)]

    # -- the updater ------------------------------------------------------------------------

    def ttl_ok(self, served: int | None, wanted: int) -> bool:
        # TTL 1 is "automatic": served as whatever Cloudflare picks (300 s).
        return (wanted == TTL_AUTO and served is not None) or served == wanted

    def current(self, name: str, rdtype: str) -> Served:
        if self.authoritative is not None:
            return self.authoritative.read(name, rdtype)
        found = self.records(name, rdtype)
        if not found:
            return Served(frozenset(), None)
        ttl = found[0].get("ttl")
        return Served(
            frozenset(self._present(r, rdtype) for r in found),
            ttl if isinstance(ttl, int) else None,
        )

    @staticmethod
    def _present(record: dict[str, Any], rdtype: str) -> str:
        content = str(record.get("content", ""))
        return quote_txt(content) if rdtype == "TXT" and not content.startswith('"') else content

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        zid = quote(self.zone_id(name))
        found = self.records(name, rdtype)
        body = {
            "type": rdtype,
            "name": normalise(name),
            "content": address,
            "ttl": ttl,
            "proxied": False,
        }
        if not found:
            self.call("POST", f"/zones/{zid}/dns_records", f"creating {name} {rdtype}", body)
            return
        first, *others = found
        self.call(
            "PATCH",
            f"/zones/{zid}/dns_records/{quote(str(first.get('id')))}",
            f"changing {name} {rdtype}",
            {"content": address, "ttl": ttl, "proxied": False},
        )
        for extra in others:  # one address per name: a round robin would send phones astray
            self.call(
                "DELETE",
                f"/zones/{zid}/dns_records/{quote(str(extra.get('id')))}",
                f"removing an extra {rdtype} of {name}",
            )

    def add_txt(self, owner: str, value: str) -> None:
        zid = quote(self.zone_id(owner))
        if quote_txt(value) not in {self._present(r, "TXT") for r in self.records(owner, "TXT")}:
            self.call(
                "POST",
                f"/zones/{zid}/dns_records",
                f"adding TXT {owner}",
                {"type": "TXT", "name": normalise(owner), "content": value, "ttl": TXT_TTL},
            )
        self.confirm(owner, "TXT", lambda s: quote_txt(value) in s.values)

    def remove_txt(self, owner: str, value: str) -> None:
        zid = quote(self.zone_id(owner))
        for record in self.records(owner, "TXT"):
            if self._present(record, "TXT") == quote_txt(value):
                self.call(
                    "DELETE",
                    f"/zones/{zid}/dns_records/{quote(str(record.get('id')))}",
                    f"removing TXT {owner}",
                )
