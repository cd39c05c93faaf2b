"""The client's wire forms, byte for byte, without a server (MS-ASHTTP, MS-ASCMD)."""

from __future__ import annotations

import base64
import struct
from urllib.parse import parse_qsl

import pytest

from natsync.client import protocol as p
from natsync.wbxml import E, Element, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

PHONE = p.Identity(user="rmjones", device_id="v140Device", device_type="SmartPhone")


def test_base64_query_matches_the_spec_example() -> None:
    # MS-ASHTTP 2.2.1.1.1.1: "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l" is a 14.0 Sync request.
    query = p.base64_query(PHONE, p.Command.Sync, "14.0", None, include_user=False)
    assert query == "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"


def test_base64_query_carries_policy_key_user_and_parameters() -> None:
    query = p.base64_query(
        PHONE,
        p.Command.SmartReply,
        "16.1",
        3_000_000_001,
        [(p.QueryParam.ItemId, b"5:12"), (p.QueryParam.Options, b"\x01")],
    )
    raw = base64.b64decode(query)
    assert raw[0] == 161
    assert raw[1] == p.Command.SmartReply == 3
    assert struct.unpack("<H", raw[2:4])[0] == 0x0409
    pos = 4
    assert raw[pos] == len("v140Device")
    pos += 1 + raw[pos]
    assert raw[pos] == 4
    assert struct.unpack("<I", raw[pos + 1 : pos + 5])[0] == 3_000_000_001
    pos += 5
    assert raw[pos : pos + 11] == b"\x0aSmartPhone"
    pos += 11
    assert raw[pos:] == b"\x08\x07rmjones" + b"\x03\x045:12" + b"\x07\x01\x01"


def test_base64_query_refuses_fields_longer_than_a_byte_can_count() -> None:
    long_phone = p.Identity(user="u", device_id="x" * 256, device_type="t")
    with pytest.raises(p.ClientError, match="255"):
        p.base64_query(long_phone, p.Command.Sync, "16.1", None)


def test_plain_query_names_command_user_device_and_extra_parameters() -> None:
    query = p.plain_query(
        p.Identity(user="dom\\ann lee", device_id="ABC123", device_type="iPhone"),
        p.Command.SendMail,
        {"SaveInSent": "T"},
    )
    assert parse_qsl(query) == [
        ("Cmd", "SendMail"),
        ("User", "dom\\ann lee"),
        ("DeviceId", "ABC123"),
        ("DeviceType", "iPhone"),
        ("SaveInSent", "T"),
    ]
    assert "ann+lee" in query or "ann%20lee" in query


def test_headers_put_version_and_policy_key_in_headers_only_for_the_plain_form() -> None:
    plain = p.request_headers("16.1", 42, "ua/1")
    assert plain == {
        "User-Agent": "ua/1",
        "Content-Type": "application/vnd.ms-sync.wbxml",
        "MS-ASProtocolVersion": "16.1",
        "X-MS-PolicyKey": "42",
    }
    b64 = p.request_headers("16.1", 42, "ua/1", base64_form=True)
    assert "MS-ASProtocolVersion" not in b64
    assert "X-MS-PolicyKey" not in b64
    assert "X-MS-PolicyKey" not in p.request_headers("16.1", 0, "ua/1")


@pytest.mark.parametrize(
    ("offered", "preferred", "chosen"),
    [
        ("2.5,12.0,12.1,14.0,14.1,16.0,16.1", "16.1", "16.1"),
        ("2.5,12.0,12.1,14.0,14.1,16.0,16.1", "14.1", "14.1"),
        ("2.5,12.0,12.1,14.0,14.1", "16.1", "14.1"),
        ("12.1", "16.1", "12.1"),
    ],
)
def test_version_choice_prefers_the_configured_version(
    offered: str, preferred: str, chosen: str
) -> None:
    assert p.choose_version(offered.split(","), preferred) == chosen


def test_version_choice_fails_clearly_when_nothing_is_shared() -> None:
    with pytest.raises(p.ClientError, match="no protocol version"):
        p.choose_version(["2.5", "12.0"])


