#!/usr/bin/env python3
"""atheris harness for the ClientHello reader the edge uses for TLS-ALPN-01 (RFC 8737 section 3:
the validation certificate only for a handshake offering acme-tls/1). Any bytes a client sends
first must decode, ask for more, or raise natsync's own ClientHelloError.

    python fuzz/fuzz_client_hello.py -max_total_time=60 fuzz/corpus-fuzz_client_hello
"""

from __future__ import annotations

import contextlib
import ssl

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.cert.client_hello import ClientHelloError, parse_client_hello


def _hello(name: str | None, alpn: list[str] | None) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


SEEDS = [
    _hello("mail.example.test", ["acme-tls/1"]),
    _hello("mail.example.test", ["h2", "http/1.1"]),
    _hello(None, None),
]


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(ClientHelloError):
        parse_client_hello(data)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
