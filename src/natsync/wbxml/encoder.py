"""Element tree → WBXML, byte for byte what EAS peers and libwbxml produce.

Header ``03 01 6A 00``; SWITCH_PAGE only when the page changes (none when the root is on page 0);
the content bit only when an element has content; text as STR_I, bytes as OPAQUE (MS-ASWBXML
2.1.2; WBXML 1.3 sections 5.8, 6). Text is cleaned of what a STR_I or a peer's XML reader cannot
take (NUL, other control characters, lone surrogates: natsync.wbxml.chars), so any text a store
holds can be sent; OPAQUE bytes go out untouched. A tree that cannot be encoded (unknown
namespace or tag, a value and children together, a value neither text nor bytes, nesting over
``MAX_DEPTH``) raises ``WBXMLError`` rather than producing bytes a peer would misread.

Speed: tag bytes are precomputed per (namespace, tag); pieces are appended to one list and joined
once. When built, the C common case (natsync.wbxml.speedups) encodes first; this is the reference.
"""

from __future__ import annotations

from natsync.wbxml.chars import XML_ILLEGAL, xml_text
from natsync.wbxml.codepages import code_pages
from natsync.wbxml.errors import WBXMLError
from natsync.wbxml.limits import MAX_DEPTH
from natsync.wbxml.speedups import C_LIMITS, c_encode
from natsync.wbxml.tokens import EAS_HEADER, GlobalToken
from natsync.wbxml.tree import Element

_END = bytes((GlobalToken.END,))
_STR_I = bytes((GlobalToken.STR_I,))
_NUL_END = b"\x00" + _END
_OPAQUE = bytes((GlobalToken.OPAQUE,))
_SWITCH = tuple(bytes((GlobalToken.SWITCH_PAGE, page)) for page in range(256))


def mb_u_int32(value: int) -> bytes:
    """Encode a multi-byte integer (WBXML 1.3 section 5.1)."""
    if value < 0x80:
        return bytes((value,))
    if value > 0xFFFFFFFF:
        raise WBXMLError(f"{value} does not fit a WBXML multi-byte integer (32 bits)")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode(root: Element) -> bytes:
    """Encode *root* as one WBXML document; raise ``WBXMLError`` if it cannot be encoded."""
    if c_encode is not None and C_LIMITS[1] == MAX_DEPTH:
        data = c_encode(root)  # the C common case; None: the Python encoder below says
        if data is not None:
            return data
    return python_encode(root)


def python_encode(root: Element) -> bytes:
    """``encode`` in Python alone: the reference the C common case is compared with."""
    if not isinstance(root, Element):
        raise WBXMLError(f"expected an Element, got {type(root).__name__}")
    out: list[bytes] = [EAS_HEADER]
    _children([root], 0, 1, out, code_pages().encode_table)
    return b"".join(out)


def _children(
    children: list[Element],
    page: int,
    depth: int,
    out: list[bytes],
    table: dict[tuple[str, str], tuple[int, bytes, bytes]],
) -> int:
    """Append *children* (at nesting *depth*) to *out*; return the code page in force after.

    Leaves, most elements of any EAS message, are written inline here; only containers recurse.
    """
    if depth > MAX_DEPTH:
        raise WBXMLError(f"elements nested deeper than {MAX_DEPTH}")
    append = out.append
    for el in children:
        try:
            tag_page, bare, with_content = table[el.namespace, el.tag]
        except KeyError:
            raise _unknown(el) from None
        except (TypeError, AttributeError):
            raise WBXMLError(f"expected an Element, got {type(el).__name__}") from None
        if tag_page != page:
            append(_SWITCH[tag_page])
            page = tag_page
        value = el.value
        if el.children:
            if value is not None:
                raise WBXMLError(f"{el.namespace}:{el.tag} has both a value and child elements")
            append(with_content)
            page = _children(el.children, page, depth + 1, out, table)
            append(_END)
        elif value is None:
            append(bare)
        elif type(value) is str:
            if not value.isprintable() and XML_ILLEGAL.search(value) is not None:
                value = xml_text(value)
            out += (with_content, _STR_I, value.encode(), _NUL_END)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            out += (with_content, _OPAQUE, mb_u_int32(len(data)), data, _END)
        else:
            raise WBXMLError(
                f"{el.namespace}:{el.tag} value of type {type(value).__name__} "
                "cannot be encoded (str or bytes expected)"
            )
    return page


def _unknown(el: Element) -> WBXMLError:
    pages = code_pages()
    if not isinstance(el.namespace, str) or el.namespace not in pages.namespace_page:
        return WBXMLError(f"unknown namespace {el.namespace!r} (element {el.tag!r})")
    return WBXMLError(f"unknown tag {el.tag!r} in namespace {el.namespace}")
