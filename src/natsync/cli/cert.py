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
from collections.abc import Callable
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
    from natsync.cert.check import TrustStore, check
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
        stores: list[Callable[[], TrustStore]]
        if ca_file is not None:
            stores = [lambda: file_store(ca_file)]
        elif use_system:
            stores = [system_store]
        elif (data_dir / "ca" / "ca.pem").exists():
            # Default: natsync's CA (phones that installed it), else the system's roots (an
            # ACME certificate); the findings name the store that was used.
            own = data_dir / "ca" / "ca.pem"
            stores = [lambda: file_store(own, f"natsync's CA ({data_dir / 'ca'})"), system_store]
        else:
            stores = [system_store]
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
        now = _now()
        for make_store in stores:
            report = check(chain, names=names, ips=ips, trust=make_store(), now=now, source=source)
            if report.by_code("chain.trusted"):
                break
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


# --- ACME ------------------------------------------------------------------------------------

RENEWAL_FILE = "renewal.json"


def _acme_settings_path(data_dir: Path) -> Path:
    return data_dir / "acme" / RENEWAL_FILE


async def _run_acme(settings: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """One order with the saved or given settings; standalone responders when asked."""
    import ssl

    from natsync.cert.acme import (
        AccountStore,
        AcmeClient,
        Dns01Solver,
        Http01Solver,
        Solver,
        TlsAlpn01Solver,
        obtain,
        sighup_pid_file,
    )
    from natsync.cert.acme_responders import (
        ChallengeStore,
        start_http01_responder,
        start_tls_alpn01_responder,
    )
    from natsync.cert.dns01 import Rfc2136Publisher

    directory = settings["directory"]
    accounts = AccountStore(data_dir / "acme" / "accounts")
    key = accounts.key(directory)
    context = (
        ssl.create_default_context(cafile=settings["ca_file"]) if settings.get("ca_file") else None
    )
    store = ChallengeStore()
    solver: Solver
    servers: list[Any] = []
    challenge = settings["challenge"]
    listen = settings.get("listen") or "0.0.0.0"  # noqa: S104 - validators come from anywhere
    try:
        if challenge == "http-01":
            solver = Http01Solver(store)
            servers.append(
                await start_http01_responder(store, listen, int(settings.get("http_port") or 80))
            )
        elif challenge == "tls-alpn-01":
            solver = TlsAlpn01Solver(store)
            servers.append(
                await start_tls_alpn01_responder(
                    store, listen, int(settings.get("tls_port") or 443)
                )
            )
        else:
            solver = Dns01Solver(Rfc2136Publisher(_dns_server(settings)))
        hook = None
        if settings.get("reload_pid_file"):
            hook = sighup_pid_file(Path(settings["reload_pid_file"]))
        async with AcmeClient(
            directory, key, ssl_context=context, account_url=accounts.account_url(directory)
        ) as client:
            contact = [f"mailto:{settings['email']}"] if settings.get("email") else []
            try:
                issued = await obtain(
                    client,
                    names=settings["names"],
                    ips=settings["ips"],
                    solver=solver,
                    out_dir=Path(settings["out"]),
                    basename=settings.get("basename") or "server",
                    key_type=settings.get("key") or "ec",
                    contact=contact,
                    on_installed=hook,
                )
            finally:
                if client.kid:
                    accounts.save(directory, client.kid, key, contact)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    return {
        "cert": str(issued.cert_path),
        "key": str(issued.key_path),
        "not_after": issued.chain[0].not_valid_after_utc.isoformat(),
        "challenges_answered": client.stats.challenges_answered,
        "authorizations_reused": client.stats.authorizations_reused,
        "bad_nonce_retries": client.stats.bad_nonce_retries,
    }


def _dns_server(settings: dict[str, Any]) -> Any:
    from natsync.ddns.update import DnsServer, load_key

    target = settings.get("dns_server") or ""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not settings.get("dns_zone"):
        raise click.UsageError("dns-01 needs --dns-server HOST:PORT and --dns-zone")
    key = load_key(Path(settings["tsig_key_file"])) if settings.get("tsig_key_file") else None
    return DnsServer(host.strip("[]"), int(port), settings["dns_zone"], key)


def _run_and_render(settings: dict[str, Any], data_dir: Path, as_json: bool) -> None:
    import asyncio

    try:
        result = asyncio.run(_run_acme(settings, data_dir))
    except NatsyncError as exc:
        if as_json:
            click.echo(json.dumps({"status": "error", "error": exc.message}))
            sys.exit(1)
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps({"status": "issued", **result}))
    else:
        click.echo(f"certificate: {result['cert']} (valid until {result['not_after']})")
        click.echo(f"key:         {result['key']}")


