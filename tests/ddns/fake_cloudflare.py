"""A Cloudflare API v4 server for DNS records, written from developers.cloudflare.com/api:

* Every answer is the v4 envelope ``{"success", "errors": [{"code", "message"}], "messages",
  "result"}`` ("API v4 overview / response format").
* Auth with an API token: ``Authorization: Bearer TOKEN``; a missing or wrong token gets HTTP
  400/403 with error 10000 "Authentication error" / 9109 "Invalid access token".
* Zones, "List Zones": ``GET /zones?name=NAME``.
* DNS Records for a Zone: "List DNS Records" ``GET /zones/{zone_id}/dns_records?type=&name=``,
  "Create DNS Record" ``POST``, "Patch DNS Record" ``PATCH .../dns_records/{id}``, "Delete DNS
  Record" ``DELETE``. ``ttl``: 1 (automatic) or 60..86400 (error 9021 otherwise); an A record's
  content must be IPv4 (9005), an AAAA's IPv6 (9006); an identical record already existing is
  error 81058.
* Rate limits (fundamentals/api/reference/limits): 1200 requests per five minutes per user; past
  it HTTP 429 with ``Retry-After`` (error 971 "Please wait and consider throttling your request
  speed"). ``limit`` lowers the number for the tests.

Records go to a RecordStore: TTL 1 is served as 300 ("automatic").
"""

from __future__ import annotations

import ipaddress
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.ddns.fake_http import RecordStore, Reply, Request

#: What "automatic" TTL 1 is served as.
AUTO_TTL_SERVED = 300
RATE_WINDOW = 300.0


def envelope(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def failure(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return Reply(status, body, headers or {})


@dataclass
class CloudflareServer:
    store: RecordStore
    token: str
    #: zone name -> zone id
    zones: dict[str, str]
    limit: int = 1200
    retry_after: int = 300
    requests: list[Request] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    def handle(self, request: Request) -> Reply:
        if len(self.requests) > self.limit:
            return failure(
                429,
                971,
                "Please wait and consider throttling your request speed",
                {"Retry-After": str(self.retry_after)},
            )
        if self.fail_next:
            return failure(self.fail_next.pop(0), 10001, "service unavailable")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return failure(400, 10000, "Authentication error")
        if auth[7:] != self.token:
            return failure(403, 9109, "Invalid access token")
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] != ["client", "v4"]:
            return failure(404, 7000, "No route for that URI")
        parts = parts[2:]
        if parts == ["zones"] and request.method == "GET":
            name = request.query.get("name")
            found = [
                {"id": zid, "name": zname, "status": "active"}
                for zname, zid in self.zones.items()
                if name is None or zname == name
            ]
            return Reply(200, envelope(found))
        if len(parts) >= 3 and parts[0] == "zones" and parts[2] == "dns_records":
            zone = next((z for z, i in self.zones.items() if i == parts[1]), None)
            if zone is None:
                return failure(
                    404,
                    7003,
                    "Could not route to /zones/..., perhaps your object identifier is invalid?",
                )
            return self._records(request, zone, parts[3] if len(parts) > 3 else None)
        return failure(404, 7000, "No route for that URI")

    def _records(self, request: Request, zone: str, rid: str | None) -> Reply:
        if request.method == "GET" and rid is None:
            q = request.query
            found = [
                r
                for r in self.records.values()
                if r["zone_name"] == zone
                and (not q.get("type") or r["type"] == q["type"])
                and (not q.get("name") or r["name"] == q["name"])
                and (not q.get("content") or r["content"] == q["content"])
            ]
            return Reply(200, envelope(found))
        if request.method == "POST" and rid is None:
            body = request.body if isinstance(request.body, dict) else {}
            record = {"id": uuid.uuid4().hex, "zone_name": zone, "proxied": False, "ttl": 1}
            return self._write(record, body, create=True)
        if rid not in self.records:
            return failure(404, 81044, "Record does not exist.")
        if request.method == "PATCH":
            body = request.body if isinstance(request.body, dict) else {}
            return self._write(dict(self.records[rid]), body, create=False)
        if request.method == "DELETE":
            gone = self.records.pop(rid)
            self._sync(gone["name"], gone["type"])
            return Reply(200, envelope({"id": rid}))
        return failure(405, 10000, "Method not allowed")

    def _write(self, record: dict[str, Any], body: dict[str, Any], create: bool) -> Reply:
        record.update(
            {k: v for k, v in body.items() if k in ("type", "name", "content", "ttl", "proxied")}
        )
        ttl = record.get("ttl")
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            return failure(
                400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."
            )
        kind, content = record.get("type"), str(record.get("content", ""))
        if kind in ("A", "AAAA"):
            try:
                version = ipaddress.ip_address(content).version
            except ValueError:
                version = 0
            if (kind, version) not in (("A", 4), ("AAAA", 6)):
                code = 9005 if kind == "A" else 9006
                return failure(400, code, f"Content for {kind} record is invalid.")
        if create and any(
            r["name"] == record.get("name") and r["type"] == kind and r["content"] == content
            for r in self.records.values()
        ):
            return failure(400, 81058, "An identical record already exists.")
        self.records[record["id"]] = record
        self._sync(str(record["name"]), str(kind))
        return Reply(200, envelope(record))

    def _sync(self, name: str, rdtype: str) -> None:
        held = [r for r in self.records.values() if r["name"] == name and r["type"] == rdtype]
        values = {f'"{r["content"]}"' if rdtype == "TXT" else r["content"] for r in held}
        ttl = held[0]["ttl"] if held else 60
        self.store.put(name, rdtype, values, AUTO_TTL_SERVED if ttl == 1 else ttl)
