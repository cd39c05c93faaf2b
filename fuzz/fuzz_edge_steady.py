#!/usr/bin/env python3
"""atheris harness for the phone connection machine's steady moves in C (natsync.edge._steady)
against the Python methods, the reference: any bytes become a transcript (requests and answers,
whole, cut or arbitrary, the server offered, lost or silent, time passing, the access log
switched), played to a machine with the C moves and to one without; both must give the same
commands (or the same EdgeStateError) and be left the same, with the same counters and rate
limit, after every event.

    python fuzz/fuzz_edge_steady.py -max_total_time=60 fuzz/corpus-fuzz_edge_steady

Each event is one byte (its kind; and for bytes, which template) and, for bytes, a length byte
and that many bytes of the input (appended to the template).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import atheris
from _harness import fuzz_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.edge.steady_drive
with atheris.instrument_imports(include=["natsync"]):
    from tests.edge.steady_drive import machine_state

    from natsync.edge import connection
    from natsync.edge.config import EdgeConfig
    from natsync.edge.connection import (
        ClientMachine,
        DropBackend,
        EdgePolicy,
        EdgeStateError,
        OpenBackend,
        ReleaseBackend,
        python_moves,
    )

if connection.steady is None:
    raise SystemExit("natsync.edge._steady is not built: nothing to compare")

EAS = b"/Microsoft-Server-ActiveSync?Cmd="
REQUESTS = [
    b"",
    b"GET " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
    b"POST " + EAS + b"Ping HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"GET " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"POST " + EAS + b"Sync HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
]
ANSWERS = [
    b"",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
]
CONFIGS = [
    EdgeConfig(),
    EdgeConfig(requests_per_second_per_ip=1, request_burst_per_ip=2),
]
SEEDS = [
    b"\x00\x01\x00\x02\x00\x03\x02ok\x01\x00\x02\x00\x03\x02ok",
    b"\x01\x02\x03abc\x02\x03\x02ok\x02\x03abc\x02\x03\x02ok\x07",
    b"\x00\x03\x00\x02\x06\x0b\x02ok\x03\x00",
]


def _state(machine: ClientMachine, policy: EdgePolicy) -> tuple[Any, ...]:
    return (*machine_state(machine, policy), policy.limits.connections)


def _play(machine: ClientMachine, kind: int, data: bytes, now: float) -> Any:
    try:
        if kind == 0:
            return machine.client_data(data, now)
        if kind == 1:
            return machine.backend_ready(now)
        if kind == 2:
            return machine.backend_data(data, now)
        if kind == 3:
            return machine.backend_closed(now)
        if kind == 4:
            return machine.backend_silent(now)
        if kind == 5:
            return machine.timer(now)
        return machine.client_lost(now)
    except EdgeStateError as exc:
        return ("EdgeStateError", str(exc))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    logged = [bool(data[0] & 2)]
    config = CONFIGS[data[0] & 1]
    pairs = []
    for _ in range(2):
        policy = EdgePolicy.of(config, lambda: logged[0])
        machine = ClientMachine(policy, "192.0.2.7")
        machine.connected(1000.0)
        pairs.append((machine, policy))
    (fast, fast_policy), (reference, reference_policy) = pairs
    now = 1000.0
    wants = attached = gone = False
    at = 1
    while at < len(data):
        op = data[at]
        at += 1
        kind = op % 8
        if kind == 7:  # time passes (the deadline fires if it passed), or the log switches
            if op & 8:
                logged[0] = not logged[0]
                continue
            now += 0.5 if op & 16 else 40.0
            if not fast.deadline or now <= fast.deadline:
                continue
            kind = 5
        payload = b""
        if kind in (0, 2):
            size = data[at] if at < len(data) else 0
            payload = data[at + 1 : at + 1 + size]
            at += 1 + size
            templates = REQUESTS if kind == 0 else ANSWERS
            payload = templates[(op >> 3) % len(templates)] + payload
        if kind in (0, 5, 6) and gone:
            continue
        if kind == 1 and not wants:
            continue
        if kind in (2, 3, 4) and not attached:
            continue
        if kind == 1:
            wants, attached = False, True
        elif kind in (3, 4):
            attached = False
        gone = gone or kind == 6
        given = _play(fast, kind, payload, now)
        with python_moves():
            expected = _play(reference, kind, payload, now)
        assert given == expected, (kind, payload, given, expected)
        assert _state(fast, fast_policy) == _state(reference, reference_policy), (kind, payload)
        if isinstance(given, list):
            for command in given:
                if isinstance(command, OpenBackend):
                    wants = True
                elif isinstance(command, ReleaseBackend | DropBackend):
                    attached = False


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
