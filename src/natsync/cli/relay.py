"""`natsync relay init | run | dial`: the way out of carrier-grade NAT through a small VPS."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from natsync.config import DEFAULT_HEARTBEAT_MAX
from natsync.errors import NatsyncError

_CONFIG = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML file with the [relay] table (run) or the [tunnel] table (dial).",
)


@click.group()
def relay() -> None:
    """A public relay for a home without a public IPv4 address (WireGuard + PROXY v2)."""


@relay.command()
@click.argument("public_name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Where to write relay.toml and relay.key.",
)
@click.option("--tunnel-port", type=click.IntRange(1, 65535), default=51820, show_default=True)
@click.option("--interface", default="natsync0", show_default=True, help="The relay's tunnel.")
@click.option("--home-interface", default="natsync0", show_default=True, help="The home's.")
@click.option(
    "--home-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the home's files here (home.toml, tunnel.key) instead of only printing.",
)
@click.option(
    "--heartbeat-max",
    type=click.IntRange(1, 86400),
    default=DEFAULT_HEARTBEAT_MAX,
    show_default=True,
    help="The home's [server] heartbeat_max: the relay's idle timeouts follow it.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(
    public_name: str,
    directory: Path,
    tunnel_port: int,
    interface: str,
    home_interface: str,
    home_dir: Path | None,
    heartbeat_max: int,
    force: bool,
) -> None:
    """On the VPS: make both ends' keys, write relay.toml, print what to paste at home.

    PUBLIC_NAME is the name (or address) the home dials: this server's public DNS name.
    """
    from natsync.relay.service import initial_configuration
    from natsync.relay.wireguard import write_private_key

    config_file, key_file = directory / "relay.toml", directory / "relay.key"
    home_files = (home_dir / "home.toml", home_dir / "tunnel.key") if home_dir else ()
    for existing in (config_file, key_file, *home_files):
        if existing.exists() and not force:
            raise click.ClickException(f"{existing} exists; use --force to replace it")
    try:
        result = initial_configuration(
            public_name,
            tunnel_port=tunnel_port,
            relay_interface=interface,
            home_interface=home_interface,
            heartbeat_max=heartbeat_max,
        )
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_private_key(key_file, result.relay_private_key)
        config_file.write_text(result.relay_toml, encoding="utf-8")
        if home_files:
            write_private_key(home_files[1], result.home_private_key)
            home_files[0].write_text(
                result.home_toml + "\n" + result.home_edge_toml, encoding="utf-8"
            )
    except OSError as exc:
        raise click.ClickException(f"cannot write the files: {exc}") from exc
    click.echo(f"wrote {config_file} and {key_file} (0600)")
    if home_files:
        click.echo(f"wrote the home's {home_files[0]} and {home_files[1]} (0600)")
    click.echo(f"start the relay here with: natsync relay run -c {config_file}")
    click.echo(f"open UDP {tunnel_port}, TCP 443 and TCP 25 on this server's firewall;")
    click.echo(
        "DNS of the public name points at this server: natsync run at home publishes it "
        "([ddns] follows the relay once [tunnel] is in its file).\n"
    )
    click.echo("At home, write the tunnel key (readable by natsync only):")
    click.echo(f"  (umask 077; echo '{result.home_private_key}' > /etc/natsync/tunnel.key)")
    click.echo("and add to natsync.toml:\n")
    click.echo(result.home_toml.replace('"tunnel.key"', '"/etc/natsync/tunnel.key"'))
    click.echo(result.home_edge_toml)


@relay.command()
@_CONFIG
def run(config_path: Path) -> None:
    """On the VPS: bring the tunnel up and forward 443/25 to the home until SIGTERM."""
    from natsync.relay.service import start_relay
    from natsync.relay.settings import load_table, relay_settings

    try:
        settings = relay_settings(load_table(config_path, "relay"), config_path.parent)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = await start_relay(settings)
        click.echo(
            f"natsync relay: tunnel {settings.tunnel_interface} on UDP {settings.tunnel_port}, "
            f"forwarding ports {' '.join(str(p) for p in running.ports)} to "
            f"{settings.home_address}; idle connections cut after {settings.idle_timeout:g} s "
            f"(heartbeat {settings.heartbeat_max} s + margin)",
            err=True,
        )
        try:
            await stop.wait()
        finally:
            await running.close()

    try:
        asyncio.run(serve())
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


@relay.command()
@_CONFIG
def dial(config_path: Path) -> None:
    """At home: bring the home's end of the tunnel up and keep it up until SIGTERM."""
    from natsync.relay.service import keep_home_tunnel
    from natsync.relay.settings import home_tunnel_settings, load_table

    try:
        settings = home_tunnel_settings(load_table(config_path, "tunnel"), config_path.parent)
        settings.tunnel()  # the key file is readable and private: say so now, not in a loop
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"natsync relay dial: tunnel {settings.interface} to "
                   f"{settings.relay_endpoint}", err=True)  # fmt: skip
        await keep_home_tunnel(settings, stop)

    asyncio.run(serve())
