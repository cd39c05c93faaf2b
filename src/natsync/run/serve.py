"""One server process of a deployment: ActiveSync, and beside it on the same store SMTP in,
the outbound relay, the IMAP and CalDAV/CardDAV mirrors and the console, as configured, until
SIGINT / SIGTERM. `natsync server` runs it in the foreground; `natsync run` runs it as each of
its server parts (natsync.run.parts)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from natsync.config import ServerConfig


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

            dav_source = DavSource(store, dav, *([sources.lease] if sources is not None else []))
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
