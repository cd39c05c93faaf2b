"""The Contacts codec: every MS-ASCNTC field through encode → WBXML → decode, ghosting on
Change, the picture limit, and "decodes or raises PimError" on arbitrary trees."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import contacts
from natsync.classes.codec import ClassCodec, PimError, Record
from natsync.classes.email import BodyPreference
from natsync.classes.versions import V12_1, V14_0, V16_1, Version
from natsync.eas.registry import codec_for
from natsync.store.api import FolderType
from natsync.wbxml import E, Element, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

PICTURE = base64.b64encode(bytes(range(256)) * 4).decode()


def full_contact() -> Record:
    """A record with every key the class owns, each with a distinct value."""
    record: Record = {key: f"value of {key} – ü" for key in contacts.TEXT_FIELDS.values()}
    record.update(
        birthday="1980-05-04T00:00:00.000Z",
        anniversary="2005-06-07T00:00:00.000Z",
        categories=["Friends", "Work"],
        children=["Ann", "Bob"],
        picture=PICTURE,
        body="Met at the conference.\nCall back.",
        body_type=1,
    )
    return record


def wire(codec: ClassCodec, record: Record, version: Version) -> Element:
    """Encode *record* for a client taking HTML and plain bodies, send it through WBXML
    (checked by libwbxml), decode the tree again."""
    prefs = [BodyPreference(type=2), BodyPreference(type=1)]
    appdata = E("AirSync", "ApplicationData", *codec.encode(record, version, prefs))
    data = encode(E("AirSync", "Sync", appdata))
    assert_libwbxml_decodes(data)
    root = decode(data)
    found = root.find("ApplicationData", "AirSync")
    assert found is not None
    return found


@pytest.mark.parametrize("version", [V14_0, V16_1])
def test_every_field_round_trips(version: Version) -> None:
    record = full_contact()
    assert set(record) == contacts.RECORD_KEYS
    assert contacts.decode(wire(contacts.CODEC, record, version), version) == record


def test_alias_and_weighted_rank_are_not_sent_to_12_1() -> None:
    record = full_contact()
    back = contacts.decode(wire(contacts.CODEC, record, V12_1), V12_1)
    assert back == {k: v for k, v in record.items() if k not in ("alias", "weighted_rank")}


def test_keys_are_the_snake_case_of_the_elements() -> None:
    assert contacts.TEXT_FIELDS[("Contacts", "Email1Address")] == "email1_address"
    assert contacts.TEXT_FIELDS[("Contacts2", "IMAddress2")] == "im_address2"
    assert contacts.TEXT_FIELDS[("Contacts2", "MMS")] == "mms"
    assert contacts.TEXT_FIELDS[("Contacts", "Business2PhoneNumber")] == "business2_phone_number"
    assert len(set(contacts.TEXT_FIELDS.values())) == len(contacts.TEXT_FIELDS)


def test_registered_for_both_folder_types() -> None:
    assert codec_for(FolderType.CONTACTS) is contacts.CODEC
    assert codec_for(FolderType.USER_CONTACTS) is contacts.CODEC


def test_change_keeps_absent_properties_and_clears_empty_ones() -> None:
    old = full_contact()
    change = E(
        "AirSync",
        "ApplicationData",
        E("Contacts", "FirstName", "Alicia"),
        E("Contacts", "Picture"),
        E("Contacts", "Categories"),
        E("Contacts2", "NickName", ""),
    )
    new = contacts.apply_change(old, change, V16_1)
    assert new["first_name"] == "Alicia"
    assert "picture" not in new
    assert "categories" not in new
    assert "nick_name" not in new
    untouched = {"first_name", "picture", "categories", "nick_name"}
    assert {k: v for k, v in new.items() if k not in untouched} == {
        k: v for k, v in old.items() if k not in untouched
    }
    assert old["first_name"] != "Alicia"  # the old record is not changed in place


def test_html_body_kept_and_offered_as_plain_to_a_plain_client() -> None:
    record = {"body": "<p>Hello <b>there</b></p>", "body_type": 2}
    back = contacts.decode(wire(contacts.CODEC, record, V16_1), V16_1)
    assert back == record
    plain = contacts.encode(record, V16_1, [BodyPreference(type=1)])
    body = plain[0]
    assert body.child_text("Type", "AirSyncBase") == "1"
    assert "Hello there" in (body.child_text("Data", "AirSyncBase") or "")


def test_truncated_body_says_so() -> None:
    record = {"body": "x" * 100, "body_type": 1}
    (body,) = contacts.encode(record, V16_1, [BodyPreference(type=1, truncation_size=10)])
    assert body.child_text("Truncated", "AirSyncBase") == "1"
    assert body.child_text("Data", "AirSyncBase") == "x" * 10
    assert body.child_text("EstimatedDataSize", "AirSyncBase") == "100"


def test_picture_over_the_limit_is_status_6() -> None:
    too_big = "A" * (contacts.MAX_PICTURE_BASE64 + 4)
    with pytest.raises(PimError, match="smaller image") as caught:
        contacts.decode(E("AirSync", "ApplicationData", E("Contacts", "Picture", too_big)), V16_1)
    assert caught.value.eas_status == 6
    at_limit = "A" * contacts.MAX_PICTURE_BASE64
    got = contacts.decode(
        E("AirSync", "ApplicationData", E("Contacts", "Picture", at_limit)), V16_1
    )
    assert got == {"picture": at_limit}


@pytest.mark.parametrize(
    "bad",
    [
        E("Contacts", "Picture", "not base64!"),
        E("Contacts", "Birthday", "yesterday"),
        E("Contacts", "Categories", "text"),
        E("Contacts", "FirstName", E("Contacts", "LastName", "x")),
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", "4"), E("AirSyncBase", "Data", "x")),
    ],
)
def test_bad_values_are_pim_errors(bad: Element) -> None:
    with pytest.raises(PimError):
        contacts.decode(E("AirSync", "ApplicationData", bad), V16_1)


_NAMESPACES = ["Contacts", "Contacts2", "AirSyncBase", "AirSync", "Tasks", "Notes"]
_TAGS = [
    "FirstName",
    "Birthday",
    "Categories",
    "Category",
    "Children",
    "Child",
    "Picture",
    "Body",
    "Type",
    "Data",
    "NickName",
    "Recurrence",
    "Complete",
    "Subject",
    "DueDate",
    "DayOfWeek",
    "Occurrences",
    "Regenerate",
    "MessageClass",
    "LastModifiedDate",
]


def trees() -> st.SearchStrategy[Element]:
    leaf = st.builds(
        lambda ns, tag, value: Element(ns, tag, value=value),
        st.sampled_from(_NAMESPACES),
        st.sampled_from(_TAGS),
        st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=8)),
    )
    return st.recursive(
        leaf,
        lambda kids: st.builds(
            Element,
            st.sampled_from(_NAMESPACES),
            st.sampled_from(_TAGS),
            st.lists(kids, max_size=4),
        ),
        max_leaves=12,
    )


def decodes_or_pim_error(codec: ClassCodec, children: list[Element], old: dict[str, Any]) -> None:
    appdata = Element("AirSync", "ApplicationData", children)
    for call in (
        lambda: codec.decode(appdata, V16_1),
        lambda: codec.apply_change(old, appdata, V16_1),
    ):
        try:
            record = call()
        except PimError:
            continue
        codec.encode(record, V16_1, [BodyPreference(type=2)])


@settings(max_examples=300, deadline=None)
@given(st.lists(trees(), max_size=6))
def test_arbitrary_trees_decode_or_raise_pim_error(children: list[Element]) -> None:
    decodes_or_pim_error(contacts.CODEC, children, full_contact())
