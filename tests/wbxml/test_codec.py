"""Byte-exact tests of the WBXML codec: encoding, decoding, and every kind of rejection."""

from __future__ import annotations

import time

import pytest

from natsync.errors import NatsyncError
from natsync.wbxml import E, Element, WBXMLError, code_pages, decode, encode, samples
from natsync.wbxml import decoder as decoder_module
from natsync.wbxml.codepages import build, parse_table
from natsync.wbxml.encoder import mb_u_int32
from natsync.wbxml.limits import MAX_DEPTH, MAX_STRING_TABLE_BYTES

HEADER = bytes.fromhex("03016a00")


def doc(hex_body: str) -> bytes:
    return HEADER + bytes.fromhex(hex_body)


def nested(depth: int) -> Element:
    root = leaf = Element("AirSync", "Sync")
    for _ in range(depth - 1):
        leaf = leaf.add("AirSync", "Collection")
    return root


# --- encoding --------------------------------------------------------------------------------


def test_worked_example_from_the_libwbxml_crosscheck_is_byte_exact() -> None:
    tree = E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))
    assert encode(tree) == bytes.fromhex("03016a00 0007 56 52 033000 01 01".replace(" ", ""))
    assert decode(encode(tree)) == tree


def test_root_on_page_zero_has_no_switch_and_switches_only_on_change() -> None:
    tree = E(
        "AirSync",
        "Sync",
        E("Email", "Subject", "a"),
        E("Email", "Read", "1"),
        E("AirSync", "Status", "1"),
    )
    # Sync(0x45) SWITCH 2 Subject(0x54) "a" Read(0x55) "1" SWITCH 0 Status(0x4E) "1" END
    assert encode(tree) == doc("45 0002 54 036100 01 55 033100 01 0000 4e 033100 01 01")


def test_page_stays_switched_after_the_element_that_switched_it() -> None:
    tree = E(
        "AirSync",
        "Sync",
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", "1")),
        E("AirSyncBase", "NativeBodyType", "1"),
    )
    # No second SWITCH before NativeBodyType: page 17 is still in force after Body's END.
    assert encode(tree) == doc("45 0011 4a 46 033100 01 01 56 033100 01 01")


def test_empty_element_has_no_content_bit_and_values_use_str_i_and_opaque() -> None:
    tree = E(
        "ComposeMail",
        "SendMail",
        E("ComposeMail", "SaveInSentItems"),
        E("ComposeMail", "Mime", b"\x00\xff"),
    )
    assert encode(tree) == doc("0015 45 08 50 c3 02 00ff 01 01")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (0x7F, "7f"),
        (0x80, "8100"),
        (0x3FFF, "ff7f"),
        (0x4000, "818000"),
        (0xFFFFFFFF, "8fffffff7f"),
    ],
)
def test_multibyte_integers(value: int, encoded: str) -> None:
    assert mb_u_int32(value).hex() == encoded


def test_multibyte_integer_over_32_bits_is_refused() -> None:
    with pytest.raises(WBXMLError, match="32 bits"):
        mb_u_int32(1 << 32)


def test_opaque_length_uses_a_multibyte_integer_both_ways() -> None:
    blob = bytes(range(256)) * 2  # 512 bytes: length 0x84 0x00
    tree = E("ItemOperations", "ItemOperations", E("ItemOperations", "Data", blob))
    wire = encode(tree)
    assert wire == doc("0014 45 4c c3 8400") + blob + bytes.fromhex("0101")
    assert decode(wire) == tree


def test_empty_text_and_empty_bytes_round_trip_distinct_from_empty_element() -> None:
    tree = E(
        "AirSync",
        "Sync",
        E("AirSync", "SyncKey", ""),
        E("AirSync", "ClientId", b""),
        E("AirSync", "Status"),
    )
    assert encode(tree) == doc("45 4b 0300 01 4c c300 01 0e 01")
    assert decode(encode(tree)) == tree


