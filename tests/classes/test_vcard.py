"""vCard 3.0 / 4.0 ⇄ contact records: every stored field round trips (PHOTO included), cards
from other programs read right, bad files raise VCardError and nothing else."""

from __future__ import annotations

import base64
import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.classes import contacts, vcard
from natsync.classes.vcard import Card, VCardError, read_vcards, write_vcards
from tests.classes.test_contacts import full_contact

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(200))).decode()


def vcard_contact() -> dict[str, object]:
    """Every record key with a value that exercises escaping."""
    record = full_contact()
    for key in contacts.TEXT_FIELDS.values():
        record[key] = f"{key}: a, b; c \\ d"
    record["web_page"] = "https://example.test/a,b;c"
    record["birthday"] = "1980-05-04T00:00:00.000Z"
    record["anniversary"] = "2005-06-06T22:00:00.000Z"  # local midnight east of UTC
    record["body"] = "line one\nline two, with; marks\\"
    record["categories"] = ["Friends, close", "Work;day"]
    record["children"] = ["Ann", "Bob, Jr."]
    record["picture"] = PNG
    return record


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_every_field_round_trips(version: str) -> None:
    record = vcard_contact()
    data = write_vcards([Card("uid-1", record)], version)
    assert f"VERSION:{version}".encode() in data
    (card,) = read_vcards(data)
    assert card.uid == "uid-1"
    assert card.record == record


def test_photo_is_written_per_version() -> None:
    record = {"first_name": "P", "picture": PNG}
    v3 = write_vcards([Card("", record)], "3.0").decode()
    v4 = write_vcards([Card("", record)], "4.0").decode()
    assert "PHOTO;ENCODING=b;TYPE=PNG:" in v3
    assert "PHOTO:data:image/png;base64," in v4
    assert read_vcards(v3.encode())[0].record == record
    assert read_vcards(v4.encode())[0].record == record


def test_lines_are_folded_at_75_octets() -> None:
    data = write_vcards([Card("u", {"body": "é" * 200, "picture": PNG})], "3.0")
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))


def test_file_as_only_when_it_differs_from_the_name() -> None:
    plain = {"first_name": "Jane", "last_name": "Doe"}
    assert read_vcards(write_vcards([Card("", plain)]))[0].record == plain
    filed = {**plain, "file_as": "Doe, Jane"}
    assert read_vcards(write_vcards([Card("", filed)]))[0].record == filed


APPLE_30 = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "PRODID:-//Apple Inc.//iPhone OS 17.0//EN\r\n"
    "N:Appleseed;Johnny;;;\r\n"
    "FN:Johnny Appleseed\r\n"
    "ORG:Apple Inc.;\r\n"
    "item1.EMAIL;type=INTERNET;type=pref:johnny@example.test\r\n"
    "item1.X-ABLabel:_$!<Other>!$_\r\n"
    "TEL;type=CELL;type=VOICE;type=pref:+1 555 0100\r\n"
    "TEL;type=HOME;type=VOICE:+1 555 0101\r\n"
    "TEL;type=WORK;type=FAX:+1 555 0102\r\n"
    "item2.ADR;type=HOME;type=pref:;;1 Infinite Loop;Cupertino;CA;95014;United States\r\n"
    "BDAY;value=date:1955-02-24\r\n"
    "NOTE:Line 1\\nLine 2\r\n"
    "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA==\r\n"
    "UID:apple-uid-1\r\n"
    "END:VCARD\r\n"
)

RFC6350_40 = (
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "FN:Simon Perreault\r\n"
    "N:Perreault;Simon;;;ing. jr,M.Sc.\r\n"
    "BDAY:--0203\r\n"
    "ANNIVERSARY:20090808T1430-0500\r\n"
    'TEL;VALUE=uri;PREF=1;TYPE="voice,home":tel:+1-555-555-5555;ext=5555\r\n'
    "EMAIL;TYPE=work:simon.perreault@viagenie.ca\r\n"
    "URL;TYPE=home:http://nomis80.org\r\n"
    "PHOTO:data:image/jpeg;base64,/9j/4AAQSkZJRg==\r\n"
    "END:VCARD\r\n"
)


def test_reads_an_iphone_card() -> None:
    (card,) = read_vcards(APPLE_30.encode())
    assert card.uid == "apple-uid-1"
    assert card.record == {
        "last_name": "Appleseed",
        "first_name": "Johnny",
        "company_name": "Apple Inc.",
        "email1_address": "johnny@example.test",
        "mobile_phone_number": "+1 555 0100",
        "home_phone_number": "+1 555 0101",
        "business_fax_number": "+1 555 0102",
        "home_address_street": "1 Infinite Loop",
        "home_address_city": "Cupertino",
        "home_address_state": "CA",
        "home_address_postal_code": "95014",
        "home_address_country": "United States",
        "birthday": "1955-02-24T00:00:00.000Z",
        "body": "Line 1\nLine 2",
        "body_type": 1,
        "picture": "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA==",
    }


