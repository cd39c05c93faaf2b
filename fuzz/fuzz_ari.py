#!/usr/bin/env python3
"""atheris harness for what the certificate manager reads from an ACME server's renewalInfo
resource (RFC 9773 section 4.2): the JSON body and the Retry-After header. Any bytes must decode
or raise natsync's own AriError.

    python fuzz/fuzz_ari.py -max_total_time=60 fuzz/corpus-fuzz_ari

The first line of the input is the Retry-After header, the rest the body.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.cert.ari import AriError, parse_renewal_info

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SEEDS = [
    b'21600\n{"suggestedWindow": {"start": "2026-12-20T00:00:00Z", '
    b'"end": "2026-12-22T00:00:00Z"}, "explanationURL": "https://ca.example/why"}',
    b'Tue, 01 Dec 2026 14:00:00 GMT\n{"suggestedWindow": {"start": "2026-12-20T00:00:00+01:00",'
    b' "end": "2026-12-20T00:00:00Z"}}',
]


def test_one_input(data: bytes) -> None:
    header, _, body = data.partition(b"\n")
    with contextlib.suppress(AriError):
        parse_renewal_info(body, header.decode("latin-1"), NOW)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".txt")
