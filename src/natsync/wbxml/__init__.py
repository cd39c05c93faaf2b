"""WBXML codec for ActiveSync (MS-ASWBXML over WBXML 1.3), sans-I/O: bytes ⇄ element tree."""

from natsync.wbxml.tree import E, Element

__all__ = ["E", "Element"]
