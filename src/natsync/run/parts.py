"""The parts of a deployment, each run in its own process by the supervisor.

``python -m natsync.run.parts KIND INDEX`` (the file comes from NATSYNC_CONFIG, the log format
from NATSYNC_LOG_FORMAT / NATSYNC_LOG_LEVEL) runs one part until SIGTERM. On stdout a part
writes JSON lines for the supervisor only: ``{"ready": {...}}`` once it serves (with the ports
it bound), ``{"event": "address-changed" | "renewed", ...}`` when the self-check should run
again. Everything else goes to the log (stderr, shared with the supervisor).

The server part holds ActiveSync, SMTP in and the outbound relay in one process: with the
embedded SQLite store, a mail delivered by SMTP wakes a held Ping only inside the process that
committed it (docs/scaling.md: across processes that takes PostgreSQL's NOTIFY). Server
processes after the first (run.server_processes, PostgreSQL only) serve ActiveSync alone on
server.port + INDEX, and the edge balances over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from natsync.deployment import Deployment, load_deployment
from natsync.errors import NatsyncError
from natsync.run.derive import challenge_spool, edge_for, server_for

log = logging.getLogger("natsync.run")

PARTS = ("tunnel", "server", "edge", "ddns", "portmap", "cert")


def emit(message: dict[str, Any]) -> None:
    """One line to the supervisor."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# --- the parts ------------------------------------------------------------------------------


async def _server_part(deployment: Deployment, index: int) -> None:
    from natsync.run.serve import serve

    config = server_for(deployment, index)
    console = None
    if index == 0 and "console" in deployment.tables and deployment.path is not None:
        # [console] runs in the first server process: it reads the server's store and asks
        # its ActiveSync app which Pings it holds (docs/console.md).
        from natsync.console.settings import load_settings
        from natsync.run.derive import self_check_url

        console = load_settings(deployment.path)
        if "doctor_url" not in deployment.tables["console"]:  # what the self-check checks
            edge = deployment.edge.listen.rpartition(":")[2] if deployment.edge else ""
            ca = deployment.server.data_dir / "ca" / "ca.pem"
            private = deployment.cert is None or deployment.cert.mode == "private-ca"
            console = replace(
                console, doctor_url=self_check_url(deployment, int(edge) if edge else None),
                doctor_ca=ca if private and ca.exists() else None,
            )  # fmt: skip
        if deployment.edge is not None:  # the doctor checks the backends the edge really uses
            from natsync.run.derive import edge_for

            console = replace(console, doctor_edge=edge_for(deployment))

    def ready(running: Any, smtp: Any, console: Any = None) -> None:
        info: dict[str, Any] = {"url": running.url, "port": running.port}
        if smtp is not None:
            info["smtp"] = f"{smtp.host}:{smtp.port}"
        if console is not None:
            info["console"] = console.url
            info["console_port"] = console.port
        emit({"ready": info})

    await serve(config, ready, sources=deployment.sources, dav=deployment.dav, console=console)


async def _tunnel_part(deployment: Deployment) -> None:
    """The home's end of the relay tunnel ([tunnel], what `natsync relay dial` runs): ready
    once the interface has its address, so a server listening on the tunnel address can bind."""
    from natsync.relay.service import keep_home_tunnel
    from natsync.relay.settings import home_tunnel_settings

    settings = home_tunnel_settings(
        deployment.tables["tunnel"], deployment.path.parent if deployment.path else Path()
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    announced = False

    def up() -> None:
        nonlocal announced
        if not announced:
            announced = True
            emit({"ready": {"interface": settings.interface, "relay": settings.relay_endpoint}})
        else:
            emit({"event": "tunnel-up", "interface": settings.interface})

    await keep_home_tunnel(settings, stop, on_up=up)


async def _edge_part(deployment: Deployment, index: int) -> None:
    from natsync.edge import start_edge

    config = edge_for(deployment)
    config.check_runnable()
    if index > 0:  # the admin listener and the TCP forwards live in the first process only
        config = replace(config, admin_listen="", forwards=())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    board = None
    if config.workers > 1 and len(config.servers) > 1:  # one checker for all workers
        from natsync.edge.health import HealthBoard
        from natsync.run.derive import edge_health_board

        board = HealthBoard.file(edge_health_board(deployment), len(config.servers))
    running = await start_edge(config, reuse_port=config.workers > 1, board=board, worker=index)
    # SIGHUP: new certificate files, held connections kept (natsync.edge reload).
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    emit(
        {
            "ready": {
                "url": running.url,
                "port": running.port,
                "admin_port": running.admin_port,
                "forwards": list(running.forward_ports),
            }
        }
    )
    try:
        await stop.wait()
    finally:
        await running.close()


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _ddns_part(deployment: Deployment) -> None:
    from natsync.ddns.history import History
    from natsync.ddns.runner import CycleReport, DdnsRunner

    stop = _stop_event()
    settings = deployment.ddns
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history)
        emit({"ready": {"names": list(settings.names)}})

        def cycle(report: CycleReport) -> None:
            changed = [r for r in report.results if r.result == "updated"]
            if changed:
                emit({"event": "address-changed", "new": [r.new for r in changed]})

        runner.run(stop.is_set, wait=stop.wait, on_cycle=cycle)