def test_reads_a_4_0_card_with_a_data_uri_a_zone_and_no_birth_year() -> None:
    (card,) = read_vcards(RFC6350_40.encode())
    assert card.record["picture"] == "/9j/4AAQSkZJRg=="
    assert card.record["home_phone_number"] == "tel:+1-555-555-5555;ext=5555"
    assert card.record["suffix"] == "ing. jr,M.Sc."
    assert card.record["web_page"] == "http://nomis80.org"
    assert card.record["anniversary"] == "2009-08-08T19:30:00.000Z"
    assert card.record["birthday"] == "1604-02-03T00:00:00.000Z"  # no year


def test_reads_a_2_1_card_with_quoted_printable() -> None:
    text = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Doe;John\r\nTEL;CELL:123\r\n"
        "NOTE;ENCODING=QUOTED-PRINTABLE:caf=C3=A9\r\nEND:VCARD\r\n"
    )
    (card,) = read_vcards(text.encode())
    assert card.record["mobile_phone_number"] == "123"
    assert card.record["last_name"] == "Doe"


def test_several_cards_keep_their_order() -> None:
    cards = [Card(f"u{i}", {"first_name": f"N{i}"}) for i in range(5)]
    assert read_vcards(write_vcards(cards, "4.0")) == cards


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no BEGIN:VCARD"),
        (b"hello world\n", "not a vCard"),
        (b"FN:x\r\n", "outside BEGIN:VCARD"),
        (b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\n", "cut short"),
        (b"BEGIN:VCARD\r\nFN:x\r\nBEGIN:VCARD\r\n", "inside a card"),
        (b"END:VCARD\r\n", "without BEGIN"),
        (b"BEGIN:VCARD\r\nFN:\xff\xfe\r\nEND:VCARD\r\n", "not UTF-8"),
        (b"BEGIN:VCARD\r\nBDAY:someday\r\nEND:VCARD\r\n", "not a date"),
        (b"BEGIN:VCARD\r\nno colon here\r\nEND:VCARD\r\n", "not a vCard"),
        (
            b"BEGIN:VCARD\r\nPHOTO;ENCODING=b:" + b"A" * (contacts.MAX_PICTURE_BASE64 + 4) + b"\r\n"
            b"END:VCARD\r\n",
            "smaller image",
        ),
    ],
)
def test_bad_files_raise_vcard_error(data: bytes, message: str) -> None:
    with pytest.raises(VCardError, match=message):
        read_vcards(data)


def test_a_long_parameter_list_reads_in_one_pass() -> None:
    """vobject's line regular expression takes minutes on this line (found by fuzz_vcard)."""
    line = "PHOTO;ENCODING" + "," * 5000 + "e.x c"
    started = time.monotonic()
    with pytest.raises(VCardError, match="not a vCard line"):
        read_vcards(f"BEGIN:VCARD\r\n{line}\r\nEND:VCARD\r\n".encode())
    assert time.monotonic() - started < 1.0
    params = "TEL;TYPE=" + ",".join(["home"] * 2000) + ';X-Q="a:b;c":+1 555'
    (card,) = read_vcards(f"BEGIN:VCARD\r\n{params}\r\nEND:VCARD\r\n".encode())
    assert card.record == {"home_phone_number": "+1 555"}


def test_unknown_version_is_refused() -> None:
    with pytest.raises(VCardError, match=r"3\.0 or 4\.0"):
        vcard.write_vcard("", {}, "2.1")


_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), min_size=1
).filter(lambda s: s.strip() == s and s.strip())


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(contacts.TEXT_FIELDS.values())), _text, max_size=8),
    st.sampled_from(["3.0", "4.0"]),
)
def test_arbitrary_text_round_trips(values: dict[str, str], version: str) -> None:
    record = {k: v for k, v in values.items() if k != "web_page"}
    (card,) = read_vcards(write_vcards([Card("x", record)], version))
    assert card.record == record


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_read_or_raise_vcard_error(data: bytes) -> None:
    with contextlib.suppress(VCardError):
        read_vcards(b"BEGIN:VCARD\r\n" + data + b"\r\nEND:VCARD\r\n")
    with contextlib.suppress(VCardError):
        read_vcards(data)


def test_a_value_mentioning_quoted_printable_survives_a_fold_after_an_equals_sign() -> None:
    """Found by fuzz_vcard: a 3.0 line folded right after "=", in a card whose text mentions
    QUOTED-PRINTABLE, was joined by vobject's 2.1 soft-break rule with a newline kept."""
    # 'TEL;TYPE="work,voice":' is 22 octets: the "=" is octet 75, where the line folds
    value = "QUOTED-PRINTABLE " + "x" * 35 + "=after"
    card = Card("", {"last_name": "Doe", "business_phone_number": value})
    for version in ("3.0", "4.0"):
        written = write_vcards([card], version)
        assert any(line.endswith(b"=") for line in written.split(b"\r\n")), "no fold after ="
        assert read_vcards(written) == [card], version
