"""The ``[ddns]`` and ``[portmap]`` tables of the deployment's TOML file.

``natsync.config`` reads ``[server]``; these two tables are read here, from the same file, so
the parts stay independent. Relative paths are taken from the file's directory. The history
database is ``<data_dir>/ddns.db``, where data_dir is ``[ddns].data_dir``, else
``[server].data_dir``, else ``natsync-data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from natsync.config import port_of, read_toml
from natsync.ddns.provider_settings import (
    PROVIDERS,
    ProviderSettings,
    parse_provider,
)
from natsync.ddns.sources import Source
from natsync.errors import ConfigError

#: RFC 2136 records we publish live this long in caches: short, so a phone that cached the old
#: address asks again within a minute of a change.
DEFAULT_TTL = 60
#: How often the loop looks at the address: a change is published within this many seconds.
DEFAULT_INTERVAL = 30.0
#: DNS timeout per query or update.
DEFAULT_DNS_TIMEOUT = 3.0
#: PCP is not among the defaults: it learns the address by creating (and at once deleting) a
#: mapping on the router at every check, and a router that speaks PCP answers NAT-PMP's plain
#: address request on the same port too. List "pcp" for a router that speaks PCP only.
DEFAULT_SOURCES = (Source.NATPMP, Source.UPNP, Source.STUN, Source.INTERFACE, Source.ECHO)
#: Seconds to wait, after a provider accepted an update, for its authoritative servers (or its
#: API) to serve the new record: providers push to their anycast servers within seconds.
DEFAULT_CONFIRM_TIMEOUT = 60.0
#: Cloudflare API v4 dns_records ttl: 1 means "automatic", else 60..86400 seconds
#: (developers.cloudflare.com/api, DNS Records for a Zone, field ``ttl``).
CLOUDFLARE_TTL_AUTO = 1
CLOUDFLARE_TTL_RANGE = (60, 86400)


@dataclass(frozen=True, slots=True)
class DdnsSettings:
    #: Authoritative server to send updates to and to confirm against ("host" or "host:port").
    server: str = ""
    zone: str = ""
    #: Names whose A/AAAA records follow the public address (include the MX target).
    names: tuple[str, ...] = ()
    key_file: Path | None = None
    ttl: int = DEFAULT_TTL
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_DNS_TIMEOUT
    sources: tuple[Source, ...] = DEFAULT_SOURCES
    families: tuple[int, ...] = (4, 6)
    stun_servers: tuple[str, ...] = ()
    echo_urls: tuple[str, ...] = ()
    interface: str = ""
    #: Router address for NAT-PMP and PCP (empty: the default gateway).
    router: str = ""
    #: UPnP description URL (empty: SSDP discovery).
    upnp_location: str = ""
    #: Domain whose MX target must be one of ``names`` (checked by status).
    mx_domain: str = ""
    data_dir: Path = Path("natsync-data")
    #: Who keeps the records: rfc2136 (server/zone/key_file above), dyndns2, duckdns,
    #: cloudflare, desec or command (each configured in its own [ddns.<provider>] table).
    provider: str = "rfc2136"
    #: Authoritative servers ("host" or "host:port") to confirm at; empty: the zone's NS records.
    confirm_servers: tuple[str, ...] = ()
    #: Resolver ("host" or "host:port") for the NS lookup; empty: the system's.
    resolver: str = ""
    confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT
    #: The provider tables found in the file, (provider, settings).
    tables: tuple[tuple[str, ProviderSettings], ...] = ()
    #: The relay's public addresses or its own name, for the ``relay`` source (docs/relay.md);
    #: empty: the host of ``[tunnel] relay_endpoint`` of the same file.
    relay: tuple[str, ...] = ()

    def provider_settings(self, provider: str | None = None) -> ProviderSettings:
        """The ``[ddns.<provider>]`` table of *provider* (default: the configured one)."""
        provider = provider or self.provider
        for name, table in self.tables:
            if name == provider:
                return table
        raise ConfigError(
            f"ddns.provider is {provider}, but the file has no [ddns.{provider}] table"
        )

    @property
    def history_path(self) -> Path:
        return self.data_dir / "ddns.db"

    @property
    def server_host(self) -> str:
        host, _, _ = _split_host_port(self.server)
        return host

    @property
    def server_port(self) -> int:
        return _split_host_port(self.server)[2]

    def __post_init__(self) -> None:
        if self.ttl < 1:
            raise ConfigError(f"ddns.ttl must be >= 1 second, not {self.ttl}")
        if self.interval <= 0:
            raise ConfigError(f"ddns.interval must be > 0 seconds, not {self.interval}")
        if self.timeout <= 0:
            raise ConfigError("ddns.timeout must be > 0 seconds")
        if not set(self.families) <= {4, 6} or not self.families:
            raise ConfigError("ddns.families must list 4 and/or 6")
        zone = self.zone.rstrip(".").lower()
        for name in self.names:
            n = name.rstrip(".").lower()
            if zone and n != zone and not n.endswith("." + zone):
                raise ConfigError(f"ddns.names: {name} is not inside ddns.zone {self.zone}")
        if self.server:
            _split_host_port(self.server)
        for text in (*self.confirm_servers, *((self.resolver,) if self.resolver else ())):
            _split_host_port(text, "ddns.confirm_servers / ddns.resolver")
        for text in self.stun_servers:
            _split_host_port(text, "ddns.stun_servers")
        if self.confirm_timeout <= 0:
            raise ConfigError("ddns.confirm_timeout must be > 0 seconds")
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"ddns.provider must be one of {', '.join(PROVIDERS)}, not {self.provider!r}"
            )
        if self.provider != "rfc2136":
            self.provider_settings()
        self.check_provider(self.provider)
        self._check_relay()

    def _check_relay(self) -> None:
        if Source.RELAY not in self.sources:
            return
        if not self.relay:
            raise ConfigError(
                'ddns.sources has "relay" but the relay is not known: add a [tunnel] table '
                '(natsync relay init prints it) or ddns.relay = ["<the relay\'s address>"]'
            )
        names = {n.rstrip(".").lower() for n in self.names}
        for relay in self.relay:
            if relay.rstrip(".").lower() in names:
                raise ConfigError(
                    f"the relay is named {relay}, a name ddns itself publishes: its address "
                    "would only ever be what DNS says already. Name the relay by its own name "
                    "or address (ddns.relay, or [tunnel] relay_endpoint)"
                )

    def check_provider(self, provider: str) -> None:
        """What the provider itself demands of the common keys (names, ttl)."""
        if provider == "cloudflare":
            low, high = CLOUDFLARE_TTL_RANGE
            if self.ttl != CLOUDFLARE_TTL_AUTO and not low <= self.ttl <= high:
                raise ConfigError(
                    f"ddns.ttl {self.ttl}: Cloudflare takes 1 (automatic) or {low}..{high} seconds"
                )
        if provider == "duckdns":
            for name in self.names:
                if not name.rstrip(".").lower().endswith(".duckdns.org"):
                    raise ConfigError(f"ddns.names: {name} is not a duckdns.org name")
        for name in self.names:
            if "." not in name.strip("."):
                raise ConfigError(f"ddns.names: {name} is not a fully qualified name")

    def require_dns(self) -> None:
        """Raise ConfigError unless the settings needed to update DNS are present."""
        missing = [k for k in ("server", "zone") if not getattr(self, k)]
        if not self.names:
            missing.append("names")
        if missing:
            raise ConfigError(f"ddns needs {', '.join('ddns.' + m for m in missing)} to update DNS")


def _split_host_port(text: str, key: str = "ddns.server") -> tuple[str, str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    if not (port.isascii() and port.isdigit()):
        raise ConfigError(f"{key} {text!r}: port is not a number")
    number = port_of(port)
    if not number:
        raise ConfigError(f"{key} {text!r}: port out of range")
    return host, "", number


@dataclass(frozen=True, slots=True)
class PortmapSettings:
    method: str = "auto"
    #: Ports to map, "EXTERNAL[:INTERNAL][/tcp|udp]" (e.g. "443:8443/tcp", "25/tcp").
    mappings: tuple[str, ...] = ()
    lifetime: int = 3600
    router: str = ""
    upnp_location: str = ""
    data_dir: Path = field(default=Path("natsync-data"))
    #: IPv6 pinholes beside the IPv4 mapping: "off", "auto", "upnp6" or "pcp6"
    #: (natsync.portmap.holder; docs/ipv6.md).
    ipv6: str = "off"

    def __post_init__(self) -> None:
        from natsync.portmap.errors import PortMapError
        from natsync.portmap.holder import IPV6_METHODS, IPV6_WAYS
        from natsync.portmap.manager import METHODS, MappingSpec

        if self.method not in METHODS:
            raise ConfigError(
                f"portmap.method must be one of {', '.join(METHODS)}, not {self.method!r}"
            )
        if self.ipv6 not in IPV6_WAYS:
            raise ConfigError(
                f"portmap.ipv6 must be one of {', '.join(IPV6_WAYS)}, not {self.ipv6!r}"
            )
        if self.ipv6 != "off" and self.method in IPV6_METHODS:
            raise ConfigError(
                f'portmap.method = "{self.method}" opens IPv6 only; for both families set '
                f'method to the IPv4 way (e.g. "auto") and ipv6 = "{self.method}"'
            )
        if self.lifetime < 0:
            raise ConfigError("portmap.lifetime must be >= 0 (0: until removed)")

        for text in self.mappings:
            try:
                MappingSpec.parse(text)
            except PortMapError as exc:
                raise ConfigError(f"portmap.mappings: {exc.message}") from exc


def _convert(section: str, key: str, default: Any, value: Any, base: Path | None) -> Any:
    where = f"{section}.{key}"
    if key == "tables":
        return value
    if key in ("key_file", "data_dir"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path")
        path = Path(value)
        return path if path.is_absolute() or base is None else base / path
    if key == "sources":
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        try:
            return tuple(Source(v) for v in value)
        except ValueError:
            choices = ", ".join(s.value for s in Source)
            raise ConfigError(f"{where} entries must be among: {choices}") from None
    if key == "families":
        if not isinstance(value, list) or not all(v in (4, 6) for v in value):
            raise ConfigError(f"{where} must be a list of 4 and/or 6")
        return tuple(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        return float(value)
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def _from_table(
    cls: Any, section: str, table: dict[str, Any], base: Path | None, data_dir: Path
) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}")
    defaults = cls(data_dir=data_dir)
    values = {k: _convert(section, k, getattr(defaults, k), v, base) for k, v in table.items()}
    return replace(defaults, **values)


def _read(path: Path | str | None) -> tuple[dict[str, Any], Path | None]:
    if path is None:
        return {}, None
    path = Path(path)
    return read_toml(path), path.parent


def _data_dir(data: dict[str, Any], base: Path | None) -> Path:
    server = data.get("server", {})
    value = server.get("data_dir") if isinstance(server, dict) else None
    path = Path(value) if isinstance(value, str) and value else Path("natsync-data")
    return path if path.is_absolute() or base is None else base / path


def split_host_port(text: str) -> tuple[str, int]:
    """ "host", "host:port" or "[v6]:port" as (host, port); port 53 when not given."""
    host, _, port = _split_host_port(text, "address")
    return host, port


def load_ddns(path: Path | str | None) -> DdnsSettings:
    data, base = _read(path)
    return load_ddns_table(data, base)


def load_ddns_table(data: dict[str, Any], base: Path | None) -> DdnsSettings:
    """The ``[ddns]`` table of the parsed deployment file *data* (natsync.config's loader)."""
    table = data.get("ddns", {})
    if not isinstance(table, dict):
        raise ConfigError("[ddns] must be a table")
    table = dict(table)
    tables = tuple(
        (name, parse_provider(name, table.pop(name), base))
        for name in PROVIDERS
        if name != "rfc2136" and name in table
    )
    if "tables" in table:
        raise ConfigError("unknown ddns setting(s): tables")
    table["tables"] = tables
    tunnel = data.get("tunnel")
    if isinstance(tunnel, dict) and isinstance(tunnel.get("relay_endpoint"), str):
        # behind a relay: DNS names the relay, not the home (docs/relay.md)
        table.setdefault("relay", [tunnel["relay_endpoint"].rpartition(":")[0].strip("[]")])
        table.setdefault("sources", [Source.RELAY.value])
    result: DdnsSettings = _from_table(DdnsSettings, "ddns", table, base, _data_dir(data, base))
    return result


def load_portmap(path: Path | str | None) -> PortmapSettings:
    data, base = _read(path)
    return load_portmap_table(data, base)


def load_portmap_table(data: dict[str, Any], base: Path | None) -> PortmapSettings:
    """The ``[portmap]`` table of the parsed deployment file *data*."""
    table = data.get("portmap", {})
    if not isinstance(table, dict):
        raise ConfigError("[portmap] must be a table")
    result: PortmapSettings = _from_table(
        PortmapSettings, "portmap", table, base, _data_dir(data, base)
    )
    return result
