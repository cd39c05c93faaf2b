"""Where this host's IPv6 traffic goes: the default router and our own address toward it.

IPv6 has no NAT in a home: the LAN host holds a global address, and what blocks inbound
connections is the router's firewall. Opening it (a UPnP pinhole, a PCP MAP) must be asked from
the address being opened, so both backends need the router's IPv6 address and ours toward it.
The routing table is read from ``/proc/net/ipv6_route`` (no subprocess); a router announced by
its link-local address (the usual case) is given with its scope, ``fe80::1%eth0``.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

#: The kernel's IPv6 routing table: one route a line, fields in hex (see ipv6_route in proc(5)).
IPV6_ROUTE = Path("/proc/net/ipv6_route")
#: Port used only to pick a source address (a UDP connect sends nothing).
_PROBE_PORT = 9


def parse_ipv6_route(text: str) -> str | None:
    """The next hop of the default route (``::/0``) in *text*, with ``%ifname`` when link-local."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        destination, prefix, next_hop, ifname = fields[0], fields[1], fields[4], fields[9]
        if int(destination, 16) != 0 or int(prefix, 16) != 0 or int(next_hop, 16) == 0:
            continue
        if ifname == "lo":
            continue
        hop = ipaddress.IPv6Address(bytes.fromhex(next_hop))
        return f"{hop}%{ifname}" if hop.is_link_local else str(hop)
    return None


def default_gateway6(route_file: Path = IPV6_ROUTE) -> str | None:
    """The default IPv6 router, or None when this host has no IPv6 default route."""
    try:
        return parse_ipv6_route(route_file.read_text())
    except OSError:
        return None


def source_address6(router: str) -> str:
    """Our IPv6 address toward *router* (what the router sees as the internal client)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        info = socket.getaddrinfo(router, _PROBE_PORT, socket.AF_INET6, socket.SOCK_DGRAM)
        sock.connect(info[0][4])
        return str(sock.getsockname()[0]).split("%", maxsplit=1)[0]
