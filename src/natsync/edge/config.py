"""The ``[edge]`` table of the deployment TOML file, read into a checked :class:`EdgeConfig`.

Every value has an embedded default that is safe: the backend must be verifiable (a pin or a CA
file) unless ``insecure_backend = true`` is written out; only the ActiveSync, Autodiscover and
ACME paths are published; the idle timeout toward the server follows the server's maximum
heartbeat (``[server] heartbeat_max`` of the same file when present).

```toml
[edge]
listen = "*:443"                         # every address, IPv4 and IPv6 (dual stack)
backend = "192.168.1.10:443"
backend_name = "exchange.corp.local"     # SNI and name checked with backend_ca
backend_pin = "sha256:AB:CD:..."         # written by `natsync edge trust-backend`
admin_listen = "127.0.0.1:9180"

[[edge.certificates]]
names = ["mail.example.com"]
cert = "tls/mail.pem"                    # leaf + chain
key = "tls/mail.key"

[[edge.forwards]]
listen = "0.0.0.0:25"
to = "192.168.1.10:25"
proxy_protocol = true
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from natsync.config import (
    DEFAULT_HEARTBEAT_MAX,
    DEFAULT_MAX_REQUEST_BODY,
    port_of,
    read_toml,
    scalar_setting,
)
from natsync.errors import ConfigError

#: Paths published by default (MS-ASHTTP 2.2.1.1.1, MS-ASCMD Autodiscover, RFC 8555 8.3).
DEFAULT_PATHS = (
    "/Microsoft-Server-ActiveSync",
    "/autodiscover/autodiscover.xml",
    "/autodiscover/autodiscover.json",
    "/autodiscover/autodiscover.json/",
    "/.well-known/acme-challenge/",
)
#: Seconds added to the server's largest heartbeat before the edge gives up on a held request:
#: the server answers at the heartbeat; the margin covers its processing and a slow store.
HEARTBEAT_MARGIN = 60


def held_request_timeout(heartbeat_max: int) -> float:
    """Seconds a connection may carry nothing while a Ping is held: the server answers by the
    largest heartbeat it publishes, plus :data:`HEARTBEAT_MARGIN`. The edge's idle timeout
    toward the server and the relay's idle timeout (natsync.relay) are both this."""
    return float(heartbeat_max + HEARTBEAT_MARGIN)


#: Keep-alive idle time of a phone's connection between requests (seconds).
DEFAULT_CLIENT_IDLE = 120.0
#: Seconds a client may take to send a whole request head, counted from its first byte and
#: not restarted by later bytes (slow-loris bound; nginx's client_header_timeout, HAProxy's
#: timeout http-request).
DEFAULT_HEADER_TIMEOUT = 30.0
#: Seconds a request body may go without a byte before the edge answers 408 and closes
#: (nginx's client_body_timeout). A held Ping sent its body: waiting for the answer is not this.
DEFAULT_BODY_TIMEOUT = 60.0
#: Connections one client address may hold. Phones behind one carrier NAT share an address, so
#: this is generous; a single phone uses 2-4.
DEFAULT_MAX_CONNECTIONS_PER_IP = 256
#: Sustained requests per second per client address, and the burst allowed above it.
DEFAULT_REQUESTS_PER_SECOND = 50.0
DEFAULT_REQUEST_BURST = 200
#: Idle keep-alive connections kept open toward the server.
DEFAULT_POOL_SIZE = 64
#: The default SMTP forward: port 25 to the server's SMTP listener.
DEFAULT_SMTP_TARGET = "127.0.0.1:2525"

#: Most worker processes: more than the machine has cores only adds memory.
MAX_WORKERS = 64
#: Most servers one edge balances over (each gets a health check every interval per worker).
MAX_BACKENDS = 64
#: Where the active health check asks (``OPTIONS``; the natsync server answers it without
#: credentials, Exchange answers 401 — both mean "alive").
DEFAULT_HEALTH_PATH = "/Microsoft-Server-ActiveSync"
#: Seconds between active health checks of each server (several servers only).
DEFAULT_HEALTH_INTERVAL = 2.0
#: Seconds one check (connect + TLS + answer) may take before it counts as failed.
DEFAULT_HEALTH_TIMEOUT = 1.0
#: Failed checks in a row that take a server out; good checks in a row that put it back.
DEFAULT_HEALTH_FALL = 2
DEFAULT_HEALTH_RISE = 2

