"""The ActiveSync server's request handlers: HTTP in, natsync.eas out, one store transaction per
command; served by natsync's own HTTP/1.1 front (:mod:`natsync.server.front`, what
:func:`start_server` runs) or by aiohttp (:func:`make_app`), both over the same handlers.

Routes (paths matched without regard to case, as IIS does):

* ``OPTIONS /Microsoft-Server-ActiveSync``: versions and commands we serve (MS-ASHTTP 2.2.3),
  to an authenticated client; without credentials it and ``GET`` answer 401 with the Basic
  challenge, as Exchange (IIS) does: phones answer the challenge with their credentials, and
  connectivity testers take a 200 for "anonymous access enabled".
* ``POST /Microsoft-Server-ActiveSync?<query>``: a command (plain or base64 query form).
* ``POST /autodiscover/autodiscover.xml``: Autodiscover, mobilesync and Outlook schemas.
* ``GET /autodiscover/autodiscover.json/v1.0/{address}?Protocol=ActiveSync``: Autodiscover v2.

Order of checks on a POST, so that a bad request changes nothing and costs little: query and
headers (400) → command known and implemented (400 / 501) → body size from Content-Length
(413, before reading it) → authentication (401 / 429) → body read (413 past the limit) and
decoded (400 for bad WBXML) → the command in one transaction. Every request leaves one JSON
access-log line.

A Ping (or a held Sync) that must wait does so outside any transaction and outside any task: the
handler returns a :class:`Hold` — a small object with a feed subscription, a loop timer and a
callback — and the front parks it beside the connection until a change, the heartbeat, a newer
request of the same device or the phone's disconnect ends it (docs/push.md). One live hold per
device, in this process (``EasApp._holds``) and across processes: a request that is held
records it on the device's row, and the device's next hold-ending request (Ping, Sync) clears
the record and adds the device's :func:`~natsync.store.feed.hold_key` to its transaction's
changes; the commit publishes it (LISTEN/NOTIFY on PostgreSQL), and a hold of that device on
any process, which watches the key beside its folders, ends at once. A request of a device
with no hold recorded announces nothing (bringing phones up wakes no other process).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from natsync.cert import policy
from natsync.cert.reload import CertReloader
from natsync.config import ServerConfig
from natsync.eas import autodiscover, dispatch, ping, throttle
from natsync.eas.context import HoldUntilChange, KickRelay, Response
from natsync.eas.errors import Answered, HttpError
from natsync.eas.request import EasRequest, parse_request
from natsync.eas.versions import SERVER_VERSION, supported_header
from natsync.errors import NatsyncError
from natsync.server import health, recent
from natsync.server.auth import Authenticator, AuthResult
from natsync.server.front import Front, Reply
from natsync.server.health import ServerMetrics
from natsync.server.heartbeats import Entry, Heartbeats, heartbeats
from natsync.server.logs import REQUEST_CONTEXT
from natsync.store.api import Store, Subscription, Txn, User
from natsync.store.feed import hierarchy_key, hold_key
from natsync.wbxml import WBXMLError, decode

log = logging.getLogger("natsync.server")
access_log = logging.getLogger("natsync.server.access")

EAS_PATH = "/microsoft-server-activesync"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
#: Served to loopback clients only (natsync.server.health).
HEALTH_PATHS = ("/healthz", "/metrics")
WBXML_HEADER = b"\x03\x01\x6a\x00"
#: Seconds to wait for open requests (held Pings) when the server closes.
SHUTDOWN_GRACE = 2.0
#: Commands whose arrival ends the device's live hold at once: the phone only sends them when it
#: no longer waits on the older request (its connection most likely died in a NAT).
ENDS_HOLD = frozenset({"Ping", "Sync"})

#: (user id, DeviceId in lower case): one live hold per device.
Device = tuple[int, str]


def _now() -> datetime:
    return datetime.now(UTC)


#: Where the commands' new keys come from (natsync.eas.context: the core is given it, like now).
_RNG = secrets.SystemRandom()


class HttpRequest(Protocol):
    """What the handlers read of a request (the front's requests and aiohttp's, adapted)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def remote(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content_type(self) -> str: ...

    def forwarded_for(self) -> str:
        """Every X-Forwarded-For value of the request, joined with commas ("" when none)."""
        ...

    async def read(self, limit: int) -> bytes:
        """The body, or its first ``limit + 1`` bytes when it is longer than *limit*."""
        ...


class _Line:
    """What one request's access-log line needs; kept past the request, because a held Ping's
    line is written when it ends."""

    __slots__ = ("fields", "method", "path", "remote", "started")

    def __init__(self, remote: str, method: str, path: str) -> None:
        self.remote = remote
        # Interned: every request decodes its own copies of the same few method and path
        # strings, and a held Ping keeps them for its whole heartbeat (issue 27).
        self.method = sys.intern(method)
        self.path = sys.intern(path)
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class HeldRequest:
    """One decoded command request, as a command runs on it; a held Sync keeps it to run it
    again when a change ends its hold."""

    request: EasRequest
    user: str
    #: The decoded WBXML body (None: empty or not WBXML).
    body: Any
    raw: bytes
    content_type: str
    #: The user as authentication read them (the command does not read them again).
    account: User | None = None


class HoldOwner(Protocol):
    """What a :class:`Hold` asks of the app that made it (EasApp), by name."""

    #: Where a hold ended by a change records its push latency (natsync.server.health).
    metrics: ServerMetrics

    def release_hold(self, device: Device, sub: Subscription) -> None:
        """The hold is over: it is no longer the device's live hold."""
        ...

    def hold_answer(self, wait: HoldUntilChange, changed: set[int], key: int) -> Response | None:
        """The answer of a hold that ended with *changed*; None: run the held Sync again."""
        ...

    def answer(self, line: _Line, response: Response) -> Reply:
        """The reply to a command that ran (logged; the relay kicked for queued mail)."""
        ...

    def run_again(self, line: _Line, held: HeldRequest, done: Callable[[Reply], object]) -> None:
        """Run a held Sync that saw a change again (in a task), then call *done* with it."""
        ...


class Hold:
    """A Ping or held Sync waiting on the change feed: no task, no coroutine, no request object.

    The front calls :meth:`park` with a callback that writes the answer; the hold ends when a
    watched id changes, the heartbeat timer fires, its subscription is closed (a newer request
    of the device, in this process or — through the hold key — another), or :meth:`cancel` (the
    phone went away: nothing is answered). Whatever ends it closes the subscription and removes
    the device's entry in ``EasApp._holds`` at once.
    """

    __slots__ = (
        "_app", "_beats", "_device", "_done", "_key", "_line", "_rerun", "_sub", "_timer", "_wait",
    )  # fmt: skip

    def __init__(
        self,
        app: HoldOwner,
        line: _Line,
        device: Device,
        sub: Subscription,
        wait: HoldUntilChange,
        key: int,
        rerun: HeldRequest | None,
    ) -> None:
        self._app = app
        self._line = line
        self._device = device
        self._sub = sub
        self._wait = wait
        self._key = key
        #: A held Sync's request (run again when a change ends the hold).
        self._rerun = rerun
        self._done: Callable[[Reply], object] | None = None
        #: Its heartbeat: an entry of the loop's Heartbeats (one loop timer for every hold).
        self._timer: Entry | None = None
        self._beats: Heartbeats | None = None

    def park(self, done: Callable[[Reply], object]) -> None:
        """Wait (outside any task); *done* is called once, on the loop, with the answer."""
        loop = asyncio.get_running_loop()
        self._done = done
        self._beats = heartbeats(loop)
        self._timer = self._beats.call_later(float(self._wait.heartbeat), self._end)
        self._sub.notify(loop, self._end)

    async def result(self) -> Reply:
        """Park and wait for the answer (for a caller that holds a task anyway: aiohttp)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            if not future.done():
                future.set_result(reply)

        self.park(done)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        """The phone went away: release everything, answer nothing."""
        self._done = None
        self._release()

    def _release(self) -> None:
        if self._timer is not None and self._beats is not None:
            self._beats.cancel(self._timer)
            self._timer = None
        self._sub.cancel_notify()
        self._sub.close()
        self._app.release_hold(self._device, self._sub)

    def _end(self) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        changed = self._sub.take()
        if changed - {self._key}:  # a change ended the hold: a push (metrics: its latency)
            # From the end of SMTP DATA when a mail made the change, else from its commit.
            ended, now = self._sub.data_ended_at, time.monotonic()
            start, source = (ended, "data") if ended is not None else (self._sub.changed_at, "")
            source = source or "commit"
            self._app.metrics.pushed(start, now, source)
            if start is not None and now >= start:  # the device's (access log, console)
                self._line.fields["push_ms"] = round((now - start) * 1000, 3)
                self._line.fields["push_from"] = source
        self._release()
        response = self._app.hold_answer(self._wait, changed, self._key)
        if response is not None:
            done(self._app.answer(self._line, response))
        else:  # a held Sync saw a change: run it again, in a task this time (it is rare)
            assert self._rerun is not None
            self._app.run_again(self._line, self._rerun, done)


#: Runs one command: given a wrapper for the command's Txn (or None), its Response.
Attempt = Callable[[Callable[[Txn], Txn] | None], Any]
#: Wraps every command run (natsync.sources.bodies: a mirrored message stored without its whole
#: MIME is fetched and the command run again): (request, user, body, attempt) -> Response.
CommandHook = Callable[[EasRequest, str, Any, Attempt], Any]


class EasApp:
    """The request handlers, bound to one store, config and (optional) relay."""

    def __init__(self, config: ServerConfig, store: Store, relay: Any = None) -> None:
        self.config = config
        self.store = store
        self.relay = relay
        #: The live hold (Ping / held Sync) of each device in this process -> its subscription.
        self._holds: dict[Device, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._trusted = frozenset(str(ipaddress.ip_address(a)) for a in config.trusted_proxies)
        #: Each device's recent requests, written to the store in batches (the console's).
        self.recent = recent.RecentWriter(store)
        self.metrics = ServerMetrics()
        self.auth = Authenticator(
            store,
            max_per_user=config.max_failed_logins_per_user,
            max_per_ip=config.max_failed_logins_per_ip,
            window=config.failed_login_window,
        )
        self.budgets = throttle.Budgets(
            config.throttle_requests, config.throttle_window, frozenset(config.throttle_exempt)
        )
        self.command_hook: CommandHook | None = None

    def held_devices(self) -> frozenset[Device]:
        """(user id, DeviceId in lower case) of each device holding a Ping or a held Sync in
        this process now (the console's "holding a Ping", exact)."""
        return frozenset(self._holds)

    # -- plumbing

    def client_address(self, request: HttpRequest) -> str:
        """The phone's address for the log and the per-address login limit: the socket's, or,
        when the socket is a trusted proxy (the edge), the last X-Forwarded-For entry — the
        one that proxy wrote. A client's own X-Forwarded-For never counts."""
        remote = request.remote or ""
        if remote not in self._trusted:
            return remote
        return request.forwarded_for().rsplit(",", 1)[-1].strip() or remote

    def _challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.config.realm}"'}

    def _line(self, request: HttpRequest) -> _Line:
        return _Line(self.client_address(request), request.method, request.path)

    def _log(self, line: _Line, http: int, **fields: Any) -> None:
        seconds = time.perf_counter() - line.started
        self.metrics.request(str(fields.get("cmd") or line.method), seconds, http)
        record = {
            "remote": line.remote,
            "method": line.method,
            "path": line.path,
            "http": http,
            "ms": round(seconds * 1000, 2),
            **{k: v for k, v in fields.items() if v is not None and v != ""},
        }
        access_log.info(json.dumps(record, separators=(",", ":")))
        self.recent.answered(record, _now())

    # -- what a Hold asks of the app (HoldOwner; release_hold, hold_answer and answer below)

    def run_again(self, line: _Line, held: HeldRequest, done: Callable[[Reply], object]) -> None:
        self._spawn(self._rerun(line, held, done))

    def _spawn(self, coro: Any) -> None:
        """A background task that is named and kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name="natsync-held-sync")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def route(self, request: HttpRequest) -> Reply | Hold:
        path = request.path.rstrip("/").lower()
        if path == EAS_PATH:
            if request.method in ("OPTIONS", "GET"):
                return await self.options(request)
            if request.method == "POST":
                return await self.post(request)
            return Reply(405, {"Allow": "OPTIONS,POST"})
        if path == AUTODISCOVER_PATH:
            if request.method == "POST":
                return await self.autodiscover(request)
            return Reply(405, {"Allow": "POST"})
        if path == autodiscover.V2_PATH or path.startswith(autodiscover.V2_PATH + "/"):
            if request.method == "GET":
                return self.autodiscover_v2(request)
            return Reply(405, {"Allow": "GET"})
        if path in HEALTH_PATHS and request.method == "GET":
            return health.reply(self, request.remote or "", path)
        return Reply(404)

    # -- OPTIONS

    async def options(self, request: HttpRequest) -> Reply:
        """Versions and commands, to an authenticated client only (MS-ASHTTP 2.2.3; Exchange
        answers an anonymous OPTIONS or GET with 401 and its Basic challenge, and phones and
        analyzers rely on that). An authenticated GET is 405 (only OPTIONS and POST are
        served here)."""
        line = self._line(request)
        auth = await self.auth.authenticate(request.headers.get("Authorization"), line.remote)
        if auth.user is None:
            headers = self._challenge() if auth.http_status == 401 else _retry(auth)
            self._log(line, auth.http_status, cmd=request.method, user=auth.name)
            return Reply(auth.http_status, headers)
        if request.method == "GET":
            self._log(line, 405, cmd="GET", user=auth.user.name)
            return Reply(405, {"Allow": "OPTIONS,POST"})
        headers = {
            "Allow": "OPTIONS,POST",
            "Public": "OPTIONS,POST",
            "MS-Server-ActiveSync": SERVER_VERSION,
            "MS-ASProtocolVersions": supported_header(),
            "MS-ASProtocolCommands": dispatch.supported_commands(),
            "X-MS-RP": supported_header(),
            "Cache-Control": "private",
        }
        self._log(line, 200, cmd="OPTIONS", user=auth.user.name)
        return Reply(200, headers)

    # -- POST

    async def post(self, request: HttpRequest) -> Reply | Hold:
        line = self._line(request)
        fields = line.fields
        try:
            eas = parse_request(request.query_string, request.headers)
            fields.update(
                cmd=sys.intern(eas.cmd),
                device=eas.device_id,
                version=sys.intern(str(eas.version)),
                user=eas.user,
            )
            REQUEST_CONTEXT.set(fields)
            dispatch.check_command(eas.cmd)
            length = request.content_length
            if length is not None and length > self.config.max_request_body:
                raise HttpError(413, "the request body is larger than server.max_request_body")
            auth = await self.auth.authenticate(request.headers.get("Authorization"), line.remote)
            if auth.user is None:
                fields["user"] = auth.name or fields.get("user")
                headers = self._challenge() if auth.http_status == 401 else _retry(auth)
                raise HttpError(auth.http_status, "authentication failed", headers)
            fields["user"] = auth.user.name
            self._throttle(auth.user.name, eas.device_id)
            device = (auth.user.id, eas.device_id.lower())
            key = hold_key(*device)
            ends_hold = eas.cmd in ENDS_HOLD
            if ends_hold:
                self._end_hold(device)
            raw = await self._read_body(request)
            body = self._decode(raw, request.content_type)
            command = HeldRequest(eas, auth.user.name, body, raw, request.content_type, auth.user)
            response = await self._run(command, announce=key if ends_hold else None)
            wait = _hold_asked(response)
            if wait is not None:
                rerun = command if wait.rerun else None
                held = await self._hold(line, wait, device, key, rerun)
                if isinstance(held, Hold):
                    return held
                ended = self.hold_answer(wait, held, key)
                response = ended or await self._run(command, may_hold=False)
        except Exception as exc:
            return self._failed(line, exc)
        return self.answer(line, response)

    def _throttle(self, user: str, device_id: str) -> None:
        """HttpError 503 when the device spent its request budget (natsync.eas.throttle)."""
        verdict = self.budgets.take(user, device_id, time.monotonic())
        if verdict.allowed:
            return
        if verdict.first:
            log.warning(
                "throttling device %s of %s: more than %d requests in %g s; answering 503 "
                "(raise server.throttle_requests or add it to server.throttle_exempt if it is "
                "legitimate)",
                device_id, user, self.config.throttle_requests, self.config.throttle_window,
            )  # fmt: skip
        headers = {
            "X-MS-ASThrottle": throttle.THROTTLE_REASON,
            "Retry-After": str(verdict.retry_after),
        }
        raise HttpError(503, "the device is throttled", headers)

    def answer(self, line: _Line, response: Response) -> Reply:
        """The reply to a command that ran (logged; the relay is kicked for queued mail)."""
        for effect in response.effects:
            match effect:
                case KickRelay() if self.relay is not None:
                    self.relay.kick()
        self._log(
            line, response.http_status, status=response.status, bytes=len(response.body),
            skipped=",".join(response.skipped), **line.fields,
        )  # fmt: skip
        self.metrics.skipped(str(line.fields.get("cmd")), response.skipped, time.time())
        headers = dict(response.headers)
        headers["MS-Server-ActiveSync"] = SERVER_VERSION
        if not response.body:
            return Reply(response.http_status, headers)
        headers["Content-Type"] = response.content_type
        return Reply(response.http_status, headers, response.body)

    def _failed(self, line: _Line, exc: Exception) -> Reply:
        """The one translation of a failed request into its answer (and its log line)."""
        fields = line.fields
        if isinstance(exc, HttpError):
            self._log(line, exc.http_status, error=exc.message, **fields)
            return Reply(exc.http_status, exc.headers)
        if isinstance(exc, NatsyncError):
            log.error("request failed", exc_info=exc)
            error = exc.message
        else:  # a bug: answer 500 and say so in the log, keep serving
            log.error("request failed unexpectedly", exc_info=exc)
            error = type(exc).__name__
        if fields.get("cmd") == "Ping":
            # Status 8 (MS-ASCMD 2.2.3.177.11), which phones handle by retrying later, rather
            # than an HTTP 500 that some treat as fatal.
            answer = ping.server_error()
            self._log(line, 200, status=answer.status, error=error, **fields)
            headers = {"MS-Server-ActiveSync": SERVER_VERSION, "Content-Type": answer.content_type}
            return Reply(200, headers, answer.body)
        self._log(line, 500, error=error, **fields)
        return Reply(500)

    def _end_hold(self, device: Device) -> None:
        """End the device's live Ping / held Sync at once (it answers with what it has)."""
        older = self._holds.pop(device, None)
        if older is not None:
            older.close()

    def release_hold(self, device: Device, sub: Subscription) -> None:
        """The hold of *sub* is over: it is no longer the device's live hold."""
        if self._holds.get(device) is sub:
            del self._holds[device]

    async def _read_body(self, request: HttpRequest) -> bytes:
        data = await request.read(self.config.max_request_body)
        if len(data) > self.config.max_request_body:
            raise HttpError(413, "the request body is larger than server.max_request_body")
        return data

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
        command: HeldRequest,
        *,
        announce: int | None = None,
        may_hold: bool = True,
    ) -> Response:
        """The command in one transaction. *announce*: the device's hold key, published with the
        transaction's changes when the store recorded a hold of the device, so that the hold
        ends in whichever process has it (dispatch.handle's *ends_hold*); a request run again
        after its hold (a held Sync that saw a change) neither announces nor holds."""
        now = _now()
        config = self.config

        async def attempt(wrap: Callable[[Txn], Txn] | None = None) -> Response:
            def run(txn: Txn) -> Response:
                txn = txn if wrap is None else wrap(txn)
                return dispatch.handle(
                    txn, command.request, command.user, command.body, command.raw, now, config,
                    command.content_type, may_hold=may_hold, rng=_RNG, ends_hold=announce,
                    account=command.account,
                )  # fmt: skip

            try:
                return await self.store.run(run)
            except Answered as exc:
                return exc.response

        if self.command_hook is not None:
            response: Response = await self.command_hook(
                command.request, command.user, command.body, attempt
            )
            return response
        return await attempt()

    async def _hold(
        self,
        line: _Line,
        wait: HoldUntilChange,
        device: Device,
        key: int,
        rerun: HeldRequest | None,
    ) -> Hold | set[int]:
        """Subscribe, become the device's live hold, then re-check the folders (subscribing
        first closes the race with a commit in between): the ids that already changed, or a
        :class:`Hold` to park.

        One hold per device: a newer Ping or held Sync from the same device ends the older one
        at once (it answers as if its time were up: Status 1, or 2 when a change is already
        pending — what Z-Push's forced ping timeout answers too), so a phone whose old
        connection died in a NAT does not leave a stale wait behind until its heartbeat runs
        out. A Ping also watches the user's folder hierarchy (Status 7 when it changes)."""
        ids = (*wait.folder_ids, key)
        if not wait.rerun:
            ids = (*ids, hierarchy_key(wait.user_id))
        sub = self.store.changes.subscribe(ids)
        self._end_hold(device)
        self._holds[device] = sub
        try:
            changed = await self.store.run(lambda txn: ping.changed_since(txn, wait))
            changed |= sub.take()
            if not changed and not sub.closed:
                self.recent.holding(line.fields, wait.heartbeat, _now())
                return Hold(self, line, device, sub, wait, key, rerun)
        except BaseException:
            self.release_hold(device, sub)
            sub.close()
            raise
        self.release_hold(device, sub)
        sub.close()
        return changed

    @staticmethod
    def hold_answer(wait: HoldUntilChange, changed: set[int], key: int) -> Response | None:
        """The answer of a hold that ended with *changed*; None when a held Sync saw a change
        (it runs again). Only the device's hold key in *changed*: a newer request ended it."""
        changed.discard(key)
        if wait.rerun:
            return None if changed else Response(status=None)
        return ping.finish(wait, changed, hierarchy_changed=hierarchy_key(wait.user_id) in changed)

    async def _rerun(
        self,
        line: _Line,
        held: HeldRequest,
        done: Callable[[Reply], object],
    ) -> None:
        REQUEST_CONTEXT.set(line.fields)
        try:
            response = await self._run(held, may_hold=False)
            reply = self.answer(line, response)
        except Exception as exc:
            reply = self._failed(line, exc)
        done(reply)

    # -- Autodiscover

    def autodiscover_v2(self, request: HttpRequest) -> Reply:
        """Autodiscover v2 (natsync.eas.autodiscover.respond_v2): anonymous JSON."""
        line = self._line(request)
        host = self.config.public_name or request.host
        status, body = autodiscover.respond_v2(request.path, request.query_string, host)
        self._log(line, status, cmd="AutodiscoverV2")
        return Reply(status, {"Content-Type": autodiscover.JSON_CONTENT_TYPE}, body)

    async def autodiscover(self, request: HttpRequest) -> Reply:
        line = self._line(request)
        auth = await self.auth.authenticate(request.headers.get("Authorization"), line.remote)
        if auth.user is None:
            headers = self._challenge() if auth.http_status == 401 else _retry(auth)
            self._log(line, auth.http_status, cmd="Autodiscover", user=auth.name)
            return Reply(auth.http_status, headers)
        limit = autodiscover.MAX_REQUEST
        length = request.content_length
        raw = b"" if length is not None and length > limit else await request.read(limit)
        if (length is not None and length > limit) or len(raw) > limit:
            self._log(line, 413, cmd="Autodiscover", user=auth.name)
            return Reply(413)
        host = self.config.public_name or request.host
        url = f"https://{host}/Microsoft-Server-ActiveSync"
        body = autodiscover.respond(raw, auth.user, url, _now())
        self._log(line, 200, cmd="Autodiscover", user=auth.user.name)
        return Reply(200, {"Content-Type": autodiscover.CONTENT_TYPE}, body)


