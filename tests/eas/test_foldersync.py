"""FolderSync incremental keys, retransmission, unknown keys; FolderCreate/Update/Delete."""

from __future__ import annotations

from natsync.store.api import STANDARD_FOLDERS, FolderType, Store
from natsync.wbxml import E, Element
from tests.eas.helpers import Phone, folder_id

NS = "FolderHierarchy"


def _ids(tree: Element, tag: str) -> list[str]:
    changes = tree.find("Changes")
    assert changes is not None
    return [c.child_text("ServerId") or "" for c in changes.findall(tag)]


def _op(phone: Phone, cmd: str, *children: Element) -> Element:
    return phone.tree(cmd, E(NS, cmd, *children))


def test_initial_then_incremental(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    first = phone.folder_sync()
    assert first.child_text("Status") == "1"
    assert len(_ids(first, "Add")) == len(STANDARD_FOLDERS)
    key1 = first.child_text("SyncKey") or ""
    again = phone.folder_sync(key1)
    assert again.find("Changes").child_text("Count") == "0"  # type: ignore[union-attr]


def test_retransmitted_key_gets_same_answer(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    key1 = phone.folder_sync().child_text("SyncKey") or ""
    a = phone.call("FolderSync", E(NS, "FolderSync", E(NS, "SyncKey", key1)))
    b = phone.call("FolderSync", E(NS, "FolderSync", E(NS, "SyncKey", key1)))
    assert a.body == b.body


def test_unknown_key_is_status_9(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    assert phone.folder_sync("{00000000}7").child_text("Status") == "9"
    assert phone.folder_sync("garbage").child_text("Status") == "9"


def test_create_update_delete_and_other_device_sees_it(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    key = phone.folder_sync().child_text("SyncKey") or ""
    other = Phone(store, device_id="tablet")
    other.provision()
    other_key = other.folder_sync().child_text("SyncKey") or ""

    created = _op(
        phone,
        "FolderCreate",
        E(NS, "SyncKey", key),
        E(NS, "ParentId", "0"),
        E(NS, "DisplayName", "Projects"),
        E(NS, "Type", 12),
    )
    assert created.child_text("Status") == "1"
    sid = created.child_text("ServerId") or ""
    key = created.child_text("SyncKey") or ""
    # The creator is not told about its own folder again; the other device is.
    assert phone.folder_sync(key).find("Changes").child_text("Count") == "0"  # type: ignore[union-attr]
    seen = other.folder_sync(other_key)
    assert _ids(seen, "Add") == [sid]
    other_key = seen.child_text("SyncKey") or ""

    dup = _op(
        phone,
        "FolderCreate",
        E(NS, "SyncKey", key),
        E(NS, "ParentId", "0"),
        E(NS, "DisplayName", "projects"),
        E(NS, "Type", 12),
    )
    assert dup.child_text("Status") == "2"

    renamed = _op(
        phone,
        "FolderUpdate",
        E(NS, "SyncKey", key),
        E(NS, "ServerId", sid),
        E(NS, "ParentId", "0"),
        E(NS, "DisplayName", "Archive"),
    )
    assert renamed.child_text("Status") == "1"
    key = renamed.child_text("SyncKey") or ""
    seen = other.folder_sync(other_key)
    assert _ids(seen, "Update") == [sid]
    other_key = seen.child_text("SyncKey") or ""

    inbox = folder_id(store, FolderType.INBOX)
    special = _op(phone, "FolderDelete", E(NS, "SyncKey", key), E(NS, "ServerId", inbox))
    assert special.child_text("Status") == "3"
    missing = _op(phone, "FolderDelete", E(NS, "SyncKey", key), E(NS, "ServerId", "999"))
    assert missing.child_text("Status") == "4"
    deleted = _op(phone, "FolderDelete", E(NS, "SyncKey", key), E(NS, "ServerId", sid))
    assert deleted.child_text("Status") == "1"
    assert _ids(other.folder_sync(other_key), "Delete") == [sid]


def test_folder_ops_with_bad_key_change_nothing(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    bad = _op(
        phone,
        "FolderCreate",
        E(NS, "SyncKey", "{deadbeef}9"),
        E(NS, "ParentId", "0"),
        E(NS, "DisplayName", "X"),
        E(NS, "Type", 12),
    )
    assert bad.child_text("Status") == "9"
    assert len(_ids(phone.folder_sync(), "Add")) == len(STANDARD_FOLDERS)
