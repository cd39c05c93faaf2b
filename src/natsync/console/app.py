"""The console's aiohttp adapter: routes, the session gate, the doctor job, the Live sampler,
and :func:`start_console`, the one entry point (``natsync console`` and ``natsync run``).

Every change goes through :mod:`natsync.admin` in one store transaction and leaves one audit
line (logger ``natsync.console.audit`` and ``DATA_DIR/console/audit.log``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any, ClassVar, Protocol

import aiohttp
from aiohttp import web

from natsync import admin
from natsync.auth.passwords import hash_password, verify_password
from natsync.console import pages
from natsync.console.live import SAMPLE_EVERY, MetricsDelta, Series, sample_from_store
from natsync.console.published import ProxiedClients, PublishedListener
from natsync.console.security import (
    COOKIE,
    LoginLimiter,
    Session,
    Sessions,
    audit_line,
    csrf_ok,
    host_ok,
)
from natsync.console.settings import ConsoleSettings
from natsync.console.status import (
    REPORT_HTML,
    REPORT_JSON,
    Gathered,
    ProcessState,
    lights,
    processes_from_run,
    read_certificate,
    read_ddns,
    read_json,
    save_doctor_report,
)
from natsync.errors import NatsyncError
from natsync.server.recent import recent_requests
from natsync.store.api import AccessState, Store, Txn

log = logging.getLogger("natsync.console")
audit_log = logging.getLogger("natsync.console.audit")

#: Largest form the console accepts (a password and a few names).
MAX_FORM = 16 * 1024
#: Seconds allowed to read the server's /metrics.
METRICS_TIMEOUT = 3.0
#: Headers on every answer: no framing, no sniffing, scripts only from the console itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
PUBLIC_PATHS = frozenset({"/login", "/static/console.css", "/static/console.js"})


class StatusSource(Protocol):
    """What a supervisor (natsync run) knows better than the files: its processes, and which
    devices hold a Ping right now in this process."""

    def processes(self) -> list[ProcessState]: ...
    def held_devices(self) -> frozenset[tuple[int, str]] | None: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class DoctorJob:
    """One doctor run at a time, in the background, with its progress lines."""

    lines: list[str] = field(default_factory=list)
    running: bool = False
    finished: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def line(self) -> str:
        if not self.lines:
            return ""
        return self.lines[-1] if self.running else f"done: {self.lines[-1]}"


class Console:
    def __init__(
        self, settings: ConsoleSettings, store: Store, source: StatusSource | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.sessions = Sessions(settings.session_idle, settings.session_max)
        self.limiter = LoginLimiter()
        self.allowed_hosts = frozenset(settings.allowed_hosts)
        #: Browsers' addresses of the connections the edge forwarded (console.publish).
        self.proxied = ProxiedClients()
        self.doctor = DoctorJob()
        self.series = Series()
        self._metrics = MetricsDelta()
        self._since = _utcnow()
        # One sample at a time: a slow store sample must not land after a newer one.
        self._sampling = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.clock: Callable[[], float] = time.monotonic

    # -- plumbing

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def audit(
        self, session: Session | None, request: web.Request, action: str, target: str, ok: str
    ) -> None:
        """One audit line: on the logger and appended to DATA_DIR/console/audit.log."""
        line = audit_line(
            _utcnow().isoformat(timespec="seconds"), session.user if session else "",
            request.remote or "", action, target, ok,
        )  # fmt: skip
        audit_log.info(line)
        path = self.settings.audit_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", path, exc)

    def refused(
        self, session: Session, request: web.Request, action: str, target: str, exc: NatsyncError
    ) -> web.Response:
        """A change that could not be made: audited, and said on a page (escaped: the message
        may quote what the form sent)."""
        self.audit(session, request, action, target, f"failed: {exc.message}")
        body = f'<p class="err">{escape(exc.message)}</p>'
        return self.html(pages.page("Not done", body, csrf=session.csrf), exc.http_status)

    @staticmethod
    def html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    # -- gate

    @web.middleware
    async def gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        client = self.proxied.remote(request.protocol)
        if client is not None:  # through the edge: the PROXY header's address is the client's
            request = request.clone(remote=client)
        if not host_ok(request.headers.get("Host", ""), self.allowed_hosts):
            return web.Response(status=421, text="this console answers to its address only\n")
        if request.path not in PUBLIC_PATHS:
            session = self.sessions.get(request.cookies.get(COOKIE), self.clock())
            if session is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther("/login")
                return self.html(pages.login("Your session ended: log in again."), 403)
            request[SESSION] = session
            if request.method == "POST":
                form = await request.post()
                if not csrf_ok(session, str(form.get("csrf", ""))):
                    self.audit(session, request, request.path, "", "refused: no CSRF token")
                    refused = "<p>Missing or wrong form token: reload the page, try again.</p>"
                    return self.html(pages.page("Refused", refused), 403)
        response = await handler(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # -- login

    async def login_page(self, request: web.Request) -> web.Response:
        return self.html(pages.login())

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or ""
        now = self.clock()
        if not self.limiter.allowed(address, now):
            self.audit(None, request, "login", "", "refused: too many failed logins")
            return self.html(pages.login("Too many failed logins: wait a few minutes."), 429)
        form = await request.post()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        stored = self.settings.admin_hash()
        good = (
            bool(stored)
            and user == self.settings.admin_user
            and await asyncio.to_thread(verify_password, password, stored)
        )
        if not good:
            self.limiter.failed(address, now)
            self.audit(None, request, "login", user, "failed")
            why = "Wrong name or password." if stored else (
                "No admin password is set: run natsync console passwd.")  # fmt: skip
            return self.html(pages.login(why), 401)
        self.limiter.succeeded(address)
        session = self.sessions.open(user, now)
        self.audit(session, request, "login", "", "ok")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE, session.token, httponly=True, samesite="Strict", secure=self.settings.tls,
            path="/",
        )  # fmt: skip
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.close(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- status and doctor

    async def gather(self) -> Gathered:
        from natsync.portmap.holder import read_status as read_portmap

        now = _utcnow()
        data = self.settings.data_dir
        checks, updates = await asyncio.to_thread(read_ddns, data)
        g = Gathered(
            now=now,
            report=read_json(self.settings.doctor_dir / REPORT_JSON),
            acme=read_json(data / "acme" / "status.json"),
            cert=await asyncio.to_thread(read_certificate, data, now),
            checks=checks,
            updates=updates,
            processes=await asyncio.to_thread(self.processes),
            portmap=read_portmap(data),
        )

        def counts(txn: Txn) -> tuple[int, int, list[Any]]:
            far = now + dt.timedelta(days=3650)
            return len(txn.list_users()), len(txn.list_devices()), txn.due_outbound(far, 1000)

        try:
            g.users, g.devices, queued = await self.store.run(counts)
            g.queue = len(queued)
            g.queue_oldest = min((q.next_attempt_at for q in queued), default=None)
        except NatsyncError as exc:
            g.store_error = exc.message
        return g

    def processes(self) -> list[ProcessState] | None:
        """The supervisor's processes: what it handed over, else its status file
        (DATA_DIR/run/status.json, natsync.base.status); None: no supervisor in sight."""
        from natsync.base.status import alive, read_status

        given = self.source.processes() if self.source is not None else []
        if given:
            return given
        doc = read_status(self.settings.data_dir)
        if doc is None:
            return [] if self.source is not None else None
        return processes_from_run(doc, alive(doc["supervisor"].get("pid")))

    async def status(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        g = await self.gather()
        report_at = str((g.report or {}).get("started_at", ""))
        return self.html(
            pages.status(lights(g), session.csrf, self.doctor.line, report_at,
                         request.query.get("msg", ""), running=self.doctor.running)
        )  # fmt: skip

    async def doctor_run(self, request: web.Request) -> web.StreamResponse:
        """Start the doctor; with a test account's name and password (used for this run only,
        never stored nor logged) it also checks the ActiveSync session, Autodiscover and
        Direct Push as that account's phone would."""
        session = request[SESSION]
        form = await request.post()
        user, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
        if not self.doctor.running:
            email = ""
            if user:
                try:
                    email = await self.store.run(lambda t: admin.require_user(t, user).email)
                except NatsyncError as exc:
                    return self.refused(session, request, "doctor-run", user, exc)
            self.doctor = DoctorJob(running=True)
            run = self._run_doctor(user, password, email)
            self.doctor.task = self.spawn(run, "natsync-console-doctor")
            target = self.doctor_url() + (f" as {user}" if user else "")
            self.audit(session, request, "doctor-run", target, "started")
        raise web.HTTPSeeOther("/?msg=The+doctor+is+running")

    def doctor_url(self) -> str:
        return self.settings.doctor_url or "http://127.0.0.1:8443"

    async def _run_doctor(self, user: str = "", password: str = "", email: str = "") -> None:
        from natsync.doctor import Options, diagnose

        job = self.doctor
        job.lines.append(f"checking {self.doctor_url()} …")
        try:
            options = Options(
                url=self.doctor_url(),
                user=user,
                password=password,
                email=email,
                heartbeat=self.settings.doctor_heartbeat,
                ca_file=self.settings.doctor_ca,
                config=self.settings.config_path,
                edge=self.settings.doctor_edge,
            )
            report = await diagnose(options, job.lines.append)
            save_doctor_report(report, self.settings.doctor_dir)
            job.lines.append(
                f"finished in {report.duration:.1f} s, exit status {report.exit_status}"
            )
        except NatsyncError as exc:
            job.lines.append(f"the doctor could not run: {exc.message}")
        except Exception as exc:  # a bug in a check: say so rather than spin forever
            log.error("doctor run failed", exc_info=exc)
            job.lines.append(f"the doctor failed: {type(exc).__name__}")
        finally:
            job.running = False
            job.finished = True

    async def doctor_progress(self, request: web.Request) -> web.Response:
        report = (self.settings.doctor_dir / REPORT_HTML).exists()
        doc = {"line": self.doctor.line, "running": self.doctor.running,
               "finished": self.doctor.finished, "report": report}  # fmt: skip
        return web.json_response(doc)

    async def doctor_report(self, request: web.Request) -> web.StreamResponse:
        path = self.settings.doctor_dir / REPORT_HTML
        if not path.exists():
            return self.html(pages.page("No report", "<p>Run the doctor first.</p>"), 404)
        response = self.html(path.read_text(encoding="utf-8"))
        # The doctor's report is self-contained: its own inline style, no script.
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
        return response

    # -- devices

    async def device_rows(self) -> list[admin.DeviceRow]:
        now = _utcnow()
        rows = await self.store.run(lambda txn: admin.list_devices(txn, now))
        held = self.source.held_devices() if self.source is not None else None
        if held is None:
            return rows
        from dataclasses import replace

        return [
            replace(r, holding=(r.device.user_id, r.device.device_id.lower()) in held) for r in rows
        ]

    async def devices(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        rows = await self.device_rows()
        return self.html(pages.devices(rows, session.csrf, _utcnow(), request.query.get("msg", "")))

    async def device(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        user, device_id = request.match_info["user"], request.match_info["device"]
        rows = [
            r for r in await self.device_rows()
            if r.owner == user and r.device.device_id == device_id
        ]  # fmt: skip
        if not rows:
            body = f"<p>{escape(user)} has no such device.</p>"
            return self.html(pages.page("No such device", body, csrf=session.csrf), 404)
        return self.html(pages.device(rows[0], session.csrf, _utcnow()))

    _DEVICE_VERBS: ClassVar[dict[str, str]] = {
        "allow": "Allow",
        "block": "Block",
        "quarantine": "Quarantine",
        "wipe": "Wipe",
        "account-wipe": "Remove the account from",
        "remove": "Remove",
    }

    async def device_action(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION]
        form = await request.post()
        user, device_id, action = (str(form.get(k, "")) for k in ("user", "device", "action"))
        verb = self._DEVICE_VERBS.get(action)
        if verb is None:
            return self.html(pages.page("Unknown action", "", csrf=session.csrf), 400)
        target = f"{user}/{device_id}"
        if form.get("confirm") != "yes":
            try:
                model = await self.store.run(lambda t: admin.find_device(t, device_id, user))
            except NatsyncError as exc:
                return self.refused(session, request, f"device-{action}", target, exc)
            named = f"{model.device_id} ({model.model or model.device_type}) of {user}"
            question = {
                "wipe": f"Erase ALL data on the phone {named} at its next connection?",
                "account-wipe": f"Remove this account's data from {named} at its next connection?",
                "remove": f"Forget {named}? It starts afresh if it connects again.",
            }.get(action, f"{verb} {named}?")
            title = f"{verb} {model.device_id}"
            fields = {"user": user, "device": device_id, "action": action}
            return self.html(
                pages.confirm(title, question, "/devices/action", session.csrf, fields)
            )
        now = _utcnow()
        changes: dict[str, Callable[[Txn], object]] = {
            "allow": lambda t: admin.set_access(t, device_id, user, AccessState.ALLOWED),
            "block": lambda t: admin.set_access(t, device_id, user, AccessState.BLOCKED),
            "quarantine": lambda t: admin.set_access(t, device_id, user, AccessState.QUARANTINED),
            "wipe": lambda t: admin.wipe(t, device_id, user, now),
            "account-wipe": lambda t: admin.wipe(t, device_id, user, now, account_only=True),
            "remove": lambda t: admin.remove_device(t, device_id, user),
        }
        try:
            await self.store.run(changes[action])
        except NatsyncError as exc:
            return self.refused(session, request, f"device-{action}", target, exc)
        self.audit(session, request, f"device-{action}", target, "ok")
        raise web.HTTPSeeOther(f"/devices?msg={verb}+{device_id}:+done")

    # -- users

    async def users(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        rows = await self.store.run(admin.list_users)
        return self.html(
            pages.users(
                rows,
                session.csrf,
                _utcnow(),
                bool(self.settings.public_name),
                request.query.get("msg", ""),
            )
        )

    def _account(self, txn: Txn, name: str) -> Any:
        from natsync.device.profile import Account

        user = admin.require_user(txn, name)
        return Account(user.name, user.email, user.display_name, self.settings.public_name)

    def _ca(self) -> Any:
        from cryptography import x509

        path = self.settings.data_dir / "ca" / "ca.pem"
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return None

    async def user_setup(self, request: web.Request) -> web.Response:
        """The phone setup of a user: the iOS profile to download, the Android settings."""
        from natsync.device.profile import android_settings

        session = request[SESSION]
        name = request.match_info["user"]
        if not self.settings.public_name:
            body = "<p>Set server.public_name (the name phones connect to) first.</p>"
            return self.html(pages.page("No public name", body, csrf=session.csrf), 409)
        try:
            account = await self.store.run(lambda t: self._account(t, name))
        except NatsyncError as exc:
            body = f"<p>{escape(exc.message)}</p>"
            return self.html(pages.page("Not found", body, csrf=session.csrf), exc.http_status)
        ca = self._ca()
        export = "natsync cert export-ca --format der -o natsync-ca.crt" if ca else None
        android = android_settings(account, export)
        return self.html(pages.setup(name, android, session.csrf, ca is not None))

    async def user_profile(self, request: web.Request) -> web.StreamResponse:
        from natsync.device.profile import profile

        session = request[SESSION]
        name = request.match_info["user"]
        if not self.settings.public_name:
            raise web.HTTPSeeOther(f"/users/{name}/setup")
        try:
            account = await self.store.run(lambda t: self._account(t, name))
        except NatsyncError as exc:
            body = f"<p>{escape(exc.message)}</p>"
            return self.html(pages.page("Not found", body, csrf=session.csrf), exc.http_status)
        data = profile(account, self._ca())
        self.audit(session, request, "profile-download", name, "ok")
        return web.Response(
            body=data,
            content_type="application/x-apple-aspen-config",
            headers={"Content-Disposition": f'attachment; filename="{name}.mobileconfig"'},
        )

    async def user_add(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION]
        form = await request.post()
        name, email, display, password = (
            str(form.get(k, "")) for k in ("name", "email", "display_name", "password")
        )
        try:
            admin.check_password(password)
            hashed = await asyncio.to_thread(hash_password, password)
            now = _utcnow()
            await self.store.run(lambda t: admin.add_user(t, name, email, display, hashed, now))
        except NatsyncError as exc:
            return self.refused(session, request, "user-add", name, exc)
        self.audit(session, request, "user-add", name, "ok")
        raise web.HTTPSeeOther(f"/users?msg=Added+{name}")

    async def user_action(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION]
        form = await request.post()
        name, action = str(form.get("user", "")), str(form.get("action", ""))
        if action == "remove" and form.get("confirm") != "yes":
            question = f"Remove the user {name} with all their mail, folders and devices?"
            fields = {"user": name, "action": action}
            title = f"Remove {name}"
            return self.html(pages.confirm(title, question, "/users/action", session.csrf, fields))
        try:
            if action == "passwd":
                password = admin.check_password(str(form.get("password", "")))
                hashed = await asyncio.to_thread(hash_password, password)
                await self.store.run(lambda t: admin.set_password(t, name, hashed))
            elif action == "disable":
                await self.store.run(lambda t: admin.disable_user(t, name))
            elif action == "enable":
                await self.store.run(lambda t: admin.enable_user(t, name))
            elif action == "remove":
                await self.store.run(lambda t: admin.remove_user(t, name))
            else:
                return self.html(pages.page("Unknown action", "", csrf=session.csrf), 400)
        except NatsyncError as exc:
            return self.refused(session, request, f"user-{action}", name, exc)
        self.audit(session, request, f"user-{action}", name, "ok")
        raise web.HTTPSeeOther(f"/users?msg={action}+{name}:+done")

    # -- live

    def source_name(self) -> str:
        if self.settings.metrics_url:
            return f"the server's metrics ({self.settings.metrics_url})"
        in_process = getattr(self.source, "metrics_text", None)
        if in_process is not None and in_process() is not None:
            return "the server's own metrics (natsync run)"
        return "the store's per-device request record"

    async def sample(self) -> None:
        async with self._sampling:
            await self._sample_once()

    async def _sample_once(self) -> None:
        now = _utcnow()
        if self.settings.metrics_url:
            timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self.settings.metrics_url) as resp,
            ):
                text = await resp.text()
            self.series.add(self._metrics.sample(text, now.timestamp()))
            return
        # Under natsync run the console shares the server's process: its metrics, exact.
        in_process = getattr(self.source, "metrics_text", None)
        own: str | None = in_process() if in_process is not None else None
        if own is not None:
            self.series.add(self._metrics.sample(own, now.timestamp()))
            return

        def rings(txn: Txn) -> list[list[Any]]:
            return [recent_requests(txn, d.id) for d in txn.list_devices()]

        all_rings = await self.store.run(rings)
        self.series.add(sample_from_store(all_rings, self._since, now))
        self._since = now

    async def sampler(self) -> None:
        while True:
            try:
                await self.sample()
            except (NatsyncError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("live sample failed: %s", exc)
            await asyncio.sleep(SAMPLE_EVERY)

    async def live(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        return self.html(pages.live(self.series, self.source_name(), session.csrf))

    async def live_charts(self, request: web.Request) -> web.Response:
        return self.html(pages.live_charts(self.series, self.source_name()))

    async def live_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.series.to_json(), dumps=json.dumps)

    # -- static

    async def css(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.CSS, content_type="text/css")

    async def js(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.JS, content_type="application/javascript")


def make_console_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[console.gate], client_max_size=MAX_FORM)
    r = app.router
    r.add_get("/login", console.login_page)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_get("/", console.status)
    r.add_post("/doctor/run", console.doctor_run)
    r.add_get("/doctor/progress", console.doctor_progress)
    r.add_get("/doctor/report", console.doctor_report)
    r.add_get("/devices", console.devices)
    r.add_get("/devices/{user}/{device}", console.device)
    r.add_post("/devices/action", console.device_action)
    r.add_get("/users", console.users)
    r.add_post("/users/add", console.user_add)
    r.add_post("/users/action", console.user_action)
    r.add_get("/users/{user}/setup", console.user_setup)
    r.add_get("/users/{user}/profile.mobileconfig", console.user_profile)
    r.add_get("/live", console.live)
    r.add_get("/live/charts", console.live_charts)
    r.add_get("/live.json", console.live_json)
    r.add_get("/static/console.css", console.css)
    r.add_get("/static/console.js", console.js)
    return app


@dataclass(slots=True)
class RunningConsole:
    console: Console
    runner: web.AppRunner
    host: str
    port: int
    tls: bool
    #: The listener for the edge's forward when console.publish is set.
    published: PublishedListener | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    async def close(self) -> None:
        for task in list(self.console._tasks):
            task.cancel()
        await asyncio.gather(*self.console._tasks, return_exceptions=True)
        if self.published is not None:
            await self.published.close()
        await self.runner.cleanup()


async def start_console(
    settings: ConsoleSettings, store: Store, status_source: StatusSource | None = None
) -> RunningConsole:
    """Serve the console on settings.host:settings.port (0: a free port); returns once
    listening. The store is the server's (shared, not closed here); *status_source* is what a
    supervisor knows of its processes and held Pings (None: the console runs on its own)."""
    console = Console(settings, store, status_source)
    app = make_console_app(console)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    published = None
    if settings.publish and context is not None and runner.server is not None:
        published = PublishedListener(
            settings.published_port, context, runner.server, console.proxied
        )
        try:
            await published.start()
        except BaseException:
            await runner.cleanup()
            raise
    console.spawn(console.sampler(), "natsync-console-sampler")
    log.info("console listening on %s:%d (tls=%s)", settings.host, port, bool(context))
    if not settings.admin_hash():
        log.warning("no console admin password is set: run natsync console passwd")
    return RunningConsole(console, runner, settings.host, port, context is not None, published)
