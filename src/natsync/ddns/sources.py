"""Where the public address comes from: the router (NAT-PMP, UPnP IGD, PCP), STUN servers, a
local interface and HTTPS echo services — or, for a home behind a relay (docs/relay.md), the
relay's public address, which is where phones must go. Each source gives an
:class:`Observation`; a source that fails gives one too, with the reason, because "the router
would not say" is evidence.

Sources run in the order the configuration lists them; IPv4 and IPv6 are observed separately.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from natsync.ddns.errors import SourceError
from natsync.portmap.errors import HostNetworkError
from natsync.portmap.netinfo import IPAddress, default_gateway, interface_addresses

if TYPE_CHECKING:
    from natsync.ddns.settings import DdnsSettings
    from natsync.portmap.pcp import PcpClient, PcpMapping

log = logging.getLogger(__name__)

#: An echo service answers with the address as text; anything longer is not such an answer.
MAX_ECHO_BODY = 128
#: Seconds to wait for an echo service.
ECHO_TIMEOUT = 5.0
#: RFC 6887 section 11.6 learns the external address with a short-lived MAP. We delete the
#: mapping as soon as the answer is in; the lifetime only matters when that delete is lost, and
#: then the router forgets the mapping on its own soon after (a router may lengthen a lifetime it
#: finds too short: miniupnpd grants at least 120 s).
PCP_PROBE_LIFETIME = 60


class Source(StrEnum):
    NATPMP = "natpmp"
    UPNP = "upnp"
    PCP = "pcp"
    STUN = "stun"
    INTERFACE = "interface"
    ECHO = "echo"
    #: The relay's public address ([ddns] relay, else the host of [tunnel] relay_endpoint).
    RELAY = "relay"


#: Sources that report the router's own WAN address (not what the internet sees).
ROUTER_SOURCES = frozenset({Source.NATPMP, Source.UPNP, Source.PCP})
#: Sources that report what a server on the internet sees.
OUTSIDE_SOURCES = frozenset({Source.STUN, Source.ECHO})

#: Refusal tag: the router says it has no usable public address (NAT-PMP result 3, PCP result 7,
#: or UPnP GetExternalIPAddress answering empty / 0.0.0.0).
NO_PUBLIC_ADDRESS = "no-public-address"
#: Refusal tag: the relay has no address of this family (a relay with IPv4 only: the other
#: sources decide the AAAA record).
RELAY_LACKS_FAMILY = "relay-lacks-family"


@dataclass(frozen=True, slots=True)
class Observation:
    source: Source
    #: Which server, URL, router or interface was asked.
    via: str
    family: int  # 4 or 6
    address: IPAddress | None = None
    error: str = ""
    refusal: str = ""

    def describe(self) -> str:
        where = f"{self.source} ({self.via})" if self.via else str(self.source)
        if self.address is not None:
            return f"{where} sees {self.address}"
        return f"{where} gave no address: {self.error}"


def from_natpmp(gateway: str | None, *, port: int | None = None) -> Observation:
    from natsync.portmap.errors import MappingRefused, PortMapError
    from natsync.portmap.natpmp import NATPMP_PORT, NatPmpClient, ResultCode

    gateway = gateway or default_gateway()
    if not gateway:
        return Observation(Source.NATPMP, "", 4, error="no default gateway to ask")
    try:
        answer = NatPmpClient(gateway, port=port or NATPMP_PORT).external_address()
    except MappingRefused as exc:
        refusal = NO_PUBLIC_ADDRESS if exc.code == ResultCode.NETWORK_FAILURE else ""
        return Observation(Source.NATPMP, gateway, 4, error=exc.message, refusal=refusal)
    except PortMapError as exc:
        return Observation(Source.NATPMP, gateway, 4, error=exc.message)
    if answer.address.is_unspecified:
        return Observation(
            Source.NATPMP, gateway, 4, error="the router reports 0.0.0.0", refusal=NO_PUBLIC_ADDRESS
        )
    return Observation(Source.NATPMP, gateway, 4, address=answer.address)


def from_upnp(location: str | None) -> Observation:
    from natsync.portmap.errors import PortMapError
    from natsync.portmap.upnp import IgdClient

    try:
        igd = IgdClient.find(location)
        address = igd.external_address()
    except PortMapError as exc:
        return Observation(Source.UPNP, location or "", 4, error=exc.message)
    if address is None:
        return Observation(
            Source.UPNP,
            igd.router_address,
            4,
            error="the router reports no external address",
            refusal=NO_PUBLIC_ADDRESS,
        )
    return Observation(Source.UPNP, igd.router_address, 4, address=address)


def from_pcp(gateway: str | None, *, port: int | None = None) -> Observation:
    """The router's external address from a PCP MAP answer (RFC 6887 section 11.6).

    PCP has no "what is my address" request (an ANNOUNCE answer carries no address, section
    14.1), so we map a throwaway UDP port: one this process holds open for the duration, so
    nothing else can be listening on it, with no external port suggested and a short lifetime,
    read the external address from the answer and delete the mapping at once (lifetime 0,
    section 15). When the router refuses, NAT-PMP's external-address request on the same
    gateway port tells whether the reason is that it has no public address: miniupnpd, for
    one, answers PCP "no resources" when its own WAN address is private or shared.
    """
    from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable
    from natsync.portmap.pcp import PCP_PORT, PcpClient, PcpResult

    gateway = gateway or default_gateway()
    if not gateway:
        return Observation(Source.PCP, "", 4, error="no default gateway to ask")
    client = PcpClient(gateway, port=port or PCP_PORT)
    try:
        mapping = _pcp_probe(client, socket.AF_INET)
    except MappingRefused as exc:
        if exc.code == PcpResult.NETWORK_FAILURE:
            return Observation(Source.PCP, gateway, 4, error=exc.message, refusal=NO_PUBLIC_ADDRESS)
        return _pcp_refusal_reason(gateway, port, exc.message)
    except RouterUnreachable as exc:
        message = exc.message
        if "NAT-PMP only" in message:  # a version-0 answer: say which source to use instead
            message = "the router speaks NAT-PMP only, not PCP (use the natpmp source)"
        return Observation(Source.PCP, gateway, 4, error=message)
    except PortMapError as exc:
        return Observation(Source.PCP, gateway, 4, error=exc.message)
    except OSError as exc:
        return Observation(Source.PCP, gateway, 4, error=f"cannot ask {gateway}: {exc.strerror}")
    address = mapping.external_address
    if address.is_unspecified:
        return Observation(
            Source.PCP,
            gateway,
            4,
            error=f"the router reports {address} as its external address",
            refusal=NO_PUBLIC_ADDRESS,
        )
    if address.version != 4:
        return Observation(
            Source.PCP, gateway, 4, error=f"the router answered an IPv6 address ({address})"
        )
    return Observation(Source.PCP, gateway, 4, address=address)


def _pcp_probe(client: PcpClient, family: socket.AddressFamily) -> PcpMapping:
    """Map a UDP port this process holds open meanwhile (so nothing else listens there), with
    no external port suggested and a short lifetime; delete it at once; the router's answer."""
    with socket.socket(family, socket.SOCK_DGRAM) as holder:
        holder.bind((client.client_address(), 0))
        internal_port = int(holder.getsockname()[1])
        mapping = client.map("udp", internal_port, 0, PCP_PROBE_LIFETIME)
        _pcp_delete(client, internal_port)
    return mapping


