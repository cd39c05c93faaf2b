"""`natsync dkim create|list|records`: the DKIM key of each mail domain and the DNS records the
domain needs (MX, SPF, DKIM, DMARC). Thin: the work is :mod:`natsync.mail.dkim` and
:mod:`natsync.mail.dns_records`.

The data directory (where the keys live) and the public name come from the deployment file
(``-c``: ``server.data_dir``, ``server.public_name``) or the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from natsync.cli.admin import config_option, deployment_settings, print_json, table
from natsync.errors import NatsyncError
from natsync.mail import dkim as dkim_keys
from natsync.mail.dns_records import dkim_record, records_for


def _settings(config: Path | None, data_dir: Path | None) -> tuple[Path, str]:
    """(data directory, public name) from the flags, else the file, else the defaults."""
    found = deployment_settings(config, data_dir)
    return found.data_dir, found.public_name


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


_config_option = config_option
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the keys live (DATA_DIR/dkim/DOMAIN/SELECTOR.key). Default: server.data_dir "
    "of -c, else $NATSYNC_DATA_DIR, $STATE_DIRECTORY or ./natsync-data.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def dkim() -> None:
    """DKIM keys that sign outgoing mail, and the DNS records a mail domain needs."""


@dkim.command("create")
@click.argument("domain")
@click.option("--selector", default=dkim_keys.DEFAULT_SELECTOR, show_default=True)
@_config_option
@_data_dir_option
@_json_option
def create_command(
    domain: str, selector: str, config: Path | None, data_dir: Path | None, as_json: bool
) -> None:
    """Make DOMAIN's signing key and print the TXT record to publish."""
    directory, _ = _settings(config, data_dir)
    key = _call(dkim_keys.create_key, directory, domain, selector)
    if as_json:
        print_json(_key_json(key))
        return
    click.echo(f"wrote {key.path} (RSA {dkim_keys.KEY_BITS}, mode 0600)")
    click.echo("publish this TXT record, then restart natsync (the relay signs from then on):")
    click.echo(dkim_record(key.domain, key.selector, key.public_key_b64).zone_line())


def _key_json(key: dkim_keys.DkimKey) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "path": str(key.path),
        "record_name": key.record_name + ".",
        "record_text": key.record_text,
    }


@dkim.command("list")
@_config_option
@_data_dir_option
@_json_option
def list_command(config: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """List the domains that have a signing key (the newest selector signs)."""
    directory, _ = _settings(config, data_dir)
    keys = _call(dkim_keys.load_keys, directory)
    if as_json:
        print_json([_key_json(k) for k in keys.values()])
        return
    table(
        "DKIM keys",
        ["domain", "selector", "record", "file"],
        [[k.domain, k.selector, k.record_name, str(k.path)] for k in keys.values()],
    )


@dkim.command("records")
@click.argument("domain")
@click.option(
    "--public-name", default=None, help="The mail server's name (MX target); default: -c's."
)
@click.option(
    "--spf-include",
    multiple=True,
    help="SPF record of a smarthost that sends for DOMAIN (repeatable).",
)
@click.option("--dmarc-report", default=None, help="DMARC report address (postmaster@DOMAIN).")
@_config_option
@_data_dir_option
@_json_option
def records_command(
    domain: str,
    public_name: str | None,
    spf_include: tuple[str, ...],
    dmarc_report: str | None,
    config: Path | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Print the MX, SPF, DKIM and DMARC records DOMAIN needs, as zone-file lines."""
    directory, configured_name = _settings(config, data_dir)
    name = public_name or configured_name
    if not name:
        raise click.UsageError("give --public-name (or -c with server.public_name set)")
    domain = _call(dkim_keys.check_domain, domain)
    key = _call(dkim_keys.load_key, directory, domain)
    records = records_for(
        domain,
        name,
        None if key is None else key.public_key_b64,
        selector=dkim_keys.DEFAULT_SELECTOR if key is None else key.selector,
        spf_include=spf_include,
        dmarc_report=dmarc_report,
    )
    if as_json:
        print_json([r.as_json() for r in records])
        return
    for record in records:
        click.echo(f"; {record.purpose}")
        click.echo(record.zone_line())
    if key is None:
        click.echo(f"; no DKIM key for {domain} yet: natsync dkim create {domain}", err=True)
