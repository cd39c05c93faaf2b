"""`natsync edge run | trust-backend | render`: the SSL-bridging edge from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import click

from natsync.deployment import config_option
from natsync.edge import http, proxy
from natsync.edge.config import EdgeConfig
from natsync.edge.health import HealthBoard
from natsync.edge.memory import tune_malloc
from natsync.errors import NatsyncError
from natsync.logs import log_options, setup_logging
from natsync.run.lifetime import die_with_parent

_CONFIG = config_option(
    "Deployment file with an [edge] table (env NATSYNC_CONFIG; default: embedded defaults)."
)


@click.group()
def edge() -> None:
    """SSL bridging in front of the server: publishing rules, Ping-safe timeouts, forwards."""


async def _serve(
    config: EdgeConfig, worker: int, children: list[int], board: HealthBoard | None = None
) -> None:
    from dataclasses import replace

    from natsync.edge import start_edge

    if worker > 0:  # the admin listener and the TCP forwards live in the first worker only
        config = replace(config, admin_listen="", forwards=())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before listening: a stop is never lost
        loop.add_signal_handler(sig, stop.set)
    running = await start_edge(config, reuse_port=config.workers > 1, board=board, worker=worker)

    def reload() -> None:
        running.reload()
        _signal_children(children, signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if worker == 0:
        checking = asyncio.create_task(_check_pin(config), name="edge-pin-check")
        forwards = " ".join(str(p) for p in running.forward_ports)
        click.echo(
            f"natsync edge: listening on {running.url} admin={running.admin_port} "
            f"forwards={forwards or '-'} workers={config.workers} "
            f"parsers={'C' if http.speedups is not None else 'Python'} "
            f"steady={'C' if proxy.C_READS is not None else 'Python'}",
            err=True,
        )
    try:
        await stop.wait()
    finally:
        if worker == 0:
            checking.cancel()
        await running.close()


async def _check_pin(config: EdgeConfig) -> None:
    """At start, say at once whether the server's certificate matches the pin (best effort:
    a server that is not up yet is not an error here; requests get 503 until it is)."""
    from natsync.edge.tls import fetch_certificate

    log = logging.getLogger("natsync.edge")
    if not config.backend_pin:
        return
    try:
        peer = await fetch_certificate(
            config.backend_host, config.backend_port, config.server_name, timeout=5.0
        )
    except NatsyncError as exc:
        log.warning("cannot check the server's certificate yet: %s", exc.message)
        return
    if peer.fingerprint != config.backend_pin:
        log.error(
            "the server at %s presents certificate %s, not the pinned %s: requests will get 502 "
            "until you pin it with `natsync edge trust-backend %s` (if it was renewed)",
            config.backend, peer.fingerprint, config.backend_pin, config.backend,
        )  # fmt: skip
    else:
        log.info("the server's certificate matches the pin %s", config.backend_pin)


def _signal_children(children: list[int], sig: signal.Signals) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _fork_workers(config: EdgeConfig) -> tuple[int, list[int]]:
    """Fork workers 1..N-1 before any event loop exists; they share the port (SO_REUSEPORT)."""
    children: list[int] = []
    for index in range(1, config.workers):
        pid = os.fork()
        if pid == 0:
            die_with_parent()  # a worker ends with the first one
            return index, []
        children.append(pid)
    return 0, children


@edge.command()
@_CONFIG
@log_options
def run(config_path: Path | None, log_format: str | None, log_level: str | None) -> None:
    """Run the edge until SIGINT/SIGTERM; SIGHUP reloads the certificate files."""
    import importlib.util

    from natsync.edge import load_edge_config

    setup_logging(log_format or "text", log_level or "info")
    try:
        config = load_edge_config(config_path)
        config.check_runnable()
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    tune_malloc()
    from natsync.fdlimit import raise_open_files_limit

    raise_open_files_limit()  # two descriptors per bridged request; the workers inherit it
    from natsync.edge.tickets import process_secret

    process_secret()  # made before the fork: every worker accepts every worker's TLS tickets
    # one worker checks the servers for all: the board is made before they are forked
    shared = config.workers > 1 and len(config.servers) > 1
    board = HealthBoard.anonymous(len(config.servers)) if shared else None
    worker, children = _fork_workers(config)
    try:
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop

            uvloop.run(_serve(config, worker, children, board))
        else:  # pragma: no cover - uvloop is an optional extra
            asyncio.run(_serve(config, worker, children, board))
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        _signal_children(children, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


@edge.command("trust-backend")
@click.argument("backend")
@_CONFIG
@click.option("--name", default="", help="Name to send as SNI (default: the host of BACKEND).")
@click.option("--yes", is_flag=True, help="Pin without asking.")
def trust_backend(backend: str, config_path: Path | None, name: str, yes: bool) -> None:
    """Show the server's certificate at BACKEND (host:port) and pin it in the edge config."""
    from natsync.edge.trust import describe, inspect_backend, pin_in_config

    path = config_path or Path("natsync.toml")
    try:
        peer = asyncio.run(inspect_backend(backend, name))
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"The server at {backend} presents:")
    for line in describe(peer):
        click.echo(f"  {line}")
    if not yes and not click.confirm(f"Pin this certificate in {path}?", default=False):
        raise click.ClickException("not pinned")
    try:
        pin_in_config(path, peer.fingerprint, backend=backend, backend_name=name or None)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"pinned {peer.fingerprint} for {backend} in {path}")


@edge.command()
@click.argument("kind", type=click.Choice(["nginx", "haproxy"]))
@_CONFIG
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the configuration here (default: standard output).",
)  # fmt: skip
def render(kind: str, config_path: Path | None, output: Path | None) -> None:
    """Write an nginx or HAProxy configuration equivalent to the edge's."""
    from natsync.edge import load_edge_config
    from natsync.edge.render import render_config

    try:
        text = render_config(kind, load_edge_config(config_path))
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
