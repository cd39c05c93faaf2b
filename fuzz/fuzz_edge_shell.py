#!/usr/bin/env python3
"""atheris harness for the shell's steady reads in C (natsync.edge._steady: ClientConn's and
BackendConn's buffer_updated) against the Python shell and machine, the reference: any bytes
become events (the phone's requests, the attached server's answers, bytes from an idle pooled
connection, one closing or speaking unasked, time passing, a failed check), played to an edge
reading through C and to one reading through Python over fake transports; after every event
both must be left the same (tests/edge/steady_drive.py compares them).

    python fuzz/fuzz_edge_shell.py -max_total_time=60 fuzz/corpus-fuzz_edge_shell

The first byte sets which pooled connections were remembered (bits 0-3) and the pool size
(bits 4-5); then each event is one byte (its kind and which template or connection) and, for
bytes, a length byte and that many bytes of the input (appended to the template).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import atheris
from _harness import fuzz_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.edge.steady_drive
with atheris.instrument_imports(include=["natsync"]):
    from tests.edge.steady_drive import POOLED, compare

    from natsync.edge import proxy

if proxy.C_READS is None:
    raise SystemExit("natsync.edge._steady is not built: nothing to compare")

EAS = b"/Microsoft-Server-ActiveSync?Cmd="
REQUESTS = [
    b"POST " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
    b"GET " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST " + EAS + b"Ping HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"GET " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"",
]
ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"",
]
POOL_SIZES = [1, 2, 64, 64]
SEEDS = [
    b"\x2f\x00\x03abc\x01\x02ok\x00\x03abc\x01\x02ok",
    b"\x2f\x00\x03abc\x01\x02ok\x05\x00\x03abc\x0e\x02ok\x01\x02ok",
    b"\x1a\x00\x03abc\x06\x01\x02ok\x04\x00\x03abc\x01\x02ok",
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    remembered = [bool(data[0] >> bit & 1) for bit in range(POOLED)]
    pool_size = POOL_SIZES[data[0] >> 4 & 3]
    events: list[tuple[Any, ...]] = []
    at = 1
    while at < len(data) and len(events) < 40:
        op = data[at]
        at += 1
        kind, pick = op % 7, op >> 3
        if kind in (0, 1, 2):
            size = data[at] if at < len(data) else 0
            payload = data[at + 1 : at + 1 + size]
            at += 1 + size
            if kind == 0:
                events.append(("phone", REQUESTS[pick % len(REQUESTS)] + payload))
            elif kind == 1:
                events.append(("server", ANSWERS[pick % len(ANSWERS)] + payload))
            else:
                events.append(("pooled", pick % POOLED, ANSWERS[pick % 2] + payload))
        elif kind == 3:
            events.append(("closes", pick % POOLED))
        elif kind == 4:
            events.append(("poke", pick % POOLED))
        elif kind == 5:
            events.append(("wait", 40.0 if pick & 1 else 1.0))
        else:
            events.append(("fails",))
    compare(events, remembered, pool_size)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
