"""The readable XML rendering: exact text, libwbxml compatibility, safe parsing, round trips."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.wbxml import E, Element, WBXMLError, encode, from_xml, samples, to_xml
from natsync.wbxml.limits import MAX_DEPTH
from natsync.wbxml.xmltext import DOCTYPE
from tests.wbxml.test_fuzz_codec import trees

EXAMPLE = E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))


def test_worked_example_renders_readably() -> None:
    assert to_xml(EXAMPLE) == (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<FolderSync xmlns="FolderHierarchy:">\n'
        "  <SyncKey>0</SyncKey>\n"
        "</FolderSync>\n"
    )


def test_doctype_flag_and_one_line_form() -> None:
    assert to_xml(EXAMPLE, doctype=True, indent=None) == (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"{DOCTYPE}\n"
        '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>\n'
    )


def test_other_pages_get_prefixes_declared_on_the_root_and_opaque_is_base64() -> None:
    tree = E(
        "AirSync",
        "Sync",
        E("Email", "Subject", "a < b & c"),
        E("Email2", "ConversationId", b"\x01\x02\x03"),
        E("AirSync", "Status"),
    )
    assert to_xml(tree, indent=None).splitlines()[1] == (
        '<Sync xmlns="AirSync:" xmlns:email="Email:" xmlns:email2="Email2:">'
        "<email:Subject>a &lt; b &amp; c</email:Subject>"
        "<email2:ConversationId>AQID</email2:ConversationId>"
        "<Status/></Sync>"
    )


def test_values_that_plain_xml_cannot_carry_are_marked() -> None:
    tree = E(
        "AirSync",
        "Sync",
        E("AirSync", "SyncKey", b"\xff"),  # bytes in a text tag
        E("ComposeMail", "Mime", "plain"),  # text in an opaque tag
        E("AirSync", "ClientId", "bell\x07"),  # a character XML 1.0 forbids
        E("AirSync", "Status", ""),  # empty text, distinct from an empty element
        E("AirSync", "Class", "line\r\nbreak"),
    )
    text = to_xml(tree)
    assert 'xmlns:natsync="urn:natsync:wbxml"' in text
    assert '<SyncKey natsync:value="base64">/w==</SyncKey>' in text
    assert '<composemail:Mime natsync:value="text">plain</composemail:Mime>' in text
    assert '<ClientId natsync:value="utf8-base64">YmVsbAc=</ClientId>' in text
    assert '<Status natsync:value="text"></Status>' in text
    assert "<Class>line&#13;\nbreak</Class>" in text
    assert from_xml(text) == tree


@settings(max_examples=120, deadline=None)
@given(trees)
def test_any_tree_round_trips_through_xml(tree: Element) -> None:
    assert from_xml(to_xml(tree)) == tree
    assert from_xml(to_xml(tree, doctype=True, indent=None)) == tree


def test_libwbxml_style_xml_with_inline_namespaces_parses() -> None:
    text = (
        '<?xml version="1.0"?>\n'
        f"{DOCTYPE}\n"
        '<Sync xmlns="AirSync:"><Collections><Collection>'
        '<Body xmlns="AirSyncBase:"><Data>hi</Data></Body>'
        '<ConversationId xmlns="Email2:">AQI=</ConversationId>'
        "<Status/></Collection></Collections></Sync>"
    )
    assert from_xml(text) == E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E(
                "AirSync",
                "Collection",
                E("AirSyncBase", "Body", E("AirSyncBase", "Data", "hi")),
                E("Email2", "ConversationId", b"\x01\x02"),
                E("AirSync", "Status"),
            ),
        ),
    )


def test_namespace_without_trailing_colon_is_accepted() -> None:
    assert from_xml('<FolderSync xmlns="FolderHierarchy"/>') == E("FolderHierarchy", "FolderSync")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Sync xmlns="AirSync:"><SyncKey>&lol2;</SyncKey></Sync>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<Sync xmlns="AirSync:"><SyncKey>&ext;</SyncKey></Sync>"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BILLION_LAUGHS, "XML refused"),
        (EXTERNAL_ENTITY, "XML refused"),
        ("<Sync xmlns='AirSync:'><SyncKey>", "not well-formed"),
        ("", "not well-formed"),
        ("<Sync/>", "has no namespace"),
        ("<Sync xmlns='Nope:'/>", "unknown namespace 'Nope'"),
        ("<Sync xmlns='AirSync:' a='1'/>", "EAS elements have no attributes"),
        ("<Sync xmlns='AirSync:'>x<Status/></Sync>", "mixed content"),
        ("<Sync xmlns='AirSync:'><Status/>x</Sync>", "mixed content"),
        ("<Mime xmlns='ComposeMail:'>not base64!</Mime>", "should hold base64"),
        (
            "<Sync xmlns='AirSync:' xmlns:n='urn:natsync:wbxml' n:value='hex'>00</Sync>",
            "unknown natsync:value 'hex'",
        ),
        (
            "<Sync xmlns='AirSync:' xmlns:n='urn:natsync:wbxml' n:value='utf8-base64'>/w==</Sync>",
            "not UTF-8",
        ),
        (
            "<Sync xmlns='AirSync:' xmlns:n='urn:natsync:wbxml' n:value='text'><Status/></Sync>",
            "has child elements",
        ),
    ],
)
def test_from_xml_refuses_clearly(text: str, message: str) -> None:
    with pytest.raises(WBXMLError, match=message):
        from_xml(text)


def test_to_xml_nesting_limit_also_stops_a_cycle() -> None:
    loop = E("AirSync", "Sync")
    loop.children.append(loop)
    with pytest.raises(WBXMLError, match="nested deeper"):
        to_xml(loop)


def test_from_xml_nesting_limit() -> None:
    deep = "<Sync xmlns='AirSync:'>" + "<Collection>" * MAX_DEPTH + "</Collection>" * MAX_DEPTH
    with pytest.raises(WBXMLError, match="nested deeper"):
        from_xml(deep + "</Sync>")


@pytest.mark.skipif(shutil.which("xml2wbxml") is None, reason="libwbxml2-utils not installed")
def test_libwbxml_encodes_our_xml_to_our_bytes(tmp_path: Path) -> None:
    """The rendering is libwbxml's dialect: its encoder turns our XML into our exact bytes."""
    # Left out: Find (libwbxml has no page 25), SendMail (libwbxml spells Mime "MIME") and
    # ItemOperations (libwbxml writes its opaque Data as text).
    skip = ("Find", "ComposeMail", "ItemOperations")
    docs = [t for t in samples.small_documents() if t.namespace not in skip]
    for index, tree in enumerate([*docs, samples.sync_response(3)]):
        source = tmp_path / f"{index}.xml"
        target = tmp_path / f"{index}.wbxml"
        # One line: with -k (keep blanks, needed for exact text) indentation would be text.
        source.write_text(to_xml(tree, doctype=True, indent=None), "utf-8")
        subprocess.run(
            ["xml2wbxml", "-n", "-k", "-v", "1.3", "-a", "-o", str(target), str(source)],
            check=True,
            capture_output=True,
        )
        assert target.read_bytes() == encode(tree), tree.tag


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_from_xml_on_any_text_returns_a_tree_or_raises_wbxml_error(text: str) -> None:
    with contextlib.suppress(WBXMLError):
        from_xml(text)


@settings(max_examples=120, deadline=None)
@given(trees, st.data())
def test_from_xml_on_damaged_renderings_returns_a_tree_or_raises_wbxml_error(
    tree: Element, data: st.DataObject
) -> None:
    text = to_xml(tree, indent=None)
    at = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(["<", ">", "&", '"', "</x>", "<!ENTITY a 'b'>", "", "\0"]))
    cut = data.draw(st.integers(0, 5))
    with contextlib.suppress(WBXMLError):
        from_xml(text[:at] + junk + text[at + cut :])
