"""Test helper: Debian libwbxml's tools (``xml2wbxml``, ``wbxml2xml``) as a second WBXML peer.

natsync's codec is checked against a second, unrelated implementation. This module owns the
details that make that comparison exact (see ../shared/reference/libwbxml-crosscheck.md):

- libwbxml reads and writes its own XML dialect: namespaces spelled with a trailing colon
  (``xmlns="AirSync:"``), its own tag names where they differ from MS-ASWBXML's
  (``Recurrence_Type``, ``Attendee_Email``, ``Reply-To``, ``MIME`` ...), ``Gal:`` for the GAL
  page, and base64 text for the few tags it treats as opaque. ``libwbxml_tags.tsv`` (next to
  this file) maps every (code page, token) libwbxml knows to natsync's (namespace, tag) and
  libwbxml's; it was produced by :func:`discover_libwbxml_table` (hand-made WBXML for every
  token, decoded by ``wbxml2xml``), not typed in. ``tests/wbxml/test_libwbxml_helper.py``
  re-checks it against the installed tools.
- Encode as EAS peers do (``-n -v 1.3 -a``: WBXML 1.3, unknown public id, UTF-8, no string
  table) and keep whitespace exactly (``-k``), so text survives byte for byte.

Other tests use :func:`assert_libwbxml_decodes` to prove that what natsync sends is readable by
another implementation. The tools are a test requirement (``make test`` installs
libwbxml2-utils): a missing tool fails the test, except on a developer's machine (not root,
``CI`` unset), where it skips with the reason.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from natsync.wbxml.tree import Element

#: One tool run handles a document of at most a few MB in well under a second; a run that
#: takes longer than this is hung, not slow.
LIBWBXML_TIMEOUT_S = 30.0

#: The map between natsync's and libwbxml's names for every token libwbxml knows (pages 0-24).
TAG_TABLE_PATH = Path(__file__).with_name("libwbxml_tags.tsv")

#: What xml2wbxml needs to pick its ActiveSync tables.
DOCTYPE = (
    '<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" "http://www.microsoft.com/">'
)

#: WBXML 1.3 header as EAS peers send it: version 1.3, unknown public id, UTF-8, no string table.
EAS_WBXML_HEADER = b"\x03\x01\x6a\x00"

#: Code pages libwbxml 0.11.8 has tables for (it predates page 25, Find).
LIBWBXML_PAGES = range(25)

#: Tokens 0x00-0x04 are WBXML global tokens; page tags use 0x05-0x3F (6 bits, no flags).
FIRST_TAG_TOKEN = 0x05
LAST_TAG_TOKEN = 0x3F

_ENCODE_ARGS = ("-k", "-n", "-v", "1.3", "-a")
_DECODE_ARGS = ("-l", "ACTIVESYNC", "-k", "-m", "0")


class LibwbxmlError(RuntimeError):
    """libwbxml's tool refused the input or crashed; the message carries its stderr."""


@dataclass(frozen=True, slots=True)
class TagName:
    """One token's names on both sides, and whether libwbxml writes its content as base64."""

    page: int
    token: int
    namespace: str  # natsync (MS-ASCMD) namespace, no colon
    tag: str  # natsync (MS-ASWBXML) tag name
    lw_namespace: str  # libwbxml's namespace, with the trailing colon
    lw_tag: str  # libwbxml's tag name
    opaque: bool  # libwbxml decodes OPAQUE here as base64 and encodes its text as OPAQUE


@dataclass(frozen=True, slots=True)
class TagTable:
    """Look-ups in both directions over :data:`TAG_TABLE_PATH`."""

    rows: tuple[TagName, ...]
    by_natsync: dict[tuple[str, str], TagName]
    by_libwbxml: dict[tuple[str, str], TagName]


