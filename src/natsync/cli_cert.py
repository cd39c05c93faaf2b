"""`natsync cert init-ca|issue|export-ca|check|acme|renew`.

Thin: parse, call natsync.cert, render. The CA lives in ``<data-dir>/ca`` and issued
certificates in ``<data-dir>/tls`` (the same places `natsync up` uses), so a certificate
issued here is the one the server and the edge load.

``check`` exits 0 when a phone will accept the certificate, 1 when it will but something
deserves attention, 2 when a phone will refuse (or the check could not be made).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from natsync.errors import NatsyncError

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("natsync-data"),
    envvar="NATSYNC_DATA_DIR",
    show_default=True,
    help="natsync's data directory (the CA is in DATA_DIR/ca, certificates in DATA_DIR/tls).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
KEY_CHOICES = click.Choice(["ecdsa-p256", "rsa2048", "rsa3072"])


def _fail(exc: NatsyncError) -> click.ClickException:
    return click.ClickException(exc.message)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.group()
def cert() -> None:
    """Certificates: a private CA, issuing, checks that say what a phone will say, ACME."""


@cert.command("init-ca")
@_data_dir_option
@click.option("--key", "key_type", type=KEY_CHOICES, default="ecdsa-p256", show_default=True)
@click.option("--name", "common_name", default="natsync private CA", show_default=True)
@_json_option
def init_ca_command(data_dir: Path, key_type: str, common_name: str, as_json: bool) -> None:
    """Create the private CA (refuses to replace one: phones may already trust it)."""
    from natsync.cert.ca import init_ca

    try:
        ca = init_ca(data_dir / "ca", common_name=common_name, key_type=key_type)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps({"ca_file": str(ca.cert_path), "key_type": key_type}))
    else:
        click.echo(f"created the CA {common_name} ({key_type}) in {ca.directory}")
        click.echo(
            f"phones trust it after installing: natsync cert export-ca --data-dir {data_dir}"
        )


@cert.command()
@_data_dir_option
@click.option("--name", "names", multiple=True, help="DNS name the phone uses (repeatable).")
@click.option("--ip", "ips", multiple=True, help="Address the phone connects to (repeatable).")
@click.option("--key", "key_type", type=KEY_CHOICES, default="ecdsa-p256", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the certificate and key [default: DATA_DIR/tls].",
)
@click.option("--basename", default="server", show_default=True)
@_json_option
def issue(
    data_dir: Path,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    key_type: str,
    out: Path | None,
    basename: str,
    as_json: bool,
) -> None:
    """Issue a server certificate from the private CA for the names and addresses phones use."""
    from natsync.cert.ca import load_ca

    try:
        ca = load_ca(data_dir / "ca")
        for ip in ips:
            _parse_ip(ip)
        cert_path, key_path = ca.issue_server_cert(
            names, ips, out or data_dir / "tls", basename=basename, key_type=key_type
        )
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps({"cert": str(cert_path), "key": str(key_path)}))
    else:
        click.echo(f"certificate (leaf + CA): {cert_path}")
        click.echo(f"private key:             {key_path}")


def _parse_ip(text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an IP address", param_hint="--ip") from None


@cert.command("export-ca")
@_data_dir_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pem", "der", "mobileconfig"]),
    default="pem",
    show_default=True,
    help="pem/der for Android and computers, mobileconfig for iPhone and iPad.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write ('-' for standard output).",
)
def export_ca_command(data_dir: Path, fmt: str, output: Path) -> None:
    """Write the CA certificate in the form a phone installs."""
    from natsync.cert.ca import load_ca
    from natsync.cert.export import export_ca

    try:
        data = export_ca(load_ca(data_dir / "ca").cert, fmt)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        return
    output.write_bytes(data)
    click.echo(f"wrote {output} ({fmt}, {len(data)} bytes)", err=True)


@cert.command("check")
@click.argument("target")
@click.option("--name", "names", multiple=True, help="Name the phone is configured with.")
@click.option("--ip", "ips", multiple=True, help="Address the phone connects to directly.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Trust the roots in this file (e.g. natsync's CA, DATA_DIR/ca/ca.pem).",
)
@click.option("--system", "use_system", is_flag=True, help="Trust the system's roots.")
@click.option(
    "--sni",
    default=None,
    help="Server name to send when fetching from HOST:PORT [default: the first --name].",
)
@_data_dir_option
@_json_option
def check_command(
    target: str,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    ca_file: Path | None,
    use_system: bool,
    sni: str | None,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Say what a phone will say about the certificate in FILE or served at HOST:PORT.

    Without --ca-file or --system, the roots are natsync's own CA in DATA_DIR/ca when it
    exists, else the system's. Exit status: 0 ok, 1 warnings, 2 a phone will refuse.
    """
    from natsync.cert.check import check
    from natsync.cert.fetch import (
        fetch_chain,
        file_store,
        load_certificates,
        split_host_port,
        system_store,
    )

    try:
        if ca_file is not None and use_system:
            raise click.UsageError("give either --ca-file or --system, not both")
        if ca_file is not None:
            trust = file_store(ca_file)
        elif use_system:
            trust = system_store()
        elif (data_dir / "ca" / "ca.pem").exists():
            trust = file_store(data_dir / "ca" / "ca.pem", f"natsync's CA ({data_dir / 'ca'})")
        else:
            trust = system_store()
        path = Path(target)
        where = split_host_port(target) if not path.is_file() else None
        if where is None:
            chain = load_certificates(path)
            source = f"the file {path}"
        else:
            host, port = where
            server_name = sni or (names[0] if names else host)
            fetched = fetch_chain(host, port, server_name=server_name)
            chain = fetched.chain
            source = f"the server at {host}:{port}"
        report = check(chain, names=names, ips=ips, trust=trust, now=_now(), source=source)
    except NatsyncError as exc:
        if as_json:
            click.echo(json.dumps({"status": "error", "exit_code": 2, "error": exc.message}))
        else:
            click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _render_report(report.to_json())
    sys.exit(report.exit_code)


_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def _render_report(doc: dict[str, Any]) -> None:
    leaf = doc["certificate"]
    click.echo(f"certificate: {leaf['subject']}  (names: {', '.join(leaf['names']) or 'none'})")
    for finding in doc["findings"]:
        click.echo(f"  {_MARKS[finding['severity']]}  {finding['message']}")
    verdict = {
        "ok": "a phone will accept this certificate",
        "warn": "a phone will accept this certificate, with the warnings above",
        "fail": "a phone will refuse this certificate",
    }[doc["status"]]
    click.echo(verdict)
