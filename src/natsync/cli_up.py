"""`natsync up`: run the whole deployment on its embedded defaults, on loopback."""

from __future__ import annotations

import click


@click.command()
def up() -> None:
    """Run natsync on its embedded defaults (SQLite, private CA, loopback ports, demo user)."""
    click.echo(
        "natsync up: the ActiveSync server is not built yet (issue 3).\n"
        "When it lands, this command starts, on loopback: the ActiveSync server over TLS with a\n"
        "private CA, SMTP in, a demo user, and prints the URL, user, password and CA file."
    )
