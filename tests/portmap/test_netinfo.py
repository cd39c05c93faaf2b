from __future__ import annotations

import ipaddress
import json

import pytest

from natsync.portmap.netinfo import AddressKind, classify, parse_ip_json, parse_route_table


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("192.0.3.10", AddressKind.PUBLIC),
        ("100.64.0.10", AddressKind.SHARED),
        ("100.127.255.254", AddressKind.SHARED),
        ("100.128.0.1", AddressKind.PUBLIC),
        ("10.1.2.3", AddressKind.PRIVATE),
        ("172.20.0.1", AddressKind.PRIVATE),
        ("192.168.1.1", AddressKind.PRIVATE),
        ("127.0.0.1", AddressKind.LOOPBACK),
        ("169.254.1.1", AddressKind.LINK_LOCAL),
        ("192.0.2.1", AddressKind.RESERVED),
        ("2a00:1450::1", AddressKind.PUBLIC),
        ("fd00::1", AddressKind.UNIQUE_LOCAL),
        ("fe80::1", AddressKind.LINK_LOCAL),
    ],
)
def test_classify(address: str, kind: AddressKind) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


def test_default_gateway_from_proc_net_route() -> None:
    text = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n"
    )
    assert parse_route_table(text) == "192.168.1.1"
    assert parse_route_table(text.splitlines()[0]) is None


def test_parse_ip_json_keeps_global_addresses() -> None:
    text = json.dumps(
        [
            {
                "ifname": "eth0",
                "addr_info": [
                    {"family": "inet", "local": "203.0.113.5", "scope": "global"},
                    {"family": "inet6", "local": "fe80::1", "scope": "link"},
                    {"family": "inet6", "local": "2001:db8::5", "scope": "global"},
                ],
            }
        ]
    )
    assert [str(a) for a in parse_ip_json(text)] == ["203.0.113.5", "2001:db8::5"]


def test_parse_ip_json_publishable_leaves_out_temporary_and_deprecated() -> None:
    text = json.dumps(
        [
            {
                "ifname": "eth0",
                "addr_info": [
                    {"local": "2001:db8::aa", "scope": "global", "temporary": True},
                    {"local": "2001:db8::bb", "scope": "global", "preferred_life_time": 0},
                    {"local": "2001:db8::cc", "scope": "global", "deprecated": True},
                    {"local": "2001:db8::dd", "scope": "global", "tentative": True},
                    {"local": "2001:db8::5", "scope": "global", "mngtmpaddr": True},
                    {"local": "fd00::5", "scope": "global"},
                ],
            }
        ]
    )
    assert len(parse_ip_json(text)) == 6
    assert [str(a) for a in parse_ip_json(text, publishable=True)] == ["2001:db8::5", "fd00::5"]
