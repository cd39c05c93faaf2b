"""Running the two ends: the relay on the public server, and the home's dial-out.

The relay forwards bytes and nothing else: each TCP connection to a published port is passed
through the tunnel to the home, opened by a PROXY v2 header naming the client (the edge's own
forwarder, natsync.edge.forward, with a per-address limit). TLS ends at home, so the relay never
holds a certificate, a password or a mail. Held Pings pass as long-lived byte pipes: a
connection is cut once it carried nothing either way for the heartbeat the home publishes plus
the home edge's margin (the edge's own derivation, from ``[relay] heartbeat_max``), so a held
Ping, silent for at most the heartbeat, is never cut, and a connection a phone abandoned does
not stay forever. SMTP connections get at least SMTP's own longest wait.

The home end brings its side of the tunnel up and keeps it up: if wireguard-go ends, it is
started again with backoff; WireGuard itself re-handshakes after any outage on the path, and
the keepalive reopens the NAT's UDP mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from natsync.config import DEFAULT_HEARTBEAT_MAX
from natsync.edge.config import Forward
from natsync.edge.forward import Forwarder
from natsync.edge.metrics import Metrics
from natsync.relay.settings import DEFAULT_INTERFACE, HomeTunnelSettings, RelaySettings
from natsync.relay.wireguard import (
    Peer,
    Tunnel,
    TunnelError,
    TunnelSpec,
    generate_private_key,
    public_key,
)

log = logging.getLogger("natsync.relay")

#: Backoff between restarts of a tunnel process that ended: first, growth, ceiling (seconds).
RESTART_FIRST = 1.0
RESTART_FACTOR = 2.0
RESTART_MAX = 60.0


def restart_delay(failures: int) -> float:
    """Seconds to wait before the next start after *failures* consecutive failures."""
    if failures <= 0:
        return 0.0
    return float(min(RESTART_MAX, RESTART_FIRST * RESTART_FACTOR ** (failures - 1)))


@dataclass(slots=True)
class RunningRelay:
    tunnel: Tunnel
    forwarders: list[Forwarder]
    ports: list[int]

    async def close(self) -> None:
        for forwarder in self.forwarders:
            await forwarder.close()
        await self.tunnel.down()


def relay_forwarders(settings: RelaySettings, metrics: Metrics) -> list[Forwarder]:
    """The relay's forwards, not started: each published port on each listen address to the
    home's port through the tunnel, PROXY v2 first, with the per-address limit and the idle
    timeout derived from the heartbeat."""
    targets = (
        (settings.https_port, settings.home_https_port, settings.idle_timeout),
        (settings.smtp_port, settings.home_smtp_port, settings.smtp_idle_timeout),
    )
    home = settings.home_address
    home = f"[{home}]" if ":" in home else home
    forwarders = []
    for address in settings.listen:
        host = f"[{address}]" if ":" in address else address
        for public, private, idle in targets:
            forward = Forward(f"{host}:{public}", f"{home}:{private}", proxy_protocol=True)
            forwarders.append(
                Forwarder(
                    forward,
                    metrics,
                    max_per_address=settings.max_connections_per_address,
                    idle_timeout=idle,
                )
            )
    return forwarders


async def start_relay(settings: RelaySettings) -> RunningRelay:
    """Bring the relay's tunnel end up and listen on the published ports."""
    tunnel = Tunnel(settings.tunnel())
    await tunnel.up()
    forwarders: list[Forwarder] = []
    ports: list[int] = []
    try:
        for forwarder in relay_forwarders(settings, Metrics()):
            ports.append(await forwarder.start())
            forwarders.append(forwarder)
    except BaseException:
        for forwarder in forwarders:
            await forwarder.close()
        await tunnel.down()
        raise
    return RunningRelay(tunnel, forwarders, ports)


async def keep_home_tunnel(
    settings: HomeTunnelSettings, stop: asyncio.Event, on_up: Callable[[], None] | None = None
) -> None:
    """The home's end of the tunnel, kept up until *stop* is set; restarted with backoff.
    *on_up* is called each time the tunnel is up (`natsync run`'s part says ready on the first)."""
    tunnel = Tunnel(settings.tunnel())
    failures = 0
    try:
        while not stop.is_set():
            try:
                await tunnel.up()
                failures = 0
                if on_up is not None:
                    on_up()
                process = tunnel.process
                assert process is not None
                waiter = asyncio.ensure_future(process.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiter, stopper):
                    task.cancel()
                if stop.is_set():
                    break
                log.warning("tunnel %s: wireguard-go ended (status %s); starting it again",
                            settings.interface, process.returncode)  # fmt: skip
            except TunnelError as exc:
                failures += 1
                log.error("tunnel %s: %s", settings.interface, exc.message)
            await tunnel.down()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), restart_delay(max(failures, 1)))
    finally:
        await tunnel.down()


@dataclass(frozen=True, slots=True)
class InitResult:
    """What `natsync relay init` made: the relay's file text and the home's part to paste."""

    relay_toml: str
    relay_private_key: str
    home_toml: str
    home_private_key: str
    home_edge_toml: str


def initial_configuration(
    public_name: str,
    *,
    tunnel_port: int,
    relay_interface: str = DEFAULT_INTERFACE,
    home_interface: str = DEFAULT_INTERFACE,
    relay_key: str | None = None,
    home_key: str | None = None,
    heartbeat_max: int = DEFAULT_HEARTBEAT_MAX,
) -> InitResult:
    """Both ends' settings with new keys (sans-I/O: the caller writes the files)."""
    relay_key = relay_key or generate_private_key()
    home_key = home_key or generate_private_key()
    relay_tunnel = "10.77.0.1/30"
    home_tunnel = "10.77.0.2/30"
    relay_toml = f"""# natsync relay for {public_name}: written by `natsync relay init`.
# Run with `natsync relay run -c relay.toml`. DNS for the public name points at this machine.
[relay]
listen = ["0.0.0.0"]
https_port = 443
smtp_port = 25
tunnel_port = {tunnel_port}
tunnel_interface = "{relay_interface}"
private_key_file = "relay.key"
home_public_key = "{public_key(home_key)}"
tunnel_address = "{relay_tunnel}"
home_address = "10.77.0.2"
home_https_port = 8443
home_smtp_port = 2525
max_connections_per_address = 20
# the home's [server] heartbeat_max: a connection silent longer than this + 60 s is cut
heartbeat_max = {heartbeat_max}
"""
    home_toml = f"""[tunnel]
relay_endpoint = "{public_name}:{tunnel_port}"
relay_public_key = "{public_key(relay_key)}"
private_key_file = "tunnel.key"
interface = "{home_interface}"
address = "{home_tunnel}"
relay_address = "10.77.0.1"
"""
    home_edge_toml = """[edge]
relayed_listen = "10.77.0.2:8443"
relayed_from = ["10.77.0.1"]
"""
    # both specs must be valid before anything is written
    TunnelSpec(relay_interface, relay_key, relay_tunnel, Peer(public_key(home_key), ()))
    TunnelSpec(home_interface, home_key, home_tunnel, Peer(public_key(relay_key), ()))
    return InitResult(relay_toml, relay_key, home_toml, home_key, home_edge_toml)
