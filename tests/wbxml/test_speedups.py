"""natsync.wbxml._speedups (C) against the Python codec (decoder.py, encoder.py), the reference.

The C module may decline anything (None: the Python codec takes it); what it returns must be
exactly what the Python codec returns, and it must never accept what the Python codec refuses.
It must also take the documents EAS really carries, or it would be dead weight.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync.wbxml import Element, WBXMLError, decode, encode, samples, speedups
from natsync.wbxml.decoder import python_decode
from natsync.wbxml.encoder import python_encode
from natsync.wbxml.limits import MAX_DEPTH
from tests.wbxml.test_fuzz_codec import PROPS, SEEDS, any_trees, mutated, names, trees

if speedups.speedups is None:  # pragma: no cover - CI builds it (make test installs gcc)
    pytest.fail(
        "natsync.wbxml._speedups is not built (or NATSYNC_PURE_PYTHON is set): "
        "make test installs a C compiler and Python's headers and builds it",
        pytrace=False,
    )


class C:
    """The C side, typed (natsync.wbxml.speedups holds it when built and not switched off)."""

    @staticmethod
    def decode(data: bytes) -> Element | None:
        assert speedups.c_decode is not None
        return speedups.c_decode(data)

    @staticmethod
    def encode(tree: object) -> bytes | None:
        assert speedups.c_encode is not None
        return speedups.c_encode(tree)  # type: ignore[arg-type]


def python_decode_or_none(data: bytes) -> Element | None:
    try:
        return python_decode(data)
    except WBXMLError:
        return None


def python_encode_or_none(tree: Element) -> bytes | None:
    try:
        return python_encode(tree)
    except WBXMLError:
        return None


def agree_decode(data: bytes) -> Element | None:
    """The C decoder declines or returns the Python decoder's tree; return the C result."""
    got = C.decode(data)
    if got is not None:
        assert got == python_decode_or_none(data)
    return got


def agree_encode(tree: Element) -> bytes | None:
    """The C encoder declines or returns the Python encoder's bytes; return the C result."""
    got = C.encode(tree)
    if got is not None:
        assert got == python_encode_or_none(tree)
    return got


# What EAS carries: the C side must take it (else it is dead weight).

REAL_DOCUMENTS = [
    samples.sync_response(emails=100, body_chars=630),
    samples.item_operations_response(document_bytes=200_000),
    *samples.small_documents(),
]


@pytest.mark.parametrize("tree", REAL_DOCUMENTS, ids=lambda t: t.tag)
def test_c_takes_real_documents_and_agrees(tree: Element) -> None:
    wire = agree_encode(tree)
    assert wire is not None, "the C encoder declined a real document"
    assert agree_decode(wire) == tree


def test_public_codec_uses_c_and_gives_python_results() -> None:
    tree = REAL_DOCUMENTS[0]
    assert encode(tree) == python_encode(tree)
    assert decode(python_encode(tree)) == python_decode(python_encode(tree))


# Random trees, random bytes, mutated documents.


@PROPS
@given(trees)
def test_valid_trees_agree(tree: Element) -> None:
    wire = agree_encode(tree)
    assert wire is not None  # valid trees of plain values are the C encoder's common case
    assert agree_decode(wire) == tree


@PROPS
@given(any_trees)
def test_any_text_is_cleaned_identically(tree: Element) -> None:
    wire = agree_encode(tree)
    assert wire is not None
    agree_decode(wire)


@PROPS
@given(st.binary(max_size=200))
def test_random_bytes_agree(data: bytes) -> None:
    agree_decode(data)
    agree_decode(b"\x03\x01\x6a\x00" + data)


@PROPS
@given(mutated())
def test_mutated_documents_agree(data: bytes) -> None:
    agree_decode(data)


@pytest.mark.parametrize("cut", range(0, 60))
def test_every_prefix_is_declined(cut: int) -> None:
    wire = SEEDS[0]
    if cut < len(wire):
        assert C.decode(wire[:cut]) is None
        with pytest.raises(WBXMLError):
            decode(wire[:cut])


# What the C side declines, and the Python codec then answers (its error or its result).


@given(names, st.one_of(st.integers(), st.just(bytearray(b"x")), st.just(memoryview(b"x"))))
def test_unusual_values_are_left_to_python(name: tuple[str, str], value: object) -> None:
    tree = Element(*name, value=value)  # type: ignore[arg-type]
    assert C.encode(tree) is None
    assert agree_encode(tree) is None


def test_trees_the_python_encoder_refuses_are_declined() -> None:
    refused = [
        Element("AirSync", "NoSuchTag"),
        Element("NoSuchNamespace", "Sync"),
        Element("AirSync", "Sync", [Element("AirSync", "SyncKey")], value="x"),
        "not an element",
    ]
    deep = Element("AirSync", "Sync")
    node = deep
    for _ in range(MAX_DEPTH):
        node = node.append(Element("AirSync", "Sync"))
    refused.append(deep)
    for tree in refused:
        assert C.encode(tree) is None
        with pytest.raises(WBXMLError):
            encode(tree)  # type: ignore[arg-type]


def test_value_in_pieces_and_string_table_are_left_to_python() -> None:
    # <Sync><SyncKey>"a" "b"</SyncKey></Sync>: two STR_I pieces, joined by the Python decoder.
    pieces = b"\x03\x01\x6a\x00\x45\x4b\x03a\x00\x03b\x00\x01\x01"
    assert C.decode(pieces) is None
    assert decode(pieces) == Element("AirSync", "Sync", [Element("AirSync", "SyncKey", value="ab")])
    table = b"\x03\x01\x6a\x02a\x00\x45\x4b\x83\x00\x01\x01"
    assert C.decode(table) is None
    assert decode(table) == Element("AirSync", "Sync", [Element("AirSync", "SyncKey", value="a")])


def test_pure_python_switch_turns_the_c_side_off() -> None:
    code = "from natsync.wbxml import speedups; print(speedups.c_decode, speedups.c_encode)"
    env = {**os.environ, "NATSYNC_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]
