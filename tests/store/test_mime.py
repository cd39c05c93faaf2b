"""The store's own MIME reading: search text at delivery, one attachment part on demand."""

from __future__ import annotations

from email.message import EmailMessage

from natsync.store.mime import MAX_INDEXED_TEXT_CHARS, part_bytes, plain_text


def test_plain_text_prefers_the_plain_part() -> None:
    mime = EmailMessage()
    mime["Subject"] = "x"
    mime.set_content("the plain words")
    mime.add_alternative("<p>the <b>html</b> words</p>", subtype="html")
    assert plain_text(mime.as_bytes()) == "the plain words"


def test_plain_text_strips_html_when_there_is_no_plain_part() -> None:
    mime = EmailMessage()
    mime.set_content(
        "<style>p {color: red}</style><p>caf&eacute; &amp; <i>cr&egrave;me</i></p>", subtype="html"
    )
    assert plain_text(mime.as_bytes()) == "café & crème"


def test_plain_text_decodes_charsets_and_caps_length() -> None:
    raw = (
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nSch=F6n " + b"a" * 100_000
    )
    text = plain_text(raw)
    assert text.startswith("Schön a")
    assert len(text) == MAX_INDEXED_TEXT_CHARS
    assert plain_text(b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nhi") == "hi"


def test_plain_text_skips_attached_text_files() -> None:
    mime = EmailMessage()
    mime.set_content("visible")
    mime.add_attachment("secret-ish file", filename="notes.txt")
    assert plain_text(mime.as_bytes()) == "visible"


def test_part_bytes_cuts_out_one_decoded_part_including_attached_messages() -> None:
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("inner body")
    mime = EmailMessage()
    mime.set_content("outer")
    mime.add_attachment(b"\x00\xffbinary", maintype="application", subtype="octet-stream")
    mime.add_attachment(inner)
    parts = list(mime.walk())
    binary_index = next(
        i for i, p in enumerate(parts) if p.get_content_type() == "application/octet-stream"
    )
    rfc822_index = next(i for i, p in enumerate(parts) if p.get_content_type() == "message/rfc822")
    raw = mime.as_bytes()
    assert part_bytes(raw, binary_index) == b"\x00\xffbinary"
    forwarded = part_bytes(raw, rfc822_index)
    assert b"Subject: forwarded" in forwarded
    assert b"inner body" in forwarded
    assert part_bytes(raw, 0) == b""  # the multipart container itself has no content
    assert part_bytes(raw, 99) == b""
