"""The Categories <-> IMAP keywords mapping (natsync.sources.keywords)."""

from __future__ import annotations

import re

import pytest

from natsync.sources.keywords import (
    MAX_KEYWORD,
    categories_of,
    category_to_keyword,
    keyword_to_category,
    keywords_of,
)

#: RFC 3501 §9: atom = 1*ATOM-CHAR; no atom-specials, SP or CTL.
ATOM = re.compile(r"^[\x21-\x7e]+$")


@pytest.mark.parametrize(
    ("category", "keyword"),
    [
        ("Work", "Work"),
        ("$label1", "$label1"),
        ("Très important", "Tr&C3A8-s&20-important"),
        ("a&b", "a&b"),
        ("R&D", "R&D"),
        ("&41-", "&26-41-"),
        ("&é", "&&C3A9-"),
        ("(x)", "&28-x&29-"),
        ("$Junk", "&24-Junk"),
        ("私用", "&E7A781E794A8-"),
    ],
)
def test_categories_become_atoms_and_come_back(category: str, keyword: str) -> None:
    assert category_to_keyword(category) == keyword
    assert ATOM.match(keyword)
    assert not set('(){%*"\\]') & set(keyword)
    assert keyword_to_category(keyword) == category


def test_system_flags_and_markers_are_not_categories() -> None:
    flags = ["\\Seen", "\\Flagged", "$Forwarded", "$MDNSent", "NonJunk", "Work", "Tr&C3A8-s"]
    assert categories_of(flags) == ("Très", "Work")


def test_foreign_keywords_show_as_spelt_and_limits() -> None:
    assert keyword_to_category("x&FF-") == "x&FF-"  # not UTF-8: left as spelt
    assert category_to_keyword("") is None
    assert category_to_keyword("x" * (MAX_KEYWORD + 1)) is None
    assert keywords_of(["Work", "Work", "", "a b"]) == ["Work", "a&20-b"]
