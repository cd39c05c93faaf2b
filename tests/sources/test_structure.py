"""Lazily mirrored messages, sans-I/O (natsync.sources.structure and the command policy of
natsync.sources.bodies): FETCH responses with nested lists and literals, BODYSTRUCTURE as
Dovecot sends it, the partial copy (same walk order as the whole message, so attachments keep
their part_index), and which commands may be answered from it. Any bytes decode or raise
ImapWireError. (Against a real Dovecot: tests/sources/test_imap_mirror.py, lazily.)"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync.mime import parse_message
from natsync.sources.bodies import BodyNeeded, _Guard, text_is_enough
from natsync.sources.structure import (
    MARKER,
    can_be_lazy,
    fetch_item,
    fetch_stream,
    parse_bodystructure,
    parse_fetches,
    partial_message,
    partial_of,
    text_sections,
    trim_text,
    with_sizes,
)
from natsync.sources.wire import ImapWireError
from natsync.wbxml.tree import E

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KEY = "5f" * 16
HEADER = (
    b"From: Bob <bob@example.org>\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="==outer=="\r\n\r\n'
)
PDF = b"%PDF-1.4 " + bytes(range(256)) * 40
PDF_B64 = __import__("base64").encodebytes(PDF).replace(b"\n", b"\r\n")
WHOLE = (
    HEADER + b"--==outer==\r\n"
    b'Content-Type: multipart/alternative; boundary="==inner=="\r\n\r\n'
    b'--==inner==\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nsee the report\r\n'
    b'--==inner==\r\nContent-Type: text/html; charset="utf-8"\r\n\r\n<p>see the report</p>\r\n'
    b"--==inner==--\r\n"
    b'--==outer==\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
    + PDF_B64
    + b"--==outer==--\r\n"
)
# What Dovecot 2.3 answers for WHOLE (RFC 3501 §7.4.2 BODYSTRUCTURE, extension data included).
STRUCTURE = (
    b'((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 16 1 NIL NIL NIL NIL)'
    b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 23 1 NIL NIL NIL NIL)'
    b' "alternative" ("boundary" "==inner==") NIL NIL NIL)'
    b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" '
    + str(len(PDF_B64)).encode()
    + b' NIL ("attachment" ("filename" "report.pdf")) NIL NIL)'
    b' "mixed" ("boundary" "==outer==") NIL NIL NIL)'
)


def _response() -> dict[str, object]:
    stream = fetch_stream(
        [
            (
                b"1 (UID 7 FLAGS (\\Seen $Work) MODSEQ (42) INTERNALDATE "
                b'"06-Dec-2026 12:00:00 +0000" RFC822.SIZE '
                + str(len(WHOLE)).encode()
                + b" BODYSTRUCTURE "
                + STRUCTURE
                + b" BODY[HEADER] {"
                + str(len(HEADER)).encode()
                + b"}",
                HEADER,
            ),
            b")",
        ]
    )
    [response] = parse_fetches(stream)
    return response  # type: ignore[return-value]


def test_a_dovecot_answer_reads_back() -> None:
    response = _response()
    item = fetch_item(response)  # type: ignore[arg-type]
    assert (item.uid, item.modseq, item.flags) == (7, 42, frozenset({"\\Seen", "$Work"}))
    assert item.internaldate == NOW
    assert response["BODY[HEADER]"] == HEADER
    top = parse_bodystructure(response["BODYSTRUCTURE"])  # type: ignore[arg-type]
    assert [p.section for p in top.walk()] == ["", "1", "1.1", "1.2", "2"]
    assert top.children[1].disposition == "attachment"
    assert can_be_lazy(top)
    assert text_sections(top) == ["1.1", "1.2"]


def test_the_partial_copy_keeps_the_walk_order_and_the_sizes() -> None:
    top = parse_bodystructure(_response()["BODYSTRUCTURE"])  # type: ignore[arg-type]
    texts = {"1.1": b"see the report\r\n", "1.2": b"<p>see the report</p>\r\n"}
    raw = partial_message(HEADER, top, texts, len(WHOLE), cut=False, key=KEY)
    assert raw.startswith(MARKER)
    assert PDF_B64[:40] not in raw
    partial = partial_of(raw, KEY)
    assert partial is not None
    assert (partial.size, partial.cut) == (len(WHOLE), False)
    assert partial_of(WHOLE, KEY) is None
    lazy = with_sizes(parse_message(raw, NOW), top)
    whole = parse_message(WHOLE, NOW)
    assert lazy.subject == whole.subject
    assert lazy.preview == whole.preview
    assert [(a.filename, a.part_index) for a in lazy.attachments] == [
        (a.filename, a.part_index) for a in whole.attachments
    ]
    assert abs(lazy.attachments[0].size - len(PDF)) < len(PDF) // 50


class _Bodies:
    """The two reads a Sync window makes, over one partial and one whole message."""

    def __init__(self, raws: dict[int, bytes]) -> None:
        self.raws = raws

    def raw_messages(self, message_ids: list[int]) -> dict[int, bytes]:
        return {i: self.raws[i] for i in message_ids}

    def message_bodies(self, message_ids: list[int]) -> dict[int, tuple[bytes, str | None]]:
        return {i: (self.raws[i], None) for i in message_ids}


@pytest.mark.parametrize("read", ["raw_messages", "message_bodies"])
def test_every_raw_read_of_a_partial_message_asks_for_it_whole(read: str) -> None:
    top = parse_bodystructure(_response()["BODYSTRUCTURE"])  # type: ignore[arg-type]
    texts = {"1.1": b"see the report\r\n", "1.2": b"<p>see the report</p>\r\n"}
    cut = partial_message(HEADER, top, texts, len(WHOLE), cut=True, key=KEY)
    whole_text = partial_message(HEADER, top, texts, len(WHOLE), cut=False, key=KEY)
    txn = _Bodies({1: whole_text, 2: WHOLE, 3: cut})
    # A command that needs the MIME (e.g. a Sync asking for Type 4) gets BodyNeeded ...
    with pytest.raises(BodyNeeded) as needed:
        getattr(_Guard(txn, False, KEY), read)([1, 2])  # type: ignore[arg-type]
    assert needed.value.message_ids == (1,)
    # ... one the text is enough for does not, unless a text was cut.
    assert len(getattr(_Guard(txn, True, KEY), read)([1, 2])) == 2  # type: ignore[arg-type]
    with pytest.raises(BodyNeeded) as needed:
        getattr(_Guard(txn, True, KEY), read)([2, 3])  # type: ignore[arg-type]
    assert needed.value.message_ids == (3,)


def test_a_forged_marker_is_not_a_partial_copy() -> None:
    """Mail that arrives starting with a marker line (someone else's key, or none) is a whole
    message: it must never wait for a fetch that cannot happen."""
    top = parse_bodystructure(_response()["BODYSTRUCTURE"])  # type: ignore[arg-type]
    forged = partial_message(HEADER, top, {}, len(WHOLE), cut=False, key="ab" * 16)
    assert partial_of(forged, KEY) is None
    assert partial_of(b"X-Natsync-Partial: size=1; cut=0\r\n" + WHOLE, KEY) is None
    assert partial_of(forged, "") is None


def test_a_text_longer_than_the_limit_is_cut_at_a_line() -> None:
    assert trim_text(b"abc\r\ndef", 100) == (b"abc\r\ndef", False)
    assert trim_text(b"abc\r\ndefg", 9) == (b"abc\r\n", True)


def test_an_embedded_message_is_not_lazy() -> None:
    structure = (
        b'(("text" "plain" NIL NIL NIL "7bit" 3 1 NIL NIL NIL NIL)("message" "rfc822" NIL NIL '
        b'NIL "7bit" 100 (NIL "s" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL '
        b'"7bit" 3 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)'
    )
    [response] = parse_fetches(b"1 (UID 1 BODYSTRUCTURE " + structure + b")")
    top = parse_bodystructure(response["BODYSTRUCTURE"])
    assert not can_be_lazy(top)


def _sync(*options: object) -> object:
    return E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E("AirSync", "Collection", E("AirSync", "SyncKey", "1"), *options),
        ),
    )


@pytest.mark.parametrize(
    ("cmd", "body", "enough"),
    [
        (
            "Sync",
            _sync(
                E(
                    "AirSync",
                    "Options",
                    E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", "2")),
                )
            ),
            True,
        ),
        (
            "Sync",
            _sync(
                E(
                    "AirSync",
                    "Options",
                    E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", "4")),
                )
            ),
            False,
        ),
        ("Sync", _sync(E("AirSync", "Options", E("AirSync", "MIMESupport", "2"))), False),
        ("Sync", _sync(), False),  # the options of an earlier request may ask MIME
        (
            "Sync",
            _sync(E("AirSync", "Options"), E("AirSync", "Commands", E("AirSync", "Fetch"))),
            False,
        ),
        (
            "Sync",
            _sync(
                E("AirSync", "Options"),
                E(
                    "AirSync",
                    "Commands",
                    E(
                        "AirSync",
                        "Change",
                        E("AirSync", "ApplicationData", E("Email", "Read", "1")),
                    ),
                ),
            ),
            True,
        ),
        (
            "Sync",
            _sync(
                E("AirSync", "Options"),
                E(
                    "AirSync",
                    "Commands",
                    E(
                        "AirSync",
                        "Change",
                        E("AirSync", "ApplicationData", E("Email", "Subject", "x")),
                    ),
                ),
            ),
            False,
        ),
        ("ItemOperations", E("ItemOperations", "ItemOperations"), False),
        ("SmartForward", None, False),
        ("Ping", None, True),
    ],
)
def test_which_commands_are_answered_from_the_partial_copy(
    cmd: str, body: object, enough: bool
) -> None:
    assert text_is_enough(cmd, body) is enough


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(ImapWireError):
        for response in parse_fetches(data):
            if "BODYSTRUCTURE" in response:
                top = parse_bodystructure(response["BODYSTRUCTURE"])
                partial_message(b"", top, {}, 0, False, "0" * 32) if can_be_lazy(top) else None
            fetch_item(response)