def test_initial_sync_has_no_getchanges_and_later_ones_carry_options_in_order() -> None:
    initial = p.sync_request("5", "0", window_size=100, prefs=[p.BodyPreference(p.BodyType.PLAIN)])
    coll = initial.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert [c.tag for c in coll.children] == ["SyncKey", "CollectionId", "Options"]

    prefs = [
        p.BodyPreference(p.BodyType.PLAIN, truncation_size=512),
        p.BodyPreference(p.BodyType.MIME),
    ]
    later = p.sync_request(
        "5",
        "key-2",
        window_size=100,
        prefs=prefs,
        filter_type=p.FilterType.ONE_WEEK,
        changes=[p.ClientChange("5:1", read=True), p.ClientChange("5:2", delete=True)],
        deletes_as_moves=True,
    )
    coll = later.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert [c.tag for c in coll.children] == [
        "SyncKey",
        "CollectionId",
        "DeletesAsMoves",
        "GetChanges",
        "WindowSize",
        "Options",
        "Commands",
    ]
    options = coll.find("Options")
    assert options is not None
    assert [c.tag for c in options.children] == [
        "FilterType",
        "BodyPreference",
        "BodyPreference",
        "MIMESupport",
    ]
    assert options.child_text("MIMESupport") == "2"
    first_pref = options.findall("BodyPreference")[0]
    assert first_pref.child_text("TruncationSize") == "512"
    commands = coll.find("Commands")
    assert commands is not None
    change, delete = commands.children
    assert change.tag == "Change"
    data = change.find("ApplicationData")
    assert data is not None
    assert data.find("Read", "Email") is not None
    assert delete.tag == "Delete"
    assert delete.child_text("ServerId") == "5:2"


def test_sync_for_12_1_names_the_class() -> None:
    req = p.sync_request("5", "0", version="12.1")
    coll = req.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert coll.children[0].tag == "Class"
    assert coll.children[0].text() == "Email"


def test_provision_request_sends_device_information_from_14_1_on() -> None:
    with_info = p.provision_request("16.1", p.DeviceInfo())
    assert [c.tag for c in with_info.children] == ["DeviceInformation", "Policies"]
    without = p.provision_request("14.0", p.DeviceInfo())
    assert [c.tag for c in without.children] == ["Policies"]
    ack = p.provision_ack(123456)
    policy = ack.find("Policies").find("Policy")  # type: ignore[union-attr]
    # MS-ASPROV 2.2.2.41: in the acknowledgement PolicyKey must come before Status.
    assert [c.tag for c in policy.children] == ["PolicyType", "PolicyKey", "Status"]


def test_compose_request_for_smart_reply() -> None:
    req = p.compose_request(
        "SmartReply",
        "cid-1",
        b"Subject: hi\r\n\r\nbody",
        save_in_sent=True,
        folder_id="5",
        item_id="5:7",
    )
    assert [c.tag for c in req.children] == ["ClientId", "Source", "SaveInSentItems", "Mime"]
    source = req.find("Source")
    assert source is not None
    assert source.child_text("FolderId") == "5"
    assert source.child_text("ItemId") == "5:7"
    with pytest.raises(p.ClientError, match="ClientId"):
        p.compose_request("SendMail", "x" * 41, b"", save_in_sent=False)