@functools.cache
def tag_table() -> TagTable:
    """The name map, loaded once."""
    rows = []
    with TAG_TABLE_PATH.open(encoding="utf-8", newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))
        for row in csv.DictReader(lines, delimiter="\t"):
            rows.append(
                TagName(
                    page=int(row["codepage"]),
                    token=int(row["token"], 16),
                    namespace=row["namespace"],
                    tag=row["tag"],
                    lw_namespace=row["libwbxml_namespace"],
                    lw_tag=row["libwbxml_tag"],
                    opaque=row["libwbxml_opaque"] == "1",
                )
            )
    return TagTable(
        rows=tuple(rows),
        by_natsync={(r.namespace, r.tag): r for r in rows},
        by_libwbxml={(r.lw_namespace, r.lw_tag): r for r in rows},
    )


# --- availability ---------------------------------------------------------------------------


def libwbxml_available() -> bool:
    """True when both tools are on PATH."""
    return shutil.which("xml2wbxml") is not None and shutil.which("wbxml2xml") is not None


def require_libwbxml() -> None:
    """Fail the calling test without the tools; skip only on a developer's own machine.

    CI and ``make test`` run as root and install libwbxml2-utils, so there a missing tool is a
    broken environment, never a reason to pass quietly.
    """
    if libwbxml_available():
        return
    how = "install Debian's libwbxml2-utils (make test does: APT_TEST_PACKAGES)"
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip(f"libwbxml tools (xml2wbxml, wbxml2xml) not installed; {how}")
    pytest.fail(f"libwbxml tools (xml2wbxml, wbxml2xml) not installed; {how}")


# --- running the tools ----------------------------------------------------------------------


