#!/usr/bin/env python3
"""atheris harness for what natsync.ddns and natsync.portmap read from the network: STUN,
NAT-PMP and PCP answers, UPnP SSDP / description / SOAP answers, echo answers, TSIG key files.
Any bytes must decode or raise natsync's own error (SourceError, PortMapError, ConfigError).

    python fuzz/fuzz_ddns_wire.py -max_total_time=60 fuzz/corpus-fuzz_ddns_wire

The first byte picks the parser; an empty corpus directory is seeded with one real answer each.
"""

from __future__ import annotations

import struct

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.ddns.errors import SourceError
    from natsync.ddns.sources import parse_echo
    from natsync.ddns.stun import MAGIC_COOKIE, decode_binding_response
    from natsync.ddns.update import parse_key
    from natsync.errors import ConfigError
    from natsync.portmap.errors import PortMapError
    from natsync.portmap.natpmp import (
        decode_external_address_response,
        decode_mapping_response,
    )
    from natsync.portmap.pcp import decode_map_response, decode_peer_response
    from natsync.portmap.upnp import parse_description, parse_soap_response, parse_ssdp_location

TXID = bytes(range(12))

SEEDS = [
    b"\x00"
    + struct.pack("!HHI", 0x0101, 12, MAGIC_COOKIE)
    + TXID
    + bytes.fromhex("002000080001a147e112a643"),
    b"\x01" + bytes.fromhex("00800000000000070c000309"),
    b"\x02" + bytes.fromhex("008200000000000920fb01bb00000e10"),
    b"\x03<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>"
    b"<u:XResponse xmlns:u='urn:x'><A>1</A></u:XResponse></s:Body></s:Envelope>",
    b"\x04<root xmlns='urn:schemas-upnp-org:device-1-0'><device><serviceList><service>"
    b"<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
    b"<controlURL>/ctl</controlURL></service></serviceList></device></root>",
    b"\x05HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:5000/root.xml\r\n\r\n",
    b'\x06key "k" { algorithm hmac-sha256; secret "c2VjcmV0"; };',
    b"\x07192.0.3.10\n",
    b"\x08"
    + bytes.fromhex("0281000000000e1000000009")
    + bytes(12)
    + TXID
    + bytes.fromhex("06000000" + "20fb01bb" + "00000000000000000000ffffc000030a"),
    b"\x09"
    + bytes.fromhex("028200000000007800000000")
    + bytes(12)
    + TXID
    + bytes.fromhex("11000000" + "9c409c41" + "00000000000000000000ffff6440000a")
    + bytes.fromhex("00090000" + "00000000000000000000ffffc0000201"),
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 10, data[1:]
    try:
        match kind:
            case 0:
                decode_binding_response(body, TXID)
            case 1:
                decode_external_address_response(body)
            case 2:
                decode_mapping_response(body, "tcp")
            case 3:
                parse_soap_response(body, "X")
            case 4:
                parse_description(body, "http://192.168.1.1:5000/root.xml")
            case 5:
                parse_ssdp_location(body)
            case 6:
                parse_key(body.decode("utf-8", "replace"))
            case 8:
                decode_map_response(body, TXID, "tcp")
            case 9:
                decode_peer_response(body, TXID, "udp", "192.0.2.1", 9)
            case _:
                parse_echo(body)
    except (SourceError, PortMapError, ConfigError):
        return


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
