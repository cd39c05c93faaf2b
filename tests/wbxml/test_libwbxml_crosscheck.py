"""natsync's WBXML codec against libwbxml, an independent implementation, over a corpus of EAS
messages (tests/wbxml/corpus/, README.md there).

For every document: both encoders give the same bytes; natsync decodes libwbxml's bytes to the
source tree; libwbxml decodes natsync's bytes to the source tree. The source tree is read by the
test helper (tests/libwbxml.py), not by the codec, so the codec is never checked against itself.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from natsync.wbxml import Element, decode, encode, from_xml, to_xml
from natsync.wbxml.codepages import code_pages
from tests.libwbxml import (
    assert_libwbxml_decodes,
    from_libwbxml_xml,
    libwbxml_encode_tree,
    parse_eas_xml,
    require_libwbxml,
)

CORPUS = Path(__file__).with_name("corpus")
DOCUMENTS = sorted(CORPUS.glob("*.xml"))

#: What issue 2 asks the corpus to cover.
MIN_DOCUMENTS = 30
MIN_CODE_PAGES = 15


@functools.cache
def source_tree(name: str) -> Element:
    return parse_eas_xml((CORPUS / name).read_text(encoding="utf-8"))


@functools.cache
def libwbxml_bytes(name: str) -> bytes:
    """libwbxml's encoding of a corpus document, made once per run (one process)."""
    return libwbxml_encode_tree(source_tree(name))


def _describe(a: bytes, b: bytes) -> str:
    diffs = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    at = next(diffs, min(len(a), len(b)))
    lo = max(0, at - 8)
    return (
        f"first difference at byte {at} (lengths {len(a)} vs {len(b)}): "
        f"natsync ...{a[lo : at + 8].hex(' ')}... libwbxml ...{b[lo : at + 8].hex(' ')}..."
    )


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_libwbxml()


@pytest.fixture(params=[p.name for p in DOCUMENTS])
def doc(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_encoding_is_byte_identical_to_libwbxml(doc: str) -> None:
    ours = encode(source_tree(doc))
    theirs = libwbxml_bytes(doc)
    assert ours == theirs, _describe(ours, theirs)


def test_natsync_decodes_libwbxml_bytes_to_the_source_tree(doc: str) -> None:
    assert decode(libwbxml_bytes(doc)) == source_tree(doc)


def test_libwbxml_decodes_natsync_bytes_to_the_source_tree(doc: str) -> None:
    xml = assert_libwbxml_decodes(encode(source_tree(doc)))
    assert from_libwbxml_xml(xml) == source_tree(doc)


def test_natsync_reads_the_corpus_xml_to_the_same_tree(doc: str) -> None:
    assert from_xml((CORPUS / doc).read_text(encoding="utf-8")) == source_tree(doc)


def test_natsync_renders_libwbxml_bytes_as_the_source_xml(doc: str) -> None:
    assert parse_eas_xml(to_xml(decode(libwbxml_bytes(doc)))) == source_tree(doc)


def test_corpus_is_large_and_wide_enough() -> None:
    pages = code_pages().namespace_page
    used: set[int] = set()
    for path in DOCUMENTS:
        used |= {pages[el.namespace] for el in source_tree(path.name).iter()}
    assert len(DOCUMENTS) >= MIN_DOCUMENTS
    assert len(used) >= MIN_CODE_PAGES, sorted(used)
    assert used <= set(range(25)), "libwbxml has code pages 0-24 only"
