"""The supervisor of `natsync run`: small state, one event loop, parts as child processes.

Modelled on gunicorn's arbiter and uvicorn's multiprocess supervisor: start the parts in order
(server, edge, ddns, portmap, cert) and wait until each says it serves; restart a part that
dies, with the backoff of :class:`natsync.run.policy.Backoff`; on SIGHUP read the file again
(a broken file is refused and the old one kept), restart the parts whose tables changed, and
name the settings that only a restart of `natsync run` applies; on SIGTERM/SIGINT stop the
parts in reverse order (the server last, so held Pings are answered while the edge drains).

After start, after every public-address change (the ddns part reports it) and after every
certificate renewal (the cert part), the self-check runs the doctor's outside-in checks
against the public name; its verdict is logged and served on the admin listener's /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natsync.deployment import Deployment, load_deployment
from natsync.edge.tickets import SECRET_ENV as TICKET_SECRET_ENV
from natsync.edge.tickets import new_secret_hex
from natsync.errors import ConfigError, NatsyncError
from natsync.run.derive import self_check_url
from natsync.run.policy import Backoff, plan_reload

log = logging.getLogger("natsync.run")

#: Seconds a part may take to say it serves (a first ACME order is not waited for: the cert
#: part says ready before ordering).
READY_TIMEOUT = 60.0
#: Seconds a part is given to stop after SIGTERM before SIGKILL (the server answers held
#: Pings within its own shutdown grace, shorter than this).
STOP_GRACE = 15.0
#: The order parts start in; they stop in the reverse order.
ORDER = ("tunnel", "server", "edge", "ddns", "portmap", "cert")


class PartFailed(NatsyncError):
    """A part of the deployment did not start; its own log line above says why."""


@dataclass(slots=True)
class Child:
    kind: str
    index: int
    backoff: Backoff
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: False while the supervisor itself stops or restarts it (no backoff restart then).
    wanted: bool = True
    watcher: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}[{self.index}]" if self.index else self.kind


@dataclass(slots=True)
class SelfCheck:
    verdict: str = "pending"
    reason: str = "not run yet"
    at: str = ""
    url: str = ""
    problems: list[str] = field(default_factory=list)


def part_counts(deployment: Deployment) -> dict[str, int]:
    """How many processes of each part this deployment runs."""
    counts = {"server": deployment.run.server_processes}
    if "tunnel" in deployment.tables:  # the relay tunnel's home end (docs/relay.md)
        counts["tunnel"] = 1
    if deployment.edge is not None:
        counts["edge"] = deployment.edge.workers
    for kind in ("ddns", "portmap", "cert"):
        if getattr(deployment, kind) is not None:
            counts[kind] = 1
    return counts


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        deployment: Deployment,
        *,
        log_format: str = "text",
        log_level: str = "info",
        announce: Callable[[dict[str, Any]], None] | None = None,
        self_check_ca: Path | None = None,
    ) -> None:
        self.config_path = config_path.resolve()
        self.deployment = deployment
        self.log_format = log_format
        self.log_level = log_level
        self.announce = announce
        self.self_check_ca = self_check_ca
        self.children: dict[str, list[Child]] = {}
        self.stopping = asyncio.Event()
        self.check = SelfCheck()
        self.started_at = time.time()
        self.restarts: dict[str, int] = {}
        self._checking: asyncio.Task[None] | None = None
        #: Why the self-check must run again once the one running now ends ("" = no need).
        self._again = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._admin: Any = None
        #: One secret for every edge part, restarts included (natsync.edge.tickets).
        self.ticket_secret = new_secret_hex()

    # --- children ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NATSYNC_CONFIG"] = str(self.config_path)
        env["NATSYNC_LOG_FORMAT"] = self.log_format
        env["NATSYNC_LOG_LEVEL"] = self.log_level
        return env

    async def _spawn(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        child.ready = loop.create_future()
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "natsync.run.parts",
            child.kind,
            str(child.index),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            # the edge parts' shared TLS ticket keys: to them only
            env={**self._env(), TICKET_SECRET_ENV: self.ticket_secret}
            if child.kind == "edge"
            else self._env(),
            # Its own session: a terminal's Ctrl-C (or a signal to the whole group) reaches
            # the supervisor only, which stops the parts in order.
            start_new_session=True,
        )
        child.backoff.started(time.monotonic())
        child.wanted = True
        child.watcher = self._spawn_task(self._watch(child, child.proc), f"watch-{child.name}")

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        """Read the part's messages until it exits; then restart it unless it was stopped."""
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "ready" in message and child.ready is not None and not child.ready.done():
                child.info = message["ready"]
                child.ready.set_result(message["ready"])
            elif message.get("event"):
                self._event(child, message)
        code = await proc.wait()
        if child.ready is not None and not child.ready.done():
            child.ready.set_exception(PartFailed(f"{child.name} exited with status {code}"))
        if not child.wanted or self.stopping.is_set() or child.proc is not proc:
            return
        delay = child.backoff.died(time.monotonic())
        self.restarts[child.kind] = self.restarts.get(child.kind, 0) + 1
        log.error(
            "part %s (pid %d) exited with status %s; restarting in %.3g s",
            child.name,
            proc.pid,
            code,
            delay,
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set() or not child.wanted:
            return
        await self._spawn(child)
        try:
            await self._wait_ready(child)
            log.info("part %s restarted (pid %d)", child.name, child.proc.pid if child.proc else 0)
        except PartFailed as exc:
            log.error("%s", exc.message)

    async def _wait_ready(self, child: Child) -> dict[str, Any]:
        assert child.ready is not None
        try:
            return await asyncio.wait_for(asyncio.shield(child.ready), READY_TIMEOUT)
        except TimeoutError:
            raise PartFailed(f"{child.name} did not start within {READY_TIMEOUT:g} s") from None

    async def _start_kind(self, kind: str, count: int) -> None:
        children = [
            Child(
                kind,
                i,
                Backoff(
                    self.deployment.run.restart_backoff, self.deployment.run.restart_backoff_max
                ),
            )
            for i in range(count)
        ]
        self.children[kind] = children
        for child in children:
            await self._spawn(child)
        for child in children:
            await self._wait_ready(child)
            assert child.proc is not None
            log.info("part %s serves (pid %d) %s", child.name, child.proc.pid, _brief(child.info))

    async def _stop_kind(self, kind: str) -> None:
        children = self.children.pop(kind, [])
        for child in children:
            child.wanted = False
            if child.proc is not None and child.proc.returncode is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("part %s did not stop within %g s: killed", child.name, STOP_GRACE)
                child.proc.kill()
                await child.proc.wait()
        if children:
            log.info("part %s stopped", kind)

    # --- events, reload, self-check ------------------------------------------------------------

    def _event(self, child: Child, message: dict[str, Any]) -> None:
        event = message["event"]
        if event == "renewed":
            log.info("certificate renewed: reloading the edge (held connections kept)")
            self._signal("edge", signal.SIGHUP)
        log.info("%s reported %s: self-check again", child.name, event)
        self.run_self_check(f"after {event}")

    def _signal(self, kind: str, signum: int) -> None:
        for child in self.children.get(kind, []):
            if child.proc is not None and child.proc.returncode is None:
                child.proc.send_signal(signum)

    def run_self_check(self, why: str) -> None:
        if not self.deployment.run.self_check:
            return
        if self._checking is not None and not self._checking.done():
            self._again = why
            return
        self._checking = self._spawn_task(self._self_check(why), "self-check")

    async def _self_check(self, why: str) -> None:
        from natsync.doctor.findings import Severity
        from natsync.doctor.run import Options, diagnose

        edge = self.children.get("edge")
        url = self_check_url(self.deployment, edge[0].info.get("port") if edge else None)
        if not url:
            self.check = SelfCheck("skipped", "no public name (server.public_name)", _now())
            log.warning("self-check skipped: set server.public_name to the name phones use")
            return
        options = Options(url=url, heartbeat=0, ca_file=self.self_check_ca)
        try:
            report = await diagnose(options)
        except NatsyncError as exc:
            self.check = SelfCheck("fail", exc.message, _now(), url)
        else:
            bad = [f for f in report.findings if f.severity in (Severity.FAIL, Severity.WARN)]
            problems = [f"{f.severity}: {f.title}: {f.fix or f.cause}" for f in bad]
            reason = report.stopped or (problems[0] if problems else "every check passed")
            self.check = SelfCheck(str(report.worst), reason, _now(), url, problems)
            try:  # the console's "last self-check", its report one click away
                from natsync.console.status import save_doctor_report

                save_doctor_report(report, self.deployment.server.data_dir / "doctor")
            except OSError as exc:
                log.warning("cannot write the self-check's report: %s", exc)
        level = logging.INFO if self.check.verdict == "ok" else logging.WARNING
        log.log(
            level, "self-check (%s) of %s: %s — %s", why, url, self.check.verdict, self.check.reason
        )
        if self._again:
            why, self._again = self._again, ""
            self._checking = self._spawn_task(self._self_check(why), "self-check")

    async def reload(self) -> None:
        try:
            new = load_deployment(self.config_path)
            from natsync.run.checks import run_checks

            problems = [p for p in run_checks(new, bind=False) if p.fatal]
            if problems:
                raise ConfigError(problems[0].line())
        except ConfigError as exc:
            log.error("reload refused, still running the previous file: %s", exc.message)
            return
        plan = plan_reload(self.deployment.tables, new.tables, tuple(self.children))
        for setting in plan.fixed:
            log.warning("reload: %s changed; it applies when natsync run restarts", setting)
        self.deployment = new
        for kind in plan.stop:
            await self._stop_kind(kind)
        counts = part_counts(new)
        for kind in ORDER:
            if kind in plan.restart:
                log.info("reload: %s settings changed: restarting %s", kind, kind)
                await self._stop_kind(kind)
                await self._start_kind(kind, counts[kind])
            elif kind in plan.start:
                log.info("reload: starting %s (new table)", kind)
                await self._start_kind(kind, counts[kind])
        # Certificate files replaced in place (cert.mode = "files") are read again, live.
        self._signal("edge", signal.SIGHUP)
        log.info(
            "reload done: restarted %s; unchanged %s",
            ", ".join(plan.restart + plan.start) or "nothing",
            ", ".join(plan.unchanged) or "nothing",
        )

    # --- admin listener -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        parts = {
            child.name: {
                "pid": child.proc.pid if child.proc else None,
                "up": child.proc is not None and child.proc.returncode is None,
                "restarts": child.backoff.restarts,
            }
            for children in self.children.values()
            for child in children
        }
        cert = self.cert_health()
        portmap = self.portmap_health()
        healthy = all(p["up"] for p in parts.values()) and (cert is None or cert["healthy"])
        healthy = healthy and (portmap is None or bool(portmap.get("healthy")))
        return {
            "status": "ok" if healthy else "degraded",
            "parts": parts,
            **({"cert": cert} if cert is not None else {}),
            **({"portmap": portmap} if portmap is not None else {}),
            "self_check": {
                "verdict": self.check.verdict,
                "reason": self.check.reason,
                "at": self.check.at,
                "url": self.check.url,
                "problems": self.check.problems,
            },
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    def cert_health(self) -> dict[str, Any] | None:
        """The certificate manager's last status (the cert part writes it to
        DATA_DIR/acme/status.json after every step), with the days left; None unless
        cert.mode = "acme"."""
        from natsync.cert.manager import read_status

        cert = self.deployment.cert
        if cert is None or cert.mode != "acme":
            return None
        doc = read_status(self.deployment.server.data_dir)
        if doc is None or list(doc.get("names", [])) != list(cert.names):
            return {"state": "starting", "healthy": True, "message": "no status yet"}
        out = {k: doc.get(k) for k in ("state", "healthy", "message", "not_after", "renew_at")}
        out["healthy"] = bool(out["healthy"])
        not_after = doc.get("not_after")
        if isinstance(not_after, str):
            left = dt.datetime.fromisoformat(not_after).timestamp() - time.time()
            out["days_left"] = round(left / 86400, 1)
        out["challenge"] = doc.get("challenge", "")
        return out

    def portmap_health(self) -> dict[str, Any] | None:
        """The portmap part's last status (DATA_DIR/portmap/status.json): every mapping of
        both families, its state and expiry; None without [portmap]."""
        from natsync.portmap.holder import read_status

        if self.deployment.portmap is None:
            return None
        doc = read_status(self.deployment.portmap.data_dir)
        if doc is None:
            return {"healthy": True, "mappings": [], "message": "no status yet"}
        return doc

    def metrics(self) -> str:
        lines = [
            "# HELP natsync_part_up Whether the part's process runs (1) or not (0).",
            "# TYPE natsync_part_up gauge",
        ]
        restarts = []
        for children in self.children.values():
            for child in children:
                up = int(child.proc is not None and child.proc.returncode is None)
                label = f'part="{child.kind}",index="{child.index}"'
                lines.append(f"natsync_part_up{{{label}}} {up}")
                restarts.append(f"natsync_part_restarts_total{{{label}}} {child.backoff.restarts}")
        lines += [
            "# HELP natsync_part_restarts_total Restarts of the part after it died.",
            "# TYPE natsync_part_restarts_total counter",
            *restarts,
            "# HELP natsync_self_check_ok Whether the last self-check passed (1) or not (0).",
            "# TYPE natsync_self_check_ok gauge",
            f"natsync_self_check_ok {int(self.check.verdict == 'ok')}",
        ]
        return "\n".join(lines) + "\n"

    async def _start_admin(self) -> int | None:
        from aiohttp import web

        listen = self.deployment.admin.listen
        if not listen:
            return None
        host, _, port = listen.rpartition(":")

        async def healthz(_: web.Request) -> web.Response:
            doc = self.health()
            return web.json_response(doc, status=200 if doc["status"] == "ok" else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text=self.metrics(), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        self._admin = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else int(port)

    # --- the parts' status file (the console's process list) ---------------------------------

    def publish(self, writer: Any = None, stopped: bool = False) -> None:
        """Write DATA_DIR/run/status.json: each part's PID, state, restarts, start time (with
        a natsync.base.status.StatusWriter: only when that changed)."""
        from natsync.base.status import describe, write_status

        children = [c for kind in ORDER for c in self.children.get(kind, [])]
        doc = describe(children, os.getpid(), self.started_at, self.stopping.is_set(), stopped,
                       time.time(), time.monotonic())  # fmt: skip
        try:
            (writer.write if writer else write_status)(self.deployment.server.data_dir, doc)
        except OSError as exc:
            log.warning("cannot write the parts' status file: %s", exc)

    async def _publish_every(self, seconds: float) -> None:
        from natsync.base.status import StatusWriter

        writer = StatusWriter()
        while True:
            self.publish(writer)
            await asyncio.sleep(seconds)

    # --- the whole run --------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reloads: asyncio.Queue[None] = asyncio.Queue()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
        # SIGUSR1: renew the certificate now (the cert part orders, then the edge reloads).
        loop.add_signal_handler(signal.SIGUSR1, self._signal, "cert", signal.SIGUSR1)
        from natsync.base.status import PUBLISH_EVERY

        self._spawn_task(self._publish_every(PUBLISH_EVERY), "publish-status")
        try:
            counts = part_counts(self.deployment)
            # All at once (each is its own process; the edge finds the server by its health
            # checks): start-up takes the slowest part's time, not the sum. The certificate
            # manager last: its first order may need the router's mapping (HTTP-01).
            # The relay tunnel first: a server may listen on its address (smtp_relayed_listen).
            if "tunnel" in counts:
                await self._start_kind("tunnel", counts["tunnel"])
            first = [k for k in ORDER if k in counts and k not in ("cert", "tunnel")]
            await asyncio.gather(*(self._start_kind(k, counts[k]) for k in first))
            if "cert" in counts and not self.stopping.is_set():
                await self._start_kind("cert", counts["cert"])
            admin_port = await self._start_admin()
            if self.stopping.is_set():
                return
            log.info(
                "natsync run: every part serves (%s); admin on %s",
                ", ".join(f"{k} x{n}" for k, n in counts.items()),
                f"port {admin_port}" if admin_port else "none",
            )
            if self.announce is not None:
                self.announce(self._info(admin_port))
            self.run_self_check("after start")
            while not self.stopping.is_set():
                waiter = asyncio.ensure_future(reloads.get())
                stopper = asyncio.ensure_future(self.stopping.wait())
                done, pending = await asyncio.wait(
                    {waiter, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                if waiter in done and not self.stopping.is_set():
                    log.info("SIGHUP: reading %s again", self.config_path)
                    await self.reload()
        finally:
            self.stopping.set()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            log.info("natsync run: stopping")
            for kind in reversed(ORDER):
                await self._stop_kind(kind)
            if self._admin is not None:
                await self._admin.cleanup()
            for task in list(self._tasks):
                task.cancel()
            self.publish(stopped=True)
            log.info("natsync run: stopped")

    def _info(self, admin_port: int | None) -> dict[str, Any]:
        info: dict[str, Any] = {"pid": os.getpid(), "admin_port": admin_port}
        for kind, children in self.children.items():
            info[kind] = [dict(c.info, pid=c.proc.pid if c.proc else None) for c in children]
        return info


def _brief(info: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in info.items() if v not in (None, "", []))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
