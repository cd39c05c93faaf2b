"""The article's network as data: namespaces, links, addresses, routes and firewall rules.

Nothing here does I/O. :func:`plan_up` turns a :class:`Topology` into the ``ip`` / ``sysctl`` /
``nft`` command lines (and the files they read) that build it; the runner
(:mod:`natsync.lab.runner`) only executes them, so the shape of the lab is checked by unit
tests without root::

    phone  198.51.100.20 ──┐                       ┌── 192.0.3.10 (WAN; the ISP may renumber it,
                           │ 198.51.100.1          │    or hand out 100.64.0.10: carrier-grade NAT)
                         internet ───────────── router ── 192.168.77.1 ── lan 192.168.77.2
    vps 203.0.113.10 ──────┘ 203.0.113.1 (natsync relay: the way out of carrier-grade NAT)
            192.0.3.1, 100.64.0.1: BIND, STUN,   nftables masquerade + DNAT forwards,
            pebble (ACME), the remote mail       miniupnpd (UPnP IGD, NAT-PMP, PCP)
            server

Every link is a veth pair between two of the run's namespaces: nothing is bridged to a host
interface and no namespace has a route out of the lab. 192.0.3.0/24 plays "the internet" because
miniupnpd refuses documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and
private ones as its external address; the lab has no route to the real 192.0.3.0/24, so the
choice touches nothing outside. The phone sits in the documentation range 198.51.100.0/24, one
hop behind the internet namespace, which routes between its two links.

Names carry the run's tag (``nslab-<tag>-router``), so parallel runs do not collide and
``down`` can find everything of a run even when its state file is lost.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

#: Every namespace of every run starts with this; ``down`` of a lost run searches for it.
PREFIX = "nslab-"
#: Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
IFNAME_MAX = 15
#: A run tag: short (it goes into interface names) and shell-safe.
TAG_PATTERN = re.compile(r"^[a-z0-9]{2,6}$")

LAN_NET = "192.168.77.0/24"
LAN_HOST = "192.168.77.2"
LAN_ROUTER = "192.168.77.1"
INET = "192.0.3.1"
INET_SHARED = "100.64.0.1"
PUBLIC = "192.0.3.10"
PUBLIC_NEXT = "192.0.3.11"
CGNAT = "100.64.0.10"
PHONE_NET = "198.51.100.0/24"
PHONE = "198.51.100.20"
PHONE_GATEWAY = "198.51.100.1"
#: The relay's small public server (natsync relay), one hop behind the internet like the phone.
VPS_NET = "203.0.113.0/24"
VPS = "203.0.113.10"
VPS_GATEWAY = "203.0.113.1"
# IPv6 is routed, not translated: the LAN host holds a global address itself. Like the IPv4
# "internet", these prefixes exist only inside the lab (2001:db8::/32 would be judged
# "reserved", which is right for documentation but not what this lab plays).
LAN6_NET = "2a0e:97c0:77::/64"
LAN6_HOST = "2a0e:97c0:77::2"
LAN6_ROUTER = "2a0e:97c0:77::1"
WAN6_ROUTER = "2a0e:97c0:3::10"
INET6 = "2a0e:97c0:3::1"
#: The phone's IPv6 (a mobile network hands one to most phones today), routed by the internet.
PHONE6_NET = "2a0e:97c0:51::/64"
PHONE6 = "2a0e:97c0:51::20"
PHONE6_GATEWAY = "2a0e:97c0:51::1"

#: What miniupnpd lets LAN hosts map: unprivileged ports only by default, as its tests expect;
#: ``privileged_mappings`` opens 1-1023 too (443 and 25 are what a deployment maps).
UPNP_PORTS = "1024-65535"
UPNP_PORTS_ALL = "1-65535"


class Role(StrEnum):
    """The four hosts of the article's picture, and the relay's public server."""

    LAN = "lan"
    ROUTER = "router"
    INET = "inet"
    PHONE = "phone"
    VPS = "vps"


Command = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Names:
    """Namespace and interface names of one run, all derived from its tag."""

    tag: str

    def __post_init__(self) -> None:
        if not TAG_PATTERN.match(self.tag):
            raise ValueError(f"lab tag {self.tag!r}: use 2-6 lowercase letters or digits")

    def ns(self, role: Role) -> str:
        return f"{PREFIX}{self.tag}-{role}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.ns(role) for role in Role)

    def _if(self, suffix: str) -> str:
        name = f"nl{self.tag}{suffix}"
        assert len(name) <= IFNAME_MAX
        return name

    # LAN host <-> router
    @property
    def lan_if(self) -> str:
        return self._if("l0")

    @property
    def router_lan_if(self) -> str:
        return self._if("l1")

    # router <-> internet
    @property
    def wan_if(self) -> str:
        return self._if("w0")

    @property
    def inet_if(self) -> str:
        return self._if("w1")

    # internet <-> phone
    @property
    def inet_phone_if(self) -> str:
        return self._if("p1")

    @property
    def phone_if(self) -> str:
        return self._if("p0")

    # internet <-> the relay's public server
    @property
    def inet_vps_if(self) -> str:
        return self._if("v1")

    @property
    def vps_if(self) -> str:
        return self._if("v0")


def tag_of(namespace: str) -> str | None:
    """The run tag of a lab namespace name, or None for any other namespace."""
    if not namespace.startswith(PREFIX):
        return None
    rest = namespace[len(PREFIX) :]
    tag, _, role = rest.partition("-")
    if role not in {r.value for r in Role} or not TAG_PATTERN.match(tag):
        return None
    return tag


@dataclass(frozen=True, slots=True)
class Topology:
    """One run of the lab: its names, where it keeps files, and the router's settings."""

    names: Names
    directory: Path
    wan_address: str = PUBLIC
    #: Let miniupnpd map ports below 1024 (443, 25).
    privileged_mappings: bool = False
    #: Outside ports miniupnpd never maps (an ISP that blocks port 80 inbound, say).
    blocked_ports: tuple[int, ...] = ()
    #: Static port forwards on the router: (external port, LAN host, internal port), TCP.
    forwards: tuple[tuple[int, str, int], ...] = ()
    #: Seconds an idle established TCP connection stays in the router's conntrack table
    #: (None: the kernel's default of five days).
    conntrack_idle: int | None = None
    uuid_suffix: str = field(default="000000000000")


