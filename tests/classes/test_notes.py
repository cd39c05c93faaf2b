"""The Notes codec: every MS-ASNOTE field round trip, defaults, Change, arbitrary trees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import notes
from natsync.classes.codec import PimError, Record
from natsync.classes.versions import V14_0, V16_1, Version
from natsync.eas.registry import codec_for
from natsync.store.api import FolderType
from natsync.wbxml import E, Element
from tests.classes.test_contacts import decodes_or_pim_error, trees, wire


def full_note() -> Record:
    return {
        "subject": "Shopping",
        "body": "milk\neggs",
        "body_type": 1,
        "message_class": "IPM.StickyNote.Custom",
        "categories": ["Errands", "Home"],
        "last_modified_date": "2026-03-01T11:22:33.000Z",
    }


def test_registered() -> None:
    assert codec_for(FolderType.NOTES) is notes.CODEC
    assert codec_for(FolderType.USER_NOTES) is notes.CODEC


@pytest.mark.parametrize("version", [V14_0, V16_1])
def test_every_field_round_trips(version: Version) -> None:
    record = full_note()
    assert notes.decode(wire(notes.CODEC, record, version), version) == record


def test_message_class_defaults_to_sticky_note() -> None:
    record = notes.decode(E("AirSync", "ApplicationData", E("Notes", "Subject", "x")), V16_1)
    assert record == {"subject": "x", "message_class": "IPM.StickyNote"}
    assert notes.decode(wire(notes.CODEC, record, V16_1), V16_1) == record


def test_change_replaces_but_keeps_an_absent_body() -> None:
    old = full_note()
    change = E("AirSync", "ApplicationData", E("Notes", "Subject", "Groceries"))
    assert notes.apply_change(old, change, V16_1) == {
        "subject": "Groceries",
        "message_class": "IPM.StickyNote",
        "body": old["body"],
        "body_type": 1,
    }
    cleared = E(
        "AirSync",
        "ApplicationData",
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", "1"), E("AirSyncBase", "Data", "")),
    )
    assert "body" not in notes.apply_change(old, cleared, V16_1)


def test_bad_date_is_a_pim_error() -> None:
    bad = E("AirSync", "ApplicationData", E("Notes", "LastModifiedDate", "2026-13-45T00:00:00Z"))
    with pytest.raises(PimError):
        notes.decode(bad, V16_1)


@settings(max_examples=200, deadline=None)
@given(st.lists(trees(), max_size=6))
def test_arbitrary_trees_decode_or_raise_pim_error(children: list[Element]) -> None:
    decodes_or_pim_error(notes.CODEC, children, full_note())
