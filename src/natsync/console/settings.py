"""The console's settings: the ``[console]`` table of the deployment file, or a data directory.

The console listens on its own address, loopback by default: an admin reaches it by an SSH
tunnel (docs/console.md), or from the LAN when ``console.host`` says so. The edge publishes it
only when the admin says so: ``console.publish`` names the address the edge listens on for it
(e.g. ``0.0.0.0:8445``); under ``natsync run`` the edge then forwards that port, with a PROXY v2
header naming the client, to the console's second listener on loopback (``publish_port``), and
TLS ends at the console (its own certificate: required when published).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from natsync.config import (
    DEFAULT_HEARTBEAT_MAX,
    load_config,
    port_of,
    read_toml,
    scalar_setting,
)
from natsync.errors import ConfigError

#: The console's port unless told: beside the server's 8443, not a well-known one.
DEFAULT_PORT = 8444
#: Seconds a console session lasts without a request (an admin's sitting), and at most.
SESSION_IDLE = 30 * 60
SESSION_MAX = 12 * 3600
#: Seconds the console's doctor holds its Ping (the doctor's --quick).
DOCTOR_HEARTBEAT = 60
#: Where the admin credential lives under the data directory (``natsync console passwd``).
ADMIN_HASH_FILE = Path("console") / "admin.hash"


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    data_dir: Path
    #: The store, as server.store names it (a path or a URL).
    store_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    admin_user: str = "admin"
    #: The admin's password hash (natsync.auth.passwords); "" reads DATA_DIR/console/admin.hash.
    password_hash: str = ""
    #: The server's Prometheus /metrics URL (natsync run), "" to chart what the store records.
    metrics_url: str = ""
    #: The URL phones use, for "run the doctor now" ("" : the server's own address).
    doctor_url: str = ""
    #: The name phones connect to (server.public_name): the phone setup profiles need it.
    public_name: str = ""
    #: The deployment file, for the doctor's inside-out checks (None: outside checks only).
    config_path: Path | None = None
    #: Seconds the doctor's Direct Push check holds its Ping (0 skips that check).
    doctor_heartbeat: int = DOCTOR_HEARTBEAT
    #: The CA the doctor trusts besides the system's (natsync's own, for a private-CA
    #: certificate: what the phones were given); None: the system's roots only.
    doctor_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Names (besides addresses and localhost) the console may be reached by, e.g. its LAN name.
    allowed_hosts: tuple[str, ...] = ()
    session_idle: int = SESSION_IDLE
    session_max: int = SESSION_MAX
    #: The edge's settings as natsync run gives them to its edge (natsync.run.derive.edge_for),
    #: for the doctor's inside-out check of its backends; None: [edge] of the file alone.
    doctor_edge: Any = None
    #: Where the edge listens for the console ("" : never published, the default).
    publish: str = ""
    #: The console's loopback port for the edge's forward (PROXY v2 first); 0: port + 1.
    publish_port: int = 0

    @property
    def published_port(self) -> int:
        """The loopback port the edge forwards the published console to."""
        return self.publish_port or self.port + 1

    @property
    def hash_path(self) -> Path:
        return self.data_dir / ADMIN_HASH_FILE

    @property
    def doctor_dir(self) -> Path:
        return self.data_dir / "doctor"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "console" / "audit.log"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def admin_hash(self) -> str:
        """The admin's password hash: the setting, else the file ``console passwd`` wrote."""
        if self.password_hash:
            return self.password_hash
        try:
            return self.hash_path.read_text(encoding="ascii").strip()
        except OSError:
            return ""


_KEYS = {
    "host",
    "port",
    "admin_user",
    "password_hash",
    "metrics_url",
    "doctor_url",
    "doctor_heartbeat",
    "public_name",
    "publish",
    "publish_port",
}
_PATHS = {"tls_cert", "tls_key"}
_LISTS = {"allowed_hosts"}
#: Every key of [console] (natsync.config names the others unknown, with a suggestion).
CONSOLE_KEYS = frozenset(_KEYS | _PATHS | _LISTS)


def settings_from_data_dir(data_dir: Path, store: str = "") -> ConsoleSettings:
    from natsync.store import store_path

    return ConsoleSettings(data_dir=data_dir, store_url=store or str(store_path(data_dir)))


def load_settings(path: Path) -> ConsoleSettings:
    """The ``[console]`` table of *path*, with the server's data directory and store."""
    server = load_config(path)
    table: Any = read_toml(path).get("console", {})
    if not isinstance(table, dict):
        raise ConfigError("[console] must be a table")
    unknown = set(table) - _KEYS - _PATHS - _LISTS
    if unknown:
        raise ConfigError(f"unknown console setting(s): {', '.join(sorted(unknown))}")
    base = ConsoleSettings(
        data_dir=server.data_dir,
        store_url=server.store_url,
        config_path=path,
        doctor_url=f"https://{server.public_name}" if server.public_name else "",
        public_name=server.public_name,
    )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "allowed_hosts":
            if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
                raise ConfigError("console.allowed_hosts must be a list of host names")
            values[key] = tuple(h.lower() for h in value)
        elif key in _PATHS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"console.{key} must be a path")
            values[key] = Path(value) if Path(value).is_absolute() else path.parent / value
        else:
            values[key] = scalar_setting("console", key, getattr(base, key), value)
    settings = replace(base, **values)
    beat, most = settings.doctor_heartbeat, DEFAULT_HEARTBEAT_MAX
    if not 0 <= beat <= most:  # 0: no Direct Push check
        raise ConfigError(f"console.doctor_heartbeat must be 0..{most}, not {beat}")
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"console.port must be 0..65535, not {settings.port}")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("console.tls_cert and console.tls_key must be given together")
    if settings.publish:
        return _published(settings)
    return settings


def _published(settings: ConsoleSettings) -> ConsoleSettings:
    """Check a published console's settings; its public name is a host it answers to."""
    host, colon, port = settings.publish.rpartition(":")
    if not colon or not host.strip("[]") or not port_of(port):
        raise ConfigError(f"console.publish must be host:port, not {settings.publish!r}")
    if not settings.tls:
        raise ConfigError(
            "console.publish needs the console's own TLS: set console.tls_cert and "
            "console.tls_key (e.g. the files of the certificate phones see), or remove "
            "console.publish and reach the console by an SSH tunnel"
        )
    if not 0 < settings.published_port <= 65535 or settings.published_port == settings.port:
        raise ConfigError(
            f"console.publish_port must be 1..65535 and not console.port, "
            f"not {settings.published_port}"
        )
    hosts = settings.allowed_hosts
    if settings.public_name and settings.public_name.lower() not in hosts:
        hosts = (*hosts, settings.public_name.lower())
    return replace(settings, allowed_hosts=hosts)


__all__ = ["ConsoleSettings", "load_settings", "settings_from_data_dir"]
