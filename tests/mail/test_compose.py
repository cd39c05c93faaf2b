"""natsync.mail.compose: SendMail / SmartReply / SmartForward messages."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from natsync.mail.compose import (
    build_smart_forward,
    build_smart_reply,
    prepare_outgoing,
    recipients,
)
from natsync.mime import body_html, body_text, parse_bytes, parse_message
from natsync.mime.errors import MailError
from natsync.store.mime import part_bytes
from tests.mime.test_mime import PNG

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
RNG = random.Random(21)
USER = "alice@example.test"


def original_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.org>"
    msg["To"] = "Alice <alice@example.test>"
    msg["Subject"] = "Plans"
    msg["Date"] = "Tue, 24 Nov 2026 08:00:00 +0000"
    msg["Message-ID"] = "<orig-1@example.org>"
    msg["References"] = "<older@example.org>"
    msg.set_content("Shall we meet?\nAt noon.\n")
    msg.add_alternative(
        '<html><body><p>Shall we meet?</p><img src="cid:logo@example.org"></body></html>',
        subtype="html",
    )
    msg.get_payload()[1].add_related(
        PNG, "image", "png", cid="<logo@example.org>", disposition="inline"
    )
    msg.add_attachment(b"agenda bytes", "application", "pdf", filename="agenda.pdf")
    return msg.as_bytes()


def test_prepare_outgoing_adds_headers_and_strips_bcc_from_what_is_sent() -> None:
    client = (
        b"To: bob@example.org\r\nCc: Carol <carol@example.net>\r\nBcc: dave@example.org\r\n"
        b"Subject: hi\r\n\r\nbody stays \xc3\xa4 exactly\r\n"
    )
    out = prepare_outgoing(client, USER, "Alice Example", NOW, rng=RNG)
    assert out.sender == USER
    assert out.recipients == ("bob@example.org", "carol@example.net", "dave@example.org")
    sent = parse_bytes(out.raw)
    assert sent["Bcc"] is None
    assert parse_bytes(out.sent_copy)["Bcc"] is not None
    assert str(sent["From"]) == "Alice Example <alice@example.test>"
    assert sent["Date"] is not None
    assert str(sent["Message-ID"]).endswith("@example.test>")
    # the body bytes are untouched
    assert out.raw.endswith(b"\r\n\r\nbody stays \xc3\xa4 exactly\r\n")


def test_prepare_outgoing_replaces_a_foreign_from_and_keeps_our_own() -> None:
    spoof = b"From: CEO <ceo@bank.example>\r\nSender: x@y.z\r\nTo: b@example.org\r\n\r\nhi\r\n"
    out = prepare_outgoing(spoof, USER, "Alice", NOW, rng=RNG)
    msg = parse_bytes(out.raw)
    assert str(msg["From"]) == "Alice <alice@example.test>"
    assert msg["Sender"] is None
    own = (
        b"From: Ali <ALICE@example.test>\r\nTo: b@example.org\r\nDate: x\r\n"
        b"Message-ID: <1@x>\r\n\r\nhi\r\n"
    )
    assert prepare_outgoing(own, USER, "Alice", NOW, rng=RNG).raw == own


@pytest.mark.parametrize(
    "client", [b"Subject: nobody\r\n\r\nhi\r\n", b"not a message", b"To: bad-address\r\n\r\nx"]
)
def test_prepare_outgoing_refuses_messages_without_recipients(client: bytes) -> None:
    with pytest.raises(MailError):
        prepare_outgoing(client, USER, "Alice", NOW, rng=RNG)


def test_recipients_dedupes_case_insensitively() -> None:
    raw = b"To: A <a@x.org>, b@x.org\r\nCc: A@X.ORG\r\nBcc: c@x.org\r\n\r\n"
    assert recipients(raw) == ["a@x.org", "b@x.org", "c@x.org"]


def test_smart_reply_quotes_the_original_and_threads() -> None:
    client = (
        b"To: bob@example.org\r\nSubject: Re: Plans\r\nContent-Type: multipart/alternative; "
        b'boundary="r"\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nYes!\r\n--r\r\n'
        b"Content-Type: text/html\r\n\r\n<html><body><p>Yes!</p></body></html>\r\n--r--\r\n"
    )
    reply = build_smart_reply(client, original_message(), replace_mime=False, rng=RNG)
    msg = parse_bytes(reply)
    assert str(msg["In-Reply-To"]) == "<orig-1@example.org>"
    assert str(msg["References"]) == "<older@example.org> <orig-1@example.org>"
    text = body_text(reply)
    assert text.startswith("Yes!")
    assert "-----Original Message-----" in text
    assert "From: Bob <bob@example.org>" in text
    assert "> Shall we meet?\n> At noon." in text
    html = body_html(reply) or ""
    assert html.index("<p>Yes!</p>") < html.index("<blockquote")
    assert "cid:logo@example.org" in html
    parsed = parse_message(reply, NOW)
    # the inline image the quoted HTML shows comes along; the PDF does not (a reply)
    assert [a.content_id for a in parsed.attachments] == ["logo@example.org"]
    assert part_bytes(reply, parsed.attachments[0].part_index) == PNG


def test_smart_forward_appends_body_and_all_attachments() -> None:
    client = b"To: carol@example.net\r\nSubject: Fwd: Plans\r\n\r\nFYI\r\n"
    forward = build_smart_forward(client, original_message(), replace_mime=False, rng=RNG)
    msg = parse_bytes(forward)
    assert msg["In-Reply-To"] is None
    text = body_text(forward)
    assert text.startswith("FYI")
    assert "---------- Forwarded message ----------" in text
    assert "Shall we meet?\nAt noon." in text
    parsed = parse_message(forward, NOW)
    assert sorted(a.filename for a in parsed.attachments) == ["agenda.pdf", "attachment-1.png"]
    pdf = next(a for a in parsed.attachments if a.filename == "agenda.pdf")
    assert part_bytes(forward, pdf.part_index) == b"agenda bytes"


def test_replace_mime_sends_the_client_message_as_is() -> None:
    client = b"To: carol@example.net\r\nSubject: Re: Plans\r\n\r\nmy own full text\r\n"
    forward = build_smart_forward(client, original_message(), replace_mime=True, rng=RNG)
    assert forward == client
    reply = build_smart_reply(client, original_message(), replace_mime=True, rng=RNG)
    assert reply.endswith(b"\r\n\r\nmy own full text\r\n")
    assert str(parse_bytes(reply)["In-Reply-To"]) == "<orig-1@example.org>"
    assert "Shall we meet" not in body_text(reply)


def test_smart_reply_on_a_broken_original_still_sends() -> None:
    client = b"To: bob@example.org\r\nSubject: Re: ?\r\n\r\nok\r\n"
    reply = build_smart_reply(client, b"\x00garbage", replace_mime=False, rng=RNG)
    assert body_text(reply).startswith("ok")
