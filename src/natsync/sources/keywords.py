"""A phone's Categories as IMAP keywords and back, sans-I/O.

An EAS category (MS-ASEMAIL 2.2.2.14) is any string; an IMAP keyword is an atom (RFC 3501 §9:
``flag-keyword = atom``): printable ASCII without ``( ) { % * " \\ ]``, space or controls, and
not starting with ``\\`` (system flags). The mapping:

- a category made only of atom characters other than ``&`` is the keyword itself (``Work``,
  ``$label1`` — so Thunderbird's tags and other clients' keywords show as the same names);
- every run of other characters (space, non-ASCII, controls ...) is written ``&`` + the
  upper-case hex of its UTF-8 bytes + ``-``: ``Très important`` ↔ ``Tr&C3A8-s&20-important``.
  ``&`` is an atom character, so the result is an atom; an ``&`` of the name itself stays as it
  is (``R&D``) unless hex digits and ``-`` follow it, then it is escaped too (``&26-``), so
  decoding reverses the mapping exactly both ways;
- keywords that are protocol markers, not labels (:data:`HIDDEN`: ``$Forwarded``, ``$MDNSent``,
  ``$Junk`` ...) are not shown as categories and are left alone on the server; a category that
  happens to be spelt like one gets its first character escaped (``$Junk`` → ``&24-Junk``).

A keyword from another client that is not in this form (an ``&`` not followed by hex and ``-``)
is shown as it is spelt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: RFC 3501 §9 atom-specials (with CTL and SP, handled by the range test below).
ATOM_SPECIALS = frozenset('(){%*"\\]')
#: Keywords that mark a message for a protocol or a filter rather than label it (RFC 5788's
#: registry: $Forwarded, $MDNSent, $Junk, $NotJunk, $Phishing, $Submitted ...; Thunderbird's
#: Junk/NonJunk). Compared without case (keywords are case-insensitive, RFC 3501 §2.3.2).
HIDDEN = frozenset(
    k.lower()
    for k in (
        "$Forwarded",
        "$MDNSent",
        "$Junk",
        "$NotJunk",
        "Junk",
        "NonJunk",
        "NotJunk",
        "$Phishing",
        "$Submitted",
        "$SubmitPending",
        "$Answered",
        "$Important",
        "$Recent",
    )
)
#: Longest keyword written (Dovecot's limit is larger): a longer category is not written to the
#: server, rather than be refused by a server with a smaller limit.
MAX_KEYWORD = 200
_ESCAPED = re.compile(r"&((?:[0-9A-F]{2})+)-")


_HEX_RUN = re.compile(r"(?:[0-9A-F]{2})+-")


def _plain(text: str, at: int) -> bool:
    char = text[at]
    if char == "&":
        return _HEX_RUN.match(text, at + 1) is None
    return 0x21 <= ord(char) <= 0x7E and char not in ATOM_SPECIALS


def _hex(run: str) -> str:
    return "&" + run.encode("utf-8").hex().upper() + "-"


def category_to_keyword(category: str) -> str | None:
    """The keyword of *category*, None when it cannot be one (empty, or too long)."""
    if not category:
        return None
    out: list[str] = []
    run = ""
    for at, char in enumerate(category):
        if _plain(category, at):
            if run:
                out.append(_hex(run))
                run = ""
            out.append(char)
        else:
            run += char
    if run:
        out.append(_hex(run))
    keyword = "".join(out)
    if keyword.lower() in HIDDEN:
        keyword = _hex(category[0]) + keyword[1:]
    return keyword if len(keyword) <= MAX_KEYWORD else None


def keyword_to_category(keyword: str) -> str | None:
    """The category a keyword shows as, None for system flags and :data:`HIDDEN` keywords."""
    if not keyword or keyword.startswith("\\") or keyword.lower() in HIDDEN:
        return None

    def decode(found: re.Match[str]) -> str:
        try:
            return bytes.fromhex(found.group(1)).decode("utf-8")
        except UnicodeDecodeError:
            return found.group(0)

    return _ESCAPED.sub(decode, keyword)


def categories_of(flags: Iterable[str]) -> tuple[str, ...]:
    """The categories a message's FLAGS carry, sorted."""
    found = {keyword_to_category(flag) for flag in flags}
    return tuple(sorted(c for c in found if c))


def keywords_of(categories: Iterable[str]) -> list[str]:
    """The keywords of *categories* (those that can be one), in order, without repeats."""
    out = [category_to_keyword(c) for c in categories]
    return list(dict.fromkeys(k for k in out if k))
