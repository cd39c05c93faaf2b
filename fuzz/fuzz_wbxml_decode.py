#!/usr/bin/env python3
"""atheris harness for the WBXML decoder: any input decodes or raises WBXMLError, nothing else.

Each input is fed whole and then byte by byte (every prefix, or a spread of cut points for long
inputs), because a network peer can stop anywhere: a prefix of a document must be refused with
WBXMLError, never crash, hang or accept. A document that decodes must also re-encode to a document
that decodes to the same tree, its text cleaned for XML 1.0 (natsync.wbxml.chars: a peer may send
control characters in STR_I, the encoder sends none), and that re-encodes to itself.

    python fuzz/fuzz_wbxml_decode.py -max_total_time=60 fuzz/corpus-fuzz_wbxml_decode

Given a corpus directory that is empty, it first writes seeds there: valid EAS documents built
by natsync.wbxml.samples, so the fuzzer starts from real structure (nothing binary committed).
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

# Coverage feedback from the codec only (not defusedxml and the other modules it imports).
with atheris.instrument_imports(include=["natsync"]):
    from natsync.wbxml import WBXMLError, decode, encode, samples
    from natsync.wbxml.chars import is_xml_text

#: Up to this length every prefix is tried; beyond it, a spread of cut points plus the last few
#: bytes (bounded work per input, so the fuzzer keeps a useful rate).
ALL_PREFIXES_UP_TO = 48
SPREAD_CUTS = 24


def _decode_or_none(data: bytes) -> object:
    try:
        return decode(data)
    except WBXMLError as exc:
        if exc.offset is not None and not 0 <= exc.offset <= len(data):
            raise AssertionError(f"offset {exc.offset} outside a {len(data)}-byte input") from exc
        return None


def test_one_input(data: bytes) -> None:
    tree = _decode_or_none(data)
    if tree is not None:
        sent = encode(tree)  # type: ignore[arg-type]
        again = decode(sent)
        assert encode(again) == sent
        assert all(is_xml_text(el.value) for el in again.iter() if isinstance(el.value, str))
    n = len(data)
    if n <= ALL_PREFIXES_UP_TO:
        cuts: range | list[int] = range(n)
    else:
        step = max(n // SPREAD_CUTS, 1)
        cuts = [*range(0, n, step), *range(max(n - 8, 0), n)]
    for cut in cuts:
        prefix_tree = _decode_or_none(data[:cut])
        # A proper prefix of a valid document can never be valid: the root ends at the last byte.
        assert tree is None or prefix_tree is None, f"prefix of {cut} bytes decoded"


def seeds() -> list[bytes]:
    """Valid documents to start from."""
    trees = [*samples.small_documents(), samples.sync_response(emails=4, body_chars=60)]
    return [encode(tree) for tree in trees]


if __name__ == "__main__":
    fuzz_main(test_one_input, seeds(), ".wbxml")
