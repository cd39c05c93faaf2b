"""Query forms (MS-ASHTTP 2.2.1.1.1) and version negotiation."""

from __future__ import annotations

import base64
import struct

import pytest

from natsync.eas.errors import HttpError
from natsync.eas.request import ParamTag, encode_base64_query, parse_request
from natsync.eas.versions import V14_1, V16_1, negotiate, supported_header

HEADERS = {"MS-ASProtocolVersion": "16.1", "X-MS-PolicyKey": "1234", "User-Agent": "ua"}


def test_plain_form() -> None:
    req = parse_request(
        "Cmd=Sync&User=alice&DeviceId=abc123&DeviceType=iPhone&SaveInSent=T", HEADERS
    )
    assert (req.cmd, req.user, req.device_id, req.device_type) == (
        "Sync",
        "alice",
        "abc123",
        "iPhone",
    )
    assert req.version == V16_1
    assert req.policy_key == 1234
    assert req.save_in_sent
    assert not req.base64_form


def test_base64_form_spec_example_layout() -> None:
    # The MS-ASHTTP example: version 14.0, Sync, en-US, "v140Device", no key, "SmartPhone".
    raw = bytes([140, 0]) + struct.pack("<H", 0x0409)
    raw += bytes([10]) + b"v140Device" + b"\x00" + bytes([10]) + b"SmartPhone"
    raw += bytes([ParamTag.User, 5]) + b"alice"
    req = parse_request(base64.b64encode(raw).decode(), {})
    assert req.cmd == "Sync"
    assert str(req.version) == "14.0"
    assert req.device_id == "v140Device"
    assert req.device_type == "SmartPhone"
    assert req.policy_key is None
    assert req.user == "alice"
    assert req.locale == 0x0409
    assert req.base64_form


def test_base64_form_policy_key_and_options() -> None:
    query = encode_base64_query(
        "SmartReply",
        "dev1",
        "Android",
        V14_1,
        policy_key=0xDEADBEEF,
        params={
            ParamTag.ItemId: b"1:5",
            ParamTag.CollectionId: b"1",
            ParamTag.Options: b"\x03",
            ParamTag.User: b"alice",
        },
    )
    raw = base64.b64decode(query)
    assert raw[0] == 141
    assert raw[1] == 3
    assert raw[9:14] == b"\x04" + struct.pack("<I", 0xDEADBEEF)
    req = parse_request(query, {})
    assert req.cmd == "SmartReply"
    assert req.policy_key == 0xDEADBEEF
    assert req.item_id == "1:5"
    assert req.collection_id == "1"
    assert req.save_in_sent
    assert req.accept_multipart


def test_base64_user_from_authorization_header() -> None:
    query = encode_base64_query("Ping", "dev1", "Android", V16_1)
    auth = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert parse_request(query, {"Authorization": auth}).user == "alice"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("User=alice&DeviceId=a&DeviceType=b", HEADERS),  # no Cmd
        ("Cmd=Sync&User=alice&DeviceType=b", HEADERS),  # no DeviceId
        ("Cmd=Sync&User=alice&DeviceId=a", HEADERS),  # no DeviceType
        ("Cmd=Sync&DeviceId=a&DeviceType=b", HEADERS),  # no User
        ("Cmd=Sync&User=alice&DeviceId=a&DeviceType=b", {}),  # no version
        ("Cmd=Sync&User=alice&DeviceId=a&DeviceType=b", {"MS-ASProtocolVersion": "2.5"}),
        ("Cmd=Sync&User=alice&DeviceId=a&DeviceType=b", {**HEADERS, "X-MS-PolicyKey": "x"}),
        # str.isdigit is true of "²", which int() refuses: a 400, not a traceback
        ("Cmd=Sync&User=alice&DeviceId=a&DeviceType=b", {"MS-ASProtocolVersion": "1².1"}),
        ("Cmd=Sync&User=alice&DeviceId=a&DeviceType=b", {"MS-ASProtocolVersion": "9" * 5000}),
        ("jAAJBAp2MTQw", {}),  # truncated base64 form
        ("!!!notbase64", {}),
    ],
)
def test_malformed_requests_are_400(query: str, headers: dict[str, str]) -> None:
    with pytest.raises(HttpError) as info:
        parse_request(query, headers)
    assert info.value.http_status == 400


def test_unsupported_version_names_what_we_serve() -> None:
    with pytest.raises(HttpError) as info:
        negotiate("12.0")
    assert info.value.headers["MS-ASProtocolVersions"] == "12.1,14.0,14.1,16.0,16.1"
    assert supported_header().endswith("16.1")


def test_base64_form_survives_plus_as_space_and_percent_encoding() -> None:
    for key in range(1, 4000, 7):
        query = encode_base64_query(
            "Sync", "dev1", "Phone", V16_1, policy_key=key * 104729, params={ParamTag.User: b"u"}
        )
        for form in (query, query.replace("+", " "), query.replace("+", "%2B").replace("=", "%3D")):
            assert parse_request(form, {"User-Agent": "x"}).policy_key == key * 104729
