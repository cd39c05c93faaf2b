"""One TOML file describes a deployment; this module reads it into typed, checked settings.

Every value has an embedded default, so ``natsync server`` runs with no file at all. A value
that cannot work (a port out of range, a heartbeat minimum above its maximum, a TLS certificate
without its key) raises :class:`natsync.errors.ConfigError` naming the setting, at load time,
not at the first request.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from natsync.errors import ConfigError

_F = TypeVar("_F", bound=Callable[..., Any])

#: Largest request body the server reads (a SendMail with attachments is the big one). Larger
#: bodies are refused with 413 before they are read, so one client cannot fill memory.
DEFAULT_MAX_REQUEST_BODY = 32 * 1024 * 1024

#: Ping heartbeat bounds in seconds (MS-ASCMD 2.2.3.84.1: 60..3540 for Exchange). A lower
#: minimum wakes phones more often than needed; a maximum past 59 minutes outlives most NATs.
DEFAULT_HEARTBEAT_MIN = 60
DEFAULT_HEARTBEAT_MAX = 3540
#: Seconds a Ping answer must beat the path's idle timeout by: the answer leaves the server
#: heartbeat seconds after the request arrived, and must cross the NAT/edge before its idle
#: clock (started by the request's last packet) cuts the connection.
PATH_IDLE_MARGIN = 5

#: Failed logins allowed per user and per client address within the window before the server
#: answers 429 without checking the password (slows password guessing to a crawl).
DEFAULT_MAX_FAILED_LOGINS_PER_USER = 10
DEFAULT_MAX_FAILED_LOGINS_PER_IP = 30
DEFAULT_FAILED_LOGIN_WINDOW = 300.0
#: Requests per device per window before the server answers 503 (natsync.eas.throttle): a
#: phone syncing a large mailbox sends a few hundred windows; a looping one sends thousands.
DEFAULT_THROTTLE_REQUESTS = 600
DEFAULT_THROTTLE_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of the ActiveSync server (``[server]`` table of the TOML file)."""

    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    data_dir: Path = Path("natsync-data")
    #: Where the mailbox store lives: "" for the embedded SQLite file in data_dir, else a
    #: SQLite path (or ``sqlite:///path``) or a ``postgresql://`` URL, shared by several
    #: server processes (docs/scaling.md). One line moves a deployment to PostgreSQL.
    store: str = ""
    #: Mail domains this server is authoritative for (local delivery, no relay).
    domains: tuple[str, ...] = ("example.test",)
    #: "host:port" of the outbound smarthost, or "" to queue outbound mail until one is set.
    smarthost: str = ""
    #: "host:port" to receive SMTP on (natsync server starts SMTP in), or "" for none.
    smtp_listen: str = ""
    #: A second SMTP listener for mail `natsync relay` passes on through its tunnel (the home's
    #: tunnel address and [relay] home_smtp_port, "10.77.0.2:2525"), "" for none; every
    #: connection must open with a PROXY header (v1/v2) naming the sending server and come from
    #: smtp_proxy_protocol_from (the relay's tunnel address); any other peer is dropped.
    smtp_relayed_listen: str = ""
    smtp_proxy_protocol_from: tuple[str, ...] = ()
    #: Name this server gives in SMTP greetings and bounces.
    hostname: str = "localhost"
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    heartbeat_min: int = DEFAULT_HEARTBEAT_MIN
    heartbeat_max: int = DEFAULT_HEARTBEAT_MAX
    #: The smallest idle timeout (seconds) of the NAT, firewall or edge in front of the server,
    #: or 0 when unknown. A held Ping longer than that is cut silently by the path and the phone
    #: loses push until it notices, so the accepted heartbeat is capped below it.
    max_idle_path_seconds: int = 0
    #: Demand Provision (MS-ASPROV) before any other command.
    require_provisioning: bool = True
    max_failed_logins_per_user: int = DEFAULT_MAX_FAILED_LOGINS_PER_USER
    max_failed_logins_per_ip: int = DEFAULT_MAX_FAILED_LOGINS_PER_IP
    failed_login_window: float = DEFAULT_FAILED_LOGIN_WINDOW
    #: Realm named in the 401 Basic challenge.
    realm: str = "natsync"
    #: Public name phones use (Autodiscover answers with https://<public_name>/...).
    public_name: str = ""
    #: Overrides of EASProvisionDoc settings by name (see natsync.eas.policy).
    policy: dict[str, int | str] = field(default_factory=dict)
    #: Addresses of proxies (the edge) whose X-Forwarded-For the server believes: a request
    #: from one of them is logged and rate-limited under the address that proxy names. From any
    #: other address the header is ignored, so a client cannot pick its own address.
    trusted_proxies: tuple[str, ...] = ()
    #: Per-device request budget (natsync.eas.throttle): throttle_requests commands per
    #: throttle_window seconds, then 503 + X-MS-ASThrottle; 0 turns throttling off.
    throttle_requests: int = DEFAULT_THROTTLE_REQUESTS
    throttle_window: float = DEFAULT_THROTTLE_WINDOW
    #: User names and DeviceIds never throttled (the admin's allowlist).
    throttle_exempt: tuple[str, ...] = ()

    @property
    def heartbeat_cap(self) -> int:
        """The largest heartbeat a Ping may ask for: heartbeat_max, lowered to fit the path."""
        if self.max_idle_path_seconds <= 0:
            return self.heartbeat_max
        return min(self.heartbeat_max, self.max_idle_path_seconds - PATH_IDLE_MARGIN)

    @property
    def database(self) -> Path:
        """The embedded store of data_dir (the file ``natsync user`` / ``device`` use too)."""
        from natsync.store import store_path

        return store_path(self.data_dir)

    @property
    def store_url(self) -> str:
        """What to give :func:`natsync.store.open_store`: ``store``, else the embedded file."""
        return self.store or str(self.database)

    def check(self) -> ServerConfig:
        """Raise ConfigError for a value that cannot work; return self for chaining."""
        _check_store(self.store)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be 0..65535, not {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        if self.max_request_body < 1024:
            raise ConfigError("server.max_request_body must be at least 1024 bytes")
        if not 1 <= self.heartbeat_min <= self.heartbeat_max:
            raise ConfigError(
                "server.heartbeat_min must be >= 1 and <= server.heartbeat_max "
                f"(got {self.heartbeat_min} and {self.heartbeat_max})"
            )
        if self.max_idle_path_seconds < 0:
            raise ConfigError("server.max_idle_path_seconds must be >= 0 (0: unknown)")
        if self.max_idle_path_seconds and self.heartbeat_cap < self.heartbeat_min:
            raise ConfigError(
                f"server.max_idle_path_seconds = {self.max_idle_path_seconds} leaves no room for a "
                f"Ping: heartbeats up to {self.heartbeat_cap} s would fit the path (it cuts idle "
                f"connections, {PATH_IDLE_MARGIN} s kept as margin), but heartbeat_min is "
                f"{self.heartbeat_min}; lower server.heartbeat_min"
            )
        if self.max_failed_logins_per_user < 1 or self.max_failed_logins_per_ip < 1:
            raise ConfigError("server.max_failed_logins_per_user/_per_ip must be >= 1")
        if self.failed_login_window <= 0:
            raise ConfigError("server.failed_login_window must be > 0 seconds")
        if self.throttle_requests < 0 or self.throttle_window <= 0:
            raise ConfigError(
                "server.throttle_requests must be >= 0 (0: off) and throttle_window > 0 seconds"
            )
        if self.smtp_relayed_listen and not self.smtp_proxy_protocol_from:
            raise ConfigError(
                "server.smtp_relayed_listen needs server.smtp_proxy_protocol_from: the relay's "
                'tunnel address (["10.77.0.1"]), the only peer whose PROXY header is believed'
            )
        for key in ("smarthost", "smtp_listen", "smtp_relayed_listen"):
            value = getattr(self, key)
            host, _, port = value.rpartition(":")
            if value and (not host or not port.isdigit() or not 0 <= int(port) <= 65535):
                raise ConfigError(f"server.{key} must be host:port, not {value!r}")
        for domain in self.domains:
            if not domain or "@" in domain or " " in domain:
                raise ConfigError(f"server.domains has an invalid domain {domain!r}")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_address(proxy)
            except ValueError:
                raise ConfigError(
                    f"server.trusted_proxies has {proxy!r}: an IP address is needed"
                ) from None
        for proxy in self.smtp_proxy_protocol_from:
            try:
                ipaddress.ip_address(proxy)
            except ValueError:
                raise ConfigError(
                    f"server.smtp_proxy_protocol_from has {proxy!r}: an IP address is needed"
                ) from None
        from natsync.eas.policy import check_overrides

        check_overrides(self.policy)
        return self


#: The store URL schemes natsync.store.open_store knows (anything else is a typo to report now,
#: not a failure at the first request).
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_SQLITE_SCHEME = "sqlite"


def _check_store(store: str) -> None:
    """Refuse a ``server.store`` value open_store could not open (without connecting)."""
    if not store or "://" not in store:
        return
    scheme, _, rest = store.partition("://")
    if scheme in _POSTGRES_SCHEMES:
        return
    if scheme == _SQLITE_SCHEME:
        if rest.startswith("/") and rest.strip("/"):
            return
        raise ConfigError(f"server.store {store!r}: write sqlite:///path/to/file.db")
    raise ConfigError(
        f"server.store has an unknown scheme {scheme!r}: use a file path, "
        "sqlite:///path or postgresql://user@host/database"
    )


_PATH_KEYS = {"tls_cert", "tls_key", "data_dir"}


def server_config_from_dict(table: dict[str, Any], base: Path | None = None) -> ServerConfig:
    """Build a ServerConfig from the ``[server]`` table; relative paths are taken from *base*."""
    known = {f.name for f in fields(ServerConfig)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
    defaults = ServerConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        if key in _PATH_KEYS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"server.{key} must be a path (a non-empty string)")
            path = Path(value)
            values[key] = path if path.is_absolute() or base is None else base / path
        elif key == "domains":
            if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
                raise ConfigError("server.domains must be a list of strings")
            values[key] = tuple(d.lower() for d in value)
        elif key == "throttle_exempt":
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError("server.throttle_exempt must be a list of user names/DeviceIds")
            values[key] = tuple(value)
        elif key in ("trusted_proxies", "smtp_proxy_protocol_from"):
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(f"server.{key} must be a list of IP addresses")
            values[key] = tuple(value)
        elif key == "store":
            if not isinstance(value, str):
                raise ConfigError("server.store must be a string (a path or a URL)")
            # A plain path is a file path like the others: relative to the config file.
            relative = value and "://" not in value and not Path(value).is_absolute()
            values[key] = str(base / value) if relative and base is not None else value
        elif key == "policy":
            if not isinstance(value, dict):
                raise ConfigError("server.policy must be a table")
            values[key] = dict(value)
        else:
            values[key] = scalar_setting("server", key, default, value)
    return replace(defaults, **values).check()


def read_toml(path: Path) -> dict[str, Any]:
    """The whole deployment file at *path* (every part reads its own table from it)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def scalar_setting(section: str, key: str, default: object, value: object) -> Any:
    """*value* checked against the type of *default* (bool, int, float or str), named on error."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{section}.{key} must be true or false")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{section}.{key} must be an integer")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{section}.{key} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{section}.{key} must be a string")
    return value


