#!/usr/bin/env python3
"""atheris harness for the server front's connection machine (natsync.server.connection): any
bytes, fed in pieces, with the app answering each whole request at once. The machine never
raises, only changes state through its table, serves no request after it closed, and fed the
same bytes whole or in pieces serves the same requests with the same bodies.

    python fuzz/fuzz_server_connection.py -max_total_time=60 fuzz/corpus-fuzz_server_connection

The first byte picks the size of the pieces.
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.server.connection import (
        BUSY,
        CLOSED,
        Action,
        Body,
        Close,
        Limits,
        Reply,
        Serve,
        ServerConnection,
    )

LIMITS = Limits(header_timeout=30.0, body_timeout=60.0)
DATE = b"Sun, 06 Dec 2026 23:00:00 GMT"

SEEDS = [
    b"\x05GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x03POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x07POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;e=1\r\nabc\r\n0\r\nT: t\r\n\r\n",
    b"\x01POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
]


def _play(data: bytes, piece: int) -> tuple[list[bytes], bytes, bool]:
    """(request lines served, body bytes, closed) for *data* fed *piece* bytes at a time."""
    conn = ServerConnection(LIMITS, 0.0, tls=False)
    served: list[bytes] = []
    body: list[bytes] = []
    closed = False
    now = 0.0
    for start in range(0, len(data), piece):
        now += 0.001
        actions: list[Action] = conn.receive(data[start : start + piece], now, DATE)
        while conn.state is BUSY:
            actions += conn.answer(Reply(200), now, DATE)
        for action in actions:
            assert not closed, f"{action!r} after Close"
            if isinstance(action, Serve):
                served.append(action.head.method + b" " + action.head.target)
            elif isinstance(action, Body):
                body.append(action.data)
            elif isinstance(action, Close):
                closed = True
                assert conn.state is CLOSED
    return served, b"".join(body), closed


def test_one_input(data: bytes) -> None:
    if not data:
        return
    piece, wire = data[0] % 16 + 1, data[1:]
    whole = _play(wire, max(len(wire), 1))
    pieces = _play(wire, piece)
    if not pieces[2] and not whole[2]:
        assert pieces == whole, (pieces, whole)
    else:  # a refusal can come earlier whole (431 on a too long buffer); what was served agrees
        shorter = min(len(pieces[0]), len(whole[0]))
        assert pieces[0][:shorter] == whole[0][:shorter]


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".http")
