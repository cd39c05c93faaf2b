#!/usr/bin/env python3
"""atheris harness for the edge TLS transport's reads in C (natsync.edge._tlsio, read_ahead on)
against the Python reference (CPython's ``_ssl``): after a real handshake over a socket pair,
the peer sends records of plaintext from the input, maybe its close_notify, then the rest of
the input as raw bytes, maybe then FIN; both paths must read the same plaintext and end the
same way (want read, EOF, or the same exception class), and neither may crash.

    python fuzz/fuzz_edge_tlsio.py -max_total_time=60 fuzz/corpus-fuzz_edge_tlsio

The first byte: bit 0 close_notify, bit 1 FIN, bit 2 TLS 1.2 (else 1.3); the second: how many
of the following bytes are plaintext (times 16), cut into records of up to 256 bytes.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import sys
import tempfile
from pathlib import Path

import atheris
from _harness import fuzz_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.edge.tlsio_drive

with atheris.instrument_imports(include=["natsync", "tests"]):  # drive's branches: its outcome
    from tests.edge.tlsio_drive import NAME, drive

    from natsync.cert import init_ca, policy
    from natsync.edge import transport

if transport.tlsio is None:
    raise SystemExit("natsync.edge._tlsio is not built or refused _ssl's layout: no comparison")

_base = Path(tempfile.mkdtemp(prefix="fuzz-tlsio-"))
atexit.register(shutil.rmtree, _base, ignore_errors=True)
_ca = init_ca(_base / "ca")
_cert, _key = _ca.issue_server_cert([NAME], ["127.0.0.1"], _base / "edge", basename="edge")
SERVER = policy.server_context()
SERVER.load_cert_chain(str(_cert), str(_key))
CLIENTS = {}
for _version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
    CLIENTS[_version] = ssl.create_default_context(cafile=str(_ca.cert_path))
    CLIENTS[_version].maximum_version = _version
RECORD = 256

SEEDS = [
    b"\x00\x01" + b"GET / HTTP/1.1\r\n\r\n",
    b"\x01\x02" + b"x" * 40,
    b"\x02\x00" + b"\x17\x03\x03\x00\x05junk!",
    b"\x07\x01" + b"0123456789abcdef" + b"\x15\x03\x03\x00\x02\x01\x00",
]


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, plain_len = data[0], data[1] * 16
    body = data[2:]
    plain, garbage = body[:plain_len], body[plain_len:]
    pieces = [plain[at : at + RECORD] for at in range(0, len(plain), RECORD)]
    client = CLIENTS[ssl.TLSVersion.TLSv1_2 if flags & 4 else ssl.TLSVersion.TLSv1_3]
    close_notify, fin = bool(flags & 1), bool(flags & 2)
    c = drive(SERVER, client, True, pieces, garbage, close_notify, fin)
    python = drive(SERVER, client, False, pieces, garbage, close_notify, fin)
    if c != python:
        raise AssertionError(f"C read {c!r}, _ssl read {python!r}")


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