def load_config(path: Path | str | None) -> ServerConfig:
    """Read the TOML file at *path* (``None``: the embedded defaults)."""
    if path is None:
        return ServerConfig().check()
    path = Path(path)
    data = read_toml(path)
    table = data.get("server", {})
    if not isinstance(table, dict):
        raise ConfigError("[server] must be a table")
    return server_config_from_dict(table, base=path.parent)


# --- The whole deployment file ---------------------------------------------------------------
#
# One TOML file, one table per part. Each part validates its own table (natsync.config for
# [server], natsync.edge.config for [edge], natsync.ddns.settings for [ddns]/[portmap], below
# for [cert], [admin] and [run]); this loader refuses unknown tables and keys with a "did you
# mean" hint and names the file in every message.

#: Where `natsync run` / `check` look when neither -c nor NATSYNC_CONFIG names a file: the
#: system file when running as a service, else the one `natsync init` writes by default here.
SYSTEM_CONFIG = Path("/etc/natsync/natsync.toml")
LOCAL_CONFIG = Path("natsync.toml")
CONFIG_ENV = "NATSYNC_CONFIG"

#: Most server processes `natsync run` starts (SO_REUSEPORT); past the cores only memory grows.
MAX_SERVER_PROCESSES = 64
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
CERT_MODES = ("files", "private-ca", "acme")
#: Renew an ACME certificate when fewer than this many days are left (Let's Encrypt issues
#: 90-day certificates and advises renewing at 60 days: a month of retries before expiry).
DEFAULT_RENEW_DAYS = 30


