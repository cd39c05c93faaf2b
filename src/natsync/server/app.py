"""The aiohttp adapter: HTTP in, natsync.eas out, one store transaction per command.

Routes (paths matched without regard to case, as IIS does):

* ``OPTIONS /Microsoft-Server-ActiveSync``: versions and commands we serve (MS-ASHTTP 2.2.3).
* ``POST /Microsoft-Server-ActiveSync?<query>``: a command (plain or base64 query form).
* ``POST /autodiscover/autodiscover.xml``: Autodiscover, mobilesync schema.

Order of checks on a POST, so that a bad request changes nothing and costs little: query and
headers (400) → command known and implemented (400 / 501) → body size from Content-Length
(413, before reading it) → authentication (401 / 429) → body read (413 past the limit) and
decoded (400 for bad WBXML) → the command in one transaction. A Ping that must wait does so
outside any transaction. Every request leaves one JSON access-log line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from natsync.config import ServerConfig
from natsync.eas import autodiscover, dispatch, ping
from natsync.eas.context import Response
from natsync.eas.errors import Answered, HttpError
from natsync.eas.request import EasRequest, parse_request
from natsync.eas.versions import SERVER_VERSION, supported_header
from natsync.errors import NatsyncError
from natsync.server.auth import Authenticator
from natsync.server.logs import REQUEST_CONTEXT
from natsync.store.api import Store, Subscription, Txn
from natsync.store.feed import hierarchy_key
from natsync.wbxml import WBXMLError, decode

log = logging.getLogger("natsync.server")
access_log = logging.getLogger("natsync.server.access")

EAS_PATH = "/microsoft-server-activesync"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
WBXML_HEADER = b"\x03\x01\x6a\x00"
#: Seconds to wait for open requests (held Pings) when the server closes.
SHUTDOWN_GRACE = 2.0
#: Commands whose arrival ends the device's live hold at once: the phone only sends them when it
#: no longer waits on the older request (its connection most likely died in a NAT).
ENDS_HOLD = frozenset({"Ping", "Sync"})


def _now() -> datetime:
    return datetime.now(UTC)


class EasApp:
    """The request handlers, bound to one store, config and (optional) relay."""

    def __init__(self, config: ServerConfig, store: Store, relay: Any = None) -> None:
        self.config = config
        self.store = store
        self.relay = relay
        #: The live hold (Ping / held Sync) of each device: (user id, DeviceId) -> subscription.
        self._holds: dict[tuple[int, str], Subscription] = {}
        self._trusted = frozenset(str(ipaddress.ip_address(a)) for a in config.trusted_proxies)
        self.auth = Authenticator(
            store,
            max_per_user=config.max_failed_logins_per_user,
            max_per_ip=config.max_failed_logins_per_ip,
            window=config.failed_login_window,
        )

    # -- plumbing

    def client_address(self, request: web.Request) -> str:
        """The phone's address for the log and the per-address login limit: the socket's, or,
        when the socket is a trusted proxy (the edge), the last X-Forwarded-For entry — the
        one that proxy wrote. A client's own X-Forwarded-For never counts."""
        remote = request.remote or ""
        if remote not in self._trusted:
            return remote
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        return forwarded.rsplit(",", 1)[-1].strip() or remote

    def _challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.config.realm}"'}

    def _log(self, request: web.Request, started: float, http: int, **fields: Any) -> None:
        record = {
            "remote": self.client_address(request),
            "method": request.method,
            "path": request.path,
            "http": http,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            **{k: v for k, v in fields.items() if v is not None and v != ""},
        }
        access_log.info(json.dumps(record, separators=(",", ":")))

    async def route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/").lower()
        if path == EAS_PATH:
            if request.method == "OPTIONS":
                return await self.options(request)
            if request.method == "POST":
                return await self.post(request)
            return web.Response(status=405, headers={"Allow": "OPTIONS,POST"})
        if path == AUTODISCOVER_PATH:
            if request.method == "POST":
                return await self.autodiscover(request)
            return web.Response(status=405, headers={"Allow": "POST"})
        return web.Response(status=404)

    # -- OPTIONS

    async def options(self, request: web.Request) -> web.Response:
        """Versions and commands. Without credentials this is open discovery (what doctor and
        proxies probe); with credentials they are checked, because phones validate an account
        at setup with an authenticated OPTIONS and must not be told a wrong password works."""
        started = time.perf_counter()
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            auth = await self.auth.authenticate(authorization, self.client_address(request))
            if auth.user is None:
                headers = self._challenge() if auth.http_status == 401 else {"Retry-After": "60"}
                self._log(request, started, auth.http_status, cmd="OPTIONS", user=auth.name)
                return web.Response(status=auth.http_status, headers=headers)
        headers = {
            "Allow": "OPTIONS,POST",
            "Public": "OPTIONS,POST",
            "MS-Server-ActiveSync": SERVER_VERSION,
            "MS-ASProtocolVersions": supported_header(),
            "MS-ASProtocolCommands": dispatch.supported_commands(),
            "Cache-Control": "private",
        }
        self._log(request, started, 200, cmd="OPTIONS")
        return web.Response(status=200, headers=headers)

    # -- POST

    async def post(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            eas = parse_request(request.query_string, request.headers)
            fields.update(
                cmd=eas.cmd, device=eas.device_id, version=str(eas.version), user=eas.user
            )
            REQUEST_CONTEXT.set(fields)
            dispatch.check_command(eas.cmd)
            length = request.content_length
            if length is not None and length > self.config.max_request_body:
                raise HttpError(413, "the request body is larger than server.max_request_body")
            auth = await self.auth.authenticate(
                request.headers.get("Authorization"), self.client_address(request)
            )
            if auth.user is None:
                fields["user"] = auth.name or fields.get("user")
                headers = self._challenge() if auth.http_status == 401 else {"Retry-After": "60"}
                raise HttpError(auth.http_status, "authentication failed", headers)
            fields["user"] = auth.user.name
            device = (auth.user.id, eas.device_id)
            if eas.cmd in ENDS_HOLD:
                self._end_hold(device)
            raw = await self._read_body(request)
            body = self._decode(raw, request.content_type)
            response = await self._run(eas, auth.user.name, body, raw, request.content_type)
            if response.wait is not None:
                response = await self._wait(response, device)
                if response.wait is not None:  # a held Sync saw a change: answer it now
                    response = await self._run(
                        eas, auth.user.name, body, raw, request.content_type, may_hold=False
                    )
            if response.outbound_queued and self.relay is not None:
                self.relay.kick()
        except HttpError as exc:
            self._log(request, started, exc.http_status, error=exc.message, **fields)
            return web.Response(status=exc.http_status, headers=exc.headers)
        except NatsyncError as exc:
            log.exception("request failed")
            if fields.get("cmd") == "Ping":
                return self._ping_error(request, started, exc.message, fields)
            self._log(request, started, 500, error=exc.message, **fields)
            return web.Response(status=500)
        except Exception as exc:  # a bug: answer 500 and say so in the log, keep serving
            log.exception("request failed unexpectedly")
            if fields.get("cmd") == "Ping":
                return self._ping_error(request, started, type(exc).__name__, fields)
            self._log(request, started, 500, error=type(exc).__name__, **fields)
            return web.Response(status=500)
        self._log(
            request,
            started,
            response.http_status,
            status=response.status,
            bytes=len(response.body),
            **fields,
        )
        headers = dict(response.headers)
        headers["MS-Server-ActiveSync"] = SERVER_VERSION
        if not response.body:
            return web.Response(status=response.http_status, headers=headers)
        headers["Content-Type"] = response.content_type
        return web.Response(status=response.http_status, body=response.body, headers=headers)

    def _ping_error(
        self, request: web.Request, started: float, error: str, fields: dict[str, Any]
    ) -> web.Response:
        """A Ping that failed on the server answers Status 8 (MS-ASCMD 2.2.3.177.11), which
        phones handle by retrying later, rather than an HTTP 500 that some treat as fatal."""
        answer = ping.server_error()
        self._log(request, started, 200, status=answer.status, error=error, **fields)
        headers = {"MS-Server-ActiveSync": SERVER_VERSION, "Content-Type": answer.content_type}
        return web.Response(status=200, body=answer.body, headers=headers)

    def _end_hold(self, device: tuple[int, str]) -> None:
        """End the device's live Ping / held Sync at once (it answers with what it has)."""
        older = self._holds.pop(device, None)
        if older is not None:
            older.close()

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_request_body
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "the request body is larger than server.max_request_body")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _decode(raw: bytes, content_type: str) -> Any:
        if not raw:
            return None
        if "wbxml" not in content_type and not raw.startswith(WBXML_HEADER[:2]):
            return None  # 12.1 SendMail & co.: the body is a MIME message
        try:
            return decode(raw)
        except WBXMLError as exc:
            raise HttpError(400, f"the body is not valid WBXML: {exc.message}") from exc

    async def _run(
        self,
        eas: EasRequest,
        user: str,
        body: Any,
        raw: bytes,
        content_type: str,
        *,
        may_hold: bool = True,
    ) -> Response:
        now = _now()
        config = self.config

        def command(txn: Txn) -> Response:
            return dispatch.handle(
                txn, eas, user, body, raw, now, config, content_type, may_hold=may_hold
            )

        try:
            return await self.store.run(command)
        except Answered as exc:
            return exc.response

    async def _wait(self, response: Response, device: tuple[int, str]) -> Response:
        """Hold a Ping or a Sync outside any transaction. For a Sync that saw a change, the
        returned Response still carries ``wait`` (the caller runs the request again).

        One hold per device: a newer Ping or held Sync from the same device ends the older one
        at once (it answers as if its time were up: Status 1, or 2 when a change is already
        pending — what Z-Push's forced ping timeout answers too), so a phone whose old
        connection died in a NAT does not leave a stale wait behind until its heartbeat runs
        out. A Ping also watches the user's folder hierarchy (Status 7 when it changes)."""
        wait = response.wait
        assert wait is not None
        hierarchy = hierarchy_key(wait.user_id)
        ids = wait.folder_ids if wait.rerun else (*wait.folder_ids, hierarchy)
        with self.store.changes.subscribe(ids) as sub:
            self._end_hold(device)
            self._holds[device] = sub
            try:
                changed = await self.store.run(lambda txn: ping.changed_since(txn, wait))
                if not changed:
                    changed = await sub.wait(float(wait.heartbeat))
            finally:
                if self._holds.get(device) is sub:
                    del self._holds[device]
        if wait.rerun:
            return response if changed else Response(status=None)
        return ping.finish(wait, changed, hierarchy_changed=hierarchy in changed)

    # -- Autodiscover

    async def autodiscover(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        auth = await self.auth.authenticate(
            request.headers.get("Authorization"), self.client_address(request)
        )
        if auth.user is None:
            headers = self._challenge() if auth.http_status == 401 else {"Retry-After": "60"}
            self._log(request, started, auth.http_status, cmd="Autodiscover", user=auth.name)
            return web.Response(status=auth.http_status, headers=headers)
        try:
            raw = await self._read_body_limited(request, autodiscover.MAX_REQUEST)
        except HttpError as exc:
            self._log(request, started, exc.http_status, cmd="Autodiscover", user=auth.name)
            return web.Response(status=exc.http_status)
        host = self.config.public_name or request.host
        url = f"https://{host}/Microsoft-Server-ActiveSync"
        body = autodiscover.respond(raw, auth.user, url, _now())
        self._log(request, started, 200, cmd="Autodiscover", user=auth.user.name)
        return web.Response(
            status=200, body=body, headers={"Content-Type": autodiscover.CONTENT_TYPE}
        )

    async def _read_body_limited(self, request: web.Request, limit: int) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise HttpError(413, "request too large")
        data = await request.content.read(limit + 1)
        if len(data) > limit:
            raise HttpError(413, "request too large")
        return data


EAS_APP: web.AppKey[EasApp] = web.AppKey("natsync", EasApp)


def make_app(config: ServerConfig, store: Store, relay: Any = None) -> web.Application:
    eas = EasApp(config, store, relay)
    # aiohttp's own body limit sits above ours, so our 413 (with its log line) answers first.
    app = web.Application(client_max_size=config.max_request_body + 1)
    app.router.add_route("*", "/{tail:.*}", eas.route)
    app[EAS_APP] = eas
    return app


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (the ``uvloop`` extra), else None (asyncio's).

    Memory per held Ping is what limits a push server, and the TLS transport dominates it:
    asyncio's reserves about 570 KB per connection (its 256 KiB buffers), uvloop's about 25-30
    KB (docs/push.md). NATSYNC_NO_UVLOOP=1 keeps the standard loop."""
    if os.environ.get("NATSYNC_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return context


@dataclass(slots=True)
class RunningServer:
    runner: web.AppRunner
    site: web.TCPSite
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/Microsoft-Server-ActiveSync"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(config: ServerConfig, store: Store, *, relay: Any = None) -> RunningServer:
    """Serve ActiveSync on config.host:config.port (0: a free port); returns once listening."""
    app = make_app(config, store, relay)
    # handler_cancellation: a phone that drops its connection ends its held Ping at once
    # instead of holding a subscription until the heartbeat. A command cancelled while its
    # transaction runs still commits in the store's thread; the phone, lacking the answer,
    # retransmits with the same SyncKey and gets the cached answer — safe by design.
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE, handler_cancellation=True
    )
    await runner.setup()
    context = tls_context(config)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    log.info("ActiveSync server listening on %s:%d (tls=%s)", config.host, port, bool(context))
    log.info(
        "Ping heartbeat accepted: %d..%d s%s",
        config.heartbeat_min,
        config.heartbeat_cap,
        f" (capped from {config.heartbeat_max} s by server.max_idle_path_seconds = "
        f"{config.max_idle_path_seconds})"
        if config.heartbeat_cap < config.heartbeat_max
        else "",
    )
    return RunningServer(runner, site, config.host, port, context is not None)
