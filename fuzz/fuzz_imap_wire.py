#!/usr/bin/env python3
"""atheris harness for natsync.sources.wire: the IMAP response pieces the mirror decodes (LIST,
FETCH, VANISHED, response codes, modified UTF-7), the keyword <-> category mapping
(natsync.sources.keywords, which must round-trip) and natsync.sources.structure (FETCH responses
with nested lists and literals, BODYSTRUCTURE, the partial copy of a lazily mirrored message).
Any bytes must decode or raise ImapWireError.

    python fuzz/fuzz_imap_wire.py -max_total_time=60 fuzz/corpus-fuzz_imap_wire

The first byte picks the decoder; a NUL in the rest splits a FETCH head from its literal.
"""

from __future__ import annotations

import contextlib

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.sources.keywords import category_to_keyword, keyword_to_category
    from natsync.sources.structure import (
        can_be_lazy,
        fetch_item,
        parse_bodystructure,
        parse_fetches,
        partial_message,
    )
    from natsync.sources.wire import (
        ImapWireError,
        copy_uids,
        decode_mutf7,
        parse_fetch,
        parse_list,
        parse_vanished,
        response_codes,
    )

SEEDS = [
    b'L(\\HasNoChildren \\Sent) "/" Sent',
    b'L(\\HasChildren) "." "Caf&AOk-"',
    b'F1 (UID 7 FLAGS (\\Seen \\Flagged) MODSEQ (12) INTERNALDATE "06-Dec-2026 12:00:00 +0000"'
    b" BODY[] {5}\x00hello",
    b"V(EARLIER) 1:3,7",
    b"C[UIDVALIDITY 3] [HIGHESTMODSEQ 9] [COPYUID 3 1:2 5:6]",
    b"MCaf&AOk-/&ZeVnLIqe-",
    b"KTr&C3A8-s&20-important",
    b'S1 (UID 7 RFC822.SIZE 900 BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL'
    b' "7bit" 3 1 NIL NIL NIL NIL)("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 800'
    b' NIL ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)'
    b" BODY[HEADER] {4}\r\nA:\r\n)",
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, rest = data[:1], data[1:]
    with contextlib.suppress(ImapWireError):
        if kind == b"L":
            head, sep, literal = rest.partition(b"\x00")
            parse_list((head, literal) if sep else head)
        elif kind == b"F":
            head, sep, literal = rest.partition(b"\x00")
            parse_fetch((head, literal) if sep else head)
        elif kind == b"S":
            for response in parse_fetches(rest):
                if "BODYSTRUCTURE" in response:
                    top = parse_bodystructure(response["BODYSTRUCTURE"])
                    if can_be_lazy(top):
                        partial_message(b"", top, {}, 0, False, "0" * 32)
                fetch_item(response)
        elif kind == b"V":
            parse_vanished(rest)
        elif kind == b"C":
            codes = response_codes([rest])
            if "COPYUID" in codes:
                copy_uids(codes["COPYUID"])
        elif kind == b"K":
            text = rest.decode("utf-8", "replace")
            keyword_to_category(text)
            keyword = category_to_keyword(text)
            if keyword is not None:
                assert keyword_to_category(keyword) in (text, None)
        else:
            decode_mutf7(rest.decode("latin-1"))


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".txt")
