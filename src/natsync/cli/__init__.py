"""`natsync <command>`: thin — parse, load config, call the library, render the result.

Each part adds its command group here; the commands stay small and the work lives in the
library modules, so tests drive the library and the CLI alike.
"""

from __future__ import annotations

import click

from natsync import __version__


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "NATSYNC"}
)
@click.version_option(__version__, prog_name="natsync")
def main() -> None:
    """natsync: Exchange ActiveSync that works from behind a NAT firewall."""


def _register() -> None:
    """Attach the command groups of each part (imported here to keep start-up cheap)."""
    from natsync.cli.ddns import ddns, portmap

    main.add_command(ddns)
    main.add_command(portmap)
    from natsync.cli.cert import cert

    main.add_command(cert)
    from natsync.cli.admin import device, user
    from natsync.cli.server import server
    from natsync.cli.up import up
    from natsync.cli.wbxml import wbxml

    main.add_command(up)
    main.add_command(wbxml)
    main.add_command(user)
    main.add_command(device)
    main.add_command(server)
    from natsync.cli.edge import edge

    main.add_command(edge)
    from natsync.cli.doctor import doctor

    main.add_command(doctor)
    from natsync.cli.store import store

    main.add_command(store)
    from natsync.cli.transfer import export_command, import_command

    main.add_command(import_command)
    main.add_command(export_command)
    from natsync.cli.lab import lab

    main.add_command(lab)
    from natsync.cli.relay import relay

    main.add_command(relay)
    from natsync.cli.dkim import dkim

    main.add_command(dkim)
    from natsync.cli.service import install_service

    main.add_command(install_service)
    from natsync.cli.console import console

    main.add_command(console)
    from natsync.cli.check import check
    from natsync.cli.init import init
    from natsync.cli.run import run

    main.add_command(check)
    main.add_command(init)
    main.add_command(run)


_register()
