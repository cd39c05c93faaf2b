"""`natsync check` (like ``nginx -t``): every problem of a deployment file, each with its fix.

:func:`run_checks` looks at what loading cannot: files present and readable, each key matching
its certificate, certificate names covering the public name, ports bindable now, the data
directory writable, the store reachable and migrated, the edge able to verify the server.
`natsync run` runs the same checks before it starts anything.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natsync.deployment import Deployment
from natsync.errors import ConfigError, NatsyncError

#: Seconds to wait for a PostgreSQL store to answer (check must not hang on a dead host).
STORE_CONNECT_TIMEOUT = 5
#: Below this port binding needs root or CAP_NET_BIND_SERVICE (Linux's default
#: net.ipv4.ip_unprivileged_port_start).
PRIVILEGED_BELOW = 1024


@dataclass(frozen=True, slots=True)
class Problem:
    #: What it is about: "server.tls_cert", "port 8443 (server.port)", "store".
    where: str
    what: str
    fix: str
    #: False for a notice that does not stop `natsync run`.
    fatal: bool = True

    def line(self) -> str:
        return f"{self.where}: {self.what}; fix: {self.fix}"


def _readable(path: Path, key: str, problems: list[Problem]) -> bool:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        problems.append(
            Problem(key, f"{path} does not exist", f"create it or correct {key} in the file")
        )
        return False
    except PermissionError:
        problems.append(
            Problem(
                key,
                f"{path} is not readable by this user (uid {os.getuid()})",
                "chmod/chown it so the user running natsync can read it (or run as that user)",
            )
        )
        return False
    except IsADirectoryError:
        problems.append(Problem(key, f"{path} is a directory", f"point {key} at the file"))
        return False
    return True


def _pair(cert: Path, key: Path, where: str, problems: list[Problem]) -> list[str] | None:
    """The names of *cert* if it and *key* load and match, else None (problem added)."""
    ok_cert = _readable(cert, f"{where} cert", problems)
    ok_key = _readable(key, f"{where} key", problems)
    if not (ok_cert and ok_key):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        if "mismatch" in str(exc).lower():
            problems.append(
                Problem(
                    where,
                    f"the key {key} does not belong to the certificate {cert}",
                    "give the key the certificate was issued for (or issue a new pair)",
                )
            )
        else:
            problems.append(
                Problem(
                    where,
                    f"{cert} / {key} are not a PEM certificate and key ({exc.reason})",
                    "point them at the PEM files (certificate with its chain, and the key)",
                )
            )
        return None
    return _names(cert)


def _names(cert: Path) -> list[str]:
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *map(str, san.get_values_for_type(x509.IPAddress)),
    ]


def covers(names: list[str], wanted: str) -> bool:
    """Whether a certificate for *names* is valid for *wanted* (one-label wildcards)."""
    wanted = wanted.lower().rstrip(".")
    for given in names:
        name = given.lower()
        if name == wanted:
            return True
        if name.startswith("*.") and wanted.partition(".")[2] == name[2:]:
            return True
    return False


def _bindable(hostport: str, setting: str, problems: list[Problem], reuse: bool = False) -> None:
    host, _, port_text = hostport.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    if port == 0:
        return
    if host == "*":  # the edge's every address of both families: "::" takes IPv4 too on Linux
        host = "::"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            where = f"port {port} ({setting} = {hostport!r})"
            if exc.errno == errno.EADDRINUSE:
                problems.append(
                    Problem(
                        where,
                        "another program listens there already",
                        f"stop it (see `ss -ltnp 'sport = :{port}'`) or choose another port",
                    )
                )
            elif exc.errno == errno.EACCES:
                problems.append(
                    Problem(
                        where,
                        f"ports below {PRIVILEGED_BELOW} need root or CAP_NET_BIND_SERVICE",
                        "run natsync as its systemd service (it grants the capability), or "
                        "listen on a port >= 1024 and let the router map the public port to it",
                    )
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                problems.append(
                    Problem(
                        where,
                        f"{host} is not an address of this machine",
                        "use one of `ip -brief address`, or 0.0.0.0 for all",
                    )
                )
            else:
                problems.append(Problem(where, exc.strerror or str(exc), "choose another address"))


def _ports(deployment: Deployment) -> list[tuple[str, str]]:
    from natsync.run.derive import edge_for

    server = deployment.server
    out = []
    for i in range(deployment.run.server_processes):
        host = f"[{server.host}]" if ":" in server.host else server.host
        out.append((f"{host}:{server.port + i}", "server.port"))
    if server.smtp_listen:
        out.append((server.smtp_listen, "server.smtp_listen"))
    if deployment.edge is not None:
        edge = edge_for(deployment)
        out.append((edge.listen, "edge.listen"))
        if edge.http_listen:
            out.append((edge.http_listen, "edge.http_listen"))
        if edge.admin_listen:
            out.append((edge.admin_listen, "edge.admin_listen"))
        out += [(f.listen, "edge.forwards.listen") for f in edge.forwards]
    if deployment.admin.listen:
        out.append((deployment.admin.listen, "admin.listen"))
    cert = deployment.cert
    if cert is not None and cert.mode == "acme" and cert.http_listen:
        out.append((cert.http_listen, "cert.http_listen"))
    return out


def _duplicate_ports(ports: list[tuple[str, str]], problems: list[Problem]) -> set[str]:
    seen: dict[str, str] = {}
    clash = set()
    for hostport, setting in ports:
        port = hostport.rpartition(":")[2]
        if port == "0":
            continue
        if port in seen and seen[port] != setting:
            problems.append(
                Problem(
                    f"port {port}",
                    f"both {seen[port]} and {setting} use it",
                    "give each listener its own port",
                )
            )
            clash.add(hostport)
        seen.setdefault(port, setting)
    return clash


def _store(deployment: Deployment, problems: list[Problem]) -> None:
    from natsync.store import sqlite_file
    from natsync.store.migrations import LATEST

    url = deployment.server.store_url
    path = sqlite_file(url)
    if path is None:
        if deployment.run.server_processes < 1:
            return
        _postgres(url, problems)
        return
    if deployment.run.server_processes > 1:
        problems.append(
            Problem(
                "run.server_processes",
                f"{deployment.run.server_processes} server processes on the SQLite store: a "
                "mail delivered in one would not wake Pings held by another",
                "set run.server_processes = 1, or server.store = 'postgresql://...'",
            )
        )
    directory = path.parent
    if not path.exists():
        # `run` creates the store (and its directory): the nearest existing one must allow it.
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            problems.append(
                Problem(
                    "server.data_dir",
                    f"{existing} is not a directory this user (uid {os.getuid()}) can write "
                    f"in, so {directory} cannot hold the store",
                    "create the directory, owned by the user running natsync",
                )
            )
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=STORE_CONNECT_TIMEOUT)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        problems.append(
            Problem(
                "server.store",
                f"{path} cannot be read as a natsync store ({exc})",
                "point server.store / server.data_dir at the store natsync made",
            )
        )
        return
    if version > LATEST:
        problems.append(
            Problem(
                "server.store",
                f"{path} has schema version {version}, newer than this natsync ({LATEST})",
                "upgrade natsync",
            )
        )
    elif version < LATEST:
        problems.append(
            Problem(
                "server.store",
                f"{path} is at schema version {version} of {LATEST}",
                "natsync run upgrades it on start; `natsync store migrate -c FILE` does it now",
                fatal=False,
            )
        )
    if not os.access(path, os.W_OK):
        problems.append(
            Problem(
                "server.store",
                f"{path} is not writable by uid {os.getuid()}",
                "chown it to the user running natsync",
            )
        )


def _postgres(url: str, problems: list[Problem]) -> None:
    from natsync.store.migrations import LATEST

    try:
        import psycopg
    except ImportError:
        problems.append(
            Problem("server.store", "psycopg is not installed", "pip install 'natsync[postgres]'")
        )
        return
    try:
        with psycopg.connect(url, connect_timeout=STORE_CONNECT_TIMEOUT, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('natsync_schema') IS NOT NULL").fetchone()
            version = 0
            if row and row[0]:
                got = conn.execute("SELECT max(version) FROM natsync_schema").fetchone()
                version = int(got[0]) if got and got[0] is not None else 0
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(
            Problem(
                "server.store",
                f"cannot reach the PostgreSQL store: {first}",
                "check the URL, that PostgreSQL runs and accepts this user",
            )
        )
        return
    if version < LATEST:
        problems.append(
            Problem(
                "server.store",
                f"the PostgreSQL store is at schema version {version} of {LATEST}",
                "run `natsync store migrate -c FILE`",
            )
        )


def run_checks(deployment: Deployment, *, bind: bool = True) -> list[Problem]:
    """Every problem of a loaded deployment (its values already passed the loader's checks).
    *bind* False skips the port checks (a running deployment holds its own ports)."""
    problems: list[Problem] = []
    server = deployment.server
    public = deployment.public_name
    if server.tls_cert is not None and server.tls_key is not None:
        _pair(server.tls_cert, server.tls_key, "server.tls_cert/tls_key", problems)
    edge = deployment.edge
    acme_later = deployment.cert is not None and deployment.cert.mode == "acme"
    if edge is not None:
        try:
            edge.check_backend_trust()
        except NatsyncError as exc:
            problems.append(
                Problem(
                    "edge.backend_pin/backend_ca",
                    "the edge cannot verify the server",
                    exc.message.partition(": ")[2] or exc.message,
                )
            )
        if edge.backend_ca is not None:
            _readable(edge.backend_ca, "edge.backend_ca", problems)
        if not edge.certificates:
            problems.append(
                Problem(
                    "edge.certificates",
                    "the edge has no certificate to show phones",
                    "add [[edge.certificates]] with names, cert and key (natsync init writes it)",
                )
            )
        names: list[str] = []
        for i, site in enumerate(edge.certificates):
            if acme_later and not site.cert.exists():
                continue  # the cert part obtains it before phones need it
            got = _pair(site.cert, site.key, f"edge.certificates[{i}]", problems)
            names += got or []
        if public and names and not covers(names, public):
            problems.append(
                Problem(
                    "edge.certificates",
                    f"no certificate names {public} (they name {', '.join(names)})",
                    f"issue one for {public} (cert.mode = 'acme', or `natsync cert issue "
                    f"--name {public}`), or correct server.public_name",
                )
            )
    elif public and server.tls_cert is not None and server.tls_cert.exists():
        names = _names(server.tls_cert)
        if names and not covers(names, public):
            problems.append(
                Problem(
                    "server.tls_cert",
                    f"the certificate does not name {public} (it names {', '.join(names)})",
                    f"issue one for {public}, or correct server.public_name",
                )
            )
    if deployment.ddns is not None:
        if deployment.ddns.key_file is not None:
            _readable(deployment.ddns.key_file, "ddns.key_file", problems)
        try:
            deployment.ddns.require_dns()
        except NatsyncError as exc:
            problems.append(
                Problem("ddns", exc.message, "name the zone's primary, the zone and the names")
            )
    if deployment.portmap is not None and not deployment.portmap.mappings:
        problems.append(
            Problem("portmap.mappings", "no ports to map", 'list them, e.g. ["443:8443/tcp"]')
        )
    if deployment.portmap is not None and deployment.portmap.ipv6 != "off":
        from natsync.portmap.manager import MappingSpec

        specs = [MappingSpec.parse(m) for m in deployment.portmap.mappings]
        translated = [str(s) for s in specs if s.external_port != s.internal_port]
        if translated:
            problems.append(
                Problem(
                    "portmap.ipv6",
                    f"{', '.join(translated)} translate(s) ports: IPv4 only, no IPv6 pinhole "
                    "(IPv6 phones dial the public port on this host's own address)",
                    'listen on the public port and map it as "PORT/tcp" (docs/ipv6.md)',
                    fatal=False,
                )
            )
    if deployment.cert is not None and deployment.cert.ca_file is not None:
        _readable(deployment.cert.ca_file, "cert.ca_file", problems)
    if deployment.cert is not None:
        from natsync.cert.settings import RENAMED

        for old in deployment.cert.renamed:  # still read, under the name docs/cert.md gives
            problems.append(
                Problem(
                    f"cert.{old}",
                    f"the old name of cert.{RENAMED[old]} (still read)",
                    f"write {RENAMED[old]} = ... instead (docs/cert.md)",
                    fatal=False,
                )
            )
    _published_console(deployment, problems)
    _store(deployment, problems)
    if bind:
        ports = _ports(deployment)
        clash = _duplicate_ports(ports, problems)
        for hostport, setting in ports:
            if hostport not in clash:
                _bindable(hostport, setting, problems)
    return problems


def _published_console(deployment: Deployment, problems: list[Problem]) -> None:
    """[console] publish: its settings must hold (TLS of its own), and the admin is told, every
    time, what publishing means (docs/console.md "Publishing it")."""
    table = deployment.tables.get("console", {})
    if not table.get("publish") or deployment.path is None:
        return
    from natsync.console.settings import load_settings

    try:
        console = load_settings(deployment.path)
    except ConfigError as exc:
        problems.append(Problem("console.publish", exc.message, "see docs/console.md"))
        return
    problems.append(
        Problem(
            "console.publish",
            f"the admin console is published by the edge on {console.publish}: anyone who "
            "reaches that port sees its login page, guarded only by the admin password, the "
            "login rate limit and TLS (no client certificate is asked for)",
            "keep a long admin password (natsync console passwd), map that port on the router "
            "only if you must, or remove console.publish and use an SSH tunnel",
            fatal=False,
        )
    )


def check_file(path: Any) -> tuple[Deployment | None, list[Problem]]:
    """Load and check the file at *path*; a loading error is the one problem then."""
    from natsync.deployment import load_deployment
    from natsync.errors import ConfigError

    try:
        deployment = load_deployment(path)
    except ConfigError as exc:
        return None, [Problem("config", exc.message, "correct the file and run natsync check")]
    return deployment, run_checks(deployment)