@cert.command()
@_data_dir_option
@click.option("--directory", "directory_url", required=True, help="ACME directory URL.")
@click.option("--name", "names", multiple=True, help="DNS name to certify (repeatable).")
@click.option("--ip", "ips", multiple=True, help="IP address to certify (RFC 8738).")
@click.option(
    "--challenge",
    type=click.Choice(["http-01", "tls-alpn-01", "dns-01"]),
    default="http-01",
    show_default=True,
)
@click.option("--email", default="", help="Contact address for the ACME account.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Roots that sign the ACME server's own TLS certificate (test servers).",
)
@click.option("--listen", default="0.0.0.0", show_default=True, help="Responder address.")  # noqa: S104
@click.option("--http-port", type=click.IntRange(0, 65535), default=80, show_default=True)
@click.option("--tls-port", type=click.IntRange(0, 65535), default=443, show_default=True)
@click.option("--dns-server", default="", help="dns-01: the zone's primary, HOST:PORT.")
@click.option("--dns-zone", default="", help="dns-01: the zone to update.")
@click.option(
    "--tsig-key-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="dns-01: TSIG key in BIND's format (the same file natsync ddns uses).",
)
@click.option("--key", "key_type", type=KEY_CHOICES, default="ecdsa-p256", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where server.pem / server.key go [default: DATA_DIR/tls].",
)
@click.option(
    "--reload-pid-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Send SIGHUP to the process in this file after installing (the edge reloads).",
)
@_json_option
def acme(
    data_dir: Path,
    directory_url: str,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    challenge: str,
    email: str,
    ca_file: str | None,
    listen: str,
    http_port: int,
    tls_port: int,
    dns_server: str,
    dns_zone: str,
    tsig_key_file: str | None,
    key_type: str,
    out: Path | None,
    reload_pid_file: str | None,
    as_json: bool,
) -> None:
    """Obtain a certificate from an ACME server (RFC 8555) and remember how, for `renew`.

    http-01 and tls-alpn-01 run their own responder on --listen and --http-port / --tls-port
    (point the router's port 80 / 443 forward there, or stop the edge for the moment).
    """
    for ip in ips:
        _parse_ip(ip)
    if not names and not ips:
        raise click.UsageError("give at least one --name or --ip")
    settings: dict[str, Any] = {
        "directory": directory_url,
        "names": list(names),
        "ips": list(ips),
        "challenge": challenge,
        "email": email,
        "ca_file": str(Path(ca_file).resolve()) if ca_file else None,
        "listen": listen,
        "http_port": http_port,
        "tls_port": tls_port,
        "dns_server": dns_server,
        "dns_zone": dns_zone,
        "tsig_key_file": str(Path(tsig_key_file).resolve()) if tsig_key_file else None,
        "key": key_type,
        "out": str((out or data_dir / "tls").resolve()),
        "basename": "server",
        "reload_pid_file": str(Path(reload_pid_file).resolve()) if reload_pid_file else None,
    }
    if challenge == "dns-01":
        _dns_server(settings)  # refuse incomplete DNS settings before talking to the server
    _run_and_render(settings, data_dir, as_json)
    path = _acme_settings_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


@cert.command()
@_data_dir_option
@click.option(
    "--now",
    "now_text",
    default=None,
    help="Judge as if it were this ISO time (UTC) [default: now].",
)
@click.option("--force", is_flag=True, help="Renew even if not due yet.")
@_json_option
def renew(data_dir: Path, now_text: str | None, force: bool, as_json: bool) -> None:
    """Renew the ACME certificate when a third of its lifetime is left (run it daily)."""
    from cryptography import x509

    from natsync.cert.acme import renew_at

    path = _acme_settings_path(data_dir)
    if not path.exists():
        raise click.ClickException(f"no {path}: obtain a certificate with natsync cert acme first")
    settings = json.loads(path.read_text())
    cert_path = Path(settings["out"]) / f"{settings.get('basename') or 'server'}.pem"
    now = _now()
    if now_text:
        try:
            now = dt.datetime.fromisoformat(now_text)
        except ValueError:
            raise click.BadParameter(
                f"{now_text!r} is not an ISO time", param_hint="--now"
            ) from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
    due_at: dt.datetime | None = None
    if cert_path.exists():
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        due_at = renew_at(leaf)
    if due_at is not None and now < due_at and not force:
        if as_json:
            click.echo(json.dumps({"status": "not-due", "renew_at": due_at.isoformat()}))
        else:
            click.echo(f"{cert_path} is not due for renewal until {due_at:%Y-%m-%d %H:%M} UTC")
        return
    _run_and_render(settings, data_dir, as_json)
