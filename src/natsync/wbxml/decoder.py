"""WBXML → element tree (WBXML 1.3 as MS-ASWBXML uses it).

Accepts what EAS peers send: header (version 1.1-1.3, public id, UTF-8, string table), tags with
the content bit, SWITCH_PAGE, END, STR_I, STR_T, OPAQUE. Everything else WBXML allows but EAS does
not use (attributes, LITERAL*, EXT*, PI, ENTITY) and every malformation raises ``WBXMLError``
with the byte offset: never another exception, never a hang, and never memory out of proportion
to the input (see ``limits``). Text that is not valid UTF-8 is decoded with U+FFFD in place of
the bad bytes, as Exchange reads it: one mangled string in a phone's write (a contact's note,
an event's location) costs that string's bad bytes, not the whole request (a 400 the phone
would send again and again).

The main loop is written for speed in pure Python: one byte indexes a per-page 256-entry table,
bounds are checked by letting ``IndexError`` happen once at the end of the data (a try block is
free in CPython 3.11), STR_I is found with ``bytes.find``, and locals alias everything hot.
When built, the C common case (natsync.wbxml.speedups) decodes first; this is the reference.
"""

from __future__ import annotations

from natsync.wbxml.codepages import code_pages
from natsync.wbxml.errors import WBXMLError
from natsync.wbxml.limits import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_ELEMENTS,
    MAX_MB_U_INT32_BYTES,
    MAX_STRING_BYTES,
    MAX_STRING_TABLE_BYTES,
)
from natsync.wbxml.speedups import C_LIMITS, c_decode
from natsync.wbxml.tokens import (
    CHARSET_UTF8,
    TAG_ATTRIBUTES_BIT,
    TAG_CONTENT_BIT,
    GlobalToken,
    Version,
)
from natsync.wbxml.tree import Element

# The hot loop compares against literal token values (a constant is cheaper to load than a
# global); these are the tokens they stand for.
assert (
    GlobalToken.SWITCH_PAGE,
    GlobalToken.END,
    GlobalToken.STR_I,
    GlobalToken.STR_T,
    GlobalToken.OPAQUE,
    TAG_CONTENT_BIT,
) == (0x00, 0x01, 0x03, 0x83, 0xC3, 0x40)

_UNSUPPORTED = {
    GlobalToken.ENTITY: "ENTITY (character entities are not used by EAS)",
    GlobalToken.LITERAL: "LITERAL (string-table tag names are not used by EAS)",
    GlobalToken.LITERAL_A: "LITERAL_A (string-table tag names are not used by EAS)",
    GlobalToken.LITERAL_C: "LITERAL_C (string-table tag names are not used by EAS)",
    GlobalToken.LITERAL_AC: "LITERAL_AC (string-table tag names are not used by EAS)",
    GlobalToken.PI: "PI (processing instructions are not used by EAS)",
    GlobalToken.EXT_I_0: "EXT_I_0 (extension tokens are not used by EAS)",
    GlobalToken.EXT_I_1: "EXT_I_1 (extension tokens are not used by EAS)",
    GlobalToken.EXT_I_2: "EXT_I_2 (extension tokens are not used by EAS)",
    GlobalToken.EXT_T_0: "EXT_T_0 (extension tokens are not used by EAS)",
    GlobalToken.EXT_T_1: "EXT_T_1 (extension tokens are not used by EAS)",
    GlobalToken.EXT_T_2: "EXT_T_2 (extension tokens are not used by EAS)",
    GlobalToken.EXT_0: "EXT_0 (extension tokens are not used by EAS)",
    GlobalToken.EXT_1: "EXT_1 (extension tokens are not used by EAS)",
    GlobalToken.EXT_2: "EXT_2 (extension tokens are not used by EAS)",
}


