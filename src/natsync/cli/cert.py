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


def _data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--data-dir`` and ``-c/--config``: the command gets ``data_dir`` — the flag's, else
    the deployment file's ``server.data_dir``, else $NATSYNC_DATA_DIR, else ./natsync-data."""
    import functools

    from natsync.deployment import config_option

    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: Path | None, config_path: Path | None, **kw: Any) -> Any:
        if config_path is not None:
            from natsync.deployment import load_deployment

            try:
                deployment = load_deployment(config_path)
            except NatsyncError as exc:
                raise _fail(exc) from exc
            data_dir = data_dir or deployment.server.data_dir
            click.get_current_context().meta[DEPLOYMENT_KEY] = deployment
        return fn(*args, data_dir=data_dir or Path("natsync-data"), **kw)

    with_config = config_option("Deployment file: its server.data_dir (env NATSYNC_CONFIG).")
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="NATSYNC_DATA_DIR",
        help="natsync's data directory (the CA is in DATA_DIR/ca, certificates in "
        "DATA_DIR/tls) [default: -c FILE's server.data_dir, else ./natsync-data].",
    )(with_config(wrapper))


#: Where the wrapper leaves the -c FILE deployment for the command (click's context meta).
DEPLOYMENT_KEY = "natsync.cert.deployment"


def _from_table(deployment: Any, settings: dict[str, Any]) -> None:
    """`natsync cert acme -c FILE`: what the command line left at its default comes from the
    file's [cert] table (natsync.cert.settings, the parser `natsync run` uses) and its DNS-01
    from the file's [ddns] (the TXT publisher `natsync run` uses)."""
    from click.core import ParameterSource

    cert = deployment.cert
    if cert is None:
        raise click.UsageError(f"{deployment.path} has no [cert] table")
    ctx = click.get_current_context()
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    table = {
        "directory_url": ("directory", cert.directory),
        "names": ("names", list(cert.names)),
        "ips": ("ips", list(cert.ips)),
        "challenge": ("challenge", cert.challenge),
        "ports_open": ("ports_open", cert.ports_open),
        "email": ("email", cert.email or deployment.admin.email),
        "ca_file": ("ca_file", str(cert.ca_file) if cert.ca_file else None),
        "key_type": ("key", cert.key),
    }
    for option, (key, value) in table.items():
        if option not in given:
            settings[key] = value
    if not settings.get("dns_server") and deployment.ddns is not None:
        settings["config"] = str(Path(deployment.path).resolve())


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


def _ports_open(text: str) -> tuple[bool | None, bool | None]:
    """--ports-open: (port 80 reachable, port 443 reachable) from outside."""
    from natsync.cert.manager import parse_ports_open

    try:
        return parse_ports_open(text)
    except NatsyncError as exc:
        raise click.BadParameter(exc.message, param_hint="--ports-open") from None


def _manager(
    settings: dict[str, Any], data_dir: Path, clock: Callable[[], dt.datetime] = _now
) -> Any:
    from natsync.cert.acme import sighup_pid_file
    from natsync.cert.manager import CertificateManager, ManagerSettings

    http_open, tls_open = _ports_open(settings.get("ports_open") or "unknown")
    config = ManagerSettings(
        names=tuple(settings["names"]),
        ips=tuple(settings["ips"]),
        data_dir=data_dir,
        directory=settings["directory"],
        challenge=settings["challenge"],
        email=settings.get("email") or "",
        cert_dir=Path(settings["out"]),
        basename=settings.get("basename") or "server",
        key_type=settings.get("key") or "ec",
        ca_file=Path(settings["ca_file"]) if settings.get("ca_file") else None,
        http_reachable=http_open,
        tls_reachable=tls_open,
    )
    dns: Any = None
    if settings.get("dns_server"):
        from natsync.ddns.providers.rfc2136 import Rfc2136Updater

        dns = Rfc2136Updater(_dns_server(settings))
    elif settings.get("config") and settings["challenge"] in ("auto", "dns-01"):
        from natsync.cert.settings import dns_provider
        from natsync.ddns.providers import txt_publisher
        from natsync.deployment import load_deployment

        deployment = load_deployment(settings["config"])
        if deployment.cert is not None:
            provider, _why = dns_provider(deployment.cert, deployment.ddns)
            if provider is not None:
                dns = txt_publisher(deployment.ddns, provider)
    hooks = []
    if settings.get("reload_pid_file"):
        hooks.append(sighup_pid_file(Path(settings["reload_pid_file"])))
    return CertificateManager(config, dns=dns, on_installed=hooks, clock=clock)


