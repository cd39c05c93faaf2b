#!/usr/bin/env python3
"""atheris harness for what the doctor reads from `wg show IFACE latest-handshakes`
(natsync.doctor.relay.handshake_age): any text gives an age or None, never an exception.

    python fuzz/fuzz_wg_handshakes.py -max_total_time=60 fuzz/corpus-fuzz_wg_handshakes
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.doctor.relay import handshake_age

SEEDS = [
    b"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t1765051200\n",
    b"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t0\n",
    b"a=\t\xc2\xb2\n",
]
#: The moment the ages are counted from (a fixed one: the parser is pure).
NOW = 1765051260.0


def test_one_input(data: bytes) -> None:
    age = handshake_age(data.decode("utf-8", "replace"), NOW)
    assert age is None or age >= 0.0


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".txt")
