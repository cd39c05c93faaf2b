"""The Contacts class (MS-ASCNTC 2.2.2): a contact's ApplicationData ⇄ a contact record.

Record keys (all optional; an absent key is an empty property):

* every text property of the Contacts and Contacts2 code pages, under the snake_case of its
  element name — ``first_name``, ``middle_name``, ``last_name``, ``suffix``, ``title``,
  ``file_as``, ``nick_name``, ``company_name``, ``department``, ``job_title``,
  ``office_location``, ``manager_name``, ``assistant_name``, ``assistant_phone_number``,
  ``spouse``, ``email1_address`` .. ``email3_address``, ``web_page``, phone numbers
  (``business_phone_number``, ``business2_phone_number``, ``business_fax_number``,
  ``home_phone_number``, ``home2_phone_number``, ``home_fax_number``, ``mobile_phone_number``,
  ``car_phone_number``, ``pager_number``, ``radio_phone_number``, ``company_main_phone``,
  ``mms``), addresses (``business_address_street``, ``_city``, ``_state``, ``_postal_code``,
  ``_country``, the same for ``home_address_*`` and ``other_address_*``), ``yomi_first_name``,
  ``yomi_last_name``, ``yomi_company_name``, ``customer_id``, ``government_id``,
  ``account_name``, ``im_address``, ``im_address2``, ``im_address3``, ``alias``,
  ``weighted_rank`` — see :data:`TEXT_FIELDS` for the exact element of each;
* ``birthday``, ``anniversary``: EAS date-time text (``1980-05-04T00:00:00.000Z``);
* ``categories``, ``children``: lists of text;
* ``picture``: the photo as base64 text, at most :data:`MAX_PICTURE_BASE64` characters
  (MS-ASCNTC 2.2.2.58: 48 KB of base64; more is answered with Status 6);
* ``body`` (text) and ``body_type`` (1 plain, 2 HTML, 3 RTF): the airsyncbase:Body notes.

The contact's stable id (a vCard UID) is the store item's ``uid``, not a record key.

Change (MS-ASCMD 2.2.3.11 ghosting): a property the client leaves out keeps its stored value;
a property sent empty (``<FirstName/>``, ``<Picture/>``, an empty ``<Categories/>``) is cleared.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

from natsync.classes.body import BodyPreference
from natsync.classes.codec import ClassCodec, PimError, Record
from natsync.classes.fields import (
    body_element,
    date_of,
    list_element,
    list_of,
    read_body,
    text_of,
)
from natsync.classes.versions import V14_0, Version
from natsync.store.api import FolderType
from natsync.wbxml import E, Element

NS = "Contacts"
NS2 = "Contacts2"
#: MS-ASCNTC 2.2.2.58: a picture is at most 48 KB of base64 text; past it, Status 6.
MAX_PICTURE_BASE64 = 48 * 1024

_CONTACTS_TEXT = [
    "AssistantName",
    "AssistantPhoneNumber",
    "Business2PhoneNumber",
    "BusinessAddressCity",
    "BusinessAddressCountry",
    "BusinessAddressPostalCode",
    "BusinessAddressState",
    "BusinessAddressStreet",
    "BusinessFaxNumber",
    "BusinessPhoneNumber",
    "CarPhoneNumber",
    "CompanyName",
    "Department",
    "Email1Address",
    "Email2Address",
    "Email3Address",
    "FileAs",
    "FirstName",
    "Home2PhoneNumber",
    "HomeAddressCity",
    "HomeAddressCountry",
    "HomeAddressPostalCode",
    "HomeAddressState",
    "HomeAddressStreet",
    "HomeFaxNumber",
    "HomePhoneNumber",
    "JobTitle",
    "LastName",
    "MiddleName",
    "MobilePhoneNumber",
    "OfficeLocation",
    "OtherAddressCity",
    "OtherAddressCountry",
    "OtherAddressPostalCode",
    "OtherAddressState",
    "OtherAddressStreet",
    "PagerNumber",
    "RadioPhoneNumber",
    "Spouse",
    "Suffix",
    "Title",
    "WebPage",
    "YomiCompanyName",
    "YomiFirstName",
    "YomiLastName",
    "Alias",
    "WeightedRank",
]
_CONTACTS2_TEXT = [
    "CustomerId",
    "GovernmentId",
    "IMAddress",
    "IMAddress2",
    "IMAddress3",
    "ManagerName",
    "CompanyMainPhone",
    "AccountName",
    "NickName",
    "MMS",
]
#: Sent only to 14.0+ clients (MS-ASCNTC 2.2.2.2 Alias, 2.2.2.65 WeightedRank).
_SINCE_14 = frozenset({"Alias", "WeightedRank"})


def snake(tag: str) -> str:
    """``Email1Address`` → ``email1_address``, ``IMAddress2`` → ``im_address2``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", tag)
    return spaced.lower()


