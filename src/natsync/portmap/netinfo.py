"""What this host knows about its own network: default gateway, interface addresses, and what
kind of address an address is (public, private, shared/CGNAT)."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
from enum import StrEnum
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 6598: shared address space a carrier-grade NAT hands to its customers' routers.
SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
#: RFC 1918 private ranges.
PRIVATE_RANGES = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
#: Seconds to wait for `ip` to list addresses.
IP_COMMAND_TIMEOUT = 5.0


class AddressKind(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private (RFC 1918)"
    SHARED = "shared carrier-grade NAT space (RFC 6598, 100.64.0.0/10)"
    LINK_LOCAL = "link-local"
    LOOPBACK = "loopback"
    UNIQUE_LOCAL = "unique local (fc00::/7)"
    RESERVED = "reserved, not routable on the internet"


def classify(address: IPAddress) -> AddressKind:
    """What kind of address this is, in the terms the verdict explains to people."""
    if address.version == 4:
        if address in SHARED_ADDRESS_SPACE:
            return AddressKind.SHARED
        if any(address in net for net in PRIVATE_RANGES):
            return AddressKind.PRIVATE
    elif address in ipaddress.IPv6Network("fc00::/7"):
        return AddressKind.UNIQUE_LOCAL
    if address.is_loopback:
        return AddressKind.LOOPBACK
    if address.is_link_local:
        return AddressKind.LINK_LOCAL
    if address.is_global:
        return AddressKind.PUBLIC
    return AddressKind.RESERVED


def parse_route_table(text: str) -> str | None:
    """The IPv4 default gateway from the text of /proc/net/route, or None."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return None


def default_gateway(route_file: Path = Path("/proc/net/route")) -> str | None:
    try:
        return parse_route_table(route_file.read_text())
    except OSError:
        return None


#: iproute2's flags of addresses a DNS record must not name: RFC 8981 temporary (privacy)
#: addresses change daily and serve outgoing connections only; a deprecated one is being
#: replaced (its prefix is going away); tentative and dadfailed ones are not usable.
UNPUBLISHABLE_FLAGS = ("temporary", "deprecated", "tentative", "dadfailed")


def parse_ip_json(text: str, *, publishable: bool = False) -> list[IPAddress]:
    """Addresses (scope global) from the output of ``ip -j addr show``; with *publishable*,
    only those a DNS record may name (none of :data:`UNPUBLISHABLE_FLAGS`)."""
    found: list[IPAddress] = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            if info.get("scope") != "global" or "local" not in info:
                continue
            if publishable and (
                any(info.get(flag) for flag in UNPUBLISHABLE_FLAGS)
                or info.get("preferred_life_time") == 0
            ):
                continue
            found.append(ipaddress.ip_address(info["local"]))
    return found


def interface_addresses(
    interface: str | None = None, *, publishable: bool = False
) -> list[IPAddress]:
    """Global addresses of *interface* (all interfaces when None), via iproute2 (with
    *publishable*: only those a DNS record may name)."""
    command = ["ip", "-j", "addr", "show"] + (["dev", interface] if interface else [])
    try:
        done = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, capture_output=True, text=True, timeout=IP_COMMAND_TIMEOUT, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        from natsync.portmap.errors import HostNetworkError

        raise HostNetworkError(
            f"cannot list addresses of {interface or 'the interfaces'}: {exc}"
        ) from exc
    return parse_ip_json(done.stdout, publishable=publishable)
