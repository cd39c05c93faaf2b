"""Sync of email: windows, MoreAvailable, retransmission, unknown keys, client changes,
deletes, filters, server-side changes, conflicts, empty and partial requests."""

from __future__ import annotations

from datetime import timedelta

from natsync.store.api import Flag, FolderType, Store, Txn
from natsync.wbxml import E, Element
from tests.eas.helpers import (
    NOW,
    Phone,
    collection,
    commands,
    deliver,
    folder_id,
    hold_asked,
    make_mail,
)

NS = "AirSync"


def _ready(store: Store, count: int = 0) -> tuple[Phone, str, str]:
    for i in range(count):
        deliver(
            store, make_mail(f"message {i}", f"body {i}"), at=NOW - timedelta(minutes=count - i)
        )
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    first = collection(phone.sync(inbox, "0"))
    assert first.child_text("Status") == "1"
    assert first.find("Commands") is None  # SyncKey 0 never carries items
    return phone, inbox, first.child_text("SyncKey") or ""


def _all_adds(phone: Phone, inbox: str, key: str, window: int) -> tuple[list[str], str, int]:
    ids: list[str] = []
    rounds = 0
    while True:
        rounds += 1
        coll = collection(phone.sync(inbox, key, window=window))
        ids += [a.child_text("ServerId") or "" for a in commands(coll, "Add")]
        key = coll.child_text("SyncKey") or ""
        if coll.find("MoreAvailable") is None:
            return ids, key, rounds


def test_windows_and_more_available(store: Store) -> None:
    phone, inbox, key = _ready(store, 25)
    ids, key, rounds = _all_adds(phone, inbox, key, window=10)
    assert rounds == 3
    assert len(ids) == 25
    assert len(set(ids)) == 25
    # Newest first.
    assert ids[0].endswith(":25")
    again = collection(phone.sync(inbox, key))
    assert again.find("Commands") is None


def test_retransmission_gets_same_answer_and_no_duplicates(store: Store) -> None:
    phone, inbox, key = _ready(store, 6)
    body = E(
        NS,
        "Sync",
        E(
            NS,
            "Collections",
            E(
                NS,
                "Collection",
                E(NS, "SyncKey", key),
                E(NS, "CollectionId", inbox),
                E(NS, "WindowSize", 4),
            ),
        ),
    )
    first = phone.call("Sync", body)
    second = phone.call("Sync", body)
    assert first.body == second.body
    coll = collection(phone.tree("Sync", body))
    next_key = coll.child_text("SyncKey") or ""
    rest, _, _ = _all_adds(phone, inbox, next_key, window=4)
    got = [a.child_text("ServerId") for a in commands(coll, "Add")] + rest
    assert len(got) == 6
    assert len(set(got)) == 6


def test_unknown_key_is_status_3_and_resync_is_clean(store: Store) -> None:
    phone, inbox, key = _ready(store, 3)
    _all_adds(phone, inbox, key, window=100)
    bad = collection(phone.sync(inbox, "{abcdef01}4"))
    assert bad.child_text("Status") == "3"
    assert bad.child_text("SyncKey") == "0"
    fresh = collection(phone.sync(inbox, "0"))
    ids, _, _ = _all_adds(phone, inbox, fresh.child_text("SyncKey") or "", window=100)
    assert len(ids) == 3


