"""`natsync up`: the whole deployment on embedded defaults, on loopback, in one process.

It keeps everything in one data directory (default ``./natsync-data``, or ``NATSYNC_DATA_DIR``):
the SQLite store, a private CA and a server certificate for localhost / 127.0.0.1 / ::1, and
the demo user's password (random once, then the same on every run). Then it serves ActiveSync
over TLS, the edge in front of it (natsync.edge: its own certificate from the same CA, the
server verified against that CA, X-Forwarded-For trusted by the server from the edge only),
SMTP in for the demo domain, and the relay worker, and tells you how to connect — or, with
``--json``, prints exactly one JSON line once everything is ready, for scripts. ``url`` is the
edge (what phones use); ``server_url`` the server itself. ``--no-edge`` serves without it.

SMTP stays direct (not through an edge forward with PROXY v2): the SMTP server demands a
PROXY header on every connection once it trusts one, and scripts and tests send to it plainly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from natsync.config import DEFAULT_HEARTBEAT_MAX, DEFAULT_HEARTBEAT_MIN
from natsync.edge.config import split_hostport
from natsync.errors import ConfigError, NatsyncError

if TYPE_CHECKING:
    from natsync.edge import EdgeConfig, RunningEdge

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


def choose_port(host: str, wanted: int | None, default: int) -> int:
    """The flag's port if given (it must be free: the user asked for it), else the default
    when free, else 0 (the kernel picks)."""
    if wanted is not None:
        return wanted
    return default if port_free(host, default) else 0


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


def edge_config(
    prepared: Prepared, host: str, port: int, server_port: int, server: Any
) -> EdgeConfig:
    """The edge `natsync up` runs: TLS with the CA's edge certificate, the server verified
    against the same CA under the name its certificate carries, no TCP forwards."""
    from natsync.edge.config import EdgeConfig, SiteCert

    return EdgeConfig(
        listen=_hostport(host, port),
        certificates=(SiteCert(CERT_NAMES, prepared.edge_cert, prepared.edge_key),),
        backend=_hostport(backend_host(host), server_port),
        backend_name=CERT_NAMES[0],
        backend_ca=prepared.ca_file,
        heartbeat_max=server.heartbeat_cap,
        max_body=server.max_request_body,
        forwards=(),
        admin_listen=EDGE_ADMIN_LISTEN,
    ).check()


async def _start_edge(config: EdgeConfig, fallback: bool) -> RunningEdge:
    """Start the edge; on a default port someone took meanwhile, on a free one instead."""
    from natsync.edge import start_edge

    try:
        return await start_edge(config)
    except ConfigError:
        if not fallback:
            raise
        host = split_hostport(config.listen, "edge.listen")[0]
        return await start_edge(replace(config, listen=_hostport(host, 0)))


def _url_host(host: str) -> str:
    if host in ("127.0.0.1", "0.0.0.0", "::", "::1", "localhost"):  # noqa: S104 - formatting
        return "localhost"  # the name the certificate carries
    return f"[{host}]" if ":" in host else host


async def serve(
    prepared: Prepared,
    host: str,
    https_port: int,
    smtp_port: int,
    smarthost: str,
    announce: Any,
    edge_port: int | None = None,
    edge_port_fallback: bool = True,
    heartbeat_min: int | None = None,
) -> None:
    """Start server, edge (unless *edge_port* is None), SMTP and relay; call
    ``announce(info)`` once all serve; run until a signal. *heartbeat_min* lowers the
    shortest Ping heartbeat accepted (None: the server's default)."""
    from natsync.config import ServerConfig
    from natsync.mail.relay import Relay, SmartHost
    from natsync.mail.smtp_in import start_smtp_server
    from natsync.server import start_server
    from natsync.store import open_store

    config = ServerConfig(
        host=host,
        port=https_port,
        tls_cert=prepared.tls_cert,
        tls_key=prepared.tls_key,
        data_dir=prepared.data_dir,
        domains=(DEMO_DOMAIN,),
        smarthost=smarthost,
        trusted_proxies=(source_address(backend_host(host)),) if edge_port is not None else (),
        heartbeat_min=DEFAULT_HEARTBEAT_MIN if heartbeat_min is None else heartbeat_min,
    ).check()
    store = open_store(prepared.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay: Relay | None = None
    server = None
    edge: RunningEdge | None = None
    smtp = None
    try:
        if smarthost:
            relay_host, _, relay_port = smarthost.rpartition(":")
            relay = Relay(store, SmartHost(relay_host, int(relay_port)), hostname="localhost")
            relay.start()
        server = await start_server(config, store, relay=relay)
        smtp = await start_smtp_server(
            store, host, smtp_port, config.domains, hostname="localhost", relay=relay
        )
        url_host = _url_host(host)
        server_url = f"https://{url_host}:{server.port}"
        if edge_port is not None:
            edge = await _start_edge(
                edge_config(prepared, host, edge_port, server.port, config), edge_port_fallback
            )
        announce(
            {
                "url": f"https://{url_host}:{edge.port}" if edge is not None else server_url,
                "server_url": server_url,
                "edge_admin": f"http://{EDGE_ADMIN_LISTEN.rpartition(':')[0]}:{edge.admin_port}"
                if edge is not None
                else "",
                "smtp": f"{host}:{smtp.port}",
                "user": DEMO_USER,
                "email": DEMO_EMAIL,
                "password": prepared.password,
                "ca_file": str(prepared.ca_file),
                "data_dir": str(prepared.data_dir),
                "pid": os.getpid(),
            }
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if edge is not None:
            await edge.close()
        if smtp is not None:
            await smtp.close()
        if server is not None:
            await server.close()
        if relay is not None:
            await relay.aclose()
        await store.aclose()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``uvloop`` extra; ``make run`` installs
    it): its TLS transport holds far less memory per connection than asyncio's (about 73 KB
    against 570 KB per held long-poll, measured on this kind of machine), which is what a
    server holding many Pings needs. NATSYNC_NO_UVLOOP=1 keeps the standard loop."""
    if os.environ.get("NATSYNC_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


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
) -> None:
    """Run natsync on its embedded defaults (SQLite, private CA, loopback ports, demo user)."""
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd logs every SMTP command at INFO: at ingest rates that is most of the work.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        prepared = prepare(data_dir.resolve(), host)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    https = choose_port(host, https_port, DEFAULT_HTTPS_PORT)
    smtp = choose_port(host, smtp_port, DEFAULT_SMTP_PORT)
    edge = None if no_edge else choose_port(host, edge_port, DEFAULT_EDGE_PORT)

    def announce(info: dict[str, Any]) -> None:
        if as_json:
            keys = (
                "url", "server_url", "edge_admin", "smtp", "user", "password", "ca_file",
                "email", "data_dir", "pid",
            )  # fmt: skip
            click.echo(json.dumps({k: info[k] for k in keys}, separators=(",", ":")))
        else:
            click.echo(_human_announcement(info))
        sys.stdout.flush()

    from natsync.server.gcpolicy import tune_for_server

    tune_for_server()  # fewer, cheaper collections (natsync.server.gcpolicy)
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=_loop_factory()) as runner,
        ):
            runner.run(
                serve(
                    prepared,
                    host,
                    https,
                    smtp,
                    smarthost,
                    announce,
                    edge_port=edge,
                    edge_port_fallback=edge_port is None,
                    heartbeat_min=heartbeat_min,
                )
            )
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror or exc}") from exc
