"""A deSEC API server, written from desec.readthedocs.io:

* Authentication, "Token-based authentication": ``Authorization: Token TOKEN``; a wrong token
  gets HTTP 401 ``{"detail": "Invalid token."}``.
* Domain Management: ``GET /api/v1/domains/{name}/`` with ``minimum_ttl`` (3600 unless set
  otherwise for the domain); ``GET /api/v1/domains/?owns_qname=NAME`` lists the domain that owns
  the name (or nothing); 404 ``{"detail": "Not found."}``.
* Retrieving and Creating DNS Records: ``GET /api/v1/domains/{name}/rrsets/{subname}/{type}/``
  (``@`` for the apex) gives ``{"subname", "type", "ttl", "records", ...}`` or 404; bulk
  ``PATCH /api/v1/domains/{name}/rrsets/`` with a list creates or changes RRsets, and
  ``records: []`` deletes one; a TTL below ``minimum_ttl`` or above 86400 is HTTP 400 with the
  field's error; TXT records are quoted.
* Rate Limits, "API Request Throttling": RRset writes per domain are limited
  (``dns_api_per_domain_expensive``: 2/s, 15/min, 100/h, 300/day); a throttled request gets
  HTTP 429, a ``detail`` saying when, and ``Retry-After`` seconds. ``write_limit`` sets how many
  writes this server accepts before throttling.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.ddns.fake_http import RecordStore, Reply, Request

#: Domain Management: the default ``minimum_ttl``.
MINIMUM_TTL = 3600
MAXIMUM_TTL = 86400


@dataclass
class DesecServer:
    store: RecordStore
    token: str
    domains: set[str]
    minimum_ttl: int = MINIMUM_TTL
    write_limit: int = 15
    retry_after: int = 42
    requests: list[Request] = field(default_factory=list)
    rrsets: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]

    def handle(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Token {self.token}":
            return Reply(401, {"detail": "Invalid token."})
        parts = [unquote(p) for p in request.path.split("/") if p]
        if parts[:3] != ["api", "v1", "domains"]:
            return Reply(404, {"detail": "Not found."})
        parts = parts[3:]
        if not parts and request.method == "GET":
            qname = request.query.get("owns_qname", "").rstrip(".").lower()
            owners = [d for d in self.domains if qname == d or qname.endswith("." + d)]
            best = max(owners, key=len) if owners else None
            return Reply(200, [self._domain(best)] if best else [])
        domain = parts[0]
        if domain not in self.domains:
            return Reply(404, {"detail": "Not found."})
        if len(parts) == 1 and request.method == "GET":
            return Reply(200, self._domain(domain))
        if parts[1:] == ["rrsets"] and request.method in ("PATCH", "PUT"):
            return self._bulk(domain, request.body)
        if len(parts) == 4 and parts[1] == "rrsets" and request.method == "GET":
            subname = "" if parts[2] == "@" else parts[2]
            held = self.rrsets.get((domain, subname, parts[3]))
            return Reply(200, held) if held else Reply(404, {"detail": "Not found."})
        return Reply(405, {"detail": f'Method "{request.method}" not allowed.'})

    def _domain(self, name: str) -> dict[str, Any]:
        return {"name": name, "minimum_ttl": self.minimum_ttl, "keys": []}

    def _bulk(self, domain: str, body: Any) -> Reply:
        if len(self.writes()) > self.write_limit:
            return Reply(
                429,
                {
                    "detail": "Request was throttled. Expected available in "
                    f"{self.retry_after} seconds."
                },
                {"Retry-After": str(self.retry_after)},
            )
        if not isinstance(body, list):
            return Reply(400, {"non_field_errors": ["Expected a list of items."]})
        errors: list[dict[str, Any]] = []
        for item in body:
            error: dict[str, Any] = {}
            ttl = item.get("ttl")
            if not isinstance(ttl, int) or ttl < self.minimum_ttl:
                error["ttl"] = [
                    f"Ensure this value is greater than or equal to {self.minimum_ttl}."
                ]
            elif ttl > MAXIMUM_TTL:
                error["ttl"] = [f"Ensure this value is less than or equal to {MAXIMUM_TTL}."]
            for record in item.get("records", []):
                if item.get("type") in ("A", "AAAA"):
                    try:
                        ipaddress.ip_address(record)
                    except ValueError:
                        error["records"] = [f"Record content malformed: {record}"]
            errors.append(error)
        if any(errors):
            return Reply(400, errors)
        done = []
        for item in body:
            key = (domain, item.get("subname", ""), item["type"])
            name = f"{key[1]}.{domain}" if key[1] else domain
            if item.get("records"):
                self.rrsets[key] = {
                    "domain": domain,
                    "subname": key[1],
                    "name": name + ".",
                    "type": key[2],
                    "records": list(item["records"]),
                    "ttl": item["ttl"],
                }
                done.append(self.rrsets[key])
            else:
                self.rrsets.pop(key, None)
            self.store.put(name, key[2], set(item.get("records", [])), item["ttl"])
        return Reply(200, done)
