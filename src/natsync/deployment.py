"""The whole deployment file: one TOML file, one table per part, checked as one.

Each part validates its own table (natsync.config for [server], natsync.edge.config for
[edge], natsync.ddns.settings for [ddns]/[portmap], natsync.relay.settings for [relay]/[tunnel],
natsync.sources for [sources], natsync.console.settings for [console], below for [cert],
[admin] and [run]); this loader refuses unknown tables and keys with a "did you mean" hint and
names the file in every message. Every command's ``-c/--config`` (and NATSYNC_CONFIG) is
:func:`config_option`; `natsync run`, `check` and the commands that read a deployment call
:func:`load_deployment`. (Apart from natsync.config so that the parts' settings modules,
which import natsync.config, are not imported by it: no import circle.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from natsync.config import (
    ServerConfig,
    port_of,
    read_toml,
    scalar_setting,
    server_config_from_dict,
)
from natsync.errors import ConfigError

if TYPE_CHECKING:
    from natsync.cert.settings import CertSettings

_F = TypeVar("_F", bound=Callable[..., Any])

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


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """``[admin]``: the operator's side: where health and metrics of the whole deployment are
    served (never publish it), and who to tell."""

    #: /healthz (self-check verdict, parts' states) and /metrics of the supervisor; "" = none.
    listen: str = "127.0.0.1:9190"
    #: The operator's address (ACME account contact, DMARC reports in the printed records).
    email: str = ""

    def __post_init__(self) -> None:
        if self.listen:
            _check_hostport(self.listen, "admin.listen")
        if self.email and "@" not in self.email:
            raise ConfigError(f"admin.email must be an address, not {self.email!r}")


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

    def __post_init__(self) -> None:
        if not 1 <= self.server_processes <= MAX_SERVER_PROCESSES:
            raise ConfigError(f"run.server_processes must be 1..{MAX_SERVER_PROCESSES}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"run.log_format must be text or json, not {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"run.log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 < self.restart_backoff <= self.restart_backoff_max:
            raise ConfigError("run.restart_backoff must be > 0 and <= run.restart_backoff_max")


def _check_hostport(value: str, setting: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or port_of(port) is None:
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
        else:
            values[key] = scalar_setting(section, key, default, value)
    return replace(defaults, **values)


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
    from natsync.cert.settings import CERT_KEYS
    from natsync.console.settings import CONSOLE_KEYS
    from natsync.ddns.provider_settings import PROVIDERS
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
        # [ddns.<provider>] tables (dyndns2, cloudflare ...) sit inside [ddns].
        "ddns": {f.name for f in fields(DdnsSettings)} - {"tables"} | set(PROVIDERS),
        "portmap": {f.name for f in fields(PortmapSettings)},
        "cert": set(CERT_KEYS),
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
        cert = None
        if "cert" in data:  # [cert]: one parser for natsync run and natsync cert (docs/cert.md)
            from natsync.cert.settings import check_with_ddns, parse_cert_table

            cert = parse_cert_table(data["cert"], base)
            check_with_ddns(cert, ddns)
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