_FINGERPRINT = re.compile(r"sha256:([0-9A-F]{2}:){31}[0-9A-F]{2}")


@dataclass(frozen=True, slots=True)
class SiteCert:
    """A certificate (with its chain) and key served for some names (SNI)."""

    names: tuple[str, ...]
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Forward:
    """A TCP forward: connections to *listen* are piped to *to*."""

    listen: str
    to: str
    proxy_protocol: bool = True


#: The listen host that means every address of both families (dual stack).
ALL_ADDRESSES = "*"


def bind_host(host: str) -> str | None:
    """What to give the event loop: None (every family) for ``*``, else the address."""
    return None if host == ALL_ADDRESSES else host


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Settings of ``natsync edge`` (the ``[edge]`` table)."""

    #: Phone-facing TLS listener. ``*`` is every address of both families (IPv4 and IPv6: most
    #: phones on mobile networks have IPv6, and behind carrier-grade NAT only IPv6 reaches
    #: home); ``0.0.0.0`` is IPv4 only, ``[::]`` IPv6 only.
    listen: str = f"{ALL_ADDRESSES}:443"
    certificates: tuple[SiteCert, ...] = ()
    backend: str = "127.0.0.1:8443"
    #: Several servers to balance over, instead of ``backend`` (all verified the same way).
    backends: tuple[str, ...] = ()
    health_path: str = DEFAULT_HEALTH_PATH
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    health_fall: int = DEFAULT_HEALTH_FALL
    health_rise: int = DEFAULT_HEALTH_RISE
    #: Name sent as SNI to the server and checked against its certificate ("" = backend host).
    backend_name: str = ""
    #: SHA-256 fingerprint of the server's leaf certificate ("sha256:AB:...").
    backend_pin: str = ""
    #: CA file the server's certificate must chain to (instead of, or with, a pin).
    backend_ca: Path | None = None
    insecure_backend: bool = False
    paths: tuple[str, ...] = DEFAULT_PATHS
    #: The largest Ping heartbeat the server publishes (seconds).
    heartbeat_max: int = DEFAULT_HEARTBEAT_MAX
    #: Idle timeout toward the server while a request is outstanding; 0 = heartbeat + margin.
    backend_timeout: float = 0.0
    client_idle_timeout: float = DEFAULT_CLIENT_IDLE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_body: int = DEFAULT_MAX_REQUEST_BODY
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    requests_per_second_per_ip: float = DEFAULT_REQUESTS_PER_SECOND
    request_burst_per_ip: int = DEFAULT_REQUEST_BURST
    pool_size: int = DEFAULT_POOL_SIZE
    forwards: tuple[Forward, ...] = (Forward("0.0.0.0:25", DEFAULT_SMTP_TARGET),)
    #: Admin listener (/healthz, /metrics); "" = none. Never publish it.
    admin_listen: str = "127.0.0.1:9180"
    #: File for the JSON access log ("" = the natsync.edge.access logger only, "off" = none).
    access_log: str = ""
    #: A second TLS listener for connections passed on by ``natsync relay`` through its tunnel,
    #: each opened by a PROXY v2 header naming the phone ("" = none; see natsync.edge.relayed).
    relayed_listen: str = ""
    #: Addresses or networks allowed to send PROXY headers there (the relay's tunnel address).
    relayed_from: tuple[str, ...] = ()
    #: Plain-HTTP listener (port 80): answers ACME HTTP-01 and redirects all else to HTTPS;
    #: "" = none.
    http_listen: str = ""
    #: Directory where a certificate manager in another process leaves pending ACME challenges
    #: (HTTP-01 tokens, TLS-ALPN-01 certificates) for this edge to answer; "" = in-process only.
    challenge_dir: str = ""
    #: Processes sharing the listening port (SO_REUSEPORT), like nginx's worker_processes.
    #: Metrics and the admin listener cover the first worker only.
    workers: int = 1
    #: Extra settings a future version may read; kept so rewriting the file loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def read_timeout(self) -> float:
        """Idle timeout toward the server: configured, or heartbeat + margin."""
        return self.backend_timeout or held_request_timeout(self.heartbeat_max)

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server the edge forwards to: ``backends``, or the one ``backend``."""
        return self.backends or (self.backend,)

    @property
    def out_within(self) -> float:
        """Seconds within which active checks take a dead server out (interval x fall +
        timeout); a refused or failed connection takes it out at once."""
        return self.health_interval * self.health_fall + self.health_timeout

    @property
    def backend_host(self) -> str:
        return split_hostport(self.backend, "edge.backend")[0]

    @property
    def backend_port(self) -> int:
        return split_hostport(self.backend, "edge.backend")[1]

    @property
    def server_name(self) -> str:
        """The name the edge sends as SNI and expects in the server's certificate."""
        return self.backend_name or self.backend_host

    def timeout_warnings(self) -> list[str]:
        """Configured timeouts that would cut a Ping held for the full heartbeat."""
        warnings = []
        if self.backend_timeout and self.backend_timeout <= self.heartbeat_max:
            warnings.append(
                f"edge.backend_timeout = {self.backend_timeout:g} s is not longer than the "
                f"heartbeat the server publishes ({self.heartbeat_max} s): held Pings will be "
                f"cut; use at least {self.heartbeat_max + HEARTBEAT_MARGIN} or leave it unset"
            )
        return warnings

    def __post_init__(self) -> None:
        """A value that cannot work is refused here, when the settings are made (ConfigError)."""
        split_hostport(self.listen, "edge.listen")
        if len(self.backends) > MAX_BACKENDS:
            raise ConfigError(f"edge.backends: at most {MAX_BACKENDS} servers")
        if len(set(self.backends)) != len(self.backends):
            raise ConfigError("edge.backends names a server twice")
        for server in self.backends:
            split_hostport(server, "edge.backends")
        split_hostport(self.backend, "edge.backend")
        if not self.health_path.startswith("/"):
            raise ConfigError("edge.health_path must start with '/'")
        if self.health_timeout >= self.health_interval:
            raise ConfigError("edge.health_timeout must be shorter than edge.health_interval")
        if self.admin_listen:
            split_hostport(self.admin_listen, "edge.admin_listen")
        if self.http_listen:
            split_hostport(self.http_listen, "edge.http_listen")
        if self.backend_pin and _FINGERPRINT.fullmatch(self.backend_pin) is None:
            raise ConfigError(
                "edge.backend_pin must look like sha256:AB:CD:... (32 hex pairs); "
                "write it with `natsync edge trust-backend HOST:PORT`"
            )
        for forward in self.forwards:
            split_hostport(forward.listen, "edge.forwards.listen")
            split_hostport(forward.to, "edge.forwards.to")
        if self.relayed_listen:
            split_hostport(self.relayed_listen, "edge.relayed_listen")
            if not self.relayed_from:
                raise ConfigError(
                    "edge.relayed_listen needs edge.relayed_from: the relay's tunnel address, the "
                    "only peer whose PROXY headers are believed"
                )
        for path in self.paths:
            if not path.startswith("/"):
                raise ConfigError(f"edge.paths entries must start with '/', not {path!r}")
        if self.heartbeat_max < 1:
            raise ConfigError("edge.heartbeat_max must be >= 1")
        positive = (
            "client_idle_timeout",
            "header_timeout",
            "body_timeout",
            "requests_per_second_per_ip",
            "health_interval",
            "health_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"edge.{name} must be > 0")
        if self.backend_timeout < 0:
            raise ConfigError("edge.backend_timeout must be >= 0 (0: heartbeat + margin)")
        for name in (
            "max_connections_per_ip", "request_burst_per_ip", "pool_size", "health_fall",
            "health_rise",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"edge.{name} must be >= 1")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"edge.workers must be 1..{MAX_WORKERS}")
        if self.workers > 1 and split_hostport(self.listen, "edge.listen")[1] == 0:
            raise ConfigError("edge.workers > 1 needs a fixed edge.listen port (not 0)")
        if self.max_body < 1024:
            raise ConfigError("edge.max_body must be at least 1024 bytes")

    def check_backend_trust(self) -> None:
        """Refuse to run with a server certificate nobody checks (unless said in so many words)."""
        if self.backend_pin or self.backend_ca is not None:
            return
        if self.insecure_backend:
            return
        raise ConfigError(
            "the edge cannot verify the server: set edge.backend_pin (run "
            f"`natsync edge trust-backend {self.backend}`) or edge.backend_ca; "
            "`insecure_backend = true` turns verification off and lets anyone on the path "
            "between edge and server read every password"
        )

    def check_runnable(self) -> None:
        if not self.certificates:
            raise ConfigError(
                "edge.certificates is empty: the edge needs a certificate for the public name "
                "([[edge.certificates]] names/cert/key)"
            )
        self.check_backend_trust()


