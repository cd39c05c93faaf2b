"""The single-part fast path of natsync.mime builds exactly the tree the stdlib parser does.

Each sample is parsed both ways (``_simple_tree`` and ``email.message_from_bytes``); wherever
the fast path answers, headers, payload, decoded body and everything ``parse_message`` derives
must be identical. Samples the fast path must leave to the parser are checked to do so.
"""

from __future__ import annotations

import base64
import email
import quopri
from datetime import UTC, datetime

import pytest

from natsync.mime import _read_tree, _simple_tree, parse_message, parse_tree, read_content

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

HEAD = (
    b"Received: from mx.example.test ([192.0.2.1])\r\n\tby natsync (natsync) with ESMTP id 1;\r\n"
    b"\tWed, 25 Nov 2026 10:00:00 +0000\r\n"
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
    b"To: natsync demo <demo@example.test>, other@example.test\r\n"
    b"Subject: Hello\r\n  folded subject\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"Thread-Topic: topic\r\n"
    b"Thread-Index: AQHZ1234567890abcdefghijklmn==\r\n"
)

FAST = {
    "plain crlf": HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHi there.\r\nBye.\r\n",
    "plain lf": HEAD.replace(b"\r\n", b"\n") + b"Content-Type: text/plain\n\nHi.\n",
    "no content-type": HEAD + b"\r\nJust text\r\n",
    "no trailing newline": HEAD + b"\r\nJust text",
    "empty body": HEAD + b"\r\n",
    "html latin-1 qp": HEAD
    + b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable"
    + b"\r\n\r\n"
    + quopri.encodestring("<p>Gr\xfc\xdfe &amp; <b>mehr</b></p>".encode("latin-1")),
    "base64 utf-8": HEAD
    + b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    + base64.encodebytes("Grüße, 你好\n".encode()),
    "8-bit header and body": HEAD
    + "Subject: Grüße roh\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nä ö ü\r\n".encode(),
    "unknown charset": HEAD + b"Content-Type: text/plain; charset=x-nonsense\r\n\r\n\xe4\r\n",
    "single-part attachment": HEAD
    + b'Content-Type: application/pdf; name="r.pdf"\r\nContent-Disposition: attachment\r\n'
    + b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"%PDF-1.4 fake"),
    "calendar": HEAD + b"Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n",
    "smime": HEAD + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIA=",
    "importance": HEAD + b"Importance: high\r\nX-Priority: 1\r\n\r\nurgent\r\n",
    "header with empty value": HEAD + b"Cc:\r\nReply-To: r@example.test\r\n\r\nbody\r\n",
    "mixed line ends": HEAD + b"X-A: 1\n\r\nbody\r\n",
    "blank-looking body lines": HEAD + b"\r\n\r\n\r\nthird line\r\n",
    "rfc 2231 name": HEAD
    + b"Content-Type: application/octet-stream; name*=utf-8''%C3%A4.bin\r\n\r\nxx",
}

PARSER_ONLY = {
    "multipart": HEAD
    + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
    + b"Content-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n"
    + b"<p>html</p>\r\n--b--\r\n",
    "message/rfc822": HEAD + b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
    "mbox From line": b"From someone Wed Nov 25 10:00:00 2026\r\n" + HEAD + b"\r\nbody\r\n",
    "first line continuation": b" folded\r\n" + HEAD + b"\r\nbody\r\n",
    "line without colon": HEAD + b"not a header\r\n\r\nbody\r\n",
    "no blank line": HEAD,
    "bare CR": HEAD + b"X-A: 1\rX-B: 2\r\n\r\nbody\r\n",
    "empty": b"",
    "body only": b"\r\nno headers\r\n",
}


def _same_tree(raw: bytes) -> None:
    fast = _simple_tree(raw)
    assert fast is not None
    slow = email.message_from_bytes(raw)
    assert list(fast.raw_items()) == list(slow.raw_items())
    assert fast.get_payload() == slow.get_payload()
    assert fast.get_payload(decode=True) == slow.get_payload(decode=True)
    assert fast.get_unixfrom() == slow.get_unixfrom()
    assert fast.get_content_type() == slow.get_content_type()
    assert fast.get_content_charset() == slow.get_content_charset()
    assert fast.get_filename() == slow.get_filename()
    assert fast.as_bytes() == slow.as_bytes()
    a, b = _read_tree(fast), _read_tree(slow)
    assert (a.text, a.html, a.attachments, a.calendar_method) == (
        b.text,
        b.html,
        b.attachments,
        b.calendar_method,
    )


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_path_builds_the_parsers_tree(name: str) -> None:
    _same_tree(FAST[name])


@pytest.mark.parametrize("name", sorted(FAST))
def test_parse_message_is_unchanged_by_the_fast_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = FAST[name]
    fast = parse_message(raw, NOW)
    monkeypatch.setattr("natsync.mime._simple_tree", lambda raw: None)
    assert parse_tree(raw).__class__ is email.message.Message  # really the parser now
    assert parse_message(raw, NOW) == fast


@pytest.mark.parametrize("name", sorted(PARSER_ONLY))
def test_other_shapes_go_to_the_parser(name: str) -> None:
    raw = PARSER_ONLY[name]
    assert _simple_tree(raw) is None
    read_content(raw)  # and the parser still reads them without raising


def test_bench_shaped_message_takes_the_fast_path() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "Sender <s@example.test>"
    msg["To"] = "demo@example.test"
    msg["Subject"] = "x"
    msg.set_content("Lorem ipsum\n" * 50)
    _same_tree(msg.as_bytes(policy=email.policy.SMTP))
