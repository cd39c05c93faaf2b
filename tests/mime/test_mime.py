"""natsync.mime: real-world shaped mail, broken mail, and anything-at-all input."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsync.mime import (
    CLASS_MEETING_REQUEST,
    CLASS_NDR,
    CLASS_NOTE,
    CLASS_SMIME,
    CLASS_SMIME_SIGNED,
    MAX_PREVIEW_CHARS,
    body_html,
    body_text,
    html_to_text,
    parse_message,
)
from natsync.mime.errors import MailError
from natsync.store.mime import part_bytes

NOW = datetime(2026, 11, 25, 9, 49, 53, tzinfo=UTC)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def test_encoded_headers_are_decoded_to_display_form() -> None:
    raw = crlf(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>\n"
        'To: "Doe, Jane" <jane@example.test>, bob@example.test\n'
        "Cc: =?iso-8859-1?q?Fran=E7ois?= <f@example.fr>\n"
        "Reply-To: replies@example.org\n"
        "Subject: =?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=\n"
        "Message-ID: <abc@example.org>\n"
        "\n"
        "Hello\n"
    )
    message = parse_message(raw, NOW)
    assert message.subject == "Grüße aus Köln"
    assert message.from_addr == "Jürgen Müller <jm@example.org>"
    assert message.to_addrs == '"Doe, Jane" <jane@example.test>, bob@example.test'
    assert message.cc_addrs == "François <f@example.fr>"
    assert message.reply_to == "replies@example.org"
    assert message.message_id_header == "<abc@example.org>"
    assert message.received_at == NOW
    assert message.raw == raw
    assert message.message_class == CLASS_NOTE
    assert message.preview == "Hello"
    assert message.read is False


@pytest.mark.parametrize(
    ("header", "importance"),
    [
        ("Importance: high", 2),
        ("Importance: Low", 0),
        ("Importance: normal", 1),
        ("X-Priority: 1 (Highest)", 2),
        ("X-Priority: 5", 0),
        ("X-Priority: 3", 1),
        ("X-MSMail-Priority: High", 2),
        ("X-Other: x", 1),
    ],
)
def test_importance_from_importance_or_priority_headers(header: str, importance: int) -> None:
    raw = crlf(f"From: a@b.c\n{header}\nSubject: s\n\nbody\n")
    assert parse_message(raw, NOW).importance == importance


def test_html_only_mail_gives_a_text_preview_and_html_body() -> None:
    raw = crlf(
        "From: a@b.c\nSubject: html\nContent-Type: text/html; charset=utf-8\n\n"
        "<html><head><style>p {color: red}</style><title>T</title></head>"
        "<body><p>Caf&eacute; &amp; more</p><script>alert(1)</script><div>Line two</div></body>"
        "</html>\n"
    )
    message = parse_message(raw, NOW)
    assert message.preview == "Café & more Line two"
    assert body_text(raw) == "Café & more\n\nLine two"
    html = body_html(raw)
    assert html is not None
    assert "<p>Caf&eacute; &amp; more</p>" in html


def test_preview_is_at_most_255_characters_of_collapsed_text() -> None:
    raw = crlf("From: a@b.c\nSubject: long\n\n" + ("word  \n" * 200))
    preview = parse_message(raw, NOW).preview
    assert len(preview) == MAX_PREVIEW_CHARS
    assert "  " not in preview
    assert preview.startswith("word word")


def build_rich_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <s@example.org>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Photos"
    msg.set_content("See the picture.\n")
    msg.add_alternative('<p>See the picture: <img src="cid:pic1@example.org"></p>', subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(PNG, "image", "png", cid="<pic1@example.org>", disposition="inline")
    msg.add_attachment(b"%PDF-1.4 fake", "application", "pdf", filename="Rechnung März.pdf")
    forwarded = EmailMessage()
    forwarded["From"] = "x@y.z"
    forwarded["Subject"] = "Old news"
    forwarded.set_content("inner body\n")
    msg.add_attachment(forwarded)
    return msg.as_bytes()


def test_attachments_inline_images_and_forwarded_messages() -> None:
    raw = build_rich_message()
    message = parse_message(raw, NOW)
    names = [a.filename for a in message.attachments]
    assert names == ["attachment-1.png", "Rechnung März.pdf", "Old news.eml"]
    image, pdf, eml = message.attachments
    assert image.is_inline
    assert image.content_id == "pic1@example.org"
    assert image.content_type == "image/png"
    assert image.size == len(PNG)
    assert not pdf.is_inline
    assert pdf.content_id == ""
    assert pdf.size == len(b"%PDF-1.4 fake")
    assert eml.content_type == "message/rfc822"
    # part_index is the walk position the store uses to cut the part out again
    assert part_bytes(raw, image.part_index) == PNG
    assert part_bytes(raw, pdf.part_index) == b"%PDF-1.4 fake"
    assert b"inner body" in part_bytes(raw, eml.part_index)
    # the forwarded message's own text is not the body; ours is
    assert body_text(raw).strip() == "See the picture."
    assert message.preview == "See the picture."


def test_broken_charsets_and_raw_8bit_headers_do_not_crash() -> None:
    raw = (
        b"From: M\xc3\xbcller <m@example.org>\r\n"
        b"Subject: caf\xe9 latin-1 raw\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe\r\n"
    )
    message = parse_message(raw, NOW)
    assert message.from_addr == "Müller <m@example.org>"
    assert message.subject == "café latin-1 raw"
    assert message.preview == "Grüße"


def test_malformed_multipart_and_missing_headers_still_parse() -> None:
    raw = crlf(
        "Subject: no from, no date\n"
        'Content-Type: multipart/mixed; boundary="never-closed"\n\n'
        "--never-closed\nContent-Type: text/plain\n\nfirst part\n"
        "--never-closed\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n\n!!!not base64!!!\n"
    )
    message = parse_message(raw, NOW)
    assert message.from_addr == ""
    assert message.preview == "first part"
    assert len(message.attachments) == 1


def test_bad_address_header_falls_back_to_its_text() -> None:
    raw = crlf('From: <<<@@@>>> ,,, "unterminated\nTo: ;;;\nSubject: x\n\nbody\n')
    message = parse_message(raw, NOW)
    assert "@@@" in message.from_addr


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (
            'multipart/signed; protocol="application/pkcs7-signature"; boundary=b',
            CLASS_SMIME_SIGNED,
        ),
        ('application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"', CLASS_SMIME),
        ("multipart/report; report-type=delivery-status; boundary=b", CLASS_NDR),
    ],
)
def test_message_class_of_smime_and_reports(content_type: str, expected: str) -> None:
    raw = crlf(f"From: a@b.c\nSubject: s\nContent-Type: {content_type}\n\n--b\n\nx\n--b--\n")
    assert parse_message(raw, NOW).message_class == expected


def test_meeting_request_class_from_text_calendar() -> None:
    raw = crlf(
        "From: a@b.c\nSubject: Meeting\nContent-Type: multipart/alternative; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nLet's meet\n"
        "--b\nContent-Type: text/calendar; charset=utf-8\n\n"
        "BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nEND:VEVENT\nEND:VCALENDAR\n--b--\n"
    )
    message = parse_message(raw, NOW)
    assert message.message_class == CLASS_MEETING_REQUEST
    assert [a.filename for a in message.attachments] == ["invite.ics"]


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n\r\n", b"just some words without any header\r\n", b"\x00\x01\x02\xff"]
)
def test_non_messages_raise_mail_error(raw: bytes) -> None:
    with pytest.raises(MailError):
        parse_message(raw, NOW)


def test_html_to_text_keeps_paragraphs() -> None:
    assert html_to_text("<p>a</p><p>b<br>c</p>") == "a\n\nb\nc"


_header_names = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Content-Type", "Content-Disposition", "Content-ID",
     "Content-Transfer-Encoding", "Importance", "X-Priority", "Reply-To", "Message-ID"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(_header_names, st.binary(max_size=80)), max_size=8),
    body=st.binary(max_size=400),
)
def test_any_header_and_body_bytes_parse_or_raise_mail_error(
    headers: list[tuple[str, bytes]], body: bytes
) -> None:
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    raw += b"\r\n" + body
    try:
        message = parse_message(raw, NOW)
    except MailError:
        return
    assert len(message.preview) <= MAX_PREVIEW_CHARS
    body_text(raw)
    body_html(raw)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_raise_mail_error(raw: bytes) -> None:
    with contextlib.suppress(MailError):
        parse_message(raw, NOW)


def test_an_mbox_from_line_before_the_headers_is_tolerated() -> None:
    raw = b"From someone@example.org Mon Jan  1 00:00:00 2026\nSubject: mbox\n\nbody\n"
    assert parse_message(raw, NOW).preview == "body"