def split_hostport(value: str, setting: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' → (host, port); ConfigError naming *setting* otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    number = port_of(port)
    if not sep or not host or number is None:
        raise ConfigError(f"{setting} must be host:port, not {value!r}")
    return host, number


def _path(value: Any, key: str, base: Path | None) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a path (a non-empty string)")
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def _certificates(value: Any, base: Path | None) -> tuple[SiteCert, ...]:
    if not isinstance(value, list):
        raise ConfigError("edge.certificates must be an array of tables")
    out = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) - {"names", "cert", "key"}:
            raise ConfigError("each edge.certificates entry has names, cert and key only")
        names = entry.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("edge.certificates names must be a list of host names")
        out.append(
            SiteCert(
                tuple(n.lower() for n in names),
                _path(entry.get("cert"), "edge.certificates cert", base),
                _path(entry.get("key"), "edge.certificates key", base),
            )
        )
    return tuple(out)


def _forwards(value: Any) -> tuple[Forward, ...]:
    if not isinstance(value, list):
        raise ConfigError("edge.forwards must be an array of tables")
    out = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) - {"listen", "to", "proxy_protocol"}:
            raise ConfigError("each edge.forwards entry has listen, to and proxy_protocol only")
        listen, to = entry.get("listen"), entry.get("to")
        proxy = entry.get("proxy_protocol", True)
        if not isinstance(listen, str) or not isinstance(to, str) or not isinstance(proxy, bool):
            raise ConfigError("edge.forwards: listen and to are host:port strings")
        out.append(Forward(listen, to, proxy))
    return tuple(out)