def test_samples_round_trip() -> None:
    for tree in [*samples.small_documents(), samples.sync_response(emails=5)]:
        assert decode(encode(tree)) == tree


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (E("Nope", "Sync"), "unknown namespace 'Nope'"),
        (E("AirSync", "Subject"), "unknown tag 'Subject' in namespace AirSync"),
        (Element("AirSync", "Sync", [E("AirSync", "Status")], "x"), "both a value and child"),
        (Element("AirSync", "Sync", value=1.5), "type float cannot be encoded"),  # type: ignore[arg-type]
        (Element("AirSync", "Sync", ["x"]), "expected an Element, got str"),  # type: ignore[list-item]
        (nested(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
    ],
)
def test_encode_refuses_what_it_cannot_encode(tree: Element, message: str) -> None:
    with pytest.raises(WBXMLError, match=message) as info:
        encode(tree)
    assert info.value.offset is None


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("a\0b", "ab"),  # NUL: STR_I ends at it
        ("bell\x07 vt\x0b ff\x0c esc\x1b", "bell vt ff esc"),  # XML 1.0 section 2.2
        ("tab\tlf\ncr\r", "tab\tlf\ncr\r"),  # the three controls XML allows stay
        ("x\ufffey\uffffz", "xyz"),  # the non-characters XML 1.0 leaves out
        ("lone \ud800 and escaped \udcff", "lone \ufffd and escaped \ufffd"),
        ("del\x7f c1\x85 ok", "del\x7f c1\x85 ok"),  # allowed in XML 1.0
        ("\U0001f600 astral", "\U0001f600 astral"),
    ],
)
def test_encode_cleans_text_a_string_cannot_carry(text: str, sent: str) -> None:
    """Issue 19: whatever text a store holds, its element is sent (what Exchange sends)."""
    data = encode(E("AirSync", "Sync", E("AirSync", "SyncKey", text)))
    assert data == encode(E("AirSync", "Sync", E("AirSync", "SyncKey", sent)))
    assert decode(data).child_text("SyncKey") == sent


def test_encode_sends_opaque_bytes_untouched() -> None:
    raw = bytes(range(256))
    assert decode(encode(E("AirSyncBase", "Data", raw))).value == raw


def test_encode_stops_at_a_cycle() -> None:
    loop = E("AirSync", "Sync")
    loop.children.append(loop)
    with pytest.raises(WBXMLError, match="nested deeper"):
        encode(loop)


def test_encode_accepts_the_deepest_allowed_nesting() -> None:
    assert decode(encode(nested(MAX_DEPTH))) == nested(MAX_DEPTH)


# --- decoding --------------------------------------------------------------------------------


def test_header_with_public_id_string_and_string_table_and_str_t() -> None:
    # version 1.2, public id 0 + index 0 into the table, charset 106 (0x6a), table of 8 bytes:
    # "-//X\0" "ab\0"; then Sync( STR_T 5 ) -> "ab".
    data = bytes.fromhex("02 00 00 6a 08") + b"-//X\0ab\0" + bytes.fromhex("45 83 05 01")
    assert decode(data) == E("AirSync", "Sync", "ab")


def test_version_1_1_with_a_numeric_public_id_is_accepted() -> None:
    assert decode(bytes.fromhex("01 01 6a 00 0e")) == E("AirSync", "Status")


def test_string_pieces_of_one_kind_concatenate() -> None:
    data = bytes.fromhex("03 01 6a 04") + b"cd\0\0" + bytes.fromhex("45 03 616200 83 00 03 6500 01")
    assert decode(data) == E("AirSync", "Sync", "abcde")
    opaque = doc("45 c3 02 0102 c3 01 03 01")
    assert decode(opaque) == E("AirSync", "Sync", b"\x01\x02\x03")


def test_many_small_pieces_decode_in_linear_time() -> None:
    pieces = 200_000
    data = doc("45" + "036100" * pieces + "01")
    started = time.perf_counter()
    tree = decode(data)
    assert tree.value == "a" * pieces
    assert time.perf_counter() - started < 5


def test_content_bit_with_nothing_inside_is_an_empty_element() -> None:
    assert decode(doc("45 01")) == E("AirSync", "Sync")


def test_switch_page_before_the_root_and_before_end() -> None:
    assert decode(doc("0007 56 0000 01")) == E("FolderHierarchy", "FolderSync")


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(samples.small_documents()[0])
    assert decode(bytearray(data)) == decode(memoryview(data)) == decode(data)


def test_decode_reads_invalid_utf8_with_replacement() -> None:
    """Issue 19: a phone's string with bad bytes costs those bytes, not the whole request."""
    assert decode(doc("45 03 61ff6200 01")).value == "a\ufffdb"  # STR_I, the fast leaf
    assert decode(doc("45 4b 03 c328 00 01 01")).child_text("SyncKey") == "\ufffd("
    assert decode(bytes.fromhex("03016a04 eda08000 45 8300 01")).value == "\ufffd\ufffd\ufffd"


