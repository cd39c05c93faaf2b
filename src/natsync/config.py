"""One TOML file describes a deployment; this module reads it into typed, checked settings.

Every value has an embedded default, so ``natsync server`` runs with no file at all. A value
that cannot work (a port out of range, a heartbeat minimum above its maximum, a TLS certificate
without its key) raises :class:`natsync.errors.ConfigError` naming the setting, at load time,
not at the first request.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from natsync.base.provision import check_overrides
from natsync.errors import ConfigError

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

#: Failed logins allowed per (user, client address) and per client address before the server
#: answers 429 without checking the password, with locks doubling from 1 s (slows password
#: guessing to a crawl; never per user alone, so a guesser cannot lock the owner out).
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
    #: STARTTLS to the smarthost: "auto" (required, opportunistic on loopback), "required",
    #: "opportunistic" or "off"; its certificate is verified against smarthost_ca or the
    #: system's CAs (natsync.mail.relay.SmartHost.from_setting).
    smarthost_starttls: str = "auto"
    smarthost_ca: Path | None = None
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
    #: SMTP in: connections per client address, and in all (0: 1/8 of the open-files limit).
    smtp_max_connections_per_ip: int = 20
    smtp_max_connections: int = 0
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    #: Seconds from a request head's first byte to its end, and that a body may go without a
    #: byte, before 408 (slow clients; natsync.server.front).
    header_timeout: float = 30.0
    body_timeout: float = 60.0
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
    #: Overrides of EASProvisionDoc settings by name (natsync.base.provision names them).
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

    def __post_init__(self) -> None:
        """A value that cannot work is refused here, when the settings are made (ConfigError)."""
        _check_store(self.store)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be 0..65535, not {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        if self.max_request_body < 1024:
            raise ConfigError("server.max_request_body must be at least 1024 bytes")
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ConfigError("server.header_timeout and server.body_timeout must be > 0")
        if self.smarthost_starttls not in ("auto", "required", "opportunistic", "off"):
            raise ConfigError(
                "server.smarthost_starttls must be auto, required, opportunistic or off"
            )
        if self.smtp_max_connections_per_ip < 1 or self.smtp_max_connections < 0:
            raise ConfigError(
                "server.smtp_max_connections_per_ip must be >= 1 and "
                "server.smtp_max_connections >= 0 (0: a share of the open-files limit)"
            )
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
            if value and (not host or port_of(port) is None):
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
        check_overrides(self.policy)


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


_PATH_KEYS = {"tls_cert", "tls_key", "data_dir", "smarthost_ca"}


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
    return replace(defaults, **values)


def port_of(text: str) -> int | None:
    """*text* as a port number (0-65535), or None. Only ASCII digits count: str.isdigit is also
    true of "²", which int() refuses, and of thousands of digits, which int() refuses too."""
    if not (text.isascii() and text.isdigit() and len(text) <= len("65535")):
        return None
    port = int(text)
    return port if port <= 65535 else None


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
        return ServerConfig()
    path = Path(path)
    data = read_toml(path)
    table = data.get("server", {})
    if not isinstance(table, dict):
        raise ConfigError("[server] must be a table")
    return server_config_from_dict(table, base=path.parent)
