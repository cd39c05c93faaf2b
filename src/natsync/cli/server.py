"""`natsync server`: serve ActiveSync (and, when configured, SMTP in and the outbound relay)
from one TOML config file, until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import Any

import click

from natsync.config import ServerConfig, load_config
from natsync.deployment import config_option
from natsync.errors import NatsyncError
from natsync.logs import log_options, setup_logging


async def serve(
    config: ServerConfig,
    ready: Any = None,
    sources: Any = None,
    dav: Any = None,
    console: Any = None,
) -> None:
    """Run until a signal: ActiveSync server, SMTP in (smtp_listen), relay (smarthost), the IMAP
    mirrors when *sources* (natsync.sources.SourcesConfig) names an IMAP server, and with *dav*
    (natsync.sources.dav.DavSettings) the CalDAV/CardDAV mirrors, and with *console*
    (natsync.console.ConsoleSettings) the web console on the server's store and held Pings
    (then *ready* gets the running console as a third argument)."""
    from natsync.fdlimit import raise_open_files_limit
    from natsync.mail.dkim import DkimSigner
    from natsync.mail.relay import Relay, SmartHost
    from natsync.mail.smtp_in import SmtpLimits, start_smtp_server
    from natsync.server import start_server
    from natsync.server.app import tls_context
    from natsync.store import open_store
    from natsync.store.modes import private_dir

    raise_open_files_limit()  # before any listener takes its share of it
    smtp_limits = SmtpLimits(
        per_address=config.smtp_max_connections_per_ip, total=config.smtp_max_connections
    )

    if not config.store:  # the embedded file lives in data_dir (a named store is elsewhere)
        private_dir(config.data_dir)  # 0700: created so, or tightened with a log line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def quiet_signals() -> None:  # a second signal during the teardown acts at once
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    # Every part is closed by the stack, newest first, however far starting got.
    async with contextlib.AsyncExitStack() as parts:
        store = open_store(config.store_url)
        parts.push_async_callback(store.aclose)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        parts.callback(quiet_signals)
        relay = None
        if config.smarthost:
            smarthost = SmartHost.from_setting(
                config.smarthost,
                config.smarthost_starttls,
                str(config.smarthost_ca) if config.smarthost_ca else None,
                local_hostname=config.hostname,
            )
            relay = Relay(
                store,
                smarthost,
                hostname=config.hostname,
                dkim=DkimSigner.from_data_dir(config.data_dir),  # natsync dkim create DOMAIN
            )
            relay.start()
            parts.push_async_callback(relay.aclose)
        server = await start_server(config, store, relay=relay)
        parts.push_async_callback(server.close)
        if sources is not None and sources.any_imap:
            from natsync.sources import install

            mirrors = install(server.eas, sources, store)
            parts.push_async_callback(mirrors.aclose)
        if dav is not None:
            from natsync.sources.dav import DavSource

            dav_source = DavSource(store, dav)
            parts.push_async_callback(dav_source.aclose)
            dav_source.attach(server)  # each user's mirror starts at their first login
        smtp = None
        if config.smtp_listen:
            host, _, port = config.smtp_listen.rpartition(":")
            smtp = await start_smtp_server(
                store, host.strip("[]"), int(port), config.domains, hostname=config.hostname,
                relay=relay, limits=smtp_limits,
                tls_context=tls_context(config),  # STARTTLS with the server's certificate
            )  # fmt: skip
            parts.push_async_callback(smtp.close)
        if config.smtp_relayed_listen:  # mail through `natsync relay`'s tunnel, PROXY v2 first
            host, _, port = config.smtp_relayed_listen.rpartition(":")
            relayed_smtp = await start_smtp_server(
                store,
                host.strip("[]"),
                int(port),
                config.domains,
                proxy_protocol_from=set(config.smtp_proxy_protocol_from),
                hostname=config.hostname,
                relay=relay,
                limits=smtp_limits,
                tls_context=tls_context(config),
            )
            parts.push_async_callback(relayed_smtp.close)
        running_console = None
        if console is not None:
            from natsync.console import SupervisorSource, start_console

            running_console = await start_console(console, store, SupervisorSource([server]))
            parts.push_async_callback(running_console.close)
        if ready is not None:
            ready(server, smtp, *([running_console] if running_console is not None else []))
        parts.callback(quiet_signals)  # first out once running: before any part closes
        await stop.wait()


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