# (document, offset, message) for every kind of rejection.
BAD_DOCUMENTS = [
    (b"", 0, "empty document"),
    (bytes.fromhex("04016a00"), 0, "unsupported WBXML version byte 0x04"),
    (bytes.fromhex("00016a00"), 0, "unsupported WBXML version"),
    (bytes.fromhex("03"), 1, "truncated inside the public identifier"),
    (bytes.fromhex("03 ffffffff7f"), 1, "does not fit in 32 bits"),
    (bytes.fromhex("03 8080808080 01"), 1, "longer than 5 bytes"),
    (bytes.fromhex("03 01 04 00 45 01"), 2, "charset MIBenum 4 is not supported"),
    (bytes.fromhex("03 01 6a 05 6162"), 3, "string table declares 5 bytes but only 2 remain"),
    (bytes.fromhex("03 00 03 6a 02 6100 4501"), 1, "public identifier string index 3"),
    (doc(""), 4, "truncated"),
    (doc("45"), 5, "document truncated: the data ended inside AirSync:Sync"),
    (doc("4d"), 5, "document truncated: the data ended inside AirSync:ServerId"),
    (doc("45 0e"), 6, "truncated: the data ended inside AirSync:Sync"),
    (doc("45 03 6162"), 5, "not terminated by a NUL"),
    (doc("45 c3 8fffffff7f"), 5, "OPAQUE declares 4294967295 bytes but only 0 remain"),
    (doc("45 c3 05 0102 01"), 5, "OPAQUE declares 5 bytes but only 3 remain"),
    (doc("45 83 00 01"), 5, "string table reference 0 is outside the string table"),
    (doc("00 63 45 01"), 4, "SWITCH_PAGE to unknown code page 99"),
    (doc("00"), 5, "where a code page number was expected"),
    (doc("45 7f 01"), 5, "unknown tag token 0x3f on code page 0 (AirSync)"),
    (doc("00 19 7f 01"), 6, "unknown tag token 0x3f on code page 25 (Find)"),
    (doc("c5 01"), 4, "attributes bit set"),
    (doc("85"), 4, "attributes bit set"),
    (doc("45 02 41 01"), 5, "ENTITY"),
    (doc("45 04 00 01"), 5, "LITERAL"),
    (doc("45 44 00 01"), 5, "LITERAL_C"),
    (doc("45 84 00 01"), 5, "LITERAL_A"),
    (doc("45 c4 00 01"), 5, "LITERAL_AC"),
    (doc("45 43 01"), 5, "PI"),
    (doc("45 40 6100 01"), 5, "EXT_I_0"),
    (doc("45 80 00 01"), 5, "EXT_T_0"),
    (doc("45 c0 01"), 5, "EXT_0"),
    (doc("01"), 4, "END with no open element"),
    (doc("03 6100 45 01"), 4, "outside the root element"),
    (doc("45 01 01"), 6, "1 bytes after the end of the root element"),
    (doc("0e 0e"), 5, "1 bytes after the end of the root element"),
    (doc("45 033100 4e 01"), 8, "mixed content"),
    (doc("45 0e 033100 01"), 6, "value after child elements"),
    (doc("45 033100 c3 01 00 01"), 8, "text and opaque data mixed"),
]


@pytest.mark.parametrize(("data", "offset", "message"), BAD_DOCUMENTS)
def test_bad_documents_are_refused_with_offset_and_reason(
    data: bytes, offset: int, message: str
) -> None:
    with pytest.raises(WBXMLError) as info:
        decode(data)
    assert info.value.offset == offset
    assert message in info.value.message
    assert f"(at byte {offset})" in info.value.message


def test_wbxml_error_is_a_natsync_error_answered_with_400() -> None:
    with pytest.raises(NatsyncError) as info:
        decode(b"\x07")
    assert isinstance(info.value, WBXMLError)
    assert info.value.http_status == 400


def test_nesting_limit() -> None:
    ok = doc("45" + "4f" * (MAX_DEPTH - 1) + "01" * MAX_DEPTH)
    assert decode(ok) == nested(MAX_DEPTH)
    with pytest.raises(WBXMLError, match="nested deeper") as info:
        decode(doc("45" * MAX_DEPTH + "0e" + "01" * MAX_DEPTH))
    assert info.value.offset == 4 + MAX_DEPTH


