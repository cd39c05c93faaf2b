"""WBXML codec for ActiveSync (MS-ASWBXML over WBXML 1.3), sans-I/O: bytes ⇄ element tree.

    decode(data) -> Element       WBXML bytes from a peer → tree (raises WBXMLError)
    encode(root) -> bytes         tree → WBXML bytes, identical to libwbxml's (raises WBXMLError)
    to_xml(root) -> str           readable XML (libwbxml's ActiveSync dialect)
    from_xml(text) -> Element     that XML back into a tree (safe parser)

Namespaces are the MS-ASCMD code page names without colon; code pages are data (codepages.tsv).
"""

from natsync.wbxml.codepages import CodePages, TagInfo, code_pages
from natsync.wbxml.decoder import decode
from natsync.wbxml.encoder import encode
from natsync.wbxml.errors import WBXMLError
from natsync.wbxml.tree import E, Element
from natsync.wbxml.xmltext import from_xml, to_xml

__all__ = [
    "CodePages",
    "E",
    "Element",
    "TagInfo",
    "WBXMLError",
    "code_pages",
    "decode",
    "encode",
    "from_xml",
    "to_xml",
]