def test_server_changes_reach_the_device(store: Store) -> None:
    phone, inbox, key = _ready(store, 3)
    ids, key, _ = _all_adds(phone, inbox, key, window=100)

    def change(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        a, b, c = txn.get_messages(user.id, ids)
        txn.set_read(a.id, True)
        txn.set_flag(b.id, Flag(status=2, flag_type="Follow up"))
        txn.delete_message(c.id)

    store.run_sync(change)
    new_id = deliver(store, make_mail("late", "late body"))
    coll = collection(phone.sync(inbox, key))
    changed = {c.child_text("ServerId"): c for c in commands(coll, "Change")}
    assert set(changed) == {ids[0], ids[1]}
    assert changed[ids[0]].find("ApplicationData").child_text("Read") == "1"  # type: ignore[union-attr]
    assert [d.child_text("ServerId") for d in commands(coll, "Delete")] == [ids[2]]
    assert [a.child_text("ServerId") for a in commands(coll, "Add")] == [new_id]


def test_client_change_and_delete(store: Store) -> None:
    phone, inbox, key = _ready(store, 3)
    ids, key, _ = _all_adds(phone, inbox, key, window=100)
    read = E(
        NS, "Change", E(NS, "ServerId", ids[0]), E(NS, "ApplicationData", E("Email", "Read", 1))
    )
    delete = E(NS, "Delete", E(NS, "ServerId", ids[1]))
    coll = collection(phone.sync(inbox, key, commands=[read, delete]))
    assert coll.child_text("Status") == "1"
    assert coll.find("Responses") is None  # success needs no per-item answer
    assert coll.find("Commands") is None  # nothing echoed back
    key = coll.child_text("SyncKey") or ""

    def look(txn: Txn) -> tuple[bool, str]:
        user = txn.get_user("alice")
        assert user is not None
        msg = txn.get_message(user.id, ids[0])
        trash = txn.folder_by_type(user.id, FolderType.DELETED_ITEMS)
        return bool(msg and msg.read), ",".join(txn.message_versions(trash.id))

    is_read, trash = store.run_sync(look)
    assert is_read
    assert trash  # DeletesAsMoves (default): the message went to Deleted Items
    # Hard delete with DeletesAsMoves=0.
    hard = E(NS, "Delete", E(NS, "ServerId", ids[2]))
    coll = collection(phone.sync(inbox, key, commands=[hard], extra=[E(NS, "DeletesAsMoves", 0)]))
    assert store.run_sync(look)[1] == trash
    # A missing item is Status 8 in Responses.
    gone = E(
        NS, "Change", E(NS, "ServerId", "1:999"), E(NS, "ApplicationData", E("Email", "Read", 1))
    )
    coll = collection(phone.sync(inbox, coll.child_text("SyncKey") or "", commands=[gone]))
    assert coll.find("Responses").find("Change").child_text("Status") == "8"  # type: ignore[union-attr]


def test_conflict_server_wins(store: Store) -> None:
    phone, inbox, key = _ready(store, 1)
    ids, key, _ = _all_adds(phone, inbox, key, window=100)

    def flag(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        (msg,) = txn.get_messages(user.id, ids)
        txn.set_flag(msg.id, Flag(status=2, flag_type="Follow up"))

    store.run_sync(flag)
    read = E(
        NS, "Change", E(NS, "ServerId", ids[0]), E(NS, "ApplicationData", E("Email", "Read", 1))
    )
    coll = collection(phone.sync(inbox, key, commands=[read]))
    changes = commands(coll, "Change")
    assert len(changes) == 1  # the server's version goes back to the client

    def is_read(txn: Txn) -> bool:
        user = txn.get_user("alice")
        assert user is not None
        msg = txn.get_message(user.id, ids[0])
        return bool(msg and msg.read)

    assert not store.run_sync(is_read)


def test_filter_type_soft_deletes(store: Store) -> None:
    deliver(store, make_mail("old", "old"), at=NOW - timedelta(days=10))
    deliver(store, make_mail("new", "new"), at=NOW - timedelta(hours=2))
    phone, inbox, key = _ready(store)
    ids, key, _ = _all_adds(phone, inbox, key, window=100)
    assert len(ids) == 2
    options = E(NS, "Options", E(NS, "FilterType", 3))  # one week
    coll = collection(phone.sync(inbox, key, options=options))
    assert [s.child_text("ServerId") for s in commands(coll, "SoftDelete")] == [ids[1]]


def test_empty_sync_reuses_cached_request(store: Store) -> None:
    phone, inbox, key = _ready(store, 2)
    _ids, key, _ = _all_adds(phone, inbox, key, window=100)
    new_id = deliver(store, make_mail("more", "more"))
    tree = phone.tree("Sync")
    coll = collection(tree)
    assert [a.child_text("ServerId") for a in commands(coll, "Add")] == [new_id]
    fresh = Phone(store, device_id="never-synced")
    fresh.provision()
    assert fresh.tree("Sync").child_text("Status") == "13"


def test_body_preference_and_mime(store: Store) -> None:
    deliver(store, make_mail("html", "plain text", html="<p>rich</p>"))
    phone, inbox, key = _ready(store)
    options = E(
        NS,
        "Options",
        E(NS, "MIMESupport", 2),
        E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", 4)),
    )
    coll = collection(phone.sync(inbox, key, options=options))
    body = commands(coll, "Add")[0].find("ApplicationData").find("Body")  # type: ignore[union-attr]
    assert body is not None
    assert body.child_text("Type") == "4"
    assert "Subject: html" in (body.child_text("Data") or "")


def test_invalid_wait_is_status_14(store: Store) -> None:
    phone, inbox, key = _ready(store)
    body = E(
        NS,
        "Sync",
        E(
            NS,
            "Collections",
            E(NS, "Collection", E(NS, "SyncKey", key), E(NS, "CollectionId", inbox)),
        ),
        E(NS, "Wait", 90),
    )
    tree = phone.tree("Sync", body)
    assert tree.child_text("Status") == "14"
    assert tree.child_text("Limit") == "59"


def test_unknown_collection_is_status_12(store: Store) -> None:
    phone, _, _ = _ready(store)
    assert collection(phone.sync("424242", "0")).child_text("Status") == "12"


def _element_count(tree: Element, tag: str) -> int:
    return sum(1 for el in tree.iter() if el.tag == tag)


def test_wait_holds_only_when_nothing_is_pending(store: Store) -> None:
    phone, inbox, key = _ready(store, 2)

    def body(sync_key: str) -> Element:
        coll = E(NS, "Collection", E(NS, "SyncKey", sync_key), E(NS, "CollectionId", inbox))
        return E(NS, "Sync", E(NS, "Collections", coll), E(NS, "Wait", 5))

    # Items are pending: answered at once.
    coll = collection(phone.tree("Sync", body(key)))
    assert len(commands(coll, "Add")) == 2
    key = coll.child_text("SyncKey") or ""
    # Nothing pending: held, nothing written (the same key still works afterwards).
    held = phone.call("Sync", body(key))
    wait = hold_asked(held)
    assert wait is not None
    assert wait.rerun
    assert wait.heartbeat == 300
    assert held.body == b""
    deliver(store, make_mail("arrived", "x"))
    coll = collection(phone.tree("Sync", body(key)))
    assert [a.find("ApplicationData").child_text("Subject") for a in commands(coll, "Add")] == [  # type: ignore[union-attr]
        "arrived"
    ]


def test_corrupt_state_is_an_unknown_key(store: Store) -> None:
    phone, inbox, key = _ready(store, 1)

    def corrupt(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        device = txn.get_device(user.id, "phone1")
        assert device is not None
        txn.put_sync_state(device.id, inbox, key, b"not zlib")

    store.run_sync(corrupt)
    assert collection(phone.sync(inbox, key)).child_text("Status") == "3"


def test_draft_add_16_only_in_drafts(store: Store) -> None:
    phone, inbox, inbox_key = _ready(store)
    drafts = folder_id(store, FolderType.DRAFTS)
    key = collection(phone.sync(drafts, "0")).child_text("SyncKey") or ""
    appdata = E(
        NS,
        "ApplicationData",
        E("Email", "To", "bob@remote.test"),
        E("Email", "Subject", "unfinished"),
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", 1), E("AirSyncBase", "Data", "half a")),
    )
    add = E(NS, "Add", E(NS, "ClientId", "d1"), appdata)
    coll = collection(phone.sync(drafts, key, commands=[add]))
    reply = coll.find("Responses").find("Add")  # type: ignore[union-attr]
    assert reply is not None
    assert reply.child_text("Status") == "1"
    sid = reply.child_text("ServerId") or ""
    assert sid.startswith(drafts + ":")
    assert commands(coll, "Add") == []  # not echoed back
    key = coll.child_text("SyncKey") or ""
    assert commands(collection(phone.sync(drafts, key)), "Add") == []

    def raw(txn: Txn) -> bytes:
        user = txn.get_user("alice")
        assert user is not None
        msg = txn.get_message(user.id, sid)
        assert msg is not None
        assert msg.subject == "unfinished"
        return txn.raw_message(msg.id)

    assert b"half a" in store.run_sync(raw)
    # Anywhere else (or before 16.0) an email Add is refused.
    refused = collection(phone.sync(inbox, inbox_key, commands=[add]))
    assert refused.find("Responses").find("Add").child_text("Status") == "6"  # type: ignore[union-attr]


def test_partial_sync_merges_the_cached_request(store: Store) -> None:
    phone, inbox, inbox_key = _ready(store, 1)
    sent = folder_id(store, FolderType.SENT_ITEMS)
    sent_key = collection(phone.sync(sent, "0")).child_text("SyncKey") or ""
    both = E(
        NS,
        "Sync",
        E(
            NS,
            "Collections",
            E(NS, "Collection", E(NS, "SyncKey", inbox_key), E(NS, "CollectionId", inbox)),
            E(NS, "Collection", E(NS, "SyncKey", sent_key), E(NS, "CollectionId", sent)),
        ),
    )
    tree = phone.tree("Sync", both)
    colls = {
        c.child_text("CollectionId"): c for c in tree.find("Collections").findall("Collection")
    }  # type: ignore[union-attr]
    assert len(commands(colls[inbox], "Add")) == 1
    deliver(store, make_mail("sent copy", "x"), folder=FolderType.SENT_ITEMS)
    # Partial: only the Inbox is named; Sent Items comes from the cached request.
    inbox_key = colls[inbox].child_text("SyncKey") or ""
    partial = E(
        NS,
        "Sync",
        E(
            NS,
            "Collections",
            E(NS, "Collection", E(NS, "SyncKey", inbox_key), E(NS, "CollectionId", inbox)),
        ),
        E(NS, "Partial", 1),
    )
    tree = phone.tree("Sync", partial)
    colls = {
        c.child_text("CollectionId"): c for c in tree.find("Collections").findall("Collection")
    }  # type: ignore[union-attr]
    assert set(colls) == {inbox, sent}
    assert len(commands(colls[sent], "Add")) == 1


def test_12_1_answer_names_the_class(store: Store) -> None:
    deliver(store, make_mail("old phone", "x"))
    phone = Phone(store, version="12.1")
    phone.provision()
    inbox = folder_id(store, FolderType.INBOX)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    coll = collection(phone.sync(inbox, key))
    assert coll.children[0].tag == "Class"
    assert coll.child_text("Class") == "Email"
    assert len(commands(coll, "Add")) == 1


def test_options_persist_until_changed(store: Store) -> None:
    phone, inbox, key = _ready(store)
    options = E(
        NS,
        "Options",
        E(NS, "MIMESupport", 2),
        E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", 4)),
    )
    key = collection(phone.sync(inbox, key, options=options)).child_text("SyncKey") or ""
    deliver(store, make_mail("later", "body"))
    coll = collection(phone.sync(inbox, key))  # no Options this time
    body = commands(coll, "Add")[0].find("ApplicationData").find("Body")  # type: ignore[union-attr]
    assert body is not None
    assert body.child_text("Type") == "4"


def test_a_number_that_is_not_plain_ascii_digits_is_a_protocol_error() -> None:
    """str.isdigit is true of "²", "--5" passed a strip of one sign too many, and thousands of
    digits cost int() dearly: each is Status 4, never a traceback (fuzz_eas_request found
    "--…--5" in CI)."""
    import pytest

    from natsync.eas.errors import EasError
    from natsync.eas.sync_request import parse_collection

    def collection_with(window: str) -> Element:
        return E(
            NS,
            "Collection",
            E(NS, "SyncKey", "1"),
            E(NS, "CollectionId", "5"),
            E(NS, "WindowSize", window),
        )

    assert parse_collection(collection_with(" 25 "), None).window == 25
    assert parse_collection(collection_with("-3"), None).window == 1
    for bad in ("--5", "²", "1²", "9" * 5000, "", "-"):
        with pytest.raises(EasError) as info:
            parse_collection(collection_with(bad), None)
        assert info.value.status == 4, bad
