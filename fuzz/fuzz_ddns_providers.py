#!/usr/bin/env python3
"""atheris harness for what the DNS providers answer natsync.ddns: dyndns2 return codes, Duck
DNS OK/KO, and Cloudflare / deSEC API answers (status, body, Retry-After). Any bytes must
decode or raise natsync's own DnsUpdateError.

    python fuzz/fuzz_ddns_providers.py -max_total_time=60 fuzz/corpus-fuzz_ddns_providers

The first byte picks the parser (and, for the APIs, the HTTP status); an empty corpus directory
is seeded with one real answer each.
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.ddns.errors import DnsUpdateError
    from natsync.ddns.provider_settings import CloudflareSettings, DesecSettings, Secret
    from natsync.ddns.providers.base import HttpAnswer
    from natsync.ddns.providers.cloudflare import CloudflareUpdater
    from natsync.ddns.providers.desec import DesecUpdater
    from natsync.ddns.providers.duckdns import parse_answer as duckdns_answer
    from natsync.ddns.providers.dyndns2 import parse_answer as dyndns2_answer

SEEDS = [
    b"\x00good 192.0.3.10\n",
    b"\x01OK\n192.0.3.10\n\nUPDATED",
    b'\x02{"success":false,"errors":[{"code":9109,"message":"Invalid access token"}]}',
    b'\x03[{"subname":"eas","type":"A","ttl":3600,"records":["192.0.3.10"]}]',
]
STATUSES = (200, 204, 400, 401, 403, 404, 429, 500)
CLOUDFLARE = CloudflareUpdater(CloudflareSettings(Secret("t")), None)
DESEC = DesecUpdater(DesecSettings(Secret("t")), None)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0], data[1:]
    try:
        match kind % 4:
            case 0:
                dyndns2_answer(body)
            case 1:
                duckdns_answer(body, "fuzz")
            case _:
                status = STATUSES[(kind // 4) % len(STATUSES)]
                answer = HttpAnswer(status, {"retry-after": body[:8].decode("latin-1")}, body)
                (CLOUDFLARE if kind % 4 == 2 else DESEC).read_answer(answer, "fuzz")
    except DnsUpdateError:
        return


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