@dataclass(frozen=True, slots=True)
class CertSettings:
    """``[cert]``: where the public certificate comes from and how it is kept fresh.

    ``files``: tls_cert/tls_key of [server] and the [[edge.certificates]] files are used as
    they are (renewed by someone else; `natsync run` reloads them on SIGHUP). ``private-ca``:
    natsync's own CA in data_dir issues them (phones must trust the CA). ``acme``: an ACME
    CA (Let's Encrypt, or pebble in tests) issues them for ``names`` and they are renewed
    ``renew_days`` before expiry."""

    mode: str = "files"
    names: tuple[str, ...] = ()
    acme_directory: str = ""
    acme_email: str = ""
    #: ACME challenge: http-01 (port 80 reachable from outside) or dns-01 (through [ddns]).
    challenge: str = "http-01"
    #: Address:port the HTTP-01 responder listens on (the router maps outside 80 to it).
    http_listen: str = "0.0.0.0:80"
    #: CA file to trust for the ACME directory ("" = the system's roots); pebble in tests.
    acme_ca: Path | None = None
    renew_days: int = DEFAULT_RENEW_DAYS

    def check(self) -> CertSettings:
        if self.mode not in CERT_MODES:
            raise ConfigError(
                f"cert.mode must be one of {', '.join(CERT_MODES)}, not {self.mode!r}"
            )
        if self.mode == "acme":
            if not self.acme_directory.startswith(("https://", "http://")):
                raise ConfigError(
                    "cert.acme_directory must be the ACME directory URL (https://...)"
                )
            if not self.names:
                raise ConfigError("cert.names must list the public name(s) for cert.mode = acme")
        if self.challenge not in ("http-01", "dns-01"):
            raise ConfigError(f"cert.challenge must be http-01 or dns-01, not {self.challenge!r}")
        if not 1 <= self.renew_days <= 89:
            raise ConfigError("cert.renew_days must be 1..89 (days before expiry)")
        _check_hostport(self.http_listen, "cert.http_listen")
        return self


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """``[admin]``: the operator's side: where health and metrics of the whole deployment are
    served (never publish it), and who to tell."""

    #: /healthz (self-check verdict, parts' states) and /metrics of the supervisor; "" = none.
    listen: str = "127.0.0.1:9190"
    #: The operator's address (ACME account contact, DMARC reports in the printed records).
    email: str = ""

    def check(self) -> AdminSettings:
        if self.listen:
            _check_hostport(self.listen, "admin.listen")
        if self.email and "@" not in self.email:
            raise ConfigError(f"admin.email must be an address, not {self.email!r}")
        return self


