#!/usr/bin/env python3
"""atheris harness for what natsync.eas reads from the network before any command runs: the
query string (plain and base64 forms, MS-ASHTTP 2.2.1.1.1), the Autodiscover request XML, a
Sync request's Collections, and stored sync state blobs. Any bytes must parse or raise natsync's
own error (HttpError / EasError / WBXMLError), never anything else.

    python fuzz/fuzz_eas_request.py -max_total_time=60 fuzz/corpus-fuzz_eas_request

The first byte picks the parser; an empty corpus directory is seeded with one real input each.
"""

from __future__ import annotations

import base64

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.eas import autodiscover, state
    from natsync.eas.errors import EasError
    from natsync.eas.request import encode_base64_query, parse_request
    from natsync.eas.sync_request import parse_collection
    from natsync.eas.versions import V14_1
    from natsync.wbxml import E, WBXMLError, decode, encode

HEADERS = {"MS-ASProtocolVersion": "16.1", "X-MS-PolicyKey": "1"}

SEEDS = [
    b"\x00" + base64.b64decode(encode_base64_query("Sync", "dev", "Phone", V14_1, policy_key=7)),
    b"\x01Cmd=Sync&User=alice&DeviceId=abc&DeviceType=iPhone&SaveInSent=T",
    b"\x02<Autodiscover><Request><EMailAddress>a@b.c</EMailAddress>"
    b"<AcceptableResponseSchema>x</AcceptableResponseSchema></Request></Autodiscover>",
    b"\x03" + state.pack({"items": {"1:1": 2}, "for": "0"}),
    b"\x04"
    + encode(
        E(
            "AirSync",
            "Sync",
            E(
                "AirSync",
                "Collections",
                E(
                    "AirSync",
                    "Collection",
                    E("AirSync", "SyncKey", "{00000000}1"),
                    E("AirSync", "CollectionId", "1"),
                    E("AirSync", "WindowSize", 5),
                    E("AirSync", "Options", E("AirSync", "FilterType", 3)),
                ),
            ),
        )
    ),
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 5, data[1:]
    try:
        match kind:
            case 0:
                parse_request(base64.b64encode(body).decode("ascii"), {})
            case 1:
                parse_request(body.decode("latin-1"), HEADERS)
            case 2:
                autodiscover.parse_request(body)
            case 3:
                state.load(body)
            case _:
                root = decode(body)
                colls = root.find("Collections", "AirSync")
                for coll in colls.findall("Collection", "AirSync") if colls else []:
                    parse_collection(coll, None)
    except (EasError, WBXMLError):
        return


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
