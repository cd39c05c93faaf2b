"""`natsync wbxml decode|encode`: the codec on the command line."""

from __future__ import annotations

import click


@click.group()
def wbxml() -> None:
    """Decode WBXML to readable XML, or encode XML to WBXML."""
