"""natsync.classes.email: stored messages (real SQLite store) as EAS Email ApplicationData."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from natsync.classes.email import (
    BodyPreference,
    BodyType,
    EmailChange,
    MimeSupport,
    apply_email_change,
    body_preferences,
    email_application_data,
    email_change_data,
    format_eas_date,
    parse_eas_date,
    thread_topic,
    truncate_utf8,
)
from natsync.mime import parse_message
from natsync.mime.errors import EmailChangeError
from natsync.store.api import Flag, FolderType, Message, Store, User
from natsync.wbxml import decode, encode
from natsync.wbxml.tree import E, Element
from tests.libwbxml import assert_libwbxml_decodes
from tests.mime.test_mime import build_rich_message

NOW = datetime(2026, 11, 25, 9, 49, 53, 120000, tzinfo=UTC)


def store_message(store: Store, user: User, raw: bytes) -> tuple[Message, bytes]:
    def run(txn):  # type: ignore[no-untyped-def]
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        return txn.add_message(inbox.id, parse_message(raw, NOW))

    message = store.run_sync(run)
    return message, raw


def names(appdata: Element) -> list[str]:
    return [child.tag for child in appdata.children]


def body_of(appdata: Element) -> Element:
    body = appdata.find("Body", "AirSyncBase")
    assert body is not None
    return body


PLAIN = (
    b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.test>\r\nSubject: Re: Lunch\r\n\r\n"
)


def test_full_item_for_16_1_in_spec_order(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, build_rich_message())
    prefs = [BodyPreference(BodyType.HTML, truncation_size=200_000, preview=100)]
    appdata = email_application_data(message, raw, "16.1", prefs)
    assert names(appdata) == [
        "To", "From", "Subject", "DateReceived", "DisplayTo", "ThreadTopic", "Importance",
        "Read", "Attachments", "Body", "MessageClass", "InternetCPID", "Flag", "ContentClass",
        "NativeBodyType", "ConversationId", "ConversationIndex", "Categories",
    ]  # fmt: skip
    assert appdata.child_text("DateReceived") == "2026-11-25T09:49:53.120Z"
    assert appdata.child_text("DisplayTo") == "alice@example.test"
    assert appdata.child_text("InternetCPID") == "65001"
    assert appdata.child_text("ContentClass") == "urn:content-classes:message"
    assert appdata.child_text("NativeBodyType") == "2"
    assert appdata.child_text("Read") == "0"
    body = body_of(appdata)
    assert [c.tag for c in body.children] == [
        "Type", "EstimatedDataSize", "Truncated", "Data", "Preview"
    ]  # fmt: skip
    assert body.child_text("Type") == "2"
    assert body.child_text("Truncated") == "0"
    assert 'src="cid:pic1@example.org"' in (body.child_text("Data") or "")
    assert body.child_text("Preview") == "See the picture."
    attachments = appdata.find("Attachments")
    assert attachments is not None
    first = attachments.children[0]
    assert [c.tag for c in first.children] == [
        "DisplayName", "FileReference", "Method", "EstimatedDataSize", "ContentId", "IsInline"
    ]  # fmt: skip
    assert first.child_text("FileReference") == message.attachments[0].file_reference
    assert first.child_text("IsInline") == "1"
    assert first.child_text("ContentId") == "pic1@example.org"
    conversation_id = appdata.find("ConversationId")
    assert conversation_id is not None
    assert isinstance(conversation_id.value, bytes)
    assert len(conversation_id.value) == 16
    flag = appdata.find("Flag")
    assert flag is not None
    assert flag.children == []


def test_12_1_has_no_conversation_categories_or_preview(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, PLAIN + b"Hello\r\n")
    appdata = email_application_data(
        message, raw, "12.1", [BodyPreference(BodyType.PLAIN, preview=50)]
    )
    assert "ConversationId" not in names(appdata)
    assert "Categories" not in names(appdata)
    assert body_of(appdata).find("Preview") is None
    assert appdata.child_text("ThreadTopic") == "Lunch"
    assert appdata.child_text("DisplayTo") == "Alice"


def test_truncation_cuts_at_a_character_boundary(store: Store, alice: User) -> None:
    raw = b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "ä".encode() * 100
    message, raw = store_message(store, alice, raw)
    appdata = email_application_data(
        message, raw, "14.1", [BodyPreference(BodyType.PLAIN, truncation_size=5)]
    )
    body = body_of(appdata)
    assert body.child_text("Truncated") == "1"
    data = body.child_text("Data") or ""
    assert len(data.encode("utf-8")) <= 5
    assert int(body.child_text("EstimatedDataSize") or 0) > 100


def test_truncate_utf8_never_splits_a_character() -> None:
    data = "aé€😀".encode()
    for limit in range(len(data) + 2):
        cut = truncate_utf8(data, limit)
        assert len(cut) <= limit
        cut.decode("utf-8")  # never raises
    assert truncate_utf8(data, 3) == "aé".encode()


def test_all_or_none_sends_no_data_when_it_would_truncate(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, PLAIN + b"x" * 1000)
    one = [BodyPreference(BodyType.PLAIN, truncation_size=100, all_or_none=True)]
    body = body_of(email_application_data(message, raw, "16.1", one))
    assert body.child_text("Truncated") == "1"
    assert body.find("Data") is None
    assert body.child_text("EstimatedDataSize") == "1000"


def test_all_or_none_falls_through_to_the_next_preference(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, PLAIN + b"x" * 1000)
    prefs = [
        BodyPreference(BodyType.PLAIN, truncation_size=100, all_or_none=True),
        BodyPreference(BodyType.HTML, truncation_size=50_000),
    ]
    body = body_of(email_application_data(message, raw, "16.1", prefs))
    assert body.child_text("Type") == "2"
    assert body.child_text("Truncated") == "0"
    assert "x" * 1000 in (body.child_text("Data") or "")


def test_native_type_wins_among_the_clients_preferences(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, build_rich_message())
    prefs = [BodyPreference(BodyType.PLAIN), BodyPreference(BodyType.HTML)]
    assert body_of(email_application_data(message, raw, "16.1", prefs)).child_text("Type") == "2"
    plain_message, plain_raw = store_message(store, alice, PLAIN + b"hi\r\n")
    body = body_of(email_application_data(plain_message, plain_raw, "16.1", prefs[::-1]))
    assert body.child_text("Type") == "1"


def test_mime_body_follows_mime_support(store: Store, alice: User) -> None:
    message, raw = store_message(store, alice, build_rich_message())
    prefs = [BodyPreference(BodyType.PLAIN), BodyPreference(BodyType.MIME)]
    mime = body_of(
        email_application_data(message, raw, "14.0", prefs, mime_support=MimeSupport.ALWAYS)
    )
    assert mime.child_text("Type") == "4"
    assert mime.child_text("Data") == raw.decode("utf-8")
    never = email_application_data(message, raw, "14.0", prefs, mime_support=MimeSupport.NEVER)
    assert body_of(never).child_text("Type") == "1"
    smime_only = email_application_data(
        message, raw, "14.0", prefs, mime_support=MimeSupport.SMIME_ONLY
    )
    assert body_of(smime_only).child_text("Type") == "1"
    truncated = email_application_data(
        message, raw, "14.0", [BodyPreference(BodyType.MIME)], mime_support=2, mime_truncation=0
    )
    assert body_of(truncated).child_text("Data") == ""
    assert body_of(truncated).child_text("Truncated") == "1"


def test_mime_that_is_not_utf8_is_sent_as_opaque_bytes(store: Store, alice: User) -> None:
    raw = b"From: a@b.c\r\nSubject: latin\r\n\r\ncaf\xe9\r\n"
    message, raw = store_message(store, alice, raw)
    appdata = email_application_data(
        message, raw, "16.1", [BodyPreference(BodyType.MIME)], mime_support=2
    )
    data = body_of(appdata).find("Data")
    assert data is not None
    assert data.value == raw


def test_flag_and_categories_round_trip_through_the_store(store: Store, alice: User) -> None:
    message, _ = store_message(store, alice, PLAIN + b"hi\r\n")
    change = apply_email_change(
        E(
            "AirSync",
            "ApplicationData",
            E("Email", "Read", "1"),
            E(
                "Email",
                "Flag",
                E("Email", "Status", "2"),
                E("Email", "FlagType", "Follow up"),
                E("Tasks", "StartDate", "2026-11-26T00:00:00.000Z"),
                E("Tasks", "UtcStartDate", "2026-11-26T08:00:00.000Z"),
                E("Tasks", "DueDate", "2026-11-27T00:00:00.000Z"),
                E("Tasks", "UtcDueDate", "2026-11-27T08:00:00.000Z"),
                E("Tasks", "ReminderSet", "0"),
            ),
            E("Email", "Categories", E("Email", "Category", "Blue"), E("Email", "Category", "Red")),
        )
    )
    assert change.read is True
    assert change.categories == ("Blue", "Red")
    assert change.flag == Flag(
        status=2,
        flag_type="Follow up",
        start_date=datetime(2026, 11, 26, 8, tzinfo=UTC),
        due_date=datetime(2026, 11, 27, 8, tzinfo=UTC),
    )

    def apply(txn):  # type: ignore[no-untyped-def]
        assert change.read is not None
        assert change.flag is not None
        txn.set_read(message.id, change.read)
        txn.set_flag(message.id, change.flag)
        assert change.categories is not None
        return txn.set_categories(message.id, change.categories)

    updated = store.run_sync(apply)
    data = email_change_data(updated, "16.1")
    assert names(data) == ["Read", "Flag", "Categories"]
    flag = data.find("Flag")
    assert flag is not None
    assert flag.child_text("Status") == "2"
    assert flag.child_text("UtcDueDate") == "2026-11-27T08:00:00.000Z"
    assert [c.text() for c in data.find("Categories").children] == ["Blue", "Red"]  # type: ignore[union-attr]
    assert "Categories" not in names(email_change_data(updated, "12.1"))


def test_flag_complete_and_cleared() -> None:
    done = apply_email_change(
        E(
            "AirSync",
            "ApplicationData",
            E(
                "Email",
                "Flag",
                E("Email", "Status", "1"),
                E("Email", "CompleteTime", "20261125T101010Z"),
            ),
        )
    )
    assert done.flag == Flag(status=1, complete_time=datetime(2026, 11, 25, 10, 10, 10, tzinfo=UTC))
    cleared = apply_email_change(E("AirSync", "ApplicationData", E("Email", "Flag")))
    assert cleared == EmailChange(flag=Flag())


@pytest.mark.parametrize(
    "child",
    [
        E("Email", "Read", "yes"),
        E("Email", "Flag", E("Email", "Status", "7")),
        E("Email", "Flag", E("Email", "Status", "2"), E("Tasks", "UtcDueDate", "tomorrow")),
    ],
)
def test_bad_change_values_raise_sync_status_6(child: Element) -> None:
    with pytest.raises(EmailChangeError) as info:
        apply_email_change(E("AirSync", "ApplicationData", child))
    assert info.value.eas_status == 6


def test_eas_dates() -> None:
    assert format_eas_date(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    assert parse_eas_date("2026-01-02T03:04:05.678Z") == datetime(
        2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC
    )


def test_thread_topic_strips_prefixes() -> None:
    assert thread_topic("Re: AW: Fwd: [x] plans") == "[x] plans"
    assert thread_topic("RE[2]: status") == "status"


def test_body_preferences_from_options() -> None:
    options = E(
        "AirSync",
        "Options",
        E(
            "AirSyncBase",
            "BodyPreference",
            E("AirSyncBase", "Type", "2"),
            E("AirSyncBase", "TruncationSize", "5120"),
            E("AirSyncBase", "AllOrNone", "1"),
            E("AirSyncBase", "Preview", "999"),
        ),
        E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", "4")),
    )
    assert body_preferences(options) == [
        BodyPreference(2, 5120, True, 255),
        BodyPreference(4),
    ]


@pytest.mark.parametrize("version", ["12.1", "14.0", "14.1", "16.0", "16.1"])
def test_libwbxml_reads_the_encoded_item(store: Store, alice: User, version: str) -> None:
    message, raw = store_message(store, alice, build_rich_message())
    message = dataclasses.replace(
        message,
        flag=Flag(2, "Follow up", NOW, NOW),
        categories=("Work",),
    )
    appdata = email_application_data(
        message, raw, version, [BodyPreference(BodyType.HTML, truncation_size=100, preview=80)]
    )
    document = E(
        "AirSync",
        "Sync",
        E(
            "AirSync",
            "Collections",
            E(
                "AirSync",
                "Collection",
                E("AirSync", "SyncKey", "2"),
                E("AirSync", "CollectionId", "1"),
                E("AirSync", "Status", "1"),
                E(
                    "AirSync",
                    "Commands",
                    E("AirSync", "Add", E("AirSync", "ServerId", message.server_id), appdata),
                ),
            ),
        ),
    )
    data = encode(document)
    assert decode(data) == document
    xml = assert_libwbxml_decodes(data)
    assert "ConversationIndex" in xml or version == "12.1"


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_parts_kept_at_delivery_render_the_same_item_as_the_mime(
    store: Store, alice: User, version: str
) -> None:
    """A Sync window renders from the parts the store kept (``Txn.message_bodies``); a message
    stored before they were kept (parts NULL) is read from its MIME: both give the same item."""
    raws = [
        build_rich_message(),
        PLAIN + b"Thread-Topic: Lunch\r\nThread-Index: AQHZ1234567890abcdefghijklmn==\r\n\r\nok",
        b"From: a@b.c\r\nSubject: Fwd: x\r\nContent-Type: text/html\r\n\r\n<p>only html</p>\r\n",
    ]
    prefs = [
        [BodyPreference(BodyType.PLAIN, truncation_size=512, preview=100)],
        [BodyPreference(BodyType.HTML, truncation_size=20, all_or_none=True)],
        [BodyPreference(BodyType.MIME)],
    ]
    for raw in raws:
        message, _ = store_message(store, alice, raw)
        ids = [message.id]
        bodies = store.run_sync(lambda txn: txn.message_bodies(ids))  # noqa: B023
        stored_raw, parts = bodies[message.id]
        assert stored_raw == raw
        assert parts is not None
        for pref in prefs:
            kept = email_application_data(
                message, raw, version, pref, mime_support=MimeSupport.ALWAYS, parts=parts
            )
            parsed = email_application_data(
                message, raw, version, pref, mime_support=MimeSupport.ALWAYS
            )
            assert encode(kept) == encode(parsed)
