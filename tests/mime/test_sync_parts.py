"""The parts kept at delivery (``NewMessage.parts``) read back exactly as parsing the MIME does.

A Sync window renders from ``natsync.mime.sync_parts(raw, kept)``; for every sample the kept
parts, the parts read from the raw message (a message delivered before they were kept), and
``read_content`` must agree, and kept text that is missing, too large or not ours falls back to
the MIME.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from natsync.mime import (
    MAX_KEPT_PARTS_CHARS,
    SyncParts,
    header_text,
    kept_parts,
    parse_message,
    read_content,
    sync_parts,
)
from natsync.mime.errors import MailError
from tests.mime.test_mime_fast import FAST, PARSER_ONLY

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

SAMPLES = {
    **FAST,
    **PARSER_ONLY,
    "alternative": (
        b"From: a@example.test\r\nSubject: Re: Fwd: plan\r\nThread-Topic: plan\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain \xc3\xa4\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b--\r\n"
    ),
    "nul and controls": b"From: a@example.test\r\nSubject: x\r\n\r\nnul \x00 bell \x07 end\r\n",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_kept_parts_read_back_as_the_mime_reads(name: str) -> None:
    raw = SAMPLES[name]
    content = read_content(raw)
    expected = SyncParts(
        content.text,
        content.html,
        header_text(content.message, "Thread-Topic"),
        header_text(content.message, "Thread-Index"),
    )
    assert sync_parts(raw, None) == expected
    kept = kept_parts(expected)
    assert kept is not None
    assert "\0" not in kept  # PostgreSQL text cannot hold NUL: JSON escapes it
    assert sync_parts(raw, kept) == expected
    try:
        delivered = parse_message(raw, NOW)
    except MailError:
        return  # not a message: never delivered, never kept
    assert delivered.parts == kept


def test_kept_parts_are_used_without_reading_the_mime() -> None:
    # Parts that differ from the MIME show which one was read.
    kept = kept_parts(SyncParts("kept text", None, "kept topic", ""))
    assert sync_parts(FAST["plain crlf"], kept) == SyncParts("kept text", None, "kept topic", "")


@pytest.mark.parametrize(
    "kept", ["", "not json", "[]", '[2, "t", null, "", ""]', '[1, 5, null, "", ""]']
)
def test_unreadable_or_other_version_parts_fall_back_to_the_mime(kept: str) -> None:
    raw = FAST["plain crlf"]
    assert sync_parts(raw, kept) == sync_parts(raw, None)


def test_very_large_bodies_are_not_kept_twice() -> None:
    big = b"From: a@example.test\r\nSubject: big\r\n\r\n" + b"x" * (MAX_KEPT_PARTS_CHARS + 1)
    message = parse_message(big, NOW)
    assert message.parts is None
    assert sync_parts(big, message.parts).text == read_content(big).text
