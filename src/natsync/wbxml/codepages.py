"""The EAS code pages (MS-ASWBXML 2.1.2.1, pages 0-25), loaded once from ``codepages.tsv``.

The table is data, not code: one row per (page, namespace, tag, token), plus whether EAS carries
the element's value as OPAQUE bytes. From it this module builds the lookup tables the decoder and
encoder run on, shaped for speed: per page a 256-entry list indexed by the raw tag byte (so the
content bit needs no masking), and per (namespace, tag) the ready-made tag bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from natsync.wbxml.tokens import FIRST_TAG_ID, TAG_CONTENT_BIT, TAG_ID_MASK

#: WBXML 1.3 section 5.8.1: a code page number is one byte; EAS uses pages 0-25.
PAGE_COUNT = 26


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One row of the table."""

    page: int
    namespace: str
    tag: str
    token: int
    opaque: bool


@dataclass(frozen=True, slots=True)
class CodePages:
    """Everything the codec needs, computed once from the rows."""

    rows: tuple[TagInfo, ...]
    #: page → namespace name (``None`` for a page EAS does not define).
    page_namespace: tuple[str | None, ...]
    #: namespace → page.
    namespace_page: dict[str, int]
    #: page → 256 entries: raw tag byte (with or without content bit) → (namespace, tag).
    decode_tables: tuple[tuple[tuple[str, str] | None, ...] | None, ...]
    #: (namespace, tag) → (page, tag byte without content, tag byte with content).
    encode_table: dict[tuple[str, str], tuple[int, bytes, bytes]]
    #: (namespace, tag) pairs whose value EAS sends as OPAQUE.
    opaque_tags: frozenset[tuple[str, str]]
    #: (namespace, tag) → row.
    by_name: dict[tuple[str, str], TagInfo]


def parse_table(text: str) -> tuple[TagInfo, ...]:
    """Parse the TSV text; raise ``ValueError`` naming the line if a row is malformed."""
    rows: list[TagInfo] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if fields[:4] != ["codepage", "namespace", "tag", "token"] or "value" not in fields:
                raise ValueError(f"codepages.tsv line {lineno}: unexpected header {fields}")
            value_col = fields.index("value")
            header_seen = True
            continue
        page, namespace, tag, token = int(fields[0]), fields[1], fields[2], int(fields[3], 16)
        value = fields[value_col]
        if not (0 <= page < PAGE_COUNT and FIRST_TAG_ID <= token <= TAG_ID_MASK):
            raise ValueError(f"codepages.tsv line {lineno}: page or token out of range")
        if value not in ("text", "opaque"):
            raise ValueError(f"codepages.tsv line {lineno}: value must be text or opaque")
        rows.append(TagInfo(page, namespace, tag, token, value == "opaque"))
    return tuple(rows)


def build(rows: tuple[TagInfo, ...]) -> CodePages:
    """Build the lookup tables; raise ``ValueError`` on a duplicate or inconsistent row."""
    page_namespace: list[str | None] = [None] * PAGE_COUNT
    tables: list[list[tuple[str, str] | None] | None] = [None] * PAGE_COUNT
    encode_table: dict[tuple[str, str], tuple[int, bytes, bytes]] = {}
    by_name: dict[tuple[str, str], TagInfo] = {}
    for row in rows:
        known = page_namespace[row.page]
        if known is None:
            page_namespace[row.page] = row.namespace
            tables[row.page] = [None] * 256
        elif known != row.namespace:
            raise ValueError(f"page {row.page} named both {known} and {row.namespace}")
        table = tables[row.page]
        assert table is not None
        key = (row.namespace, row.tag)
        if table[row.token] is not None or key in encode_table:
            raise ValueError(f"duplicate tag {row.namespace}:{row.tag} / token {row.token:#x}")
        table[row.token] = key
        table[row.token | TAG_CONTENT_BIT] = key
        encode_table[key] = (
            row.page,
            bytes((row.token,)),
            bytes((row.token | TAG_CONTENT_BIT,)),
        )
        by_name[key] = row
    return CodePages(
        rows=rows,
        page_namespace=tuple(page_namespace),
        namespace_page={ns: page for page, ns in enumerate(page_namespace) if ns is not None},
        decode_tables=tuple(None if t is None else tuple(t) for t in tables),
        encode_table=encode_table,
        opaque_tags=frozenset(key for key, row in by_name.items() if row.opaque),
        by_name=by_name,
    )


@cache
def code_pages() -> CodePages:
    """The project's table, read from the package data once per process."""
    text = resources.files("natsync.wbxml").joinpath("codepages.tsv").read_text("utf-8")
    return build(parse_table(text))