@dataclass(frozen=True, slots=True)
class RunSettings:
    """``[run]``: how `natsync run` runs the parts."""

    #: Server processes sharing server.port (SO_REUSEPORT); edge processes are edge.workers.
    server_processes: int = 1
    log_format: str = "text"
    log_level: str = "info"
    #: Run the doctor's outside-in checks against the public name after start, after every
    #: public-address change and after every certificate renewal.
    self_check: bool = True
    #: Seconds between restarts of a part that keeps dying start at this and double each time.
    restart_backoff: float = 1.0
    restart_backoff_max: float = 60.0

    def check(self) -> RunSettings:
        if not 1 <= self.server_processes <= MAX_SERVER_PROCESSES:
            raise ConfigError(f"run.server_processes must be 1..{MAX_SERVER_PROCESSES}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"run.log_format must be text or json, not {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"run.log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 < self.restart_backoff <= self.restart_backoff_max:
            raise ConfigError("run.restart_backoff must be > 0 and <= run.restart_backoff_max")
        return self


def _check_hostport(value: str, setting: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting} must be host:port, not {value!r}")


def _simple_table(cls: Any, section: str, table: dict[str, Any], base: Path | None) -> Any:
    """A flat table of scalars, lists of strings and paths read into the dataclass *cls*."""
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key} must be a list of strings")
            values[key] = tuple(value)
        elif key in ("acme_ca",):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{section}.{key} must be a path (a non-empty string)")
            path = Path(value)
            values[key] = path if path.is_absolute() or base is None else base / path
        else:
            values[key] = scalar_setting(section, key, default, value)
    return replace(defaults, **values).check()


@dataclass(frozen=True, slots=True)
class Deployment:
    """Every part's settings, read from one file. A part whose table is absent is None (not
    run); [server], [admin] and [run] always exist (their defaults)."""

    path: Path | None
    server: ServerConfig
    edge: Any = None  # natsync.edge.config.EdgeConfig | None
    ddns: Any = None  # natsync.ddns.settings.DdnsSettings | None
    portmap: Any = None  # natsync.ddns.settings.PortmapSettings | None
    cert: CertSettings | None = None
    admin: AdminSettings = field(default_factory=AdminSettings)
    run: RunSettings = field(default_factory=RunSettings)
    #: The file's tables as read (what changed on a SIGHUP reload is found by comparing them).
    tables: dict[str, Any] = field(default_factory=dict)
    #: natsync.sources.SourcesConfig and natsync.sources.dav.DavSettings | None ([sources]).
    sources: Any = None
    dav: Any = None

    @property
    def public_name(self) -> str:
        """The name phones use: server.public_name, else the first certificate name."""
        if self.server.public_name:
            return self.server.public_name
        if self.cert is not None and self.cert.names:
            return self.cert.names[0]
        return ""


def _known_keys() -> dict[str, set[str]]:
    """Each table's settings (for unknown-key errors with a suggestion)."""
    from natsync.console.settings import CONSOLE_KEYS
    from natsync.ddns.settings import DdnsSettings, PortmapSettings
    from natsync.edge.config import EdgeConfig
    from natsync.relay.settings import HomeTunnelSettings, RelaySettings
    from natsync.sources.config import SOURCES_KEYS

    return {
        "server": {f.name for f in fields(ServerConfig)},
        "relay": {f.name for f in fields(RelaySettings)},
        "tunnel": {f.name for f in fields(HomeTunnelSettings)},
        "sources": set(SOURCES_KEYS),
        "console": set(CONSOLE_KEYS),
        "edge": {f.name for f in fields(EdgeConfig)} - {"extra"},
        "ddns": {f.name for f in fields(DdnsSettings)},
        "portmap": {f.name for f in fields(PortmapSettings)},
        "cert": {f.name for f in fields(CertSettings)},
        "admin": {f.name for f in fields(AdminSettings)},
        "run": {f.name for f in fields(RunSettings)},
    }


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of *choices*, or ""."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _refuse_unknown(data: dict[str, Any], where: str) -> None:
    known = _known_keys()
    for name, table in data.items():
        if name not in known:
            raise ConfigError(
                f"{where}: unknown table [{name}]{did_you_mean(name, known)}; "
                f"known tables: {', '.join(sorted(known))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name} must be a table ([{name}]), not a value")
        for key in table:
            if name == "server" and key == "policy":
                continue
            if key not in known[name]:
                raise ConfigError(
                    f"{where}: unknown setting {name}.{key}{did_you_mean(key, known[name])}"
                )


def deployment_from_dict(data: dict[str, Any], path: Path | None = None) -> Deployment:
    """Check every table of *data* (the parsed file at *path*) and build the Deployment."""
    from natsync.ddns.settings import load_ddns_table, load_portmap_table
    from natsync.edge.config import edge_config_from_dict

    where = str(path) if path is not None else "configuration"
    base = path.parent if path is not None else None
    _refuse_unknown(data, where)
    try:
        server_table = dict(data.get("server", {}))
        # The data directory (store, CA, state) sits beside the file unless named.
        server_table.setdefault("data_dir", "natsync-data")
        server = server_config_from_dict(server_table, base=base)
        edge = None
        if "edge" in data:
            edge = edge_config_from_dict(data["edge"], base=base, server=data.get("server", {}))
        ddns = load_ddns_table(data, base) if "ddns" in data else None
        portmap = load_portmap_table(data, base) if "portmap" in data else None
        cert = _simple_table(CertSettings, "cert", data["cert"], base) if "cert" in data else None
        # [relay] (a public relay's own file) and [tunnel] (the home's way to it): checked
        # here, run by `natsync relay run` / `natsync relay dial` (docs/relay.md).
        from natsync.relay.settings import home_tunnel_settings, relay_settings

        if "relay" in data:
            relay_settings(data["relay"], base or Path())
        if "tunnel" in data:
            home_tunnel_settings(data["tunnel"], base or Path())
        # [sources] (IMAP and CalDAV/CardDAV mirrors): the server part runs them.
        from natsync.sources.config import sources_from_dict
        from natsync.sources.dav import dav_settings

        sources = sources_from_dict(data.get("sources"), base=base)
        dav = dav_settings(data, base or Path())
        if "console" in data and path is not None:
            # [console] (the admin's web console, `natsync console -c`): checked here.
            from natsync.console.settings import load_settings

            load_settings(path)
        admin = _simple_table(AdminSettings, "admin", data.get("admin", {}), base)
        run = _simple_table(RunSettings, "run", data.get("run", {}), base)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return Deployment(
        path, server, edge, ddns, portmap, cert, admin, run, dict(data), sources=sources, dav=dav
    )


def load_deployment(path: Path | str | None) -> Deployment:
    """Read and check the deployment file at *path* (None: -c/NATSYNC_CONFIG/default places,
    see :func:`resolve_config_path`). Raises ConfigError naming file, table and key."""
    resolved = resolve_config_path(path)
    return deployment_from_dict(read_toml(resolved), resolved)


def resolve_config_path(path: Path | str | None) -> Path:
    """The file to read: *path*, else $NATSYNC_CONFIG, else /etc/natsync/natsync.toml, else
    ./natsync.toml; ConfigError saying how to make one when there is none."""
    import os

    if path is not None and str(path):
        return Path(path)
    env = os.environ.get(CONFIG_ENV, "")
    if env:
        return Path(env)
    for candidate in (SYSTEM_CONFIG, LOCAL_CONFIG):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no configuration file: pass -c FILE, set {CONFIG_ENV}, or write one with "
        "`natsync init NAME` (it writes ./natsync.toml, or /etc/natsync/natsync.toml as root)"
    )


def config_option(
    help: str = "Deployment file (natsync.toml; env NATSYNC_CONFIG).",
    dest: str = "config_path",
) -> Callable[[_F], _F]:
    """The ``-c/--config FILE`` option every command shares (also read from NATSYNC_CONFIG).

    The value is a Path or None; commands that need the file call :func:`load_deployment`
    with it (None then finds the default places), commands with embedded defaults read their
    tables only when a file was named."""
    import click

    return click.option(
        "-c",
        "--config",
        dest,
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        default=None,
        help=help,
    )