def _run(tool: str, args: tuple[str, ...], data: bytes, in_name: str, out_name: str) -> bytes:
    """Run *tool* on *data* through temp files; return the output file's bytes."""
    require_libwbxml()
    with tempfile.TemporaryDirectory(prefix="natsync-libwbxml-") as tmp:
        src = Path(tmp, in_name)
        dst = Path(tmp, out_name)
        src.write_bytes(data)
        try:
            proc = subprocess.run(
                [tool, *args, "-o", str(dst), str(src)],
                capture_output=True,
                timeout=LIBWBXML_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LibwbxmlError(f"{tool} hung for more than {LIBWBXML_TIMEOUT_S} s") from exc
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        # The tools report failure on stderr and by exit status, and may leave a partial file.
        if proc.returncode != 0 or "failed" in stderr:
            raise LibwbxmlError(f"{tool} exited {proc.returncode}: {stderr}")
        if not dst.exists():
            raise LibwbxmlError(f"{tool} wrote no output: {stderr}")
        return dst.read_bytes()


def libwbxml_encode(xml: str) -> bytes:
    """Encode libwbxml-dialect XML (see :func:`to_libwbxml_xml`) to WBXML as EAS peers do.

    The text is taken byte for byte (``-k``), so pass compact XML without indentation.
    """
    return _run("xml2wbxml", _ENCODE_ARGS, xml.encode("utf-8"), "in.xml", "out.wbxml")


def _decode_raw(data: bytes) -> bytes:
    return _run("wbxml2xml", _DECODE_ARGS, data, "in.wbxml", "out.xml")


def libwbxml_decode(data: bytes) -> str:
    """Decode WBXML with libwbxml's ActiveSync tables to compact XML in its dialect.

    Raises :class:`LibwbxmlError` when the tool fails, or when its output is not UTF-8 (it
    writes OPAQUE content raw, except in the tags it treats as base64).
    """
    raw = _decode_raw(data)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LibwbxmlError(
            f"wbxml2xml wrote non-UTF-8 at byte {exc.start}: OPAQUE data outside the tags "
            "libwbxml writes as base64"
        ) from exc


def _parse_libwbxml_output(xml: str) -> ET.Element:
    # wbxml2xml writes CR inside text as a raw byte; an XML parser would normalise it to LF,
    # so keep it as a character reference (compact output has no CR anywhere else).
    return ET.fromstring(xml.replace("\r", "&#13;"))


def assert_libwbxml_decodes(data: bytes) -> str:
    """Assert that libwbxml decodes *data* (a whole WBXML document) and knows every tag.

    For server tests: every response natsync sends must be readable by an independent
    implementation. Fails the test (``pytest.fail``) when the tool errors, when its output is
    not XML, or when a tag comes out as ``unknown`` (a token libwbxml's ActiveSync tables do
    not have on that page). Returns libwbxml's XML for further assertions.
    """
    head = data[:32].hex(" ")
    try:
        raw = _decode_raw(data)
    except LibwbxmlError as exc:
        pytest.fail(f"libwbxml cannot decode the document ({len(data)} bytes: {head} ...): {exc}")
    xml = raw.decode("utf-8", "replace")
    try:
        root = _parse_libwbxml_output(xml)
    except ET.ParseError as exc:
        # wbxml2xml writes OPAQUE raw outside its base64 tags: binary there is not XML.
        _, column = exc.position
        inner = xml.rfind("<", 0, max(column - 1, 0))
        pytest.fail(
            f"libwbxml's decoding is not XML ({exc}), near {xml[inner : inner + 120]!r}: "
            "most likely OPAQUE binary in a tag EAS types as a string (libwbxml writes OPAQUE "
            "as base64 only in " + ", ".join(sorted(_opaque_names())) + ")"
        )
    unknown = [el for el in root.iter() if _local(el.tag) == "unknown"]
    if unknown:
        pytest.fail(f"libwbxml does not know {len(unknown)} tag(s) in the document: {xml[:300]!r}")
    return xml


def assert_valid_response(data: bytes) -> Element:
    """Our codec decodes *data* (a response natsync sent) and, where its XML can show the
    document, libwbxml does too; returns our tree.

    libwbxml's XML shows OPAQUE as base64 only in the tags it types as opaque; elsewhere it
    writes the raw bytes into the XML, which is then not XML when they are binary. natsync
    sends a MIME message that no string may carry (a NUL, invalid UTF-8) as opaque
    AirSyncBase:Data (issue 19), so such documents are checked by our codec alone.
    """
    from natsync.wbxml import decode

    tree = decode(data)
    opaque = _opaque_names()
    raw_binary = any(
        isinstance(el.value, bytes) and f"{el.namespace}:{el.tag}" not in opaque
        for el in tree.iter()
    )
    if not raw_binary:
        assert_libwbxml_decodes(data)
    return tree


def _opaque_names() -> set[str]:
    return {f"{r.namespace}:{r.tag}" for r in tag_table().rows if r.opaque}


# --- natsync tree <-> libwbxml XML ----------------------------------------------------------


def _local(qname: str) -> str:
    return qname.rsplit("}", 1)[-1]


def _split(qname: str) -> tuple[str, str]:
    if not qname.startswith("{"):
        return "", qname
    ns, local = qname[1:].split("}", 1)
    return ns, local


def _escape_text(text: str) -> str:
    # CR must survive an XML parser (libexpat inside xml2wbxml): write it as a reference.
    return escape(text).replace("\r", "&#13;")


def to_libwbxml_xml(root: Element) -> str:
    """Render a natsync tree as compact libwbxml-dialect XML, ready for :func:`libwbxml_encode`.

    Raises ``KeyError`` for a tag libwbxml has no token for, ``ValueError`` for opaque bytes in
    a tag libwbxml writes as text (its XML cannot express them) or a text value in a tag it
    reads as base64.
    """
    table = tag_table().by_natsync
    parts: list[str] = ['<?xml version="1.0" encoding="utf-8"?>', DOCTYPE]

    def emit(el: Element, parent_ns: str | None) -> None:
        try:
            name = table[(el.namespace, el.tag)]
        except KeyError:
            raise KeyError(f"libwbxml has no tag for {el.namespace}:{el.tag}") from None
        xmlns = f' xmlns="{name.lw_namespace}"' if name.lw_namespace != parent_ns else ""
        open_tag = f"{name.lw_tag}{xmlns}"
        if el.children:
            parts.append(f"<{open_tag}>")
            for child in el.children:
                emit(child, name.lw_namespace)
            parts.append(f"</{name.lw_tag}>")
        elif el.value is None or el.value in {"", b""}:
            parts.append(f"<{open_tag}/>")
        elif isinstance(el.value, bytes):
            if not name.opaque:
                raise ValueError(
                    f"{el.namespace}:{el.tag} holds opaque bytes, but libwbxml's XML writes "
                    "this tag as text: such a document does not round-trip through its XML"
                )
            parts.append(
                f"<{open_tag}>{base64.b64encode(el.value).decode('ascii')}</{name.lw_tag}>"
            )
        else:
            if name.opaque:
                raise ValueError(
                    f"{el.namespace}:{el.tag} holds text, but libwbxml always encodes it as "
                    "OPAQUE from base64: give it bytes"
                )
            parts.append(f"<{open_tag}>{_escape_text(el.value)}</{name.lw_tag}>")

    emit(root, None)
    return "".join(parts)


def from_libwbxml_xml(xml: str) -> Element:
    """Read libwbxml-dialect XML (what :func:`libwbxml_decode` returns) into a natsync tree.

    Text is kept exactly; an element without text or children has value ``None``; the tags
    libwbxml treats as opaque become ``bytes``.
    """
    table = tag_table().by_libwbxml

    def build(node: ET.Element) -> Element:
        ns, local = _split(node.tag)
        try:
            name = table[(ns, local)]
        except KeyError:
            raise KeyError(f"no natsync tag for libwbxml's {ns}{local}") from None
        el = Element(name.namespace, name.tag)
        kids = list(node)
        if kids:
            el.children = [build(kid) for kid in kids]
        elif node.text:
            if name.opaque:
                try:
                    el.value = base64.b64decode(node.text, validate=True)
                except binascii.Error as exc:
                    raise ValueError(f"{ns}{local}: not base64: {node.text[:40]!r}") from exc
            else:
                el.value = node.text
        return el

    return build(_parse_libwbxml_output(xml))


def libwbxml_encode_tree(root: Element) -> bytes:
    """natsync tree -> libwbxml's WBXML."""
    return libwbxml_encode(to_libwbxml_xml(root))


def libwbxml_decode_tree(data: bytes) -> Element:
    """WBXML -> libwbxml's decoding, as a natsync tree."""
    return from_libwbxml_xml(libwbxml_decode(data))


# --- readable EAS XML (the corpus form) -----------------------------------------------------


def parse_eas_xml(text: str) -> Element:
    """Read EAS XML written with MS-ASWBXML names (the corpus form, tests/wbxml/corpus/README.md).

    Namespaces are URIs with the trailing colon (``AirSync:``), default or prefixed; whitespace
    between elements is layout; a leaf's text is its value exactly; the tags libwbxml treats as
    opaque hold base64 and become ``bytes``. Tags are checked against the name map.
    """
    table = tag_table().by_natsync

    def build(node: ET.Element) -> Element:
        uri, local = _split(node.tag)
        if not uri.endswith(":"):
            raise ValueError(f"namespace {uri!r} of <{local}> must end with ':'")
        namespace = uri[:-1]
        name = table.get((namespace, local))
        if name is None:
            raise KeyError(f"{namespace}:{local} is not an ActiveSync tag libwbxml knows")
        if node.attrib:
            raise ValueError(
                f"{namespace}:{local} has attributes {dict(node.attrib)}: EAS has none"
            )
        el = Element(namespace, local)
        kids = list(node)
        if kids:
            if node.text and node.text.strip():
                raise ValueError(f"{namespace}:{local} mixes text and elements")
            el.children = [build(kid) for kid in kids]
        elif node.text:
            if name.opaque:
                el.value = base64.b64decode("".join(node.text.split()), validate=True)
            else:
                el.value = node.text
        return el

    return build(ET.fromstring(text))


# --- discovering libwbxml's names (how libwbxml_tags.tsv was made) --------------------------


def _page_probe(page: int, with_opaque: bool) -> bytes:
    """A document whose root and children are every tag token of *page*.

    Nesting is irrelevant to the tag tables, so one tool run names all 59 tokens of a page.
    With *with_opaque*, each child carries OPAQUE ``C3 A9`` (UTF-8 "é"): libwbxml writes it as
    base64 (``w6k=``) only in the tags it treats as binary, as the raw "é" elsewhere.
    """
    body = bytearray(EAS_WBXML_HEADER)
    if page:
        body += bytes([0x00, page])
    body.append(FIRST_TAG_TOKEN | 0x40)
    for token in range(FIRST_TAG_TOKEN, LAST_TAG_TOKEN + 1):
        if with_opaque:
            body += bytes([token | 0x40, 0xC3, 2, *_PROBE_OPAQUE, 0x01])
        else:
            body.append(token)
    body.append(0x01)
    return bytes(body)


_PROBE_OPAQUE = "é".encode()


def discover_libwbxml_table() -> dict[tuple[int, int], tuple[str, str, bool]]:
    """Ask the installed wbxml2xml for its name of every (page, token), and whether it is opaque.

    Returns ``{(page, token): (libwbxml namespace, libwbxml tag, opaque)}`` for the tokens it
    knows (it names the others ``unknown``).
    """
    found: dict[tuple[int, int], tuple[str, str, bool]] = {}
    base64_text = base64.b64encode(_PROBE_OPAQUE).decode("ascii")
    for page in LIBWBXML_PAGES:
        names = list(_parse_libwbxml_output(libwbxml_decode(_page_probe(page, False))))
        opaque = list(_parse_libwbxml_output(libwbxml_decode(_page_probe(page, True))))
        tokens = range(FIRST_TAG_TOKEN, LAST_TAG_TOKEN + 1)
        for token, named, probed in zip(tokens, names, opaque, strict=True):
            ns, tag = _split(named.tag)
            if tag != "unknown":
                assert _split(probed.tag) == (ns, tag)
                found[(page, token)] = (ns, tag, probed.text == base64_text)
    return found


def write_tag_table(reference_tsv: Path, out: Path) -> None:
    """Join MS-ASWBXML names (*reference_tsv*, the code-page table) with libwbxml's, into *out*."""
    spec: dict[tuple[int, int], tuple[str, str]] = {}
    with reference_tsv.open(encoding="utf-8", newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))
        for row in csv.DictReader(lines, delimiter="\t"):
            spec[(int(row["codepage"]), int(row["token"], 16))] = (row["namespace"], row["tag"])
    lw = discover_libwbxml_table()
    with out.open("w", encoding="utf-8", newline="") as fh:
        fh.write(
            "# natsync (MS-ASWBXML) names <-> libwbxml 0.11.8 names for every token both know.\n"
            "# Made by tests/libwbxml.py write_tag_table(): libwbxml's side read from wbxml2xml\n"
            "# decoding a hand-made document per page; libwbxml_opaque=1 where it writes OPAQUE\n"
            "# as base64 (and encodes that tag's text as OPAQUE). Do not edit by hand.\n"
        )
        fh.write(
            "codepage\ttoken\tnamespace\ttag\tlibwbxml_namespace\tlibwbxml_tag\tlibwbxml_opaque\n"
        )
        for key in sorted(spec.keys() & lw.keys()):
            ns, tag = spec[key]
            lw_ns, lw_tag, opaque = lw[key]
            fh.write(f"{key[0]}\t0x{key[1]:02X}\t{ns}\t{tag}\t{lw_ns}\t{lw_tag}\t{int(opaque)}\n")


if __name__ == "__main__":  # pragma: no cover - regeneration by hand
    # python -m tests.libwbxml REFERENCE_TSV  (rewrites tests/libwbxml_tags.tsv)
    write_tag_table(Path(sys.argv[1]), TAG_TABLE_PATH)
