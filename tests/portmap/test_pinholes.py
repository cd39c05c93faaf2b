"""IPv6 pinholes: the codec parts without a network, then the real thing — Debian's miniupnpd
(nftables) on the lab's router, whose IPv6 firewall drops what comes in from the WAN. A pinhole
made by `natsync portmap add --method upnp6` (IGD:2 WANIPv6FirewallControl) or `pcp6` (PCP MAP
over IPv6) lets the internet reach the LAN host's own IPv6 address; removing it closes the
port again; a port the router's policy refuses is said in plain words."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.lab.runner import Lab
from natsync.lab.topology import LAN6_HOST, LAN6_ROUTER, LAN_ROUTER
from natsync.portmap import upnp
from natsync.portmap.errors import MappingRefused, PortMapError
from natsync.portmap.ipv6 import parse_ipv6_route
from natsync.portmap.manager import MappingSpec, PortMapper, UpnpPinholeBackend
from tests.lab.conftest import require_lab

_Z = "0" * 32
#: /proc/net/ipv6_route: destination, prefix, source, prefix, next hop, metric, refs, use,
#: flags, interface.
ROUTES = "\n".join(
    [
        f"{_Z} 00 {_Z} 00 fe800000000000000000000000000001 00000400 1 0 00000003 eth0",
        f"2a0e97c0007700000000000000000000 40 {_Z} 00 {_Z} 00000100 1 0 00000001 eth0",
        f"{_Z} 00 {_Z} 00 {_Z} ffffffff 1 0 00200200 lo",
    ]
)


def test_the_default_route_names_its_router_with_the_scope_when_link_local() -> None:
    assert parse_ipv6_route(ROUTES) == "fe80::1%eth0"
    global_hop = ROUTES.replace(
        "fe800000000000000000000000000001", "2a0e97c0007700000000000000000001"
    )
    assert parse_ipv6_route(global_hop) == "2a0e:97c0:77::1"
    assert parse_ipv6_route(ROUTES.splitlines()[1]) is None


def test_the_firewall_service_is_found_and_called_at_the_routers_ipv6_address() -> None:
    description = b"""<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>
    <serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType>
    <controlURL>/ctl/IP6FCtl</controlURL></service></serviceList></device></root>"""
    service, control = upnp.parse_description(
        description, "http://192.168.77.1:5000/rootDesc.xml", upnp.PINHOLE_SERVICES
    )
    assert service.endswith("WANIPv6FirewallControl:1")
    assert control == "http://192.168.77.1:5000/ctl/IP6FCtl"
    with pytest.raises(PortMapError, match="no IPv6 firewall control"):
        upnp.parse_description(
            b'<root xmlns="urn:schemas-upnp-org:device-1-0"/>', "http://r/", upnp.PINHOLE_SERVICES
        )


def test_pinhole_faults_have_their_own_words() -> None:
    fault = b"""<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
    <s:Body><s:Fault><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">
    <errorCode>703</errorCode><errorDescription>InboundPinholeNotAllowed</errorDescription>
    </UPnPError></detail></s:Fault></s:Body></s:Envelope>"""
    with pytest.raises(MappingRefused, match="does not allow inbound IPv6 pinholes") as caught:
        upnp.parse_soap_response(fault, "AddPinhole", upnp.pinhole_error_words)
    assert caught.value.code == 703


def test_a_pinhole_cannot_translate_ports() -> None:
    backend = UpnpPinholeBackend(upnp.PinholeClient("s", "http://[::1]:1/"), "::1")
    results = PortMapper(backend).ensure([MappingSpec("tcp", 8443, 443)], now=0.0)
    assert results[0].action == "failed"
    assert "same" in results[0].detail


# -- against the real router ------------------------------------------------------------------

PORT = 18447


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab()
    run = Lab(tmp_path_factory.mktemp("pinholes"))
    try:
        run.build()
        server = run.spawn(
            run.lan, sys.executable, "-c",
            "import socket\n"
            "s=socket.socket(socket.AF_INET6)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('::',{PORT})); s.listen()\n"
            "while True:\n c,_=s.accept(); c.sendall(b'lan-host'); c.close()\n",
            log="v6-server.log",
        )  # fmt: skip
        for _ in range(100):
            if "LISTEN" in run.ns(run.lan, "ss", "-Hltn", f"sport = :{PORT}").stdout:
                break
            time.sleep(0.05)
        assert server.poll() is None
        yield run
    finally:
        run.close()


def _from_internet(lab: Lab) -> str:
    code = (
        "import socket\n"
        "try:\n"
        f"    c=socket.create_connection(('{LAN6_HOST}',{PORT}),timeout=1.5)\n"
        "    print(c.recv(20).decode())\n"
        "except OSError as e:\n"
        "    print('unreachable', type(e).__name__)\n"
    )
    return lab.run_in(lab.inet, sys.executable, "-c", code).stdout.strip()


def _portmap(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.natsync("portmap", *args)


@pytest.mark.parametrize("method", ["upnp6", "pcp6"])
def test_a_pinhole_opens_the_hosts_ipv6_port_and_removing_it_closes_it(
    lab: Lab, method: str
) -> None:
    assert _from_internet(lab).startswith("unreachable")  # the router drops inbound IPv6
    added = _portmap(lab, "add", f"{PORT}/tcp", "--method", method)
    assert added.returncode == 0, added.stderr
    assert "created" in added.stdout
    assert _from_internet(lab) == "lan-host"
    rules = lab.ns(lab.router, "nft", "list", "chain", "inet", "miniupnpd", "miniupnpd").stdout
    assert f"dport {PORT}" in rules
    removed = _portmap(lab, "remove", f"{PORT}/tcp", "--method", method)  # another process
    assert removed.returncode == 0, removed.stderr
    assert _from_internet(lab).startswith("unreachable")


def test_a_port_the_routers_policy_refuses_is_said_in_plain_words(lab: Lab) -> None:
    refused = _portmap(lab, "add", "443/tcp", "--method", "upnp6")
    assert refused.returncode != 0
    assert "policy does not let this host open that port" in refused.stderr
    assert "use --method pcp6" in refused.stderr  # miniupnpd: no UPnP pinhole below 1024
    assert "Traceback" not in refused.stderr
    by_pcp = _portmap(lab, "add", "443/tcp", "--method", "pcp6")
    assert by_pcp.returncode == 0, by_pcp.stderr
    assert _portmap(lab, "remove", "443/tcp", "--method", "pcp6").returncode == 0


def test_a_held_pinhole_is_renewed_through_updatepinhole(lab: Lab, tmp_path: Path) -> None:
    code = (
        "from natsync.portmap.manager import MappingSpec, PortMapper, open_backend\n"
        "backend = open_backend('upnp6', None)\n"
        "mapper = PortMapper(backend, lifetime=60)\n"
        f"spec = MappingSpec('tcp', {PORT}, {PORT})\n"
        "first = mapper.ensure([spec], now=0.0)[0]\n"
        "uid = backend.ids[spec]\n"
        "again = mapper.ensure([spec], now=31.0)[0]\n"
        "print(first.action, again.action, backend.ids[spec] == uid)\n"
        "print(mapper.release_all()[0].action)\n"
    )
    done = lab.run_in(lab.lan, sys.executable, "-c", code)
    assert done.stdout.split() == ["created", "renewed", "True", "removed"], done.stderr
    assert _from_internet(lab).startswith("unreachable")


# -- PCP PEER (RFC 6887 section 12) on the same miniupnpd: what it does with the opcode natsync
# does not send in a deployment (docs/ipv6.md, "PCP MAP, not PEER").

_PEER = (
    "import json, socket, sys\n"
    "from natsync.portmap.pcp import PcpClient\n"
    "from natsync.portmap.errors import PortMapError\n"
    "gateway, peer = sys.argv[1], sys.argv[2]\n"
    "client = PcpClient(gateway)\n"
    "family = socket.AF_INET6 if ':' in gateway else socket.AF_INET\n"
    "with socket.socket(family, socket.SOCK_DGRAM) as held:\n"
    "    held.bind((client.client_address(), 0))\n"
    "    port = held.getsockname()[1]\n"
    "    try:\n"
    "        m = client.peer('udp', port, peer, 9, 120)\n"
    "    except PortMapError as exc:\n"
    "        print(json.dumps({'error': exc.message, 'code': getattr(exc, 'code', None)}))\n"
    "        sys.exit()\n"
    "    print(json.dumps({'port': port, 'external': str(m.external_address),\n"
    "                      'external_port': m.external_port, 'lifetime': m.lifetime}))\n"
    "    try:\n"
    "        client.peer('udp', port, peer, 9, 0, m)\n"
    "        print(json.dumps({'deleted': True}))\n"
    "    except PortMapError as exc:\n"
    "        print(json.dumps({'error': exc.message, 'code': getattr(exc, 'code', None)}))\n"
)


def _snat_rules(lab: Lab) -> str:
    chain = ("inet", "miniupnpd", "postrouting_miniupnpd")
    return lab.ns(lab.router, "nft", "list", "chain", *chain).stdout


def _peer(lab: Lab, gateway: str, peer: str) -> list[dict[str, object]]:
    done = lab.run_in(lab.lan, sys.executable, "-c", _PEER, gateway, peer)
    assert done.stdout.startswith("{"), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_pcp_peer_over_ipv4_maps_one_outbound_flow_and_miniupnpd_cannot_delete_it(
    lab: Lab,
) -> None:
    """PEER over IPv4: one outbound flow's SNAT (this port to that peer, nothing inbound) with
    the router's external address in the answer; the delete the RFC defines (lifetime 0,
    section 15) is refused by miniupnpd 2.3.1's nftables backend, which cannot find its own
    peer rule ("Failed to find PCP mapping"): the rule stays. natsync sends no PEER."""
    created, deleted = _peer(lab, LAN_ROUTER, "198.51.100.1")
    assert created["external"] == lab.wan_address
    assert created["lifetime"] == 120
    assert f"th dport {created['port']} th sport 9 snat ip to {lab.wan_address}" in _snat_rules(lab)
    assert deleted == {"error": "the router has no room for more mappings", "code": 8}
    assert f"th dport {created['port']} th sport 9" in _snat_rules(lab)  # left behind


def test_pcp_peer_over_ipv6_is_not_supported_by_miniupnpd(lab: Lab) -> None:
    (answer,) = _peer(lab, LAN6_ROUTER, "2a0e:97c0:1::1")
    assert answer == {"error": "the router does not support PCP PEER", "code": 4}
