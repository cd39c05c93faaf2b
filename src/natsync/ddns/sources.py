"""Where the public address comes from: the router (NAT-PMP, UPnP IGD), STUN servers, a local
interface and HTTPS echo services. Each source gives an :class:`Observation`; a source that
fails gives one too, with the reason, because "the router would not say" is evidence.

Sources run in the order the configuration lists them; IPv4 and IPv6 are observed separately.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from natsync.ddns.errors import SourceError
from natsync.ddns.netinfo import IPAddress, default_gateway, interface_addresses

if TYPE_CHECKING:
    from natsync.ddns.settings import DdnsSettings

#: An echo service answers with the address as text; anything longer is not such an answer.
MAX_ECHO_BODY = 128
#: Seconds to wait for an echo service.
ECHO_TIMEOUT = 5.0


class Source(StrEnum):
    NATPMP = "natpmp"
    UPNP = "upnp"
    STUN = "stun"
    INTERFACE = "interface"
    ECHO = "echo"


#: Sources that report the router's own WAN address (not what the internet sees).
ROUTER_SOURCES = frozenset({Source.NATPMP, Source.UPNP})
#: Sources that report what a server on the internet sees.
OUTSIDE_SOURCES = frozenset({Source.STUN, Source.ECHO})

#: Refusal tag: the router says it has no usable public address (NAT-PMP result 3, or UPnP
#: GetExternalIPAddress answering empty / 0.0.0.0).
NO_PUBLIC_ADDRESS = "no-public-address"


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


def from_natpmp(gateway: str | None) -> Observation:
    from natsync.portmap.errors import MappingRefused, PortMapError
    from natsync.portmap.natpmp import NatPmpClient, ResultCode

    gateway = gateway or default_gateway()
    if not gateway:
        return Observation(Source.NATPMP, "", 4, error="no default gateway to ask")
    try:
        answer = NatPmpClient(gateway).external_address()
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


def from_stun(server: str, family: int) -> Observation:
    from natsync.ddns import stun

    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    try:
        address = stun.query(server, af)
    except SourceError as exc:
        return Observation(Source.STUN, server, family, error=exc.message)
    return Observation(Source.STUN, server, family, address=address)


def from_interface(interface: str | None, family: int) -> Observation:
    try:
        addresses = [a for a in interface_addresses(interface) if a.version == family]
    except SourceError as exc:
        return Observation(Source.INTERFACE, interface or "", family, error=exc.message)
    if not addresses:
        return Observation(
            Source.INTERFACE, interface or "", family, error=f"no global IPv{family} address"
        )
    public = [a for a in addresses if a.is_global]
    return Observation(Source.INTERFACE, interface or "", family, address=(public or addresses)[0])


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
    return found
