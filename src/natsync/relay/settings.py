"""The relay's two tables: ``[relay]`` on the public server, ``[tunnel]`` in the home's file.

The relay (a small VPS with a public address) listens on the published ports and on WireGuard's
UDP port; the home dials out to it. Both ends' tables are written by ``natsync relay init`` on
the VPS, which prints the home's part to paste. Each table is checked when it is read: unknown
keys, wrong types and unreadable key files are one clear line, never a traceback.

```toml
# relay.toml, on the VPS
[relay]
listen = ["0.0.0.0"]                # public addresses phones and mail servers reach
https_port = 443
smtp_port = 25
tunnel_port = 51820                 # UDP, WireGuard
private_key_file = "relay.key"      # 0600, written by `natsync relay init`
home_public_key = "..."
tunnel_address = "10.77.0.1/30"     # the relay's end of the tunnel
home_address = "10.77.0.2"          # the home's end
home_https_port = 8443              # the home edge's relayed_listen port
home_smtp_port = 2525               # the home server's SMTP, accepting PROXY from the relay
max_connections_per_address = 20
heartbeat_max = 3540                # the home's [server] heartbeat_max: sets the idle timeouts

# natsync.toml, at home
[tunnel]
relay_endpoint = "relay.example.net:51820"
relay_public_key = "..."
private_key_file = "tunnel.key"     # 0600
address = "10.77.0.2/30"
relay_address = "10.77.0.1"
```
"""

from __future__ import annotations

import ipaddress
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from natsync.config import DEFAULT_HEARTBEAT_MAX, port_of, read_toml, scalar_setting
from natsync.edge.config import held_request_timeout
from natsync.errors import ConfigError
from natsync.relay.wireguard import (
    DEFAULT_KEEPALIVE,
    DEFAULT_LISTEN_PORT,
    Peer,
    TunnelSpec,
    check_key,
    read_private_key,
)

#: The tunnel's interface name at both ends (one tunnel per machine is the common case).
DEFAULT_INTERFACE = "natsync0"
#: A /30 in the private range for the two tunnel ends; it exists only inside the tunnel.
DEFAULT_RELAY_TUNNEL = "10.77.0.1/30"
DEFAULT_HOME_TUNNEL = "10.77.0.2/30"
#: The home edge's relayed listener and the home server's SMTP port reached through the tunnel.
DEFAULT_HOME_HTTPS_PORT = 8443
DEFAULT_HOME_SMTP_PORT = 2525
#: Connections one client address may hold through the relay (a phone holds 2-3; a mail server
#: a few); past this the relay refuses, so one address cannot take the home's capacity.
DEFAULT_MAX_PER_ADDRESS = 20
#: Seconds an SMTP connection through the relay may carry nothing: a sending server waits up to
#: 10 minutes for the reply to the end of DATA (RFC 5321 section 4.5.3.2.6), the longest wait
#: SMTP allows; the relay cuts no SMTP session before that, whatever the heartbeat.
SMTP_IDLE_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The ``[relay]`` table (the public server)."""

    home_public_key: str
    private_key_file: Path
    listen: tuple[str, ...] = ("0.0.0.0",)  # noqa: S104 - a relay is public by design
    https_port: int = 443
    smtp_port: int = 25
    tunnel_port: int = DEFAULT_LISTEN_PORT
    tunnel_interface: str = DEFAULT_INTERFACE
    tunnel_address: str = DEFAULT_RELAY_TUNNEL
    home_address: str = str(ipaddress.ip_interface(DEFAULT_HOME_TUNNEL).ip)
    home_https_port: int = DEFAULT_HOME_HTTPS_PORT
    home_smtp_port: int = DEFAULT_HOME_SMTP_PORT
    max_connections_per_address: int = DEFAULT_MAX_PER_ADDRESS
    #: The largest Ping heartbeat the home server publishes ([server] heartbeat_max at home):
    #: the relay's idle timeouts follow it, as the home edge's do.
    heartbeat_max: int = DEFAULT_HEARTBEAT_MAX

    def __post_init__(self) -> None:
        check_key(self.home_public_key, "relay.home_public_key")
        if self.heartbeat_max < 1:
            raise ConfigError(
                "relay.heartbeat_max must be >= 1 (the home's [server] heartbeat_max, seconds)"
            )
        for name in ("https_port", "smtp_port", "home_https_port", "home_smtp_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"relay.{name} must be 0..65535")
        if not 1 <= self.tunnel_port <= 65535:
            raise ConfigError("relay.tunnel_port must be 1..65535")
        if self.max_connections_per_address < 1:
            raise ConfigError("relay.max_connections_per_address must be >= 1")
        _address(self.home_address, "relay.home_address")
        for address in self.listen:
            _address(address, "relay.listen")

    @property
    def idle_timeout(self) -> float:
        """Seconds a phone's connection may carry no byte before the relay cuts it: the home
        edge's own derivation from the heartbeat (a held Ping is silent for at most the
        heartbeat, then answered), so a held Ping is never cut and an abandoned one is."""
        return held_request_timeout(self.heartbeat_max)

    @property
    def smtp_idle_timeout(self) -> float:
        return max(self.idle_timeout, SMTP_IDLE_TIMEOUT)

    def tunnel(self) -> TunnelSpec:
        """The relay's end of the tunnel (reads the private key file, refusing an open one)."""
        home = ipaddress.ip_address(self.home_address)
        return TunnelSpec(
            interface=self.tunnel_interface,
            private_key=read_private_key(self.private_key_file),
            address=self.tunnel_address,
            peer=Peer(self.home_public_key, (f"{home}/{home.max_prefixlen}",)),
            listen_port=self.tunnel_port,
        )