def _hold_asked(response: Response) -> HoldUntilChange | None:
    """The hold a command asked for (then its one effect), if any."""
    for effect in response.effects:
        match effect:
            case HoldUntilChange():
                return effect
    return None


# -- aiohttp


class _AiohttpRequest:
    """An aiohttp request as the handlers read it."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def query_string(self) -> str:
        return self._request.query_string

    @property
    def headers(self) -> Mapping[str, str]:
        return self._request.headers

    @property
    def remote(self) -> str:
        return self._request.remote or ""

    @property
    def host(self) -> str:
        return self._request.host

    @property
    def content_length(self) -> int | None:
        return self._request.content_length

    @property
    def content_type(self) -> str:
        return self._request.content_type

    def forwarded_for(self) -> str:
        return ",".join(self._request.headers.getall("X-Forwarded-For", ()))

    async def read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                break
        return b"".join(chunks)


def _retry(auth: AuthResult) -> dict[str, str]:
    """The Retry-After of a locked-out login (429): when its lock ends."""
    return {"Retry-After": str(auth.retry_after or 1)}


EAS_APP: web.AppKey[EasApp] = web.AppKey("natsync", EasApp)


def make_app(config: ServerConfig, store: Store, relay: Any = None) -> web.Application:
    """The same handlers as an aiohttp application (run it with ``handler_cancellation=True``
    so that a phone that drops its connection ends its held Ping at once). A held Ping costs
    aiohttp's per-request objects and a task here; :func:`start_server` serves without them."""
    eas = EasApp(config, store, relay)

    async def handle(request: web.Request) -> web.StreamResponse:
        result = await eas.route(_AiohttpRequest(request))
        reply = await result.result() if isinstance(result, Hold) else result
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)

    # aiohttp's own body limit sits above ours, so our 413 (with its log line) answers first.
    app = web.Application(client_max_size=config.max_request_body + 1)
    app.router.add_route("*", "/{tail:.*}", handle)
    app[EAS_APP] = eas
    app.on_cleanup.append(lambda _: eas.recent.close())
    return app


