"""Items of the non-email classes (calendar, contacts, tasks, notes), on both drivers.

Items live beside messages: a folder's messages and items share its number sequence and its
modseq, and every write publishes the folder on the change feed, so Sync and Ping treat them
like mail. The step-3 migration gives existing users the class folders.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from natsync.store import migrations
from natsync.store.api import (
    STANDARD_FOLDERS,
    Conflict,
    Folder,
    FolderType,
    Item,
    NotFound,
    Store,
    StoreError,
    Txn,
    User,
)
from natsync.store.postgres import PostgresStore
from natsync.store.sql.rows import MAX_ITEM_UID_CHARS
from natsync.store.sqlite import SqliteStore, connect
from tests.conftest import CREATED_AT
from tests.pg import PgServer
from tests.store.helpers import new_message

PIM_TYPES = (FolderType.CALENDAR, FolderType.CONTACTS, FolderType.TASKS, FolderType.NOTES)


def folder_of(store: Store, user: User, folder_type: FolderType) -> Folder:
    return store.run_sync(lambda txn: txn.folder_by_type(user.id, folder_type))


def add_with_uid(txn: Txn, *, folder_id: int, uid: str) -> Item:
    return txn.add_item(folder_id, {"uid": uid}, uid=uid)


def modseq(store: Store, user: User, folder: Folder) -> int:
    found = store.run_sync(lambda txn: txn.get_folder(user.id, folder.server_id))
    assert found is not None
    return found.modseq


def test_every_user_gets_the_class_folders(store: Store, alice: User) -> None:
    folders = store.run_sync(lambda txn: txn.list_folders(alice.id))
    assert {f.type for f in folders} == {t for _, t in STANDARD_FOLDERS}
    assert {f.display_name: f.type for f in folders if f.type in PIM_TYPES} == {
        "Calendar": FolderType.CALENDAR,
        "Contacts": FolderType.CONTACTS,
        "Tasks": FolderType.TASKS,
        "Notes": FolderType.NOTES,
    }


def test_item_lifecycle_bumps_the_folder_modseq_each_time(store: Store, alice: User) -> None:
    calendar = folder_of(store, alice, FolderType.CALENDAR)
    start = modseq(store, alice, calendar)
    record = {"subject": "Dentist", "start": "2026-03-02T09:00:00Z", "attendees": [{"n": 1}]}

    item = store.run_sync(lambda txn: txn.add_item(calendar.id, record, uid="uid-1@example"))
    assert item.server_id == f"{calendar.server_id}:1"
    assert (item.folder_id, item.uid, item.data) == (calendar.id, "uid-1@example", record)
    assert item.modseq == modseq(store, alice, calendar) == start + 1

    assert store.run_sync(lambda txn: txn.get_item(alice.id, item.server_id)) == item
    assert store.run_sync(lambda txn: txn.item_by_uid(calendar.id, "uid-1@example")) == item
    assert store.run_sync(lambda txn: txn.item_versions(calendar.id)) == {item.server_id: start + 1}

    changed = store.run_sync(lambda txn: txn.update_item(item.id, {**record, "subject": "Dr"}))
    assert changed.data["subject"] == "Dr"
    assert (changed.server_id, changed.uid) == (item.server_id, item.uid)
    assert changed.modseq == modseq(store, alice, calendar) == start + 2

    # Writing the same record again is no change: no bump, no Ping woken.
    same = store.run_sync(lambda txn: txn.update_item(item.id, dict(changed.data)))
    assert same == changed
    assert modseq(store, alice, calendar) == start + 2

    store.run_sync(lambda txn: txn.delete_item(item.id))
    assert store.run_sync(lambda txn: txn.get_item(alice.id, item.server_id)) is None
    assert store.run_sync(lambda txn: txn.item_versions(calendar.id)) == {}
    assert modseq(store, alice, calendar) == start + 3
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.delete_item(item.id))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.update_item(item.id, record))


def test_uids_are_random_by_default_and_unique_per_folder(store: Store, alice: User) -> None:
    contacts = folder_of(store, alice, FolderType.CONTACTS)
    tasks = folder_of(store, alice, FolderType.TASKS)
    a = store.run_sync(lambda txn: txn.add_item(contacts.id, {"n": "a"}))
    b = store.run_sync(lambda txn: txn.add_item(contacts.id, {"n": "b"}))
    assert a.uid
    assert b.uid
    assert a.uid != b.uid
    before = modseq(store, alice, contacts)
    with pytest.raises(Conflict):
        store.run_sync(lambda txn: txn.add_item(contacts.id, {"n": "c"}, uid=a.uid))
    assert modseq(store, alice, contacts) == before  # the refused add changed nothing
    # The same uid in another folder is another item.
    other = store.run_sync(lambda txn: txn.add_item(tasks.id, {"n": "t"}, uid=a.uid))
    assert other.uid == a.uid
    assert other.folder_id == tasks.id
    for bad in ("", "x" * (MAX_ITEM_UID_CHARS + 1)):
        with pytest.raises(Conflict):
            store.run_sync(partial(add_with_uid, folder_id=contacts.id, uid=bad))
    assert [i.uid for i in store.run_sync(lambda txn: txn.list_items(contacts.id))] == [
        a.uid,
        b.uid,
    ]


def test_records_round_trip_as_json_and_non_json_is_refused(store: Store, alice: User) -> None:
    notes = folder_of(store, alice, FolderType.NOTES)
    record: dict[str, Any] = {
        "body": "ünïcode \0 and \u2028 and emoji 🙂",
        "n": 3,
        "f": 1.5,
        "ok": True,
        "none": None,
        "nested": {"list": [1, "two", {"three": []}]},
    }
    item = store.run_sync(lambda txn: txn.add_item(notes.id, record))
    assert store.run_sync(lambda txn: txn.get_item(alice.id, item.server_id)).data == record  # type: ignore[union-attr]
    with pytest.raises(StoreError):
        store.run_sync(lambda txn: txn.add_item(notes.id, {"when": CREATED_AT}))


def test_items_and_messages_of_a_folder_share_the_numbers(store: Store, alice: User) -> None:
    # A user folder can hold both only in tests, but the numbering must never collide.
    inbox = folder_of(store, alice, FolderType.INBOX)
    message = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("m")))
    item = store.run_sync(lambda txn: txn.add_item(inbox.id, {}))
    assert message.server_id == f"{inbox.server_id}:1"
    assert item.server_id == f"{inbox.server_id}:2"


def test_move_gives_a_new_server_id_keeps_the_uid_and_bumps_both(store: Store, alice: User) -> None:
    calendar = folder_of(store, alice, FolderType.CALENDAR)
    work = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Work", FolderType.USER_CALENDAR)
    )
    item = store.run_sync(lambda txn: txn.add_item(calendar.id, {"s": 1}, uid="u"))
    before = (modseq(store, alice, calendar), modseq(store, alice, work))

    moved = store.run_sync(lambda txn: txn.move_item(item.id, work.id))
    assert moved.server_id == f"{work.server_id}:1"
    assert (moved.id, moved.uid, moved.data, moved.folder_id) == (item.id, "u", {"s": 1}, work.id)
    assert (modseq(store, alice, calendar), modseq(store, alice, work)) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert store.run_sync(lambda txn: txn.get_item(alice.id, item.server_id)) is None
    assert store.run_sync(lambda txn: txn.item_versions(calendar.id)) == {}
    assert store.run_sync(lambda txn: txn.move_item(item.id, work.id)) == moved  # a no-op

    # Back into a folder that has an item with that uid meanwhile: refused.
    store.run_sync(lambda txn: txn.add_item(calendar.id, {"s": 2}, uid="u"))
    with pytest.raises(Conflict):
        store.run_sync(lambda txn: txn.move_item(item.id, calendar.id))


def test_items_are_private_to_their_user(
    store: Store, alice: User, alice_password_hash: str
) -> None:
    bob = store.run_sync(
        lambda txn: txn.add_user("bob", "bob@example.test", "Bob", alice_password_hash, CREATED_AT)
    )
    contacts = folder_of(store, alice, FolderType.CONTACTS)
    bobs = folder_of(store, bob, FolderType.CONTACTS)
    item = store.run_sync(lambda txn: txn.add_item(contacts.id, {}))
    assert store.run_sync(lambda txn: txn.get_item(bob.id, item.server_id)) is None
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.move_item(item.id, bobs.id))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.add_item(10**9, {}))


def test_deleting_a_folder_or_user_deletes_its_items(store: Store, alice: User) -> None:
    work = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Work", FolderType.USER_TASKS)
    )
    item = store.run_sync(lambda txn: txn.add_item(work.id, {"t": 1}))
    tasks = folder_of(store, alice, FolderType.TASKS)
    kept = store.run_sync(lambda txn: txn.add_item(tasks.id, {"t": 2}))
    store.run_sync(lambda txn: txn.delete_folder(alice.id, work.server_id))
    assert store.run_sync(lambda txn: txn.get_item(alice.id, item.server_id)) is None
    assert store.run_sync(lambda txn: txn.get_item(alice.id, kept.server_id)) == kept
    store.run_sync(lambda txn: txn.remove_user(alice.id))
    assert store.run_sync(lambda txn: txn.get_item(alice.id, kept.server_id)) is None


def test_empty_folder_removes_items_too(store: Store, alice: User) -> None:
    notes = folder_of(store, alice, FolderType.NOTES)
    for n in range(3):
        store.run_sync(partial(add_with_uid, folder_id=notes.id, uid=f"note-{n}"))
    assert store.run_sync(lambda txn: txn.empty_folder(notes.id)) == 3
    assert store.run_sync(lambda txn: txn.list_items(notes.id)) == []


async def test_every_item_write_is_published_on_the_change_feed(store: Store, alice: User) -> None:
    calendar = folder_of(store, alice, FolderType.CALENDAR)
    work = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Work", FolderType.USER_CALENDAR)
    )
    item = await store.run(lambda txn: txn.add_item(calendar.id, {}))
    writes = (
        ({calendar.id}, lambda txn: txn.add_item(calendar.id, {})),
        ({calendar.id}, lambda txn: txn.update_item(item.id, {"x": 1})),
        ({calendar.id, work.id}, lambda txn: txn.move_item(item.id, work.id)),
        ({work.id}, lambda txn: txn.delete_item(item.id)),
    )
    for expected, write in writes:
        with store.changes.subscribe([calendar.id, work.id]) as subscription:
            await store.run(write)
            woken: set[int] = set()
            while woken != expected:
                got = await subscription.wait(5)
                assert got, f"no change published for {expected}"
                woken |= got


# -- the step-3 migration, both dialects -------------------------------------------------------


def _old_deployment(conn: Any, mark: str) -> None:
    """What a version-2 store holds: a user with the mail folders and a "Calendar" of her own."""
    conn.execute(
        "INSERT INTO users (id, name, email, display_name, password_hash, created_at, "
        "next_folder_number) VALUES (1, 'alice', 'alice@example.test', 'A', 'h', 0, 3)"
    )
    for number, name, folder_type in ((1, "Inbox", 2), (2, "calendar", 12)):
        conn.execute(
            "INSERT INTO folders (user_id, server_id, parent_server_id, display_name, type) "
            f"VALUES (1, {mark}, '0', {mark}, {mark})",
            (str(number), name, folder_type),
        )


def _folders_after(conn: Any) -> tuple[list[tuple[str, str, int]], int, int]:
    rows = conn.execute(
        "SELECT server_id, display_name, type FROM folders WHERE user_id = 1 ORDER BY id"
    ).fetchall()
    counters = conn.execute(
        "SELECT hierarchy_modseq, next_folder_number FROM users WHERE id = 1"
    ).fetchone()
    return [tuple(r) for r in rows], counters[0], counters[1]


EXPECTED_AFTER_STEP_3 = (
    [
        ("1", "Inbox", 2),
        ("2", "calendar", 12),
        ("3", "Calendar (2)", 8),
        ("4", "Contacts", 9),
        ("5", "Tasks", 7),
        ("6", "Notes", 10),
    ],
    1,
    7,
)


def test_step_3_gives_existing_sqlite_users_the_class_folders(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = connect(path)
    assert migrations.migrate(conn, upto=2) == 2
    _old_deployment(conn, "?")
    conn.close()
    store = SqliteStore(path)
    try:
        folder = store.run_sync(lambda txn: txn.folder_by_type(1, FolderType.CALENDAR))
        assert store.run_sync(lambda txn: txn.add_item(folder.id, {"ok": 1})).data == {"ok": 1}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert migrations.schema_version(conn) == migrations.LATEST
        assert _folders_after(conn) == EXPECTED_AFTER_STEP_3
    finally:
        conn.close()


@pytest.fixture
def bare_pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database(migrated=False)
    yield url
    pg_server.drop_database(url)


def test_step_3_gives_existing_postgres_users_the_class_folders(bare_pg_url: str) -> None:
    with psycopg.connect(bare_pg_url, autocommit=True) as conn:
        assert migrations.pg_migrate(conn, upto=2) == 2
        _old_deployment(conn, "%s")
    store = PostgresStore(bare_pg_url)
    try:
        folder = store.run_sync(lambda txn: txn.folder_by_type(1, FolderType.CALENDAR))
        assert store.run_sync(lambda txn: txn.add_item(folder.id, {"ok": 1})).data == {"ok": 1}
    finally:
        store.close()
    with psycopg.connect(bare_pg_url, autocommit=True) as conn:
        assert migrations.pg_schema_version(conn) == migrations.LATEST
        assert _folders_after(conn) == EXPECTED_AFTER_STEP_3
