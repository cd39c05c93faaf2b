"""The libwbxml helper (tests/libwbxml.py) itself: its name map is libwbxml's, its conversions
are exact, and its assertion catches what it must."""

from __future__ import annotations

import os

import pytest

from natsync.wbxml.tree import E, Element
from tests.libwbxml import (
    EAS_WBXML_HEADER,
    LibwbxmlError,
    assert_libwbxml_decodes,
    discover_libwbxml_table,
    from_libwbxml_xml,
    libwbxml_decode,
    libwbxml_decode_tree,
    libwbxml_encode,
    libwbxml_encode_tree,
    parse_eas_xml,
    require_libwbxml,
    tag_table,
    to_libwbxml_xml,
)

Failed = pytest.fail.Exception


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_libwbxml()


def test_tag_table_is_what_the_installed_libwbxml_says() -> None:
    discovered = discover_libwbxml_table()
    stored = {(r.page, r.token): (r.lw_namespace, r.lw_tag, r.opaque) for r in tag_table().rows}
    # Every stored row is libwbxml's current answer; tokens libwbxml has but the table lacks
    # would be tags the MS-ASWBXML table does not list.
    assert {k: discovered[k] for k in stored} == stored
    assert discovered.keys() == stored.keys()


def test_tag_table_covers_pages_0_to_24_with_the_known_renames() -> None:
    table = tag_table()
    assert {r.page for r in table.rows} == set(range(25))
    renames = {(r.namespace, r.tag): r.lw_tag for r in table.rows if r.tag != r.lw_tag}
    assert renames[("Calendar", "Type")] == "Recurrence_Type"
    assert renames[("Calendar", "Email")] == "Attendee_Email"
    assert renames[("Email", "ReplyTo")] == "Reply-To"
    assert renames[("ComposeMail", "Mime")] == "MIME"
    assert renames[("Settings", "RightsManagementInformation")] == "ihsManagementInformation"
    assert table.by_natsync[("GAL", "Data")].lw_namespace == "Gal:"
    # Both directions are one-to-one.
    assert len(table.by_natsync) == len(table.by_libwbxml) == len(table.rows)


def test_worked_example_encodes_to_the_known_13_bytes() -> None:
    tree = E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))
    data = libwbxml_encode_tree(tree)
    assert data == bytes.fromhex("03016a00000756520330000101")
    assert libwbxml_decode_tree(data) == tree


def test_text_survives_byte_for_byte() -> None:
    text = "  Line 1\r\nLine 2 & <3> \"quoted\" 'é' ✓ \t end  "
    tree = E("AirSync", "Sync", E("AirSync", "SyncKey", text))
    data = libwbxml_encode_tree(tree)
    assert text.encode() in data
    assert libwbxml_decode_tree(data) == tree


def test_opaque_tags_carry_bytes_both_ways() -> None:
    payload = bytes(range(256))
    tree = E("ComposeMail", "SendMail", E("ComposeMail", "Mime", payload))
    data = libwbxml_encode_tree(tree)
    # OPAQUE (0xC3), length 256 as a multi-byte integer (0x82 0x00), then the bytes.
    assert b"\xc3\x82\x00" + payload in data
    assert libwbxml_decode_tree(data) == tree


def test_namespace_switches_only_where_the_page_changes() -> None:
    tree = E(
        "AirSync",
        "ApplicationData",
        E("Email", "Subject", "a"),
        E("Email", "Read", "1"),
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", "1")),
    )
    data = libwbxml_encode_tree(tree)
    # One SWITCH_PAGE (00 pp) per change of page, none between the two Email siblings and none
    # for the END tokens.
    assert data == EAS_WBXML_HEADER + bytes.fromhex(
        "5d 0002 5403610001 5503310001 0011 4a 4603310001 01 01"
    )
    assert libwbxml_decode_tree(data) == tree


def test_converter_refuses_what_libwbxml_xml_cannot_say() -> None:
    with pytest.raises(KeyError, match="Find"):
        to_libwbxml_xml(E("Find", "Find"))
    with pytest.raises(ValueError, match="opaque bytes"):
        to_libwbxml_xml(E("AirSyncBase", "Data", b"\x00"))
    with pytest.raises(ValueError, match="give it bytes"):
        to_libwbxml_xml(E("ComposeMail", "Mime", "text"))


def test_parse_eas_xml_reads_prefixes_layout_and_base64() -> None:
    text = """<?xml version="1.0"?>
<SendMail xmlns="ComposeMail:" xmlns:a="AirSync:">
  <ClientId> x </ClientId>
  <Mime>AEH/
  </Mime>
  <a:Status/>
</SendMail>
"""
    assert parse_eas_xml(text) == Element(
        "ComposeMail",
        "SendMail",
        [
            E("ComposeMail", "ClientId", " x "),
            E("ComposeMail", "Mime", b"\x00A\xff"),
            E("AirSync", "Status"),
        ],
    )
    with pytest.raises(ValueError, match="must end with"):
        parse_eas_xml('<Sync xmlns="AirSync"/>')


def test_encode_reports_an_unknown_tag() -> None:
    from tests.libwbxml import DOCTYPE

    with pytest.raises(LibwbxmlError, match="xml2wbxml"):
        libwbxml_encode(f'{DOCTYPE}<Sync xmlns="AirSync:"><NoSuchTag/></Sync>')


def test_assert_libwbxml_decodes_accepts_a_good_document() -> None:
    xml = assert_libwbxml_decodes(bytes.fromhex("03016a00000756520330000101"))
    assert from_libwbxml_xml(xml) == E(
        "FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0")
    )


def test_assert_libwbxml_decodes_fails_on_truncation() -> None:
    with pytest.raises(Failed, match="cannot decode"):
        assert_libwbxml_decodes(bytes.fromhex("03016a0000075652033000"))


def test_assert_libwbxml_decodes_fails_on_an_unknown_token() -> None:
    # Page 7 has no token 0x3F: libwbxml names it "unknown" and exits 0.
    data = EAS_WBXML_HEADER + bytes.fromhex("0007567f0101")
    assert "unknown" in libwbxml_decode(data)
    with pytest.raises(Failed, match="does not know"):
        assert_libwbxml_decodes(data)


def test_missing_tools_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="libwbxml2-utils"):
        require_libwbxml()


def test_missing_tools_fail_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(Failed, match="libwbxml2-utils"):
        require_libwbxml()


def test_missing_tools_skip_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_libwbxml()


def test_assert_libwbxml_decodes_fails_on_binary_opaque_in_a_text_tag() -> None:
    # ItemOperations:Data is a string (base64 text, MS-ASCMD 2.2.3.39.2); libwbxml writes an
    # OPAQUE there raw, and control bytes are not XML.
    data = EAS_WBXML_HEADER + bytes.fromhex("0014 45 4c c3 03 00 07 ff 01 01")
    with pytest.raises(Failed, match="OPAQUE binary in a tag EAS types as a string"):
        assert_libwbxml_decodes(data)


def test_every_mapped_name_is_the_same_token_in_natsync() -> None:
    # The map's natsync side must be natsync's own table: same (page, token) for each name.
    from natsync.wbxml import encode

    for row in tag_table().rows:
        switch = bytes([0x00, row.page]) if row.page else b""
        assert encode(Element(row.namespace, row.tag)) == EAS_WBXML_HEADER + switch + bytes(
            [row.token]
        ), row


def test_parse_eas_xml_refuses_attributes() -> None:
    with pytest.raises(ValueError, match="EAS has none"):
        parse_eas_xml('<Sync xmlns="AirSync:" xmlns:x="urn:x" x:value="text"/>')
