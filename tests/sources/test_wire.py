"""The IMAP response decoder: real Dovecot shapes decode; anything else raises ImapWireError."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync.sources.wire import (
    MAX_SET_MEMBERS,
    ImapWireError,
    appended_uid,
    compress_set,
    copy_uids,
    decode_mutf7,
    encode_mutf7,
    expand_set,
    fetch_items,
    parse_fetch,
    parse_list,
    parse_vanished,
    quote,
    response_codes,
)


def test_list_lines_as_dovecot_sends_them() -> None:
    entry = parse_list(b'(\\HasNoChildren \\Sent) "/" Sent')
    assert (entry.name, entry.delimiter, entry.special) == ("Sent", "/", "\\Sent")
    child = parse_list(b'(\\HasNoChildren) "/" "Projects/Caf&AOk-"')
    assert child.name == "Projects/Café"
    assert child.raw_name == "Projects/Caf&AOk-"
    literal = parse_list((b'(\\HasNoChildren) "/" {5}', b'A b"c'))
    assert literal.raw_name == 'A b"c'
    assert not parse_list(b'(\\Noselect) "/" Shared').selectable


def test_fetch_items_with_and_without_a_body() -> None:
    data: list[bytes | tuple[bytes, bytes] | None] = [
        (
            b'1 (UID 7 FLAGS (\\Seen) MODSEQ (12) INTERNALDATE "06-Dec-2026 12:00:00 +0100" '
            b"BODY[] {5}",
            b"hello",
        ),
        b")",
        b"2 (UID 9 MODSEQ (13) FLAGS ())",
    ]
    first, second = fetch_items(data)
    assert (first.uid, first.modseq, first.body) == (7, 12, b"hello")
    assert first.flags == frozenset({"\\Seen"})
    assert first.internaldate == datetime(2026, 12, 6, 11, 0, tzinfo=UTC)
    assert (second.uid, second.flags, second.body) == (9, frozenset(), None)


def test_vanished_codes_and_copyuid() -> None:
    assert parse_vanished(b"(EARLIER) 1:3,7") == [1, 2, 3, 7]
    codes = response_codes([b"[UIDVALIDITY 3] ok", b"[HIGHESTMODSEQ 9] x", b"[COPYUID 3 1:2 5:6]"])
    assert codes["UIDVALIDITY"] == "3"
    assert copy_uids(codes["COPYUID"]) == {1: 5, 2: 6}


@pytest.mark.parametrize(
    "bad",
    [
        lambda: parse_list(b"garbage"),
        lambda: parse_fetch(b"1 (FLAGS (\\Seen))"),
        lambda: parse_fetch(b'1 (UID 1 INTERNALDATE "yesterday")'),
        lambda: parse_vanished(b"1:x"),
        lambda: expand_set(f"1:{MAX_SET_MEMBERS + 5}"),
        lambda: expand_set("99999999999"),
        lambda: copy_uids("3 1:2 5"),
        lambda: decode_mutf7("&AOk"),
        lambda: decode_mutf7("&####-"),
        lambda: compress_set([]),
    ],
)
def test_malformed_input_raises_our_error(bad: object) -> None:
    with pytest.raises(ImapWireError):
        bad()  # type: ignore[operator]


@given(st.text())
def test_mutf7_round_trips(name: str) -> None:
    assert decode_mutf7(encode_mutf7(name)) == name


@given(st.sets(st.integers(1, 5000), min_size=1))
def test_sets_round_trip(uids: set[int]) -> None:
    assert expand_set(compress_set(list(uids))) == sorted(uids)


@given(st.binary())
def test_any_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decoder in (parse_list, parse_fetch, parse_vanished):
        with contextlib.suppress(ImapWireError):
            decoder(data)


def test_quote_escapes() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_appenduid_is_a_uid_or_nothing() -> None:
    codes = response_codes([b"A3 OK [APPENDUID 38505 3955] APPEND completed"])
    assert appended_uid(codes) == 3955
    assert appended_uid({}) is None
    for junk in ("38505", "38505 x", "38505 ²", "38505 4294967296", "1 " + "9" * 5000, "1 2 3"):
        assert appended_uid({"APPENDUID": junk}) is None, junk