def _all_requests() -> list[E]:  # type: ignore[valid-type]
    prefs = [p.BodyPreference(p.BodyType.HTML, truncation_size=1024, all_or_none=True)]
    return [
        p.provision_request("16.1", p.DeviceInfo()),
        p.provision_ack(99),
        p.wipe_ack(account_only=False),  # libwbxml 0.11.8 predates AccountOnlyRemoteWipe
        p.folder_sync_request("0"),
        p.folder_create_request("1", "0", "Archive", 12),
        p.folder_update_request("2", "9", "0", "Old"),
        p.folder_delete_request("3", "9"),
        p.sync_request(
            "5", "k1", window_size=25, prefs=prefs, changes=[p.ClientChange("5:1", flag_status=2)]
        ),
        p.move_items_request([("5:1", "5", "9")]),
        p.fetch_request(file_reference="5:1:2"),
        p.fetch_request(collection_id="5", server_id="5:1", prefs=prefs),
        p.empty_folder_request("4", delete_subfolders=True),
        p.compose_request("SendMail", "c1", b"MIME", save_in_sent=True),
        p.compose_request(
            "SmartForward",
            "c2",
            b"MIME",
            save_in_sent=False,
            folder_id="5",
            item_id="5:1",
            replace_mime=True,
        ),
        p.ping_request(480, ["5", "9"]),
        p.estimate_request("5", "k1", "16.1", p.FilterType.ALL),
        p.estimate_request("5", "k1", "12.1", None),
        p.search_request("invoice", "5", (0, 9), prefs),
        p.settings_request(device=p.DeviceInfo(), user_information=True, oof_get=True),
    ]


@pytest.mark.parametrize("index", range(19))
def test_every_request_body_encodes_and_libwbxml_reads_it(index: int) -> None:
    tree = _all_requests()[index]
    data = encode(tree)
    assert decode(data) == tree
    assert_libwbxml_decodes(data)


def test_parse_sync_reads_adds_changes_deletes_and_more_available() -> None:
    body = E(
        "AirSyncBase",
        "Body",
        E("AirSyncBase", "Type", 1),
        E("AirSyncBase", "EstimatedDataSize", 900),
        E("AirSyncBase", "Truncated", 1),
        E("AirSyncBase", "Data", "hello"),
    )
    atts = E(
        "AirSyncBase",
        "Attachments",
        E(
            "AirSyncBase",
            "Attachment",
            E("AirSyncBase", "DisplayName", "a.pdf"),
            E("AirSyncBase", "FileReference", "5:1:0"),
            E("AirSyncBase", "Method", 1),
            E("AirSyncBase", "EstimatedDataSize", 1234),
        ),
    )
    response = E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E(
                "AirSync",
                "Collection",
                E("AirSync", "SyncKey", "k3"),
                E("AirSync", "CollectionId", "5"),
                E("AirSync", "Status", 1),
                E(
                    "AirSync",
                    "Commands",
                    E(
                        "AirSync",
                        "Add",
                        E("AirSync", "ServerId", "5:1"),
                        E(
                            "AirSync",
                            "ApplicationData",
                            E("Email", "Subject", "Hi"),
                            E("Email", "Read", 0),
                            body,
                            atts,
                            E("Email", "Flag", E("Email", "Status", 2)),
                        ),
                    ),
                    E(
                        "AirSync",
                        "Change",
                        E("AirSync", "ServerId", "5:2"),
                        E("AirSync", "ApplicationData", E("Email", "Read", 1)),
                    ),
                    E("AirSync", "Delete", E("AirSync", "ServerId", "5:3")),
                ),
                E(
                    "AirSync",
                    "Responses",
                    E(
                        "AirSync",
                        "Change",
                        E("AirSync", "ServerId", "5:9"),
                        E("AirSync", "Status", 8),
                    ),
                ),
                E("AirSync", "MoreAvailable"),
            ),
        ),
    )
    (page,) = p.parse_sync(decode(encode(response)))
    assert page.sync_key == "k3"
    assert page.more_available
    (added,) = page.added
    assert added.subject == "Hi"
    assert added.read is False
    assert added.flag_status == 2
    assert added.body is not None
    assert added.body.truncated
    assert added.body.data == "hello"
    assert added.attachments[0].file_reference == "5:1:0"
    assert added.attachments[0].estimated_size == 1234
    assert page.changed[0].read is True
    assert page.deleted == ["5:3"]
    assert page.responses == [p.ChangeResponse("Change", "5:9", 8)]


def test_parse_sync_raises_with_the_top_level_status() -> None:
    with pytest.raises(p.ClientError) as info:
        p.parse_sync(E("AirSync", "Sync", E("AirSync", "Status", 4)))
    assert info.value.eas_status == 4