#: Shortest sleep of the mapping holder (a router that grants tiny lifetimes cannot spin it).
MIN_HOLD_SLEEP = 5.0


def _portmap_part(deployment: Deployment) -> None:
    """The router opened both ways ([portmap] method for IPv4, ipv6 for the pinholes), held
    by one natsync.portmap.holder.PortMapSet; its status goes to DATA_DIR/portmap/status.json
    after every round (the supervisor's /healthz and the doctor read it)."""
    from natsync.portmap.holder import open_set, write_status
    from natsync.portmap.manager import MapResult

    stop = _stop_event()
    settings = deployment.portmap
    held = open_set(
        settings.method,
        settings.ipv6,
        settings.mappings,
        settings.lifetime,
        settings.router,
        settings.upnp_location,
    )
    from natsync.cert.manager import ReachabilityFile

    reach = ReachabilityFile(deployment.server.data_dir)  # ports 80/443 for the cert part
    reach.clear()

    def report(result: MapResult) -> None:
        """One mapping created, renewed, failed or removed (every action but "kept")."""
        log.info(
            "portmap: %s via %s %s %s", result.spec, result.method, result.action, result.detail
        )
        reach.note(result)

    def round_done(results: list[MapResult]) -> None:
        """After every round (and after the removal at stop): the status of both families."""
        write_status(settings.data_dir, held.status(time.time()))

    for member in held.members:
        for spec, reason in member.skipped:
            log.warning("portmap: %s not opened over IPv%d: %s", spec, member.family, reason)
    # The first round before saying ready: the cert part starts after this one, and an
    # HTTP-01 validation needs the router's mapping of port 80 in place.
    first = held.ensure(time.time())
    for result in first:
        report(result)
    round_done(first)
    emit(
        {
            "ready": {
                "router": "+".join(held.methods),
                "mappings": [str(s) for s in held.members[0].specs] if held.members else [],
            }
        }
    )
    held.hold(stop, report, time.time, MIN_HOLD_SLEEP, on_round=round_done)


def manager_settings(deployment: Deployment) -> Any:
    """natsync.cert.manager's settings from [cert] (natsync.cert.settings, the one parser of
    the table): the public certificate is DATA_DIR/tls/public.pem, what [edge] and [server]
    serve; the contact is cert.email, else admin.email."""
    cert = deployment.cert
    assert cert is not None
    data = deployment.server.data_dir
    return cert.manager_settings(
        data, cert_dir=data / "tls", basename="public", email=deployment.admin.email
    )


def public_cert_path(deployment: Deployment) -> Path:
    return deployment.server.data_dir / "tls" / "public.pem"


def _cert_part(deployment: Deployment) -> None:
    """Keep the public certificate fresh with natsync.cert.manager: obtain it when missing
    (or while `natsync init`'s private-CA stand-in is in place), renew it when the CA's
    renewal information or the lifetime says, and tell the supervisor (which reloads the
    edge without cutting held connections, runs the self-check, and shows the manager's
    status on /healthz from DATA_DIR/acme/status.json). Only ``cert.mode = "acme"`` renews;
    the other modes have nothing to do."""
    cert = deployment.cert
    assert cert is not None
    if cert.mode != "acme":
        stop = _stop_event()
        emit({"ready": {"mode": cert.mode}})
        stop.wait()
        return
    asyncio.run(_cert_manager(deployment))


def _dns_publisher(deployment: Deployment) -> Any:
    """The TXT publisher DNS-01 goes through (cert.dns_provider, else ddns.provider), or None
    when there is none (then auto leaves dns-01 out and says why)."""
    from natsync.cert.settings import dns_provider
    from natsync.ddns.providers import txt_publisher

    cert = deployment.cert
    assert cert is not None
    if cert.challenge not in ("auto", "dns-01"):
        return None
    provider, why = dns_provider(cert, deployment.ddns)
    if provider is None:
        log.info("cert: no dns-01: %s", why)
        return None
    return txt_publisher(deployment.ddns, provider)


#: Seconds between looks at what the portmap part last learnt of ports 80 / 443.
REACHABILITY_POLL = 2.0


