"""`natsync up`: the whole deployment on embedded defaults, on loopback: `natsync run` on a
file it writes (``DATA_DIR/up.toml``), so both take one code path (natsync.run.supervisor).

It keeps everything in one data directory (default ``./natsync-data``, or ``NATSYNC_DATA_DIR``):
the SQLite store, a private CA and a server certificate for localhost / 127.0.0.1 / ::1, and
the demo user's password (random once, then the same on every run). Then it serves ActiveSync
over TLS, the edge in front of it (natsync.edge: its own certificate from the same CA, the
server verified against that CA, X-Forwarded-For trusted by the server from the edge only),
SMTP in for the demo domain, and the relay worker, and tells you how to connect — or, with
``--json``, prints exactly one JSON line once everything is ready, for scripts. ``url`` is the
edge (what phones use); ``server_url`` the server itself. ``--no-edge`` serves without it.

Ports: a flag's port is used as given (0: any free one). Otherwise the port of the last run
(``DATA_DIR/ports.json``), else the default, else a free one — and it says which default was
busy and which port it took, so a phone set up once keeps working.

SMTP stays direct (not through an edge forward with PROXY v2): the SMTP server demands a
PROXY header on every connection once it trusts one, and scripts and tests send to it plainly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from natsync.config import DEFAULT_HEARTBEAT_MAX, DEFAULT_HEARTBEAT_MIN
from natsync.errors import NatsyncError
from natsync.logs import log_options

DEMO_USER = "demo"
DEMO_DOMAIN = "natsync.test"
DEMO_EMAIL = f"{DEMO_USER}@{DEMO_DOMAIN}"
DEMO_DISPLAY_NAME = "natsync demo"
PASSWORD_FILE = "demo-password"  # noqa: S105 - a file name, not a password
#: Default ports: 8443 is the unprivileged HTTPS habit, 2525 the unprivileged SMTP habit.
DEFAULT_HTTPS_PORT = 8443
DEFAULT_SMTP_PORT = 2525
#: The edge's port: 443 needs root, so the unprivileged habit next to the server's 8443.
DEFAULT_EDGE_PORT = 9443
#: The edge's admin listener (/healthz, /metrics): loopback only, any free port.
EDGE_ADMIN_LISTEN = "127.0.0.1:0"
#: Names the loopback certificate is valid for: what a client on this machine may type.
CERT_NAMES = ("localhost",)
CERT_IPS = ("127.0.0.1", "::1")
#: Bytes of randomness in the demo password (24 → 32 URL-safe characters).
PASSWORD_BYTES = 24


@dataclass(frozen=True, slots=True)
class Prepared:
    """Files `natsync up` made (or found) in the data directory."""

    data_dir: Path
    database: Path
    ca_file: Path
    tls_cert: Path
    tls_key: Path
    password: str
    edge_cert: Path
    edge_key: Path


def _demo_password(data_dir: Path) -> tuple[str, bool]:
    """The demo password kept in the data directory; (password, newly made)."""
    path = data_dir / PASSWORD_FILE
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text, False
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password, True


def _cert_ips(host: str) -> tuple[str, ...]:
    """Loopback addresses, plus *host* when it is a specific address (the URL then names it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return CERT_IPS
    if address.is_unspecified or host in CERT_IPS:
        return CERT_IPS
    return (*CERT_IPS, host)


def _cert_covers(cert_path: Path, ips: tuple[str, ...]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    return {str(ipaddress.ip_address(i)) for i in ips} <= have


def prepare(data_dir: Path, host: str = "127.0.0.1") -> Prepared:
    """Create the data directory's CA, certificate, password file and store (idempotent)."""
    from natsync.auth.passwords import hash_password
    from natsync.cert.ca import load_or_init_ca
    from natsync.store import open_store, store_path

    data_dir.mkdir(parents=True, exist_ok=True)
    ca = load_or_init_ca(data_dir / "ca")
    tls_dir = data_dir / "tls"
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    ips = _cert_ips(host)
    if not cert.exists() or not key.exists() or not _cert_covers(cert, ips):
        cert, key = ca.issue_server_cert(CERT_NAMES, ips, tls_dir)
    # The edge's own certificate (what phones see), from the same CA: one file to trust.
    edge_cert, edge_key = tls_dir / "edge.pem", tls_dir / "edge.key"
    if not edge_cert.exists() or not edge_key.exists() or not _cert_covers(edge_cert, ips):
        edge_cert, edge_key = ca.issue_server_cert(CERT_NAMES, ips, tls_dir, basename="edge")
    password, new_password = _demo_password(data_dir)
    database = store_path(data_dir)
    store = open_store(database)
    try:
        user = store.run_sync(lambda txn: txn.get_user(DEMO_USER))
        if user is None:
            hashed = hash_password(password)
            store.run_sync(
                lambda txn: txn.add_user(
                    DEMO_USER, DEMO_EMAIL, DEMO_DISPLAY_NAME, hashed, datetime.now(UTC)
                )
            )
        elif new_password:
            hashed = hash_password(password)
            store.run_sync(lambda txn: txn.set_password_hash(user.id, hashed))
    finally:
        store.close()
    return Prepared(data_dir, database, ca.cert_path, cert, key, password, edge_cert, edge_key)


def port_free(host: str, port: int) -> bool:
    """Whether *port* on *host* can be bound now (a default taken by someone else is not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def backend_host(host: str) -> str:
    """Where the edge reaches the server listening on *host*: loopback for a wildcard."""
    if host == "0.0.0.0":  # noqa: S104 - comparing, not binding
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def source_address(host: str) -> str:
    """The address this machine's connections to *host* come from (the kernel's choice, read
    from a connected UDP socket: no packet is sent). The server trusts X-Forwarded-For from
    exactly this address: the edge's side of its connections to the server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return str(sock.getsockname()[0])


#: Ports `natsync up` took last time, so a phone set up once finds them again.
PORTS_FILE = "ports.json"
#: The deployment file `natsync up` writes for `natsync run` (one code path; readable).
UP_CONFIG = "up.toml"
#: What `natsync up --json` prints, kept while it runs (for the emulator snippet, scripts).
INFO_FILE = "up.json"


def free_port(host: str) -> int:
    """A port the kernel gives free now on *host* (the parts bind it moments later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def remembered_ports(data_dir: Path) -> dict[str, int]:
    try:
        data = json.loads((data_dir / PORTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int) and 0 < v < 65536}


def pick_ports(
    data_dir: Path, host: str, wanted: dict[str, int | None], defaults: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Each listener's port: the flag's (0: any free one), else the one used last time, else
    the default, else a free one; with a sentence for each default that was busy. The choice
    is remembered in the data directory."""
    last = remembered_ports(data_dir)
    chosen: dict[str, int] = {}
    said: list[str] = []
    for key, default in defaults.items():
        flag = wanted.get(key)
        if flag is not None:
            chosen[key] = flag if flag else free_port(host)
            continue
        previous = last.get(key)
        if previous is not None and previous not in chosen.values() and port_free(host, previous):
            chosen[key] = previous
            continue
        if default not in chosen.values() and port_free(host, default):
            chosen[key] = default
            continue
        port = free_port(host)
        busy = previous or default
        said.append(f"natsync up: {key} port {busy} is busy; took {port} instead")
        chosen[key] = port
    with contextlib.suppress(OSError):
        (data_dir / PORTS_FILE).write_text(json.dumps({**last, **chosen}) + "\n", "utf-8")
    return chosen, said


def _q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for these characters


def up_config(
    prepared: Prepared,
    host: str,
    ports: dict[str, int],
    smarthost: str,
    edge: bool,
    heartbeat_min: int | None,
) -> str:
    """The deployment file of `natsync up`: loopback, the data directory's CA, the demo
    domain; `natsync run` runs it like any other."""
    smtp = _hostport(host, ports["smtp"])
    trusted = f"[{_q(source_address(backend_host(host)))}]" if edge else "[]"
    text = f"""# Written by `natsync up` on every start (copy it for `natsync run -c`).
[server]
host = {_q(host)}
port = {ports["https"]}
tls_cert = {_q(str(prepared.tls_cert))}
tls_key = {_q(str(prepared.tls_key))}
data_dir = {_q(str(prepared.data_dir))}
domains = [{_q(DEMO_DOMAIN)}]
smtp_listen = {_q(smtp)}
smarthost = {_q(smarthost)}
hostname = "localhost"
trusted_proxies = {trusted}
heartbeat_min = {DEFAULT_HEARTBEAT_MIN if heartbeat_min is None else heartbeat_min}

[admin]
listen = ""

[run]
self_check = false
"""
    if edge:
        text += f"""
[edge]
listen = {_q(_hostport(host, ports["edge"]))}
backend_name = {_q(CERT_NAMES[0])}
backend_ca = {_q(str(prepared.ca_file))}
admin_listen = {_q(EDGE_ADMIN_LISTEN)}
forwards = []

[[edge.certificates]]
names = {json.dumps(list(CERT_NAMES))}
cert = {_q(str(prepared.edge_cert))}
key = {_q(str(prepared.edge_key))}
"""
    return text


def _url_host(host: str) -> str:
    if host in ("127.0.0.1", "0.0.0.0", "::", "::1", "localhost"):  # noqa: S104 - formatting
        return "localhost"  # the name the certificate carries
    return f"[{host}]" if ":" in host else host


def up_info(prepared: Prepared, host: str, started: dict[str, Any]) -> dict[str, Any]:
    """What `natsync up` announces, from what the supervisor's parts said when ready."""
    url_host = _url_host(host)
    server = started["server"][0]
    server_url = f"https://{url_host}:{server['port']}"
    edges = started.get("edge") or []
    admin_host = EDGE_ADMIN_LISTEN.rpartition(":")[0]
    return {
        "url": f"https://{url_host}:{edges[0]['port']}" if edges else server_url,
        "server_url": server_url,
        "edge_admin": f"http://{admin_host}:{edges[0]['admin_port']}" if edges else "",
        "smtp": server["smtp"],
        "user": DEMO_USER,
        "email": DEMO_EMAIL,
        "password": prepared.password,
        "ca_file": str(prepared.ca_file),
        "data_dir": str(prepared.data_dir),
        "pid": started["pid"],
    }


def _behind(info: dict[str, Any]) -> str:
    if info["url"] == info["server_url"]:
        return ""
    return f"""
                   (the edge; the server itself: {info["server_url"]},
                    edge health and metrics: {info["edge_admin"]}/healthz, /metrics)"""


def _human_announcement(info: dict[str, Any]) -> str:
    smtp_host, _, smtp_port = info["smtp"].rpartition(":")
    return f"""natsync is up (data in {info["data_dir"]}).

  ActiveSync URL : {info["url"]}/Microsoft-Server-ActiveSync{_behind(info)}
  user / password: {info["user"]} / {info["password"]}   (email {info["email"]})
  CA certificate : {info["ca_file"]}   (trust it on the device, or pass it to clients)
  SMTP in        : {info["smtp"]}   (accepts mail for @{DEMO_DOMAIN})

Send a test mail:
  swaks --server {smtp_host} --port {smtp_port} --to {info["email"]} --from you@example.test
  python3 -c "import smtplib; smtplib.SMTP('{smtp_host}', {smtp_port}).sendmail(\\
'you@example.test', ['{info["email"]}'], 'Subject: hello\\r\\n\\r\\nfrom natsync up\\r\\n')"

Check the TLS side:
  curl --cacert {info["ca_file"]} -X OPTIONS -u {info["user"]}:{info["password"]} \\
       {info["url"]}/Microsoft-Server-ActiveSync -i

Stop with Ctrl-C."""


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("natsync-data"),
    envvar="NATSYNC_DATA_DIR",
    show_default=True,
    help="Where the store, CA, certificate and demo password live.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--https-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"ActiveSync HTTPS port [default: {DEFAULT_HTTPS_PORT}, or a free one if taken].",
)
@click.option(
    "--smtp-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"SMTP port [default: {DEFAULT_SMTP_PORT}, or a free one if taken].",
)
@click.option(
    "--edge-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"Edge HTTPS port, what phones use [default: {DEFAULT_EDGE_PORT}, or a free one].",
)
@click.option("--no-edge", is_flag=True, help="Serve without the edge (phones use the server).")
@click.option(
    "--smarthost", default="", help="host:port to relay outbound mail through (default: queue)."
)
@click.option(
    "--heartbeat-min",
    type=click.IntRange(1, DEFAULT_HEARTBEAT_MAX),  # above the maximum no heartbeat fits
    default=None,
    help=f"Shortest Ping heartbeat accepted, in seconds [default: {DEFAULT_HEARTBEAT_MIN}, what "
    "Exchange accepts]; lower it to test Direct Push quickly (natsync doctor --heartbeat 3).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON line once ready (for scripts)."
)
@log_options
def up(
    data_dir: Path,
    host: str,
    https_port: int | None,
    smtp_port: int | None,
    edge_port: int | None,
    no_edge: bool,
    smarthost: str,
    heartbeat_min: int | None,
    as_json: bool,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Run natsync on its embedded defaults (SQLite, private CA, loopback ports, demo user).

    The same supervisor as `natsync run`, on a file written into the data directory."""
    from natsync.cli.run import run_deployment
    from natsync.deployment import deployment_from_dict

    try:
        prepared = prepare(data_dir.resolve(), host)
        defaults = {"https": DEFAULT_HTTPS_PORT, "smtp": DEFAULT_SMTP_PORT}
        wanted: dict[str, int | None] = {"https": https_port, "smtp": smtp_port}
        if not no_edge:
            defaults["edge"] = DEFAULT_EDGE_PORT
            wanted["edge"] = edge_port
        ports, said = pick_ports(prepared.data_dir, host, wanted, defaults)
        for sentence in said:
            click.echo(sentence, err=True)
        path = prepared.data_dir / UP_CONFIG
        text = up_config(prepared, host, ports, smarthost, not no_edge, heartbeat_min)
        path.write_text(text, encoding="utf-8")
        import tomllib

        deployment = deployment_from_dict(tomllib.loads(text), path)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot prepare {data_dir}: {exc}") from exc
    from natsync.run.checks import run_checks

    problems = [p for p in run_checks(deployment) if p.fatal]
    if problems:
        raise click.ClickException(problems[0].line())

    info_file = prepared.data_dir / INFO_FILE

    def announce(started: dict[str, Any]) -> None:
        info = up_info(prepared, host, started)
        keys = (
            "url", "server_url", "edge_admin", "smtp", "user", "password", "ca_file",
            "email", "data_dir", "pid",
        )  # fmt: skip
        line = json.dumps({k: info[k] for k in keys}, separators=(",", ":"))
        # The same line for scripts and the emulator of another shell (holds the password).
        fd = os.open(info_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
        click.echo(line if as_json else _human_announcement(info))
        sys.stdout.flush()

    try:
        run_deployment(
            path, deployment, log_format=log_format, log_level=log_level, announce=announce
        )
    finally:
        info_file.unlink(missing_ok=True)