def _mb_u_int32(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read a multi-byte integer (WBXML 1.3 section 5.1); return (value, next position)."""
    value = 0
    start = pos
    n = len(data)
    while True:
        if pos >= n:
            raise WBXMLError(f"document truncated inside the {what} (a multi-byte integer)", n)
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
        if pos - start >= MAX_MB_U_INT32_BYTES:
            raise WBXMLError(f"the {what} is a multi-byte integer longer than 5 bytes", start)
    if value > 0xFFFFFFFF:
        raise WBXMLError(f"the {what} does not fit in 32 bits", start)
    return value, pos


def _header(data: bytes) -> tuple[int, bytes]:
    """Check the header (WBXML 1.3 sections 5.4-5.7); return (body offset, string table)."""
    if not data:
        raise WBXMLError("empty document: a WBXML header was expected", 0)
    version = data[0]
    if version not in (Version.V1_1, Version.V1_2, Version.V1_3):
        raise WBXMLError(
            f"unsupported WBXML version byte {version:#04x} (1.1-1.3 = 0x01-0x03 accepted)", 0
        )
    public_id, pos = _mb_u_int32(data, 1, "public identifier")
    public_id_index: int | None = None
    if public_id == 0:
        public_id_index, pos = _mb_u_int32(data, pos, "public identifier string index")
    charset_at = pos
    charset, pos = _mb_u_int32(data, pos, "charset")
    if charset != CHARSET_UTF8:
        raise WBXMLError(
            f"charset MIBenum {charset} is not supported: EAS documents are UTF-8 (106)",
            charset_at,
        )
    table_at = pos
    table_len, pos = _mb_u_int32(data, pos, "string table length")
    if table_len > MAX_STRING_TABLE_BYTES:
        raise WBXMLError(
            f"string table of {table_len} bytes is over the limit of {MAX_STRING_TABLE_BYTES}",
            table_at,
        )
    if table_len > len(data) - pos:
        raise WBXMLError(
            f"string table declares {table_len} bytes but only {len(data) - pos} remain",
            table_at,
        )
    table = data[pos : pos + table_len]
    if public_id_index is not None and (
        public_id_index >= table_len or table.find(b"\0", public_id_index) < 0
    ):
        raise WBXMLError(
            f"public identifier string index {public_id_index} is outside the string table", 1
        )
    return pos + table_len, table


def decode(data: bytes | bytearray | memoryview) -> Element:
    """Decode one WBXML document into its root element; raise ``WBXMLError`` if it is bad."""
    limits = (MAX_DOCUMENT_BYTES, MAX_DEPTH, MAX_ELEMENTS, MAX_STRING_BYTES)
    if c_decode is not None and type(data) is bytes and limits == C_LIMITS:
        tree = c_decode(data)  # the C common case; None: the Python decoder below says
        if tree is not None:
            return tree
    return python_decode(data)


def python_decode(data: bytes | bytearray | memoryview) -> Element:
    """``decode`` in Python alone: the reference the C common case is compared with."""
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise WBXMLError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    n = len(data)
    if n > MAX_DOCUMENT_BYTES:
        raise WBXMLError(
            f"document of {n} bytes is over the limit of {MAX_DOCUMENT_BYTES}", MAX_DOCUMENT_BYTES
        )
    pos, table = _header(data)
    return _body(data, pos, table)


def _body(data: bytes, pos: int, table: bytes) -> Element:
    """Decode the body from *pos*: the hot loop (see the module docstring for its shape)."""
    pages = code_pages()
    tables = pages.decode_tables
    names = tables[0]
    assert names is not None
    page = 0
    # Elements are made with object.__new__ and slot stores: a third cheaper than the dataclass
    # __init__, and the loop makes one per tag.
    cls = Element
    new = Element.__new__
    find = data.find
    # The root is parsed as the only child of a sentinel, so the tag branch needs no root test.
    top = Element("", "")
    stack: list[Element] = []
    push = stack.append
    pop = stack.pop
    cur = top
    depth = 0  # of cur; the root is at depth 1
    add = top.children.append
    count = 0
    max_elements = MAX_ELEMENTS
    max_depth = MAX_DEPTH
    max_string = MAX_STRING_BYTES
    expanded = 0
    # Values in several pieces (rare) are gathered here and joined once at END, so a document of
    # many tiny pieces costs linear, not quadratic, time.
    parts: dict[int, list[str] | list[bytes]] = {}
    n = len(data)
    # When the whole document is within the string limit no single string can exceed it, and
    # the hot path skips the comparison.
    short = n <= max_string
    tok = -1
    try:
        while True:
            tok = data[pos]
            entry = names[tok]
            if entry is not None:
                # A tag: the most common token, so tested first.
                if cur.value is not None:
                    raise WBXMLError(
                        f"element {entry[1]} inside {cur.tag}, which already has a value: "
                        "mixed content is not used by EAS",
                        pos,
                    )
                count += 1
                if count > max_elements:
                    raise WBXMLError(f"more than {max_elements} elements", pos)
                if depth >= max_depth:
                    raise WBXMLError(f"elements nested deeper than {max_depth}", pos)
                pos += 1
                if tok & 0x40:
                    if data[pos] == 0x03:
                        # The common leaf <Tag>text</Tag> (tag, STR_I, text, NUL, END) in one go.
                        end = find(0, pos + 1)
                        if end > 0 and data[end + 1] == 0x01 and (short or end - pos <= max_string):
                            el = new(cls)
                            el.namespace, el.tag = entry
                            el.children = []
                            el.value = data[pos + 1 : end].decode("utf-8", "replace")
                            add(el)
                            pos = end + 2
                            if cur is top:
                                break
                            continue
                    elif data[pos] == 0xC3 and data[pos + 1] < 0x80:
                        # A short opaque leaf (ConversationId ...): tag, OPAQUE, len, bytes, END.
                        start = pos + 2
                        end = start + data[pos + 1]
                        if end < n and data[end] == 0x01 and (short or end - start <= max_string):
                            el = new(cls)
                            el.namespace, el.tag = entry
                            el.children = []
                            el.value = data[start:end]
                            add(el)
                            pos = end + 1
                            if cur is top:
                                break
                            continue
                    el = new(cls)
                    el.namespace, el.tag = entry
                    el.children = []
                    el.value = None
                    add(el)
                    push(cur)
                    cur = el
                    add = el.children.append
                    depth += 1
                else:
                    el = new(cls)
                    el.namespace, el.tag = entry
                    el.children = []
                    el.value = None
                    add(el)
                    if cur is top:
                        break
            elif tok == 0x01:  # END
                if cur is top:
                    raise WBXMLError("END with no open element", pos)
                if parts:
                    _join_parts(cur, parts)
                cur = pop()
                add = cur.children.append
                depth -= 1
                pos += 1
                if cur is top:
                    break
            elif tok == 0x03:  # STR_I
                end = find(b"\0", pos + 1)
                if end < 0:
                    raise WBXMLError("inline string (STR_I) is not terminated by a NUL", pos)
                if end - pos - 1 > max_string:
                    raise WBXMLError(f"string longer than {max_string} bytes", pos)
                _add_value(cur, top, data[pos + 1 : end].decode("utf-8", "replace"), pos, parts)
                pos = end + 1
            elif tok == 0x00:  # SWITCH_PAGE
                page = data[pos + 1]
                if page >= len(tables) or tables[page] is None:
                    raise WBXMLError(f"SWITCH_PAGE to unknown code page {page}", pos)
                names = tables[page]
                assert names is not None
                pos += 2
            elif tok == 0xC3:  # OPAQUE
                length, start = _mb_u_int32(data, pos + 1, "OPAQUE length")
                if length > n - start:
                    raise WBXMLError(
                        f"OPAQUE declares {length} bytes but only {n - start} remain", pos
                    )
                if length > max_string:
                    raise WBXMLError(f"OPAQUE longer than {max_string} bytes", pos)
                _add_value(cur, top, data[start : start + length], pos, parts)
                pos = start + length
            elif tok == 0x83:  # STR_T
                index, after = _mb_u_int32(data, pos + 1, "string table reference")
                end = table.find(b"\0", index) if index < len(table) else -1
                if end < 0:
                    raise WBXMLError(
                        f"string table reference {index} is outside the string table "
                        f"({len(table)} bytes) or not NUL-terminated",
                        pos,
                    )
                expanded += end - index
                if expanded > n:
                    raise WBXMLError(
                        "string table references expand to more text than the document holds",
                        pos,
                    )
                _add_value(cur, top, table[index:end].decode("utf-8", "replace"), pos, parts)
                pos = after
            else:
                raise _bad_token(tok, page, pages.page_namespace[page], pos)
    except IndexError:
        inside = cur
        started = names[tok] if names is not None and 0 <= tok < len(names) else None
        if started is not None and tok & 0x40:
            inside = Element(*started)  # the data ended right after this start tag
        raise WBXMLError(
            "document truncated: the data ended"
            + (f" inside {inside.namespace}:{inside.tag}" if inside is not top else "")
            + (" where a code page number was expected" if tok == 0x00 else ""),
            n,
        ) from None
    if pos != n:
        raise WBXMLError(f"{n - pos} bytes after the end of the root element", pos)
    return top.children[0]


def _add_value(
    cur: Element,
    top: Element,
    value: str | bytes,
    pos: int,
    parts: dict[int, list[str] | list[bytes]],
) -> None:
    """Attach a text or opaque piece to the open element; pieces of one kind concatenate."""
    if cur is top:
        raise WBXMLError("text or opaque data outside the root element", pos)
    old = cur.value
    if old is None:
        if cur.children:
            raise WBXMLError(
                f"value after child elements in {cur.tag}: mixed content is not used by EAS", pos
            )
        cur.value = value
    elif type(old) is type(value):
        pending = parts.get(id(cur))
        if pending is None:
            parts[id(cur)] = [old, value]  # type: ignore[assignment]
        else:
            pending.append(value)  # type: ignore[arg-type]
    else:
        raise WBXMLError(f"text and opaque data mixed in one element ({cur.tag})", pos)


def _join_parts(cur: Element, parts: dict[int, list[str] | list[bytes]]) -> None:
    """Join the pieces gathered for *cur*, if any, into its value."""
    pending = parts.pop(id(cur), None)
    if pending is not None:
        first = pending[0]
        if isinstance(first, bytes):
            cur.value = b"".join(pending)  # type: ignore[arg-type]
        else:
            cur.value = "".join(pending)  # type: ignore[arg-type]


def _bad_token(tok: int, page: int, namespace: str | None, pos: int) -> WBXMLError:
    """Say precisely why *tok* is not acceptable here."""
    if tok in _UNSUPPORTED:
        return WBXMLError(f"unsupported token {_UNSUPPORTED[GlobalToken(tok)]}", pos)
    if tok & TAG_ATTRIBUTES_BIT:
        return WBXMLError(
            f"tag {tok:#04x} has the attributes bit set: attributes are not used by EAS", pos
        )
    return WBXMLError(f"unknown tag token {tok & 0x3F:#04x} on code page {page} ({namespace})", pos)