async def _follow_reachability(deployment: Deployment, manager: Any, stop: asyncio.Event) -> None:
    """The router's answers to the portmap part (ReachabilityFile) replace cert.ports_open
    for the ports it asked about; the manager's auto choice follows them."""
    from natsync.cert.manager import ReachabilityFile

    configured = deployment.cert.reachable if deployment.cert is not None else (None, None)
    source = ReachabilityFile(deployment.server.data_dir)
    while not stop.is_set():
        seen = source.read()
        if seen is not None:
            http = seen[0] if seen[0] is not None else configured[0]
            tls = seen[1] if seen[1] is not None else configured[1]
            manager.set_reachability(http, tls)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REACHABILITY_POLL)


async def _cert_manager(deployment: Deployment) -> None:
    from natsync.cert.acme_responders import ChallengeStore, start_http01_responder
    from natsync.cert.manager import CertificateManager

    cert = deployment.cert
    assert cert is not None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = ChallengeStore(spool=challenge_spool(deployment))
    responder = None
    if cert.http_listen and not getattr(deployment.edge, "http_listen", ""):
        # No port 80 on the edge: the cert part answers HTTP-01 on cert.http_listen itself.
        host, _, port = cert.http_listen.rpartition(":")
        responder = await start_http01_responder(store, host.strip("[]"), int(port))
    ca_file = deployment.server.data_dir / "ca" / "ca.pem"

    def stand_in(leaf: Any) -> bool:
        # `natsync init` leaves a private-CA certificate until the ACME one arrives.
        return ca_file.exists() and bool(leaf.issuer == _subject(ca_file))

    def installed(cert_path: Path, key_path: Path) -> None:
        # The supervisor SIGHUPs the edge (held connections kept) and runs the self-check.
        log.info("cert: issued %s", cert_path)
        emit({"event": "renewed", "cert": str(cert_path)})

    manager = CertificateManager(
        manager_settings(deployment),
        challenges=store,
        dns=_dns_publisher(deployment),
        on_installed=[installed],
        stand_in=stand_in,
    )
    follow = None
    if deployment.portmap is not None:
        follow = asyncio.create_task(_follow_reachability(deployment, manager, stop))
        await asyncio.sleep(0)  # the router's first answers count for the first order
    # SIGUSR1 (from `natsync run`'s supervisor): renew now, whatever the expiry.
    loop.add_signal_handler(signal.SIGUSR1, manager.renew_soon)
    emit({"ready": {"mode": cert.mode, "challenges": [c.challenge for c in manager.candidates]}})
    try:
        await manager.run(stop)
    finally:
        if follow is not None:
            follow.cancel()
        if responder is not None:
            responder.close()
            await responder.wait_closed()


def _subject(ca_file: Path) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificates(ca_file.read_bytes())[0].subject


def run_part(kind: str, index: int) -> int:
    """The child's main: load the file, set up logging, run the part; 2 on a config error."""
    from natsync.logs import setup_logging
    from natsync.run.lifetime import die_with_parent

    # A supervisor killed without a word (kill -9, the OOM killer) takes its parts with it at
    # once, as a machine that dies would: no orphan keeps the ports for the next start.
    die_with_parent(signal.SIGKILL)

    setup_logging(
        os.environ.get("NATSYNC_LOG_FORMAT", "text"), os.environ.get("NATSYNC_LOG_LEVEL", "info")
    )
    try:
        deployment = load_deployment(None)
        if kind in ("server", "edge"):
            from natsync.server.app import loop_factory

            if kind == "server":
                from natsync.server.gcpolicy import tune_for_server

                tune_for_server()  # fewer, cheaper collections (natsync.server.gcpolicy)
            else:  # as `natsync edge run` does (a unit's soft limit is 1024: ~500 held Pings)
                from natsync.edge.memory import tune_malloc
                from natsync.fdlimit import raise_open_files_limit

                tune_malloc()  # ~7 KB less per held Ping (natsync.edge.memory.MMAP_THRESHOLD)
                raise_open_files_limit()  # two descriptors per bridged Ping

            coro = _server_part if kind == "server" else _edge_part
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(coro(deployment, index))
        elif kind == "tunnel":
            asyncio.run(_tunnel_part(deployment))
        elif kind == "ddns":
            _ddns_part(deployment)
        elif kind == "portmap":
            _portmap_part(deployment)
        elif kind == "cert":
            _cert_part(deployment)
        else:
            log.error("unknown part %r", kind)
            return 2
    except NatsyncError as exc:
        log.error("%s: %s", kind, exc.message)
        return 2
    except OSError as exc:
        log.error("%s: %s", kind, exc)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(run_part(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
