"""The element tree every ActiveSync message is decoded into and encoded from.

EAS documents use no attributes and no mixed content: an element holds either child elements,
or one value (text from STR_I/STR_T, or opaque bytes), or nothing. The tree says exactly that,
so the codec and the protocol code never guess. Namespaces are the MS-ASCMD code page names
("AirSync", "Email", "AirSyncBase" ...), one per code page, without the trailing colon.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class Element:
    """One WBXML element: a (namespace, tag) with children or a value."""

    namespace: str
    tag: str
    children: list[Element] = field(default_factory=list)
    #: Text (``str``) or opaque data (``bytes``); ``None`` for containers and empty elements.
    value: str | bytes | None = None

    def append(self, child: Element) -> Element:
        """Add *child* and return it, so builders can chain."""
        self.children.append(child)
        return child

    def add(self, namespace: str, tag: str, value: str | bytes | int | None = None) -> Element:
        """Append a new child; integers become their decimal text, as EAS sends them."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        return self.append(Element(namespace, tag, value=value))

    def find(self, tag: str, namespace: str | None = None) -> Element | None:
        """First direct child named *tag* (in *namespace* when given)."""
        for child in self.children:
            if child.tag == tag and (namespace is None or child.namespace == namespace):
                return child
        return None

    def findall(self, tag: str, namespace: str | None = None) -> list[Element]:
        """All direct children named *tag* (in *namespace* when given)."""
        return [
            c
            for c in self.children
            if c.tag == tag and (namespace is None or c.namespace == namespace)
        ]

    def text(self) -> str:
        """The value as text ('' when empty); opaque bytes are decoded as UTF-8."""
        if self.value is None:
            return ""
        if isinstance(self.value, bytes):
            return self.value.decode("utf-8", errors="replace")
        return self.value

    def child_text(self, tag: str, namespace: str | None = None) -> str | None:
        """Text of the first child named *tag*, or ``None`` when there is no such child."""
        child = self.find(tag, namespace)
        return None if child is None else child.text()

    def iter(self) -> Iterator[Element]:
        """This element and all below it, depth first, in document order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def E(namespace: str, tag: str, *content: Element | str | bytes | int | None) -> Element:
    """Build an element: ``E("AirSync", "Sync", E("AirSync", "Collections"))``.

    Positional content is child elements, or one value (text, bytes, or an int written as
    decimal text). ``None`` items are skipped, which keeps optional parts of builders short.
    """
    element = Element(namespace, tag)
    for item in content:
        if item is None:
            continue
        if isinstance(item, Element):
            element.children.append(item)
        elif isinstance(item, bool):
            element.value = "1" if item else "0"
        elif isinstance(item, int):
            element.value = str(item)
        else:
            element.value = item
    if element.value is not None and element.children:
        raise ValueError(f"{namespace}:{tag} cannot hold both a value and child elements")
    return element