def test_parse_item_operations_decodes_base64_text_and_raw_opaque() -> None:
    def response(data: str | bytes) -> E:  # type: ignore[valid-type]
        return E(
            "ItemOperations",
            "ItemOperations",
            E("ItemOperations", "Status", 1),
            E(
                "ItemOperations",
                "Response",
                E(
                    "ItemOperations",
                    "Fetch",
                    E("ItemOperations", "Status", 1),
                    E("AirSyncBase", "FileReference", "5:1:0"),
                    E(
                        "ItemOperations",
                        "Properties",
                        E("AirSyncBase", "ContentType", "application/pdf"),
                        E("ItemOperations", "Data", data),
                    ),
                ),
            ),
        )

    (text,) = p.parse_item_operations(response(base64.b64encode(b"%PDF-1.4").decode()))
    assert text.content_type == "application/pdf"
    assert text.data == b"%PDF-1.4"
    (opaque,) = p.parse_item_operations(response(base64.b64encode(b"%PDF-1.4")))
    assert opaque.data == b"%PDF-1.4"
    (raw,) = p.parse_item_operations(response(b"%PDF-1.4\x00\xff"))
    assert raw.data == b"%PDF-1.4\x00\xff"


def test_parse_folder_sync_and_ping() -> None:
    fs = E(
        "FolderHierarchy",
        "FolderSync",
        E("FolderHierarchy", "Status", 1),
        E("FolderHierarchy", "SyncKey", "1"),
        E(
            "FolderHierarchy",
            "Changes",
            E("FolderHierarchy", "Count", 1),
            E(
                "FolderHierarchy",
                "Add",
                E("FolderHierarchy", "ServerId", "5"),
                E("FolderHierarchy", "ParentId", "0"),
                E("FolderHierarchy", "DisplayName", "Inbox"),
                E("FolderHierarchy", "Type", 2),
            ),
        ),
    )
    result = p.parse_folder_sync(fs)
    assert result.sync_key == "1"
    assert result.added == [p.FolderInfo("5", "0", "Inbox", 2)]
    with pytest.raises(p.ClientError) as info:
        p.parse_folder_sync(E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "Status", 142)))
    assert info.value.eas_status == 142

    ping = E("Ping", "Ping", E("Ping", "Status", 2), E("Ping", "Folders", E("Ping", "Folder", "5")))
    assert p.parse_ping(ping) == (2, ["5"], None)
    limit = E("Ping", "Ping", E("Ping", "Status", 5), E("Ping", "HeartbeatInterval", 60))
    assert p.parse_ping(limit) == (5, [], 60)
    folders = E("Ping", "Ping", E("Ping", "Status", 6), E("Ping", "MaxFolders", 300))
    assert p.parse_ping(folders) == (6, [], 300)


@pytest.mark.parametrize("junk", ["²", "x", "-1", "1 2", "9" * 5000])
def test_a_number_in_an_answer_that_is_no_number_is_a_client_error(junk: str) -> None:
    """A server's junk (str.isdigit is true of "²"; int() refuses it, and 5,000 digits) is a
    ClientError the doctor reports, never a ValueError out of the parser."""
    for answer in (
        E("Ping", "Ping", E("Ping", "Status", junk)),
        E("Ping", "Ping", E("Ping", "Status", 5), E("Ping", "HeartbeatInterval", junk)),
    ):
        with pytest.raises(p.ClientError, match="no number"):
            p.parse_ping(answer)
    assert p.number_in(E("Ping", "Ping", E("Ping", "Status", " 7 ")), "Status", 0) == 7
    assert p.number_in(E("Ping", "Ping"), "Status", 3) == 3