def _veth(a: str, a_ns: str, b: str, b_ns: str) -> Command:
    return ("ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns)


def wan_prefix(address: str) -> tuple[int, str]:
    """The prefix length and gateway for a WAN address: the shared (CGNAT) range has its own."""
    if ipaddress.ip_address(address) in ipaddress.ip_network("100.64.0.0/10"):
        return 10, INET_SHARED
    return 24, INET


def plan_up(topo: Topology) -> list[Command]:
    """The commands that build the namespaces, links, addresses and routes (not the firewall,
    see :func:`router_ruleset`, nor the processes)."""
    n = topo.names
    lan, router, inet, phone, vps = (n.ns(r) for r in Role)
    out: list[Command] = []
    for ns in n.namespaces:
        out.append(("ip", "netns", "add", ns))
        out.append(("ip", "-n", ns, "link", "set", "lo", "up"))
    out.append(_veth(n.lan_if, lan, n.router_lan_if, router))
    out.append(_veth(n.wan_if, router, n.inet_if, inet))
    out.append(_veth(n.inet_phone_if, inet, n.phone_if, phone))
    out.append(_veth(n.inet_vps_if, inet, n.vps_if, vps))
    for ns, dev, cidr in (
        (lan, n.lan_if, f"{LAN_HOST}/24"),
        (router, n.router_lan_if, f"{LAN_ROUTER}/24"),
        (inet, n.inet_if, f"{INET}/24"),
        (inet, n.inet_if, f"{INET_SHARED}/10"),
        (inet, n.inet_phone_if, f"{PHONE_GATEWAY}/24"),
        (phone, n.phone_if, f"{PHONE}/24"),
        (inet, n.inet_vps_if, f"{VPS_GATEWAY}/24"),
        (vps, n.vps_if, f"{VPS}/24"),
    ):
        out.append(("ip", "-n", ns, "addr", "add", cidr, "dev", dev))
    for ns, dev in (
        (lan, n.lan_if),
        (router, n.router_lan_if),
        (router, n.wan_if),
        (inet, n.inet_if),
        (inet, n.inet_phone_if),
        (phone, n.phone_if),
        (inet, n.inet_vps_if),
        (vps, n.vps_if),
    ):
        out.append(("ip", "-n", ns, "link", "set", dev, "up"))
    out.append(("ip", "-n", lan, "route", "add", "default", "via", LAN_ROUTER))
    out.append(("ip", "-n", phone, "route", "add", "default", "via", PHONE_GATEWAY))
    out.append(("ip", "-n", vps, "route", "add", "default", "via", VPS_GATEWAY))
    for ns, dev, address in (
        (lan, n.lan_if, LAN6_HOST),
        (router, n.router_lan_if, LAN6_ROUTER),
        (router, n.wan_if, WAN6_ROUTER),
        (inet, n.inet_if, INET6),
        (inet, n.inet_phone_if, PHONE6_GATEWAY),
        (phone, n.phone_if, PHONE6),
    ):
        out.append(("ip", "-n", ns, "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad"))
    out.append(("ip", "-n", lan, "-6", "route", "add", "default", "via", LAN6_ROUTER))
    out.append(("ip", "-n", router, "-6", "route", "add", "default", "via", INET6))
    out.append(("ip", "-n", inet, "-6", "route", "add", LAN6_NET, "via", WAN6_ROUTER))
    out.append(("ip", "-n", phone, "-6", "route", "add", "default", "via", PHONE6_GATEWAY))
    for ns, key in (
        (router, "net.ipv4.ip_forward=1"),
        (router, "net.ipv6.conf.all.forwarding=1"),
        (inet, "net.ipv4.ip_forward=1"),
        (inet, "net.ipv6.conf.all.forwarding=1"),
    ):
        out.append(("ip", "netns", "exec", ns, "sysctl", "-qw", key))
    out.extend(plan_wan_address(topo, topo.wan_address))
    if topo.conntrack_idle is not None:
        out.extend(plan_conntrack_idle(topo, topo.conntrack_idle))
    return out


def plan_wan_address(topo: Topology, address: str) -> list[Command]:
    """Renumber the router's WAN side: what the ISP does to a dynamic address. The static
    forwards match only addresses the router holds (``fib daddr type local``), so packets
    still sent to the old address find no server behind it."""
    router, wan = topo.names.ns(Role.ROUTER), topo.names.wan_if
    prefix, gateway = wan_prefix(address)
    return [
        ("ip", "-n", router, "-4", "addr", "flush", "dev", wan),
        ("ip", "-n", router, "addr", "add", f"{address}/{prefix}", "dev", wan),
        ("ip", "-n", router, "route", "replace", "default", "via", gateway),
        # the ISP's side forgets where the old address was: it now belongs to no one
        ("ip", "-n", topo.names.ns(Role.INET), "neigh", "flush", "dev", topo.names.inet_if),
    ]


#: The kernel's default idle time of an established TCP connection in conntrack (five days).
KERNEL_ESTABLISHED = 432000


def plan_conntrack_idle(topo: Topology, seconds: int | None) -> list[Command]:
    """How long the router keeps an idle established TCP connection (per namespace; None: the
    kernel's default). A router with a short timeout also stops picking up connections it has
    forgotten (``tcp_loose`` off): their next packet is invalid and answered with a reset (see
    :func:`router_ruleset`), instead of being silently re-learnt mid-stream."""
    if seconds is not None and seconds < 1:
        raise ValueError("a conntrack idle timeout is at least 1 s")
    router = topo.names.ns(Role.ROUTER)
    established = KERNEL_ESTABLISHED if seconds is None else seconds
    loose = 1 if seconds is None else 0
    return [
        ("ip", "netns", "exec", router, "sysctl", "-qw",
         f"net.netfilter.nf_conntrack_tcp_timeout_established={established}"),
        ("ip", "netns", "exec", router, "sysctl", "-qw",
         f"net.netfilter.nf_conntrack_tcp_loose={loose}"),
    ]  # fmt: skip


def inet_ruleset() -> str:
    """The internet host routes between the phone, the VPS and the router, but never into the
    shared address space 100.64.0.0/10 (RFC 6598): a carrier's NAT addresses are not reachable
    from the internet, which is what makes carrier-grade NAT a dead end for inbound connections.
    What a host behind it opened itself (the relay tunnel it dials out) is answered, as the
    carrier's NAT would."""
    return """table ip lab_internet {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ip daddr 100.64.0.0/10 drop
  }
}
"""


def router_ruleset(topo: Topology) -> str:
    """The router's nftables ruleset: forward policy drop except LAN → WAN and what was
    forwarded, masquerade out of the WAN, DNAT for the static forwards, and the empty chains
    miniupnpd fills. A packet of a connection the router has forgotten (idle timeout) is
    answered with a reset, as routers that cut idle connections do."""
    n = topo.names
    dnat = "\n".join(
        f'    iifname "{n.wan_if}" fib daddr type local tcp dport {ext} dnat ip to {host}:{port}'
        for ext, host, port in topo.forwards
    )
    return f"""table inet miniupnpd {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state invalid meta l4proto tcp reject with tcp reset
    iifname "{n.router_lan_if}" oifname "{n.wan_if}" accept
    ct status dnat accept
    jump miniupnpd
  }}
  chain miniupnpd {{
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
{dnat}
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "{n.wan_if}" meta nfproto ipv4 masquerade
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"""


#: Table of the hairpin rule (kept apart so it can be added and removed whole).
HAIRPIN_TABLE = "lab_hairpin"


def hairpin_ruleset(topo: Topology, public: str, port: int, host: str, host_port: int) -> str:
    """The hairpin rule many routers lack: the public address's forward applied to packets from
        the LAN too, and the source rewritten to the router so that answers come back through it
        (not straight from server to client, which would drop them as strangers). The router's
    forward chain accepts every DNATed connection, so the hairpin needs no forward rule."""
    lan_if = topo.names.router_lan_if
    return f"""table ip {HAIRPIN_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority -101; policy accept;
    iifname "{lan_if}" ip daddr {public} tcp dport {port} dnat to {host}:{host_port}
  }}
  chain postrouting {{
    type nat hook postrouting priority 99; policy accept;
    iifname "{lan_if}" oifname "{lan_if}" ip daddr {host} masquerade
  }}
}}
"""


def miniupnpd_conf(topo: Topology) -> str:
    """miniupnpd on the router: UPnP IGD + NAT-PMP/PCP toward the LAN, secure mode (a host may
    map only to itself), rules in the chains :func:`router_ruleset` leaves for it."""
    n = topo.names
    ports = UPNP_PORTS_ALL if topo.privileged_mappings else UPNP_PORTS
    blocked = "".join(f"deny {p} 0.0.0.0/0 0-65535\n" for p in topo.blocked_ports)
    return f"""ext_ifname={n.wan_if}
listening_ip={n.router_lan_if}
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
uuid=3b4f1c2e-0000-4000-8000-{topo.uuid_suffix}
lease_file={topo.directory}/upnp.leases
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
{blocked}allow {ports} {LAN_NET} {ports}
deny 0-65535 0.0.0.0/0 0-65535
"""


def plan_down(names: Names) -> list[Command]:
    """Deleting a namespace deletes the veth ends in it, and with them their peers."""
    return [("ip", "netns", "del", ns) for ns in names.namespaces]
