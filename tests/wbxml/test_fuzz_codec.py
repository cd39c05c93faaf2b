"""Property tests: valid trees round-trip; any bytes decode or raise WBXMLError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsync.wbxml import Element, WBXMLError, code_pages, decode, encode, samples
from natsync.wbxml.chars import xml_text

# Random valid trees (also used by test_xml.py).

_NAMES = sorted(code_pages().encode_table)

names = st.sampled_from(_NAMES)
#: Text EAS carries in STR_I as it is: the characters of XML 1.0 (section 2.2).
XML_CONTROLS = "".join(map(chr, [*range(9), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF]))
texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=XML_CONTROLS), max_size=40
)
#: Any text at all: what the encoder cleans (natsync.wbxml.chars) before sending.
any_texts = st.text(st.characters(), max_size=40)
values = st.one_of(st.none(), texts, st.binary(max_size=40))


def _leaf(name_value: tuple[tuple[str, str], str | bytes | None]) -> Element:
    (namespace, tag), value = name_value
    return Element(namespace, tag, value=value)


def _container(name_children: tuple[tuple[str, str], list[Element]]) -> Element:
    (namespace, tag), children = name_children
    return Element(namespace, tag, children)


leaves = st.tuples(names, values).map(_leaf)
trees = st.recursive(
    leaves,
    lambda kids: st.tuples(names, st.lists(kids, min_size=1, max_size=5)).map(_container),
    max_leaves=30,
)

any_leaves = st.tuples(names, st.one_of(st.none(), any_texts, st.binary(max_size=40))).map(_leaf)
any_trees = st.recursive(
    any_leaves,
    lambda kids: st.tuples(names, st.lists(kids, min_size=1, max_size=5)).map(_container),
    max_leaves=30,
)


def cleaned(tree: Element) -> Element:
    """*tree* as a peer reads it after encoding: every text value cleaned for XML 1.0."""
    value = xml_text(tree.value) if isinstance(tree.value, str) else tree.value
    return Element(tree.namespace, tree.tag, [cleaned(c) for c in tree.children], value)


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [encode(tree) for tree in samples.small_documents()]


def decode_or_error(data: bytes) -> Element | None:
    """Decode, accepting WBXMLError; any other exception fails the test."""
    try:
        return decode(data)
    except WBXMLError as exc:
        offset = exc.offset
    assert offset is None or 0 <= offset <= len(data)
    return None


@PROPS
@given(trees)
def test_valid_trees_round_trip(tree: Element) -> None:
    assert decode(encode(tree)) == tree


@PROPS
@given(any_trees)
def test_any_text_is_sent_cleaned(tree: Element) -> None:
    """Issue 19: no text a store can hold makes the encoder fail; what goes out is the text
    with what XML 1.0 forbids dropped (or U+FFFD for a lone surrogate), and nothing else."""
    data = encode(tree)
    assert data == encode(cleaned(tree))
    assert decode(data) == cleaned(tree)


@PROPS
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_wbxml_error(data: bytes) -> None:
    decode_or_error(data)


@PROPS
@given(st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header(body: bytes) -> None:
    tree = decode_or_error(b"\x03\x01\x6a\x00" + body)
    if tree is not None:
        # Whatever decodes re-encodes to something that decodes to the same tree (its text
        # cleaned for XML 1.0: a peer may send control characters in STR_I, we send none).
        assert decode(encode(tree)) == cleaned(tree)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at]
        elif data:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@PROPS
@given(mutated())
def test_mutated_valid_documents_decode_or_raise_wbxml_error(data: bytes) -> None:
    tree = decode_or_error(data)
    if tree is not None:
        assert decode(encode(tree)) == cleaned(tree)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_truncation_of_a_valid_document_is_refused(seed: int) -> None:
    data = SEEDS[seed]
    for cut in range(len(data)):
        with pytest.raises(WBXMLError):
            decode(data[:cut])


def test_every_truncation_of_a_sync_response_is_refused() -> None:
    data = encode(samples.sync_response(emails=3, body_chars=30))
    for cut in range(len(data)):
        with pytest.raises(WBXMLError):
            decode(data[:cut])
