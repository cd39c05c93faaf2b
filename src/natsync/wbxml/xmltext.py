"""Readable XML for any EAS message, and back: for logs, debugging and ``natsync wbxml``.

The rendering is the one libwbxml reads and writes (its ActiveSync language): the root's code page
is the default namespace spelled with a trailing colon (``xmlns="AirSync:"``), every other page used
gets a prefix declared on the root (``xmlns:email="Email:"``), and the libwbxml DOCTYPE can be
added. Opaque values of the tags EAS sends as OPAQUE (the ``opaque`` column of codepages.tsv) are
plain base64 text, as libwbxml writes them. Where the plain rendering would be ambiguous or not
well-formed XML, one attribute says how to read the value, so ``from_xml(to_xml(t)) == t``:

- ``natsync:value="base64"``: opaque bytes in a tag normally carrying text;
- ``natsync:value="text"``: text in a tag normally carrying opaque bytes;
- ``natsync:value="utf8-base64"``: text with characters XML 1.0 cannot carry (control characters),
  as base64 of its UTF-8.

Parsing is safe: defusedxml forbids entity declarations and external references.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from natsync.wbxml.chars import XML_ILLEGAL
from natsync.wbxml.codepages import code_pages
from natsync.wbxml.errors import WBXMLError
from natsync.wbxml.limits import MAX_DEPTH
from natsync.wbxml.tree import Element

#: The DOCTYPE libwbxml's ActiveSync language expects (libwbxml-crosscheck.md).
DOCTYPE = (
    '<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" "http://www.microsoft.com/">'
)
#: Namespace of our one marker attribute; not an EAS namespace, so libwbxml never sees it unless
#: a value needs it.
NATSYNC_NS = "urn:natsync:wbxml"
_VALUE_ATTR = f"{{{NATSYNC_NS}}}value"

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _prefix(namespace: str) -> str:
    return namespace.lower()


def to_xml(root: Element, *, doctype: bool = False, indent: str | None = "  ") -> str:
    """Render *root* as XML text (``indent=None`` for one line); ``doctype`` adds libwbxml's."""
    opaque_tags = code_pages().opaque_tags
    others: set[str] = set()
    body: list[str] = []
    marker_needed = False

    def render(el: Element, level: int) -> None:
        nonlocal marker_needed
        if level >= MAX_DEPTH:
            raise WBXMLError(f"elements nested deeper than {MAX_DEPTH}")
        if el.namespace == root.namespace:
            name = el.tag
        else:
            others.add(el.namespace)
            name = f"{_prefix(el.namespace)}:{el.tag}"
        pad = "" if indent is None else "\n" + indent * level
        if level:
            body.append(pad)
        body.append(f"<{name}")
        if not level:
            body.append("")  # the namespace declarations go here, once all are known
        value = el.value
        if el.children:
            body.append(">")
            for child in el.children:
                render(child, level + 1)
            body.append(f"{pad}</{name}>")
            return
        if value is None:
            body.append("/>")
            return
        attr = ""
        opaque_tag = (el.namespace, el.tag) in opaque_tags
        if isinstance(value, (bytes, bytearray, memoryview)):
            text = base64.b64encode(bytes(value)).decode("ascii")
            if not opaque_tag or not value:
                attr = ' natsync:value="base64"'
        elif XML_ILLEGAL.search(value):
            text = base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")
            attr = ' natsync:value="utf8-base64"'
        else:
            text = value.translate(_ESCAPES)
            if opaque_tag or not value:
                attr = ' natsync:value="text"'
        if attr:
            marker_needed = True
        body.append(f"{attr}>{text}</{name}>")

    render(root, 0)
    decls = [f' xmlns="{_attr(root.namespace)}:"']
    decls += [f' xmlns:{_prefix(ns)}="{_attr(ns)}:"' for ns in sorted(others)]
    if marker_needed:
        decls.append(f' xmlns:natsync="{NATSYNC_NS}"')
    body[1] = "".join(decls)
    head = '<?xml version="1.0" encoding="utf-8"?>\n' + (DOCTYPE + "\n" if doctype else "")
    return head + "".join(body) + "\n"


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def from_xml(text: str | bytes) -> Element:
    """Parse XML written like ``to_xml`` (or for libwbxml) into a tree; raise ``WBXMLError``."""
    try:
        node = SafeET.fromstring(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except ParseError as exc:
        line, column = exc.position
        raise WBXMLError(
            f"XML is not well-formed: {exc.msg} (line {line}, column {column})"
        ) from None
    except DefusedXmlException as exc:
        raise WBXMLError(
            f"XML refused: {exc} (entity declarations and external references are not allowed)"
        ) from None
    except ValueError as exc:
        raise WBXMLError(f"XML could not be parsed: {exc}") from None
    return _convert(node, 1, code_pages().namespace_page, code_pages().opaque_tags)


def _split(name: str) -> tuple[str, str]:
    if not name.startswith("{"):
        raise WBXMLError(f'element <{name}> has no namespace: declare one, e.g. xmlns="AirSync:"')
    uri, _, local = name[1:].partition("}")
    return (uri[:-1] if uri.endswith(":") else uri), local


def _convert(
    node: Any,
    depth: int,
    namespace_page: dict[str, int],
    opaque_tags: frozenset[tuple[str, str]],
) -> Element:
    if depth > MAX_DEPTH:
        raise WBXMLError(f"elements nested deeper than {MAX_DEPTH}")
    namespace, tag = _split(node.tag)
    if namespace not in namespace_page:
        raise WBXMLError(f"unknown namespace {namespace!r} on <{tag}>")
    el = Element(namespace, tag)
    mode: str | None = None
    for key, val in node.attrib.items():
        if key != _VALUE_ATTR:
            raise WBXMLError(f"attribute {key!r} on <{tag}>: EAS elements have no attributes")
        mode = val
    children = list(node)
    text = node.text
    if children:
        if text is not None and text.strip():
            raise WBXMLError(f"<{tag}> has both text and child elements (mixed content)")
        for child in children:
            if child.tail is not None and child.tail.strip():
                raise WBXMLError(f"<{tag}> has both text and child elements (mixed content)")
            el.children.append(_convert(child, depth + 1, namespace_page, opaque_tags))
        if mode is not None:
            raise WBXMLError(f"natsync:value on <{tag}>, which has child elements")
        return el
    if text is None:
        text = ""
        if mode is None:
            return el
    if mode is None:
        mode = "base64" if (namespace, tag) in opaque_tags else "text"
    if mode == "text":
        el.value = text
    elif mode in ("base64", "utf8-base64"):
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise WBXMLError(f"<{tag}> should hold base64 but does not") from None
        if mode == "base64":
            el.value = raw
        else:
            try:
                el.value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise WBXMLError(f"<{tag}> base64 text is not UTF-8") from None
    else:
        raise WBXMLError(f"unknown natsync:value {mode!r} on <{tag}>")
    return el