def _pcp_delete(client: PcpClient, internal_port: int) -> None:
    """Delete the probe mapping. A delete that fails is not worth failing the source for: the
    router drops the mapping itself after :data:`PCP_PROBE_LIFETIME` seconds."""
    from natsync.portmap.errors import PortMapError

    try:
        client.unmap("udp", internal_port)
    except PortMapError as exc:
        log.debug("PCP probe mapping of UDP %d not deleted: %s", internal_port, exc.message)


def _pcp_refusal_reason(gateway: str, port: int | None, message: str) -> Observation:
    """A PCP refusal, with the router's own external address when NAT-PMP can tell it."""
    from natsync.portmap.netinfo import AddressKind, classify

    probe = from_natpmp(gateway, port=port)
    if probe.refusal == NO_PUBLIC_ADDRESS:
        return Observation(
            Source.PCP,
            gateway,
            4,
            error=f"{message}; asked with NAT-PMP, the router says: {probe.error}",
            refusal=NO_PUBLIC_ADDRESS,
        )
    if probe.address is not None and classify(probe.address) != AddressKind.PUBLIC:
        kind = classify(probe.address)
        return Observation(
            Source.PCP,
            gateway,
            4,
            error=(
                f"{message}; asked with NAT-PMP, the router says its own external address is "
                f"{probe.address}, which is {kind}, so it has no usable public address"
            ),
            refusal=NO_PUBLIC_ADDRESS,
        )
    return Observation(Source.PCP, gateway, 4, error=message)


def from_stun(server: str, family: int) -> Observation:
    from natsync.ddns import stun

    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    try:
        address = stun.query(server, af)
    except SourceError as exc:
        return Observation(Source.STUN, server, family, error=exc.message)
    return Observation(Source.STUN, server, family, address=address)


def from_interface(interface: str | None, family: int) -> Observation:
    """The interface's own address. For IPv6 (not translated: the host's own global address
    is what phones dial) only a stable, public one: not a temporary (privacy) address, not a
    deprecated one, not a unique local one (fc00::/7 is not routed on the internet)."""
    via = interface or ""
    try:
        addresses = [a for a in interface_addresses(interface) if a.version == family]
        if family == 6:
            stable = [a for a in interface_addresses(interface, publishable=True) if a.version == 6]
    except HostNetworkError as exc:
        return Observation(Source.INTERFACE, via, family, error=exc.message)
    if not addresses:
        return Observation(Source.INTERFACE, via, family, error=f"no global IPv{family} address")
    public = [a for a in addresses if a.is_global]
    if family != 6:
        return Observation(Source.INTERFACE, via, family, address=(public or addresses)[0])
    usable = [a for a in stable if a.is_global]
    if usable:
        return Observation(Source.INTERFACE, via, 6, address=usable[0])
    seen = ", ".join(str(a) for a in addresses)
    why = (
        "only temporary or deprecated ones, which change and must not be published"
        if public
        else "only unique local or reserved ones, not reachable from the internet"
    )
    return Observation(
        Source.INTERFACE, via, 6, error=f"no stable public IPv6 address ({seen}: {why})"
    )