@dataclass(frozen=True, slots=True)
class HomeTunnelSettings:
    """The ``[tunnel]`` table (the home end, which dials out to the relay)."""

    relay_endpoint: str
    relay_public_key: str
    private_key_file: Path
    address: str = DEFAULT_HOME_TUNNEL
    relay_address: str = str(ipaddress.ip_interface(DEFAULT_RELAY_TUNNEL).ip)
    interface: str = DEFAULT_INTERFACE
    keepalive: int = DEFAULT_KEEPALIVE

    def __post_init__(self) -> None:
        check_key(self.relay_public_key, "tunnel.relay_public_key")
        host, sep, port = self.relay_endpoint.rpartition(":")
        if not sep or not host or port_of(port) is None:
            raise ConfigError(
                f"tunnel.relay_endpoint must be host:port (the relay's UDP port), "
                f"not {self.relay_endpoint!r}"
            )
        _address(self.relay_address, "tunnel.relay_address")
        if not 1 <= self.keepalive <= 120:
            raise ConfigError(
                "tunnel.keepalive must be 1..120 s (shorter than the NAT's UDP idle timeout)"
            )

    def tunnel(self) -> TunnelSpec:
        relay = ipaddress.ip_address(self.relay_address)
        return TunnelSpec(
            interface=self.interface,
            private_key=read_private_key(self.private_key_file),
            address=self.address,
            peer=Peer(
                self.relay_public_key,
                (f"{relay}/{relay.max_prefixlen}",),
                endpoint=self.relay_endpoint,
                keepalive=self.keepalive,
            ),
        )


def _address(value: str, key: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from exc


def _from_table(
    cls: type[Any], section: str, table: dict[str, Any], base: Path, required: tuple[str, ...]
) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {section} setting(s): {', '.join(unknown)} (known: {', '.join(known)})"
        )
    missing = [key for key in required if key not in table]
    if missing:
        raise ConfigError(
            f"[{section}] needs {', '.join(missing)} (written by `natsync relay init`)"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "private_key_file":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{section}.private_key_file must be a path")
            path = Path(value)
            values[key] = path if path.is_absolute() else base / path
        elif key == "listen":
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(f'{section}.listen must be a list of addresses ("0.0.0.0")')
            values[key] = tuple(value)
        else:
            default = known[key].default
            values[key] = scalar_setting(section, key, "" if default is MISSING else default, value)
    return cls(**values)


def relay_settings(table: dict[str, Any], base: Path) -> RelaySettings:
    settings = _from_table(
        RelaySettings, "relay", table, base, ("home_public_key", "private_key_file")
    )
    assert isinstance(settings, RelaySettings)
    return settings


def home_tunnel_settings(table: dict[str, Any], base: Path) -> HomeTunnelSettings:
    settings = _from_table(
        HomeTunnelSettings,
        "tunnel",
        table,
        base,
        ("relay_endpoint", "relay_public_key", "private_key_file"),
    )
    assert isinstance(settings, HomeTunnelSettings)
    return settings


def load_table(path: Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of the TOML file at *path*; ConfigError when it is not there."""
    data = read_toml(path)
    table = data.get(section)
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [{section}] table (write one with `natsync relay init`)")
    return table
