"""`natsync console`: the admin's web console on its own (loopback) listener, and
`natsync console passwd` to set its admin password. `natsync run` starts the same console
through natsync.console.start_console."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from natsync.cli.admin import _read_password, config_option, default_data_dir
from natsync.errors import NatsyncError

if TYPE_CHECKING:
    from natsync.console.settings import ConsoleSettings


def _settings(config: Path | None, data_dir: Path | None, store: str | None) -> ConsoleSettings:
    from dataclasses import replace

    from natsync.console import load_settings, settings_from_data_dir

    if config is None:
        return settings_from_data_dir(data_dir or default_data_dir(), store or "")
    settings = load_settings(config)
    if data_dir is None and store is None:
        return settings
    # --data-dir / --store win over the file's, as for natsync user and device.
    local = settings_from_data_dir(data_dir or settings.data_dir, store or "")
    return replace(settings, data_dir=local.data_dir, store_url=local.store_url)


_config = config_option
_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The data directory (store DATA_DIR/natsync.db) [default: -c's server.data_dir, else "
    "$NATSYNC_DATA_DIR or ./natsync-data].",
)
_store = click.option("--store", default=None, help="The store's path or URL [default: -c's].")


@click.group(invoke_without_command=True)
@_config
@_data_dir
@_store
@click.option("--host", default=None, help="Listen address [default: 127.0.0.1, loopback only].")
@click.option("--port", type=int, default=None, help="Listen port [default: 8444].")
@click.option("--doctor-url", default=None, help="The URL phones use, for the doctor button.")
@click.option("--public-name", default=None, help="The name phones connect to (setup profiles).")
@click.pass_context
def console(
    ctx: click.Context,
    config: Path | None,
    data_dir: Path | None,
    store: str | None,
    host: str | None,
    port: int | None,
    doctor_url: str | None,
    public_name: str | None,
) -> None:
    """Serve the web console (Status, Devices, Users, Live) until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import replace

    from natsync.console import start_console
    from natsync.store import open_store

    try:
        settings = _settings(config, data_dir, store)
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("host", host),
                ("port", port),
                ("doctor_url", doctor_url),
                ("public_name", public_name),
            )
            if v is not None
        }
        settings = replace(settings, **changes)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    if not settings.admin_hash():
        raise click.ClickException(
            "no console admin password is set: run natsync console passwd first"
        )

    async def serve() -> None:
        # SIGINT and SIGTERM stop it (systemd sends SIGTERM), even when the process was started
        # with them ignored or blocked (a script's background job, some supervisors).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopping = (signal.SIGINT, signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
        opened = open_store(settings.store_url)
        running = await start_console(settings, opened)
        for sig in stopping:
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"natsync console on {running.url} (Ctrl-C stops it)")
        try:
            await stop.wait()
        finally:
            for sig in stopping:  # a second signal during the teardown acts at once
                loop.remove_signal_handler(sig)
            await running.close()
            await opened.aclose()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


@console.command("passwd")
@_config
@_data_dir
@click.option("--password", default=None, help="Prompted (twice) when not given.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
def passwd(
    config: Path | None, data_dir: Path | None, password: str | None, password_stdin: bool
) -> None:
    """Set the console's admin password (stored hashed, DATA_DIR/console/admin.hash)."""
    from natsync.auth.passwords import hash_password

    try:
        settings = _settings(config, data_dir, None)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    hashed = hash_password(_read_password(password, password_stdin))
    path = settings.hash_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(hashed + "\n")
    click.echo(f"console password of {settings.admin_user} set ({path})")
