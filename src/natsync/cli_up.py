"""`natsync up`: the whole deployment on embedded defaults, on loopback, in one process.

It keeps everything in one data directory (default ``./natsync-data``, or ``NATSYNC_DATA_DIR``):
the SQLite store, a private CA and a server certificate for localhost / 127.0.0.1 / ::1, and
the demo user's password (random once, then the same on every run). Then it serves ActiveSync
over TLS, SMTP in for the demo domain, and the relay worker, and tells you how to connect —
or, with ``--json``, prints exactly one JSON line once everything is ready, for scripts.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from natsync.errors import NatsyncError

DEMO_USER = "demo"
DEMO_DOMAIN = "natsync.test"
DEMO_EMAIL = f"{DEMO_USER}@{DEMO_DOMAIN}"
DEMO_DISPLAY_NAME = "natsync demo"
PASSWORD_FILE = "demo-password"  # noqa: S105 - a file name, not a password
#: Default ports: 8443 is the unprivileged HTTPS habit, 2525 the unprivileged SMTP habit.
DEFAULT_HTTPS_PORT = 8443
DEFAULT_SMTP_PORT = 2525
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
    return Prepared(data_dir, database, ca.cert_path, cert, key, password)


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
) -> None:
    """Start server, SMTP and relay; call ``announce(info)`` once all serve; run until a signal."""
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
    ).check()
    store = open_store(prepared.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay: Relay | None = None
    server = None
    smtp = None
    try:
        if smarthost:
            relay_host, _, relay_port = smarthost.rpartition(":")
            relay = Relay(store, SmartHost(relay_host, int(relay_port)), hostname="localhost")
            relay.start()
        server = await start_server(config, store, relay=relay)
        smtp = await start_smtp_server(store, host, smtp_port, config.domains, hostname="localhost")
        url_host = _url_host(host)
        announce(
            {
                "url": f"https://{url_host}:{server.port}",
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


def _human_announcement(info: dict[str, Any]) -> str:
    smtp_host, _, smtp_port = info["smtp"].rpartition(":")
    return f"""natsync is up (data in {info["data_dir"]}).

  ActiveSync URL : {info["url"]}/Microsoft-Server-ActiveSync
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
    "--smarthost", default="", help="host:port to relay outbound mail through (default: queue)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON line once ready (for scripts)."
)
def up(
    data_dir: Path,
    host: str,
    https_port: int | None,
    smtp_port: int | None,
    smarthost: str,
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

    def announce(info: dict[str, Any]) -> None:
        if as_json:
            keys = ("url", "smtp", "user", "password", "ca_file", "email", "data_dir", "pid")
            click.echo(json.dumps({k: info[k] for k in keys}, separators=(",", ":")))
        else:
            click.echo(_human_announcement(info))
        sys.stdout.flush()

    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=_loop_factory()) as runner,
        ):
            runner.run(serve(prepared, host, https, smtp, smarthost, announce))
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror or exc}") from exc