async def _run_acme(settings: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """One order with the saved or given settings; standalone responders unless an edge answers
    from the challenge directory."""
    from natsync.cert.acme_responders import start_http01_responder, start_tls_alpn01_responder

    manager = _manager(settings, data_dir)
    kinds = {c.challenge for c in manager.candidates}
    servers: list[Any] = []
    listen = settings.get("listen") or "0.0.0.0"  # noqa: S104 - validators come from anywhere
    try:
        if settings.get("responder", "standalone") == "standalone":
            if "http-01" in kinds:
                port = int(settings.get("http_port") or 80)
                servers.append(await start_http01_responder(manager.challenges, listen, port))
            if "tls-alpn-01" in kinds:
                port = int(settings.get("tls_port") or 443)
                servers.append(await start_tls_alpn01_responder(manager.challenges, listen, port))
        issued = await manager.renew_now()
    except OSError as exc:
        raise NatsyncError(
            f"cannot listen for the challenge on {listen}: {exc.strerror}; is the edge on that "
            "port? then use --responder edge"
        ) from exc
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    stats = manager.last_stats
    return {
        "cert": str(issued.cert_path),
        "key": str(issued.key_path),
        "not_after": issued.chain[0].not_valid_after_utc.isoformat(),
        "challenge": manager.challenge,
        "challenge_reason": manager.challenge_reason,
        "directory": manager.directory_url,
        "challenges_answered": stats.challenges_answered if stats else 0,
        "authorizations_reused": stats.authorizations_reused if stats else 0,
        "bad_nonce_retries": stats.bad_nonce_retries if stats else 0,
    }


def _dns_server(settings: dict[str, Any]) -> Any:
    from natsync.config import port_of
    from natsync.ddns.update import DnsServer, load_key

    target = settings.get("dns_server") or ""
    host, _, port = target.rpartition(":")
    if not host or port_of(port) is None or not settings.get("dns_zone"):
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
        click.echo(f"challenge:   {result['challenge']} ({result['challenge_reason']})")


@cert.command()
@_data_dir_option
@click.option(
    "--directory",
    "directory_url",
    default="production",
    show_default=True,
    help="ACME directory: production or staging (Let's Encrypt), or an https:// URL.",
)
@click.option("--name", "names", multiple=True, help="DNS name to certify (repeatable).")
@click.option("--ip", "ips", multiple=True, help="IP address to certify (RFC 8738).")
@click.option(
    "--challenge",
    type=click.Choice(["auto", "http-01", "tls-alpn-01", "dns-01"]),
    default="auto",
    show_default=True,
    help="auto: ports known open first, then dns-01 (when --dns-server is given), then the "
    "rest; the first that works is used and said.",
)
@click.option(
    "--ports-open",
    default="unknown",
    show_default=True,
    help="Which of ports 80 and 443 the router forwards to this host (80,443 / 443 / 80 / "
    "none / unknown): what auto goes by.",
)
@click.option(
    "--responder",
    type=click.Choice(["standalone", "edge"]),
    default="standalone",
    show_default=True,
    help="Who answers http-01/tls-alpn-01: listeners of this command, or a running edge "
    "whose edge.challenge_dir is DATA_DIR/acme/challenges.",
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
    ports_open: str,
    responder: str,
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

    With --responder standalone, http-01 and tls-alpn-01 are answered by listeners of this
    command on --listen and --http-port / --tls-port; with --responder edge, by the running
    edge (edge.challenge_dir = DATA_DIR/acme/challenges, edge.http_listen for port 80).
    """
    settings: dict[str, Any] = {
        "directory": directory_url,
        "names": list(names),
        "ips": list(ips),
        "challenge": challenge,
        "ports_open": ports_open,
        "responder": responder,
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
    deployment = click.get_current_context().meta.get(DEPLOYMENT_KEY)
    if deployment is not None:
        _from_table(deployment, settings)
    _ports_open(settings["ports_open"])
    for ip in settings["ips"]:
        _parse_ip(ip)
    if not settings["names"] and not settings["ips"]:
        raise click.UsageError("give at least one --name or --ip (or -c FILE with [cert] name)")
    if (settings["challenge"] == "dns-01" and not settings.get("config")) or dns_server:
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
    """Renew the ACME certificate when due: in the window the CA suggests (ACME Renewal
    Information, RFC 9773) where it offers one, else two thirds into its lifetime. For a
    cron job; `natsync run` renews by itself."""
    import asyncio

    settings = _saved_settings(data_dir)
    now = _parse_now(now_text)

    async def judge() -> tuple[bool, dt.datetime | None, str]:
        from natsync.cert.manager import Renew

        manager = _manager(settings, data_dir, clock=lambda: now)
        if manager.schedule.not_after is not None:
            await manager.check_ari()
        due = isinstance(manager.schedule.next_action(now), Renew)
        return due, manager.schedule.renew_at(), manager.schedule.source

    try:
        due, due_at, source = asyncio.run(judge())
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if not due and not force and due_at is not None:
        if as_json:
            doc = {"status": "not-due", "renew_at": due_at.isoformat(), "source": source}
            click.echo(json.dumps(doc))
        else:
            why = "the CA's renewal window" if source == "ari" else "two thirds of its lifetime"
            click.echo(f"not due for renewal until {due_at:%Y-%m-%d %H:%M} UTC ({why})")
        return
    _run_and_render(settings, data_dir, as_json)


@cert.command()
@_data_dir_option
@click.option("--name", "names", multiple=True, required=True, help="The public name.")
def placeholder(data_dir: Path, names: tuple[str, ...]) -> None:
    """Write a self-signed stand-in DATA_DIR/tls/server.pem (unless a certificate is there), so
    the edge can start and answer the first ACME challenge; phones refuse it."""
    from natsync.cert.manager import ensure_placeholder

    cert, key = data_dir / "tls" / "server.pem", data_dir / "tls" / "server.key"
    if ensure_placeholder(cert, key, names, _now()):
        click.echo(f"wrote the placeholder {cert}; now start the edge, then natsync cert acme")
    else:
        click.echo(f"{cert} exists; left as it is")


def _saved_settings(data_dir: Path) -> dict[str, Any]:
    path = _acme_settings_path(data_dir)
    if not path.exists():
        raise click.ClickException(f"no {path}: obtain a certificate with natsync cert acme first")
    settings: dict[str, Any] = json.loads(path.read_text())
    return settings


def _parse_now(now_text: str | None) -> dt.datetime:
    if not now_text:
        return _now()
    try:
        now = dt.datetime.fromisoformat(now_text)
    except ValueError:
        raise click.BadParameter(f"{now_text!r} is not an ISO time", param_hint="--now") from None
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


@cert.command()
@_data_dir_option
@_json_option
def status(data_dir: Path, as_json: bool) -> None:
    """Show the ACME certificate's state: expiry, when it renews and why, the last error.

    Exits 0 when healthy, 1 when expiry is close without a successful renewal (or expired).
    What a running certificate manager (`natsync run`) last wrote wins over what is computed
    here from the files.
    """
    from natsync.cert.manager import read_status

    doc = read_status(data_dir)
    if doc is None:
        settings = _saved_settings(data_dir)
        doc = _manager(settings, data_dir).status().as_dict()
        doc["source"] = "files"
    else:
        doc["source"] = "manager"
    if as_json:
        click.echo(json.dumps(doc))
    else:
        click.echo(f"{', '.join(doc['names'])}: {doc['state']} — {doc['message']}")
        click.echo(f"  expires:    {doc['not_after'] or '-'}")
        click.echo(f"  renews at:  {doc['renew_at'] or 'now'} ({doc['renew_source']})")
        click.echo(f"  directory:  {doc['directory']}")
        if doc["challenge"]:
            click.echo(f"  challenge:  {doc['challenge']} ({doc['challenge_reason']})")
        if doc["last_error"]:
            click.echo(f"  last error: {doc['last_error']} ({doc['failures']} failure(s))")
    if not doc["healthy"]:
        sys.exit(1)
