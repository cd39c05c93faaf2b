"""`natsync server`: serve ActiveSync (and, when configured, SMTP in and the outbound relay)
from one TOML config file, until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import click

from natsync.config import load_config
from natsync.deployment import config_option
from natsync.errors import NatsyncError
from natsync.logs import log_options, setup_logging
from natsync.run.serve import serve


@click.command()
@config_option("Deployment file with a [server] table (env NATSYNC_CONFIG; default: defaults).")
@log_options
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Override server.port.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Override server.data_dir.",
)
@click.option(
    "--store",
    default=None,
    help="Override server.store: a SQLite path or a postgresql:// URL.",
)
def server(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    store: str | None,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Serve ActiveSync (EAS 12.1-16.1) from the store (server.store, else in the data dir)."""
    from dataclasses import replace

    try:
        config = load_config(config_path)
        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if store is not None:
            overrides["store"] = store
        config = replace(config, **overrides)
        from natsync.sources import load_sources

        sources = load_sources(config_path)
        dav = None
        if config_path is not None:
            from natsync.config import read_toml
            from natsync.sources.dav import dav_settings

            dav = dav_settings(read_toml(config_path), config_path.parent)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    setup_logging(log_format or "text", log_level or "info")

    def ready(running: Any, smtp: Any) -> None:
        # A store URL may carry a password: shown without it.
        shown = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", config.store_url)
        click.echo(f"natsync server: ActiveSync at {running.url} (store {shown})", err=True)
        if smtp is not None:  # the bound port: smtp_listen may ask for any free one (port 0)
            click.echo(f"natsync server: SMTP at {smtp.host}:{smtp.port}", err=True)
        if dav is not None:
            click.echo(f"natsync server: CalDAV/CardDAV from {dav.url}", err=True)
        if config.smtp_relayed_listen:
            click.echo(
                f"natsync server: SMTP through the relay at {config.smtp_relayed_listen} "
                f"(PROXY from {', '.join(config.smtp_proxy_protocol_from)})",
                err=True,
            )

    try:
        from natsync.server.app import loop_factory
        from natsync.server.gcpolicy import tune_for_server

        tune_for_server()  # fewer, cheaper collections (natsync.server.gcpolicy)
        # uvloop when installed: a fraction of asyncio's TLS memory per held Ping (docs/push.md)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(config, ready, sources, dav))
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
