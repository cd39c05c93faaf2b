#!/usr/bin/env python3
"""atheris harness for the WBXML codec's C common case (natsync.wbxml._speedups) against the
Python reference (natsync.wbxml.decoder / encoder). Any bytes: the C decoder returns None or
exactly the Python decoder's tree, and never accepts what the Python decoder refuses; a tree
that decodes is encoded by both, byte for byte the same (text cleaned by the one cleaner).

    python fuzz/fuzz_wbxml_speedups.py -max_total_time=60 fuzz/corpus-fuzz_wbxml_speedups
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.wbxml import Element, WBXMLError, encode, samples, speedups
    from natsync.wbxml.decoder import python_decode
    from natsync.wbxml.encoder import python_encode

C = speedups.speedups
if C is None:
    raise SystemExit("natsync.wbxml._speedups is not built: nothing to compare")


def _python_decode(data: bytes) -> Element | None:
    try:
        return python_decode(data)
    except WBXMLError:
        return None


def test_one_input(data: bytes) -> None:
    for doc in (data, b"\x03\x01\x6a\x00" + data):  # raw, and behind the EAS header
        expected = _python_decode(doc)
        got = C.decode(doc)
        assert got is None or got == expected, "C and Python decoders disagree"
        if expected is not None:
            wire = C.encode(expected)
            assert wire is not None, "the C encoder declined a decoded tree"
            assert wire == python_encode(expected), "C and Python encoders disagree"


def seeds() -> list[bytes]:
    """Valid documents to start from."""
    trees = [*samples.small_documents(), samples.sync_response(emails=4, body_chars=60)]
    return [encode(tree) for tree in trees]


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds(), ".wbxml")