def from_pcp6(router: str | None, *, port: int | None = None) -> Observation:
    """The IPv6 router's view of this host's address: a PCP MAP over IPv6 (RFC 6887) for a
    throwaway UDP port, as :func:`from_pcp` does for IPv4, deleted at once. IPv6 is not
    translated, so the answer's external address is the address the router lets in: ours, as
    the router sees it (a router that answers with another address translates IPv6: NPTv6)."""
    from natsync.portmap.errors import PortMapError
    from natsync.portmap.ipv6 import default_gateway6
    from natsync.portmap.pcp import PCP_PORT, PcpClient

    gateway = router if router and ":" in router else default_gateway6()
    if not gateway:
        return Observation(Source.PCP, "", 6, error="no IPv6 default route to ask")
    client = PcpClient(gateway, port=port or PCP_PORT)
    try:
        mapping = _pcp_probe(client, socket.AF_INET6)
    except PortMapError as exc:
        return Observation(Source.PCP, gateway, 6, error=exc.message)
    except OSError as exc:
        return Observation(Source.PCP, gateway, 6, error=f"cannot ask {gateway}: {exc.strerror}")
    address = mapping.external_address
    if address.version != 6 or not address.is_global:
        return Observation(
            Source.PCP, gateway, 6, error=f"the router answered {address}, not a public IPv6"
        )
    return Observation(Source.PCP, gateway, 6, address=address)


def from_relay(relays: tuple[str, ...], families: tuple[int, ...]) -> list[Observation]:
    """The relay's public addresses, per family: each entry is an address or a name (resolved
    by the system's resolver; the relay's own name, never one the DNS follower publishes)."""
    found: dict[int, list[tuple[str, IPAddress]]] = {4: [], 6: []}
    errors: list[str] = []
    for relay in relays:
        host = relay.strip("[]")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                errors.append(f"the relay's name {host} does not resolve: {exc}")
                continue
            for info in infos:
                address = ipaddress.ip_address(str(info[4][0]).split("%", maxsplit=1)[0])
                if (host, address) not in found[address.version]:
                    found[address.version].append((host, address))
        else:
            found[literal.version].append((host, literal))
    out = []
    for family in families:
        if found[family]:
            via, address = found[family][0]
            out.append(Observation(Source.RELAY, via, family, address=address))
        elif errors:
            out.append(Observation(Source.RELAY, relays[0], family, error="; ".join(errors)))
        else:
            out.append(
                Observation(
                    Source.RELAY,
                    ", ".join(relays),
                    family,
                    error=f"the relay has no IPv{family} address",
                    refusal=RELAY_LACKS_FAMILY,
                )
            )
    return out


def parse_echo(body: bytes) -> IPAddress:
    text = body[:MAX_ECHO_BODY].decode("ascii", "replace").strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise SourceError(f"the echo service answered {text[:40]!r}, not an address") from exc


def from_echo(url: str) -> Observation:
    if not url.startswith(("https://", "http://")):
        return Observation(Source.ECHO, url, 4, error="echo URL must be https:// (or http://)")
    try:
        with urllib.request.urlopen(url, timeout=ECHO_TIMEOUT) as response:  # noqa: S310
            body = response.read(MAX_ECHO_BODY + 1)
        address = parse_echo(body)
    except (OSError, urllib.error.URLError) as exc:
        return Observation(Source.ECHO, url, 4, error=f"no answer ({exc})")
    except SourceError as exc:
        return Observation(Source.ECHO, url, 4, error=exc.message)
    return Observation(Source.ECHO, url, address.version, address=address)


def gather(settings: DdnsSettings) -> list[Observation]:
    """Ask every configured source, in the configured order; never raises for a source."""
    found: list[Observation] = []
    for source in settings.sources:
        match source:
            case Source.NATPMP if 4 in settings.families:
                found.append(from_natpmp(settings.router or None))
            case Source.PCP:
                if 4 in settings.families:
                    found.append(from_pcp(settings.router or None))
                if 6 in settings.families:
                    found.append(from_pcp6(settings.router or None))
            case Source.UPNP if 4 in settings.families:
                found.append(from_upnp(settings.upnp_location or None))
            case Source.STUN:
                for server in settings.stun_servers:
                    family = 6 if server.startswith("[") else 4
                    if family in settings.families:
                        found.append(from_stun(server, family))
            case Source.INTERFACE:
                found.extend(
                    from_interface(settings.interface or None, f) for f in settings.families
                )
            case Source.ECHO:
                found.extend(from_echo(url) for url in settings.echo_urls)
            case Source.RELAY:
                found.extend(from_relay(settings.relay, settings.families))
    return found
