"""A small ACME Renewal Information responder in front of pebble, written from RFC 9773.

Debian's pebble 2.4 offers no ``renewalInfo`` in its directory (checked: its directory names
keyChange, newAccount, newNonce, newOrder and revokeCert only), so this server adds it:

- Section 3: it serves pebble's directory with a ``renewalInfo`` URL of its own added.
- Section 4.1: it learns each certificate's identifier (AKI keyIdentifier "." serial) from
  the chains pebble hands out through it.
- Section 4.2: ``GET /renewal-info/<id>`` answers ``{"suggestedWindow": {"start", "end"}}``
  with a ``Retry-After`` header; by default the window is 60-70 % into the lifetime (what a
  CA suggests for a routine renewal), or what the test put in :attr:`AriProxy.windows` (a CA
  asking for early renewal, as after a mis-issuance). Unknown identifiers get 404.
- Section 5: it records every newOrder payload, so a test can see ``replaces``; with
  :attr:`AriProxy.already_replaced` it refuses an order naming ``replaces`` with the
  ``alreadyReplaced`` problem type the RFC registers, as a CA does when another order
  replaced it.

Everything else is passed to pebble unchanged with the client's ``Host`` header. pebble builds
its URLs (and checks each JWS ``url``) from the Host it is sent, so every URL it hands out
points back through this proxy and every signature still verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict

from natsync.cert.ari import cert_id
from tests.cert.acme_servers import Pebble

#: Headers passed back from pebble to the client.
PASSED_HEADERS = ("Replay-Nonce", "Location", "Link", "Content-Type", "Retry-After")


@dataclass
class AriProxy:
    pebble: Pebble
    port: int = 0
    retry_after: int = 6 * 3600
    windows: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)
    known: dict[str, x509.Certificate] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    already_replaced: bool = False

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def window_for(self, ident: str) -> tuple[dt.datetime, dt.datetime] | None:
        if ident in self.windows:
            return self.windows[ident]
        cert = self.known.get(ident)
        if cert is None:
            return None
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        life = end - start
        return start + life * 0.6, start + life * 0.7


@asynccontextmanager
async def run_ari_proxy(pebble: Pebble) -> AsyncIterator[AriProxy]:
    proxy = AriProxy(pebble)
    upstream = pebble.directory_url.rsplit("/", 1)[0]
    session = aiohttp.ClientSession()
    client_ssl = pebble.ssl_context()

    async def renewal_info(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        proxy.asked.append(ident)
        window = proxy.window_for(ident)
        if window is None:
            return web.json_response({"detail": "unknown certificate"}, status=404)
        start, end = window
        doc = {"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()}}
        return web.json_response(doc, headers={"Retry-After": str(proxy.retry_after)})

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.endswith("/order-plz") and body:
            jws = json.loads(body)
            padded = jws["payload"] + "=" * (-len(jws["payload"]) % 4)
            order = json.loads(base64.urlsafe_b64decode(padded))
            proxy.orders.append(order)
            if proxy.already_replaced and order.get("replaces"):
                problem = {
                    "type": "urn:ietf:params:acme:error:alreadyReplaced",
                    "detail": "the certificate was already replaced",
                }
                return web.json_response(
                    problem, status=409, content_type="application/problem+json"
                )
        headers = {"Host": request.host}
        for name in ("Content-Type", "Accept"):
            if name in request.headers:
                headers[name] = request.headers[name]
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers, ssl=client_ssl
        ) as resp:
            data = await resp.read()
            out = CIMultiDict((k, v) for k, v in resp.headers.items() if k in PASSED_HEADERS)
            status = resp.status
        if request.path == "/dir" and status == 200:
            doc = json.loads(data)
            doc["renewalInfo"] = f"https://{request.host}/renewal-info"
            data = json.dumps(doc).encode()
        if data.startswith(b"-----BEGIN CERTIFICATE-----"):
            leaf = x509.load_pem_x509_certificates(data)[0]
            proxy.known[cert_id(leaf)] = leaf
        return web.Response(status=status, body=data, headers=out)

    app = web.Application()
    app.router.add_get("/renewal-info/{ident}", renewal_info)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(pebble.tls_cert, pebble.tls_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    proxy.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()