def test_string_table_limit() -> None:
    size = MAX_STRING_TABLE_BYTES + 1
    data = HEADER[:3] + mb_u_int32(size) + b"a" * size + bytes.fromhex("0e")
    with pytest.raises(WBXMLError, match=r"string table of .* over the limit") as info:
        decode(data)
    assert info.value.offset == 3


def test_string_table_references_cannot_amplify_the_document() -> None:
    table = b"x" * 1000 + b"\0"
    body = "45" + "8300" * 600 + "01"
    data = HEADER[:3] + mb_u_int32(len(table)) + table + bytes.fromhex(body)
    with pytest.raises(WBXMLError, match="expand to more text than the document holds"):
        decode(data)


def test_element_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module, "MAX_ELEMENTS", 10)
    assert len(decode(doc("45" + "0e" * 9 + "01")).children) == 9
    with pytest.raises(WBXMLError, match="more than 10 elements") as info:
        decode(doc("45" + "0e" * 10 + "01"))
    assert info.value.offset == 14


def test_document_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module, "MAX_DOCUMENT_BYTES", 7)
    assert decode(doc("45 0e 01")) is not None
    with pytest.raises(WBXMLError, match="over the limit of 7"):
        decode(doc("45 0e 0e 01"))


def test_huge_declared_opaque_length_fails_fast_without_allocating() -> None:
    data = doc("45 c3 8fffffff7f") + b"\0" * 1000
    started = time.perf_counter()
    with pytest.raises(WBXMLError, match="OPAQUE declares"):
        decode(data)
    assert time.perf_counter() - started < 0.1


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(WBXMLError, match="expected bytes, got str"):
        decode("03016a00")  # type: ignore[arg-type]


# --- code pages ------------------------------------------------------------------------------


def test_code_pages_cover_0_to_25_with_unique_namespaces() -> None:
    pages = code_pages()
    assert [pages.page_namespace[p] is not None for p in range(26)] == [True] * 26
    assert len(set(pages.page_namespace)) == 26
    assert pages.namespace_page["AirSync"] == 0
    assert pages.namespace_page["Find"] == 25
    assert pages.encode_table["FolderHierarchy", "FolderSync"] == (7, b"\x16", b"\x56")
    assert len(pages.rows) > 600


def test_opaque_tags() -> None:
    # ItemOperations:Data is a string holding base64 (MS-ASCMD 2.2.3.39.2), not opaque.
    assert code_pages().opaque_tags == {
        ("AirSyncBase", "Content"),
        ("ComposeMail", "Mime"),
        ("ItemOperations", "ConversationId"),
        ("Email2", "ConversationId"),
        ("Email2", "ConversationIndex"),
        ("Search", "ConversationId"),
        ("GAL", "Data"),
        ("ResolveRecipients", "Data"),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("page\tnamespace\n", "unexpected header"),
        ("codepage\tnamespace\ttag\ttoken\tvalue\n26\tX\tY\t0x05\ttext\n", "out of range"),
        ("codepage\tnamespace\ttag\ttoken\tvalue\n0\tX\tY\t0x04\ttext\n", "out of range"),
        ("codepage\tnamespace\ttag\ttoken\tvalue\n0\tX\tY\t0x05\tblob\n", "text or opaque"),
    ],
)
def test_table_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_table(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\tX\tY\t0x05\ttext\n0\tZ\tW\t0x06\ttext\n", "named both X and Z"),
        ("0\tX\tY\t0x05\ttext\n0\tX\tW\t0x05\ttext\n", "duplicate tag"),
        ("0\tX\tY\t0x05\ttext\n0\tX\tY\t0x06\ttext\n", "duplicate tag"),
    ],
)
def test_table_build_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(parse_table("codepage\tnamespace\ttag\ttoken\tvalue\n" + text))


def test_string_length_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module, "MAX_STRING_BYTES", 3)
    assert decode(doc("45 03 616263 00 01")) == E("AirSync", "Sync", "abc")
    with pytest.raises(WBXMLError, match="string longer than 3 bytes") as info:
        decode(doc("45 03 61626364 00 01"))
    assert info.value.offset == 5
    with pytest.raises(WBXMLError, match="OPAQUE longer than 3 bytes"):
        decode(doc("45 c3 04 61626364 01"))