#: (namespace, element) -> record key of every plain text property.
TEXT_FIELDS: dict[tuple[str, str], str] = {
    **{(NS, tag): snake(tag) for tag in _CONTACTS_TEXT},
    **{(NS2, tag): snake(tag) for tag in _CONTACTS2_TEXT},
}
_DATES = {"Birthday": "birthday", "Anniversary": "anniversary"}
_LISTS = {"Categories": ("Category", "categories"), "Children": ("Child", "children")}
#: Every record key this class owns (vCard and tests use it).
RECORD_KEYS: frozenset[str] = frozenset(
    [
        *TEXT_FIELDS.values(),
        *_DATES.values(),
        "categories",
        "children",
        "picture",
        "body",
        "body_type",
    ]
)


def check_picture(text: str) -> str:
    """A Picture value as stored: base64 of at most MAX_PICTURE_BASE64 characters."""
    value = "".join(text.split())
    if len(value) > MAX_PICTURE_BASE64:
        raise PimError(
            f"the contact picture is {len(value)} base64 characters; at most "
            f"{MAX_PICTURE_BASE64} are allowed (MS-ASCNTC 2.2.2.58): use a smaller image"
        )
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PimError("the contact picture is not base64") from exc
    return value


def _set(record: Record, key: str, value: Any) -> None:
    if value in ("", [], None):
        record.pop(key, None)
    else:
        record[key] = value


def _apply(record: Record, appdata: Element) -> Record:
    for child in appdata.children:
        key = TEXT_FIELDS.get((child.namespace, child.tag))
        if key is not None:
            _set(record, key, text_of(child))
        elif child.namespace == NS and child.tag in _DATES:
            _set(record, _DATES[child.tag], date_of(child) if text_of(child).strip() else "")
        elif child.namespace == NS and child.tag in _LISTS:
            item_tag, key = _LISTS[child.tag]
            _set(record, key, list_of(child, item_tag))
        elif child.namespace == NS and child.tag == "Picture":
            _set(record, "picture", check_picture(text_of(child)))
        elif child.namespace == "AirSyncBase" and child.tag == "Body":
            read_body(child, record)
    return record


def decode(appdata: Element, version: Version) -> Record:
    """A client's Add: the whole contact."""
    return _apply({}, appdata)


def apply_change(old: Mapping[str, Any], appdata: Element, version: Version) -> Record:
    """A client's Change: sent properties replace, absent ones keep their value (ghosting)."""
    return _apply(dict(old), appdata)


def encode(
    record: Mapping[str, Any], version: Version, body_preferences: Sequence[BodyPreference]
) -> list[Element]:
    """The contact's ApplicationData children for a device speaking *version*."""
    out: list[Element] = []
    for (namespace, tag), key in TEXT_FIELDS.items():
        value = record.get(key)
        if value and (tag not in _SINCE_14 or version >= V14_0):
            out.append(E(namespace, tag, str(value)))
    for tag, key in _DATES.items():
        if record.get(key):
            out.append(E(NS, tag, str(record[key])))
    for tag, (item_tag, key) in _LISTS.items():
        if record.get(key):
            out.append(list_element(NS, tag, item_tag, [str(v) for v in record[key]]))
    if record.get("picture"):
        out.append(E(NS, "Picture", str(record["picture"])))
    if record.get("body"):
        out.append(body_element(record, version, body_preferences))
    return out


CODEC = ClassCodec(
    eas_class="Contacts",
    folder_types=frozenset({FolderType.CONTACTS, FolderType.USER_CONTACTS}),
    decode=decode,
    apply_change=apply_change,
    encode=encode,
)
