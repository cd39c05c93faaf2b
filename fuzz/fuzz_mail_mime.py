#!/usr/bin/env python3
"""atheris harness for natsync.mail's MIME reading: any bytes parse or raise MailError.

Mail from the internet reaches ``parse_message`` unfiltered (SMTP in), so every input must give
a NewMessage or MailError, never another exception or a hang; the bodies (``body_text``,
``body_html``) and the EAS item's body choice must not crash on what parsed. The parts kept at
delivery (``NewMessage.parts``) must read back as reading the MIME does (``sync_parts``), and
any text where kept parts are expected falls back to the MIME rather than raising.

    python fuzz/fuzz_mail_mime.py -max_total_time=60 fuzz/corpus-fuzz_mail_mime

Given an empty corpus directory it first writes a few seed messages (multipart, encoded words,
attachments) so the fuzzer starts from real structure.
"""

from __future__ import annotations

from datetime import UTC, datetime

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.mime import (
        MAX_PREVIEW_CHARS,
        body_html,
        body_text,
        parse_message,
        sync_parts,
    )
    from natsync.mime.errors import MailError

NOW = datetime(2026, 1, 1, tzinfo=UTC)

SEEDS = [
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nTo: a@example.test\r\n"
    b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nX-Priority: 1\r\n\r\nHello\r\n",
    b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: text/html; charset=bogus\r\n\r\n<p>Hi <b>there</b></p>\r\n--b\r\n"
    b"Content-Type: image/png\r\nContent-ID: <i@x>\r\nContent-Disposition: inline\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--b--\r\n",
    b"Subject: cal\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n",
]


def test_one_input(data: bytes) -> None:
    try:
        message = parse_message(data, NOW)
    except MailError:
        return
    assert len(message.preview) <= MAX_PREVIEW_CHARS
    body_text(data)
    body_html(data)
    assert sync_parts(data, message.parts) == sync_parts(data, None)
    sync_parts(data, data.decode("utf-8", "replace"))


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".eml")
