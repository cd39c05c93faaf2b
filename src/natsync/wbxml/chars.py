"""The characters a WBXML string may carry to an ActiveSync peer, and the cleaning of the rest.

A WBXML inline string (STR_I) is UTF-8 ended by a NUL (WBXML 1.3 section 5.8.4.1), so it cannot
hold a NUL nor a lone surrogate (UTF-8 has no encoding for one). And the peers read the document
as XML: MS-ASWBXML maps EAS to XML 1.0, whose ``Char`` production (XML 1.0 section 2.2) leaves
out the other C0 control characters (all but TAB, LF and CR) and U+FFFE / U+FFFF; Exchange never
sends them, and phones' parsers fail the whole response on one (a folder that never syncs again).

Text that holds them comes from everywhere: mail from the internet (a NUL raw or as ``=00`` in
quoted-printable, a charset decoder's output), an import, a phone's own write. The encoder cleans
every string here, at the one place where text becomes a WBXML string, as Exchange does: the
control characters, NUL and the two non-characters are dropped, a lone surrogate (what invalid
UTF-8 becomes under ``surrogateescape``) is replaced by U+FFFD, the replacement character.
Bytes sent as OPAQUE (a MIME message a phone asked for, an attachment) are never touched.
"""

from __future__ import annotations

import re

#: Characters XML 1.0 (section 2.2, ``Char``) cannot carry, even as character references.
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_DROPPED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]+")
_SURROGATES = re.compile("[\ud800-\udfff]")
#: U+FFFD REPLACEMENT CHARACTER, what a decoder puts where input was not a character.
REPLACEMENT = "\ufffd"


def is_xml_text(text: str) -> bool:
    """Whether every character of *text* is one an EAS peer can read (XML 1.0 ``Char``)."""
    # isprintable() is a C loop, far cheaper than the expression: most values (subjects,
    # addresses, numbers, dates) are printable, and printable text holds no illegal character.
    return text.isprintable() or XML_ILLEGAL.search(text) is None


def xml_text(text: str) -> str:
    """*text* with what XML 1.0 forbids dropped (controls, NUL, U+FFFE/FFFF) or replaced (lone
    surrogates become U+FFFD); *text* itself when it is clean already."""
    if is_xml_text(text):
        return text
    return _DROPPED.sub("", _SURROGATES.sub(REPLACEMENT, text))
