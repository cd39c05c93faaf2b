"""The SQLite store's core: users, folders, messages and sync state, on real files."""

from __future__ import annotations

import pytest

from natsync.store.api import Conflict, Folder, FolderType, Message, Store, Txn, User
from tests.conftest import ALICE_EMAIL
from tests.store.helpers import new_message


def test_alice_has_the_standard_folders(store: Store, alice: User) -> None:
    folders = store.run_sync(lambda txn: txn.list_folders(alice.id))
    assert [(f.display_name, f.type, f.parent_server_id) for f in folders] == [
        ("Inbox", FolderType.INBOX, "0"),
        ("Drafts", FolderType.DRAFTS, "0"),
        ("Deleted Items", FolderType.DELETED_ITEMS, "0"),
        ("Sent Items", FolderType.SENT_ITEMS, "0"),
        ("Outbox", FolderType.OUTBOX, "0"),
        ("Calendar", FolderType.CALENDAR, "0"),
        ("Contacts", FolderType.CONTACTS, "0"),
        ("Tasks", FolderType.TASKS, "0"),
        ("Notes", FolderType.NOTES, "0"),
    ]
    assert len({f.server_id for f in folders}) == 9
    assert store.run_sync(lambda txn: txn.get_user_by_email(ALICE_EMAIL)) == alice


def test_add_then_get_message_with_attachment(store: Store, alice: User) -> None:
    def add(txn: Txn) -> tuple[Folder, Message]:
        inbox = txn.folder_by_type(alice.id, FolderType.INBOX)
        return inbox, txn.add_message(inbox.id, new_message(attachment=b"\x00\x01binary"))

    inbox, added = store.run_sync(add)
    assert added.server_id == f"{inbox.server_id}:1"
    got = store.run_sync(lambda txn: txn.get_message(alice.id, added.server_id))
    assert got == added
    assert got is not None
    reference = got.attachments[0].file_reference
    found = store.run_sync(lambda txn: txn.get_attachment(alice.id, reference))
    assert found is not None
    assert found[1] == b"\x00\x01binary"


def test_duplicate_user_is_a_conflict(store: Store, alice: User) -> None:
    with pytest.raises(Conflict):
        store.run_sync(
            lambda txn: txn.add_user("ALICE", "x@example.test", "", "h", alice.created_at)
        )