def edge_config_from_dict(
    table: dict[str, Any], base: Path | None = None, server: dict[str, Any] | None = None
) -> EdgeConfig:
    """Build an EdgeConfig from the ``[edge]`` table (and defaults from ``[server]``)."""
    defaults = EdgeConfig()
    server = server or {}
    if isinstance(server.get("heartbeat_max"), int):
        defaults = replace(defaults, heartbeat_max=server["heartbeat_max"])
    smtp_listen = server.get("smtp_listen")
    if isinstance(smtp_listen, str) and smtp_listen:
        port = smtp_listen.rpartition(":")[2]
        defaults = replace(defaults, forwards=(Forward("0.0.0.0:25", f"127.0.0.1:{port}"),))
    known = {f.name for f in fields(EdgeConfig)} - {"extra"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown edge setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        if key == "certificates":
            values[key] = _certificates(value, base)
        elif key == "forwards":
            values[key] = _forwards(value)
        elif key == "backend_ca":
            values[key] = _path(value, "edge.backend_ca", base)
        elif key == "backends":
            if "backend" in table:
                raise ConfigError("set edge.backend (one server) or edge.backends, not both")
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(b, str) for b in value)
            ):
                raise ConfigError('edge.backends must be a list of "host:port" strings')
            values[key] = tuple(value)
            values["backend"] = value[0]  # what messages name when one server is meant
        elif key == "relayed_from":
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError('edge.relayed_from must be a list of addresses ("10.77.0.1")')
            values[key] = tuple(value)
        elif key == "paths":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError("edge.paths must be a list of strings")
            values[key] = tuple(value)
        else:
            values[key] = scalar_setting("edge", key, default, value)
    return replace(defaults, **values)


def load_edge_config(path: Path | str | None) -> EdgeConfig:
    """Read the ``[edge]`` table of the TOML file at *path* (``None``: embedded defaults)."""
    if path is None:
        return EdgeConfig()
    path = Path(path)
    data = read_toml(path)
    table = data.get("edge", {})
    server = data.get("server", {})
    if not isinstance(table, dict) or not isinstance(server, dict):
        raise ConfigError("[edge] and [server] must be tables")
    return edge_config_from_dict(table, base=path.parent, server=server)
