#!/usr/bin/env python3
"""atheris harness for what the console reads that others wrote: a Prometheus text exposition
(the server's or the edge's /metrics, natsync.console.live) and a device's request ring as the
store holds it (natsync.server.recent). Neither may raise: a scrape or a ring that does not
parse is read as what can be read.

    python fuzz/fuzz_console_inputs.py -max_total_time=60 fuzz/corpus-fuzz_console_inputs

The first byte chooses: even, the rest is /metrics text; odd, it is a ring (JSON).
"""

from __future__ import annotations

import datetime as dt

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.console.live import MetricsDelta, parse_metrics
    from natsync.server.recent import RecentRequest, _load, holds_ping

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SEEDS = [
    b"\x00# TYPE natsync_edge_held_pings gauge\nnatsync_edge_held_pings 2\n"
    b'natsync_edge_requests_total{cmd="Ping",status="200"} 7\n'
    b'natsync_push_latency_seconds_bucket{le="0.1"} 3\n'
    b'natsync_push_latency_seconds_bucket{le="+Inf"} 4\n',
    b'\x01[{"at": "2026-12-01T00:00:00+00:00", "cmd": "Ping", "http": 200, "status": 1, '
    b'"held": 60, "ms": 1.5}, {"cmd": 3}]',
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    text = data[1:].decode("utf-8", "replace")
    if data[0] % 2 == 0:
        parse_metrics(text)
        delta = MetricsDelta()
        delta.sample(text, 1.0)
        delta.sample(text, 2.0)
    else:
        ring = [e for e in (RecentRequest.from_json(d) for d in _load(text)) if e is not None]
        holds_ping(ring[::-1], NOW)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".txt")
