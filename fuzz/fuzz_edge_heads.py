#!/usr/bin/env python3
"""atheris harness for the edge's head parsers and serialisers: the C common case
(natsync.edge._speedups) against the Python reference (natsync.edge.http). Any bytes: the C side
returns None or exactly the Python parser's result, and never raises; the public parsers decode
or raise EdgeHttpError; a head C took serialises (for the server, or for the phone) to the
Python serialiser's bytes or None.

    python fuzz/fuzz_edge_heads.py -max_total_time=60 fuzz/corpus-fuzz_edge_heads

The first byte picks request or response (and the response's request method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.edge import http
    from natsync.edge.http import EdgeHttpError

MAX_BODY = 1 << 20
C = http.speedups
if C is None:
    raise SystemExit("natsync.edge._speedups is not built: nothing to compare")

SEEDS = [
    b"\x00GET /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\x00POST /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
    b"Connection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nbody",
    b"\x01HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n"
    b"Connection: keep-alive\r\n\r\nok\n",
    b"\x02HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    if kind == 0:
        _agree(C.take_request, http.python_request_head, http.take_request, body, MAX_BODY)
        taken = C.take_request(body, MAX_BODY)
        if taken is not None:  # the head the server gets: C's bytes are Python's, or None
            fast = C.backend_request(taken[0], "192.0.2.7")
            assert fast is None or fast == http.python_backend_request(taken[0], "192.0.2.7")
    else:
        method = b"GET" if kind == 1 else b"HEAD"
        _agree(C.take_response, http.python_response_head, http.take_response, body, method)
        taken = C.take_response(body, method)
        if taken is not None:  # the head the phone gets, kept alive or not
            for keep_alive in (True, False):
                fast = C.client_response(taken[0], keep_alive)
                assert fast is None or fast == http.python_client_response(taken[0], keep_alive)


def _agree(
    c_take: Callable[[bytes, Any], object],
    reference: Callable[[bytes, Any], object],
    take: Callable[[bytes, Any], object],
    body: bytes,
    arg: Any,
) -> None:
    """The C take is None or the reference's result; the public take decodes or raises ours."""
    fast = c_take(body, arg)
    if fast is not None:
        split = http.split_head(body)
        assert split is not None
        assert fast == (reference(split[0], arg), split[1])
    try:
        take(body, arg)
    except EdgeHttpError:
        return


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".http")