@pytest.mark.parametrize("form", ["plain", "base64"])
def test_the_servers_request_parser_reads_what_the_client_builds(form: str) -> None:
    from natsync.eas.request import parse_request

    phone = p.Identity(user="ann", device_id="E2EPHONE1", device_type="iPhone")
    if form == "plain":
        query = p.plain_query(phone, p.Command.SmartReply, {"ItemId": "5:1", "SaveInSent": "T"})
        headers = p.request_headers("16.1", 77, "ua/1")
    else:
        query = p.base64_query(
            phone,
            p.Command.SmartReply,
            "16.1",
            77,
            [(p.QueryParam.ItemId, b"5:1"), (p.QueryParam.Options, b"\x01")],
        )
        headers = p.request_headers("16.1", 77, "ua/1", base64_form=True)
    request = parse_request(query, headers)
    assert request.cmd == "SmartReply"
    assert request.user == "ann"
    assert request.device_id == "E2EPHONE1"
    assert request.device_type == "iPhone"
    assert str(request.version) == "16.1"
    assert request.policy_key == 77
    assert request.item_id == "5:1"
    assert request.save_in_sent


# -- items of the other classes ------------------------------------------------------------------


def _event_data(subject: str) -> Element:
    return E("AirSync", "ApplicationData", E("Calendar", "Subject", subject))


def test_item_commands_carry_their_application_data_in_schema_order() -> None:
    add = p.ItemCommand.add(_event_data("lunch"), "c-1")
    change = p.ItemCommand.change("8:1", _event_data("brunch"))
    occurrence = p.ItemCommand.remove("8:2", instance_id="20260309T090000Z")
    whole = p.ItemCommand.remove("8:3")
    request = p.sync_request(
        "8",
        "{0000abcd}2",
        changes=[add, change, occurrence, whole],
        version="12.1",
        class_name="Calendar",
    )
    coll = request.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert coll is not None
    assert coll.child_text("Class") == "Calendar"
    sent = coll.find("Commands")
    assert sent is not None
    assert [(c.tag, [k.tag for k in c.children]) for c in sent.children] == [
        ("Add", ["ClientId", "ApplicationData"]),
        ("Change", ["ServerId", "ApplicationData"]),
        ("Delete", ["ServerId", "InstanceId"]),
        ("Delete", ["ServerId"]),
    ]
    assert sent.children[0].find("ApplicationData").child_text("Subject", "Calendar") == "lunch"  # type: ignore[union-attr]
    # Only a whole-item Delete makes the device forget the item.
    assert [c.delete for c in (add, change, occurrence, whole)] == [False, False, False, True]
    assert_libwbxml_decodes(encode(request))


def test_item_commands_refuse_what_the_server_would() -> None:
    with pytest.raises(p.ClientError):
        p.ItemCommand.add(E("Calendar", "Subject", "not wrapped"), "c-1")
    with pytest.raises(p.ClientError):
        p.ItemCommand.add(_event_data("x"), "c" * (p.MAX_CLIENT_ID + 1))


def test_parse_sync_keeps_application_data_and_add_client_ids() -> None:
    answer = E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E(
                "AirSync",
                "Collection",
                E("AirSync", "SyncKey", "{0000abcd}3"),
                E("AirSync", "CollectionId", "8"),
                E("AirSync", "Status", 1),
                E(
                    "AirSync",
                    "Commands",
                    E("AirSync", "Add", E("AirSync", "ServerId", "8:7"), _event_data("seen")),
                ),
                E(
                    "AirSync",
                    "Responses",
                    E(
                        "AirSync",
                        "Add",
                        E("AirSync", "ClientId", "c-1"),
                        E("AirSync", "ServerId", "8:8"),
                        E("AirSync", "Status", 1),
                    ),
                    E("AirSync", "Add", E("AirSync", "ClientId", "c-2"), E("AirSync", "Status", 6)),
                ),
            ),
        ),
    )
    (page,) = p.parse_sync(decode(encode(answer)))
    (added,) = page.added
    assert added.data is not None
    assert added.data.child_text("Subject", "Calendar") == "seen"
    assert [(r.client_id, r.server_id, r.status) for r in page.responses] == [
        ("c-1", "8:8", 1),
        ("c-2", "c-2", 6),
    ]