# -- serving


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (the ``uvloop`` extra), else None (asyncio's).

    Memory per held Ping is what limits a push server; uvloop's transports are leaner than
    asyncio's (docs/push.md). NATSYNC_NO_UVLOOP=1 keeps the standard loop."""
    if os.environ.get("NATSYNC_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS (HTTPS, and STARTTLS of SMTP in): the edge's policy, its certificate."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    return _tls_context(config.tls_cert, config.tls_key)


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = policy.server_context()
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(slots=True)
class RunningServer:
    front: Front
    eas: EasApp
    host: str
    port: int
    tls: bool
    #: Swaps the certificate for new handshakes (after a renewal); open connections keep theirs.
    tls_reloader: CertReloader | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/Microsoft-Server-ActiveSync"

    async def close(self) -> None:
        await self.front.close(SHUTDOWN_GRACE)
        await self.eas.recent.close()


async def start_server(config: ServerConfig, store: Store, *, relay: Any = None) -> RunningServer:
    """Serve ActiveSync on config.host:config.port (0: a free port); returns once listening.

    A phone that drops its connection ends its held Ping at once (the front releases the
    hold), and a request whose connection closes while it runs is cancelled. A command
    cancelled while its transaction runs still commits in the store's thread; the phone,
    lacking the answer, retransmits with the same SyncKey and gets the cached answer — safe by
    design."""
    from natsync.base.listen import listen_host, listen_port

    eas = EasApp(config, store, relay)
    context = tls_context(config)
    reloader = None
    if context is not None and config.tls_cert is not None and config.tls_key is not None:
        reloader = CertReloader(config.tls_cert, config.tls_key, build=_tls_context)
        context = reloader.context
    body_limit = max(config.max_request_body, autodiscover.MAX_REQUEST)
    # "::" and host names listen on both families (natsync.base.listen).
    host = listen_host(config.host)
    front = await Front.start(
        eas.route, host, listen_port(host, config.port), context, body_limit,
        config.header_timeout, config.body_timeout,
    )  # fmt: skip
    port = front.port
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
    return RunningServer(front, eas, config.host, port, context is not None, reloader)
