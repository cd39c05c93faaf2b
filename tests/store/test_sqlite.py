"""Every Txn method of the store, through Store.run / run_sync, on both drivers.

The ``store`` fixture runs each test on a SQLite file and on a PostgreSQL database; the tests
about SQLite itself (its file, pragmas, errors, FTS5 fallback) carry ``@SQLITE_ONLY``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from natsync.store import open_store
from natsync.store.api import (
    STANDARD_FOLDERS,
    AccessState,
    Conflict,
    Flag,
    Folder,
    FolderType,
    NotFound,
    Store,
    StoreError,
    Txn,
    User,
    WipeState,
)
from natsync.store.sqlite import SqliteStore
from tests.conftest import ALICE_EMAIL, CREATED_AT, SQLITE_ONLY, StoreFactory
from tests.store.helpers import T0, later, new_message

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)


def count_rows(store: Store, table: str) -> int:
    """Rows in *table*, read through the store's own connection (either driver)."""

    def count(txn: Txn) -> int:
        n: int = txn._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[attr-defined]
        return n

    return store.run_sync(count)


def inbox_of(store: Store, user: User) -> Folder:
    return store.run_sync(lambda txn: txn.folder_by_type(user.id, FolderType.INBOX))


def folder(store: Store, user: User, server_id: str) -> Folder:
    found = store.run_sync(lambda txn: txn.get_folder(user.id, server_id))
    assert found is not None
    return found


# -- opening ------------------------------------------------------------------------------------


def test_open_store_accepts_paths_and_sqlite_urls(tmp_path: Path) -> None:
    for name in (
        tmp_path / "a.db",
        str(tmp_path / "b.db"),
        f"sqlite://{tmp_path}/c.db",  # tmp_path is absolute: sqlite:///tmp/...
        f"sqlite:///{tmp_path}/d.db",  # the four-slash spelling
    ):
        opened = open_store(name)
        try:
            assert opened.run_sync(lambda txn: txn.list_users()) == []
        finally:
            opened.close()
    assert {p.name for p in tmp_path.glob("*.db")} == {"a.db", "b.db", "c.db", "d.db"}


def test_open_store_refuses_unknown_kinds() -> None:
    with pytest.raises(StoreError, match="unknown store kind"):
        open_store("mysql://x/y")
    with pytest.raises(StoreError, match="sqlite:///path"):
        open_store("sqlite://relative.db")


@SQLITE_ONLY
def test_the_file_is_in_wal_mode_with_foreign_keys(store: SqliteStore) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()

    def pragmas(txn: Txn) -> tuple[int, int, int]:
        conn = txn._conn  # type: ignore[attr-defined]
        return tuple(
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("foreign_keys", "synchronous", "busy_timeout")
        )  # type: ignore[return-value]

    foreign_keys, synchronous, busy_timeout = store.run_sync(pragmas)
    assert (foreign_keys, synchronous) == (1, 1)  # on, NORMAL
    assert busy_timeout > 0


def _open_when_all_are_ready(path: Path, ready: Any, failures: Any) -> None:
    ready.wait()
    try:
        SqliteStore(path).close()
    except StoreError as exc:
        failures.put(str(exc))


#: Processes opening one new store file at the same moment, and how many times.
OPENERS, OPENING_ROUNDS = 3, 15


def test_processes_opening_a_new_file_together_all_open_it(tmp_path: Path) -> None:
    """Two natsync processes started together on a new store (``natsync run``'s server and a
    source's worker, two servers): the switch to WAL finds the file busy at once, without
    SQLite's busy handler, and used to fail one of them with "database is locked" (about one
    open in ten here, three at a time)."""
    forking = multiprocessing.get_context("fork")
    failures = forking.SimpleQueue()
    for number in range(OPENING_ROUNDS):
        path = tmp_path / f"natsync-{number}.db"
        ready = forking.Barrier(OPENERS)
        openers = [
            forking.Process(target=_open_when_all_are_ready, args=(path, ready, failures))
            for _ in range(OPENERS)
        ]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(60)
            assert opener.exitcode == 0
        assert failures.empty(), failures.get()


def test_closed_store_refuses_work(store_factory: StoreFactory) -> None:
    opened = store_factory(with_alice=False)
    opened.close()
    opened.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        opened.run_sync(lambda txn: txn.list_users())


def test_nested_run_is_refused_not_deadlocked(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="inside a store transaction"):
        store.run_sync(lambda txn: store.run_sync(lambda inner: inner.list_users()))


# -- transactions -------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_inside_fn_leaves_nothing_written(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)

    def half_done(txn: Txn) -> None:
        txn.add_message(inbox.id, new_message("first"))
        txn.create_folder(alice.id, "0", "Projects", FolderType.USER_MAIL)
        txn.add_user("bob", "bob@example.test", "Bob", "h", NOW)
        raise Boom

    with pytest.raises(Boom):
        store.run_sync(half_done)
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {}
    assert [f.display_name for f in store.run_sync(lambda txn: txn.list_folders(alice.id))] == [
        name for name, _ in STANDARD_FOLDERS
    ]
    assert store.run_sync(lambda txn: txn.get_user("bob")) is None
    assert inbox_of(store, alice).modseq == inbox.modseq


async def test_run_from_asyncio_returns_the_result_and_raises_the_original(
    store: Store, alice: User
) -> None:
    users = await store.run(lambda txn: txn.list_users())
    assert users == [alice]
    with pytest.raises(Boom):
        await store.run(lambda txn: (_ for _ in ()).throw(Boom()))
    # Many concurrent callers are serialised, each its own transaction.
    inbox = await store.run(lambda txn: txn.folder_by_type(alice.id, FolderType.INBOX))
    added = await asyncio.gather(
        *(
            store.run(lambda txn, i=i: txn.add_message(inbox.id, new_message(f"m{i}")))
            for i in range(50)
        )
    )
    assert len({m.server_id for m in added}) == 50
    assert len(await store.run(lambda txn: txn.message_versions(inbox.id))) == 50


@SQLITE_ONLY
def test_sqlite_errors_become_store_errors(store: SqliteStore) -> None:
    def bad(txn: Txn) -> None:
        txn._conn.execute("SELECT * FROM no_such_table")  # type: ignore[attr-defined]

    with pytest.raises(StoreError, match="no_such_table") as info:
        store.run_sync(bad)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


# -- users --------------------------------------------------------------------------------------


def test_users_add_get_list_remove(store: Store, alice: User) -> None:
    bob = store.run_sync(
        lambda txn: txn.add_user("bob", "Bob@Example.test", "Bob B", "hash-b", NOW)
    )
    assert (bob.name, bob.email, bob.display_name, bob.created_at) == (
        "bob",
        "Bob@Example.test",
        "Bob B",
        NOW,
    )
    assert store.run_sync(lambda txn: txn.get_user("BOB")) == bob  # login names ignore case
    assert store.run_sync(lambda txn: txn.get_user_by_email("bob@example.TEST")) == bob
    assert store.run_sync(lambda txn: txn.get_user("carol")) is None
    assert store.run_sync(lambda txn: txn.get_user_by_email("carol@x")) is None
    assert [u.name for u in store.run_sync(lambda txn: txn.list_users())] == ["alice", "bob"]
    assert alice.email == ALICE_EMAIL
    assert alice.created_at == CREATED_AT

    store.run_sync(lambda txn: txn.remove_user(bob.id))
    assert store.run_sync(lambda txn: txn.get_user("bob")) is None
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.remove_user(bob.id))


def test_add_user_conflicts_on_name_or_email(store: Store, alice: User) -> None:
    with pytest.raises(Conflict, match="name"):
        store.run_sync(lambda txn: txn.add_user("Alice", "other@example.test", "", "h", NOW))
    with pytest.raises(Conflict, match="email"):
        store.run_sync(lambda txn: txn.add_user("other", ALICE_EMAIL.upper(), "", "h", NOW))


def test_password_hash_get_and_set(store: Store, alice: User) -> None:
    assert store.run_sync(lambda txn: txn.password_hash(alice.id)).startswith("$scrypt$")
    store.run_sync(lambda txn: txn.set_password_hash(alice.id, "new-hash"))
    assert store.run_sync(lambda txn: txn.password_hash(alice.id)) == "new-hash"
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.password_hash(999))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.set_password_hash(999, "x"))


def test_user_settings(store: Store, alice: User) -> None:
    assert store.run_sync(lambda txn: txn.get_user_setting(alice.id, "oof")) is None
    store.run_sync(lambda txn: txn.set_user_setting(alice.id, "oof", "on"))
    store.run_sync(lambda txn: txn.set_user_setting(alice.id, "oof", "off"))
    assert store.run_sync(lambda txn: txn.get_user_setting(alice.id, "oof")) == "off"
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.set_user_setting(999, "oof", "on"))


def test_removing_a_user_removes_everything_of_theirs(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)

    def fill(txn: Txn) -> None:
        txn.add_message(inbox.id, new_message(attachment=b"x"))
        device = txn.touch_device(alice.id, "DEV1", "iPhone", "16.1", "Apple-iPhone", NOW)
        txn.put_sync_state(device.id, "1", "k1", b"state")
        txn.set_device_setting(device.id, "a", "b")
        txn.set_user_setting(alice.id, "a", "b")

    store.run_sync(fill)
    store.run_sync(lambda txn: txn.remove_user(alice.id))
    for table in (
        "folders",
        "messages",
        "message_bodies",
        "attachments",
        "devices",
        "device_settings",
        "user_settings",
        "sync_state",
        "message_search",
    ):
        assert count_rows(store, table) == 0, table


# -- devices ------------------------------------------------------------------------------------


def test_touch_device_creates_then_updates(store: Store, alice: User) -> None:
    first = store.run_sync(
        lambda txn: txn.touch_device(alice.id, "ABC123", "iPhone", "14.1", "Apple-iPhone/1", T0)
    )
    assert (first.device_id, first.device_type, first.protocol_version) == (
        "ABC123",
        "iPhone",
        "14.1",
    )
    assert first.first_seen == first.last_seen == T0
    assert first.access_state is AccessState.ALLOWED
    assert first.wipe_state is WipeState.NONE
    assert (first.policy_key, first.pending_policy_key) == (0, 0)
    again = store.run_sync(
        lambda txn: txn.touch_device(alice.id, "ABC123", "iPhone", "16.1", "Apple-iPhone/2", NOW)
    )
    assert again.id == first.id
    assert (again.first_seen, again.last_seen) == (T0, NOW)
    assert (again.protocol_version, again.user_agent) == ("16.1", "Apple-iPhone/2")
    assert store.run_sync(lambda txn: txn.get_device(alice.id, "ABC123")) == again
    assert store.run_sync(lambda txn: txn.get_device(alice.id, "nope")) is None
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.touch_device(999, "X", "t", "16.1", "ua", NOW))


def test_login_reads_the_user_and_hash_by_name_or_email(store: Store, alice: User) -> None:
    stored = store.run_sync(lambda txn: txn.password_hash(alice.id))
    assert store.run_sync(lambda txn: txn.login(alice.name)) == (alice, stored)
    assert store.run_sync(lambda txn: txn.login(ALICE_EMAIL)) == (alice, stored)
    assert store.run_sync(lambda txn: txn.login("nobody")) is None
    assert store.run_sync(lambda txn: txn.login("nobody@example.test")) is None


def test_a_setting_read_and_written_again_in_one_transaction(store: Store, alice: User) -> None:
    """Settings are remembered for the rest of a transaction (no second read, no rewrite of
    the value a setting holds), and forgotten with the device removed in it."""
    device = store.run_sync(lambda txn: txn.touch_device(alice.id, "D", "t", "16.1", "ua", T0))

    def edit(txn: Txn) -> list[str | None]:
        seen = [txn.get_device_setting(device.id, "k")]
        txn.set_device_setting(device.id, "k", "a")
        seen.append(txn.get_device_setting(device.id, "k"))
        txn.set_device_setting(device.id, "k", "a")  # the value it holds: nothing to write
        txn.set_device_setting(device.id, "k", "b")
        seen.append(txn.get_device_setting(device.id, "k"))
        return seen

    assert store.run_sync(edit) == [None, "a", "b"]
    assert store.run_sync(lambda txn: txn.get_device_setting(device.id, "k")) == "b"

    def remove_then_use(txn: Txn) -> str | None:
        touched = txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW)
        assert txn.get_device_setting(touched.id, "k") == "b"
        txn.remove_device(touched.id)
        assert txn.get_device_setting(touched.id, "k") is None
        with pytest.raises(NotFound):
            txn.set_device_setting(touched.id, "k", "c")
        with pytest.raises(NotFound):
            txn.put_sync_state(touched.id, "1", "k1", b"state")
        return txn.get_device_setting(touched.id, "k")

    assert store.run_sync(remove_then_use) is None
    assert store.run_sync(lambda txn: txn.get_device(alice.id, "D")) is None


def test_a_removed_user_is_checked_again_in_the_same_transaction(store: Store, alice: User) -> None:
    def remove_then_use(txn: Txn) -> None:
        txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW)
        txn.remove_user(alice.id)
        with pytest.raises(NotFound):
            txn.set_user_setting(alice.id, "k", "v")
        with pytest.raises(NotFound):
            txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW)

    store.run_sync(remove_then_use)
    assert store.run_sync(lambda txn: txn.get_user(alice.name)) is None


def test_a_hold_is_recorded_until_a_request_ends_it(store: Store, alice: User) -> None:
    device = store.run_sync(lambda txn: txn.touch_device(alice.id, "D", "t", "16.1", "ua", T0))

    def ping(txn: Txn) -> bool:
        """What a Ping that is held does: end the device's hold, then start its own."""
        touched = txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW)
        ended = txn.hold_ends(touched.id)
        txn.hold_starts(touched.id)
        return ended

    def sync(txn: Txn) -> tuple[bool, bool]:
        touched = txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW)
        return txn.hold_ends(touched.id), txn.hold_ends(touched.id)

    assert store.run_sync(lambda txn: txn.hold_ends(device.id)) is False  # none recorded
    assert store.run_sync(ping) is False
    assert store.run_sync(ping) is True  # the first Ping's hold
    assert store.run_sync(sync) == (True, False)
    assert store.run_sync(sync) == (False, False)
    store.run_sync(lambda txn: txn.hold_starts(device.id))
    assert store.run_sync(lambda txn: txn.hold_ends(device.id)) is True  # without a touch
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.hold_starts(999))


def test_device_info_access_policy_wipe_and_settings(store: Store, alice: User) -> None:
    device = store.run_sync(
        lambda txn: txn.touch_device(alice.id, "D", "Android", "16.1", "ua", T0)
    )

    def change(txn: Txn) -> None:
        txn.update_device_info(device.id, model="Pixel 9")
        txn.update_device_info(device.id, os="Android 16")
        txn.set_access_state(device.id, AccessState.QUARANTINED)
        txn.set_policy_keys(device.id, policy_key=0, pending_policy_key=1234)
        txn.set_wipe_state(device.id, WipeState.ACCOUNT_ONLY_PENDING, NOW)
        txn.set_device_setting(device.id, "FriendlyName", "my phone")

    store.run_sync(change)
    got = store.run_sync(lambda txn: txn.get_device(alice.id, "D"))
    assert got is not None
    assert (got.model, got.os) == ("Pixel 9", "Android 16")
    assert got.access_state is AccessState.QUARANTINED
    assert (got.policy_key, got.pending_policy_key) == (0, 1234)
    assert got.wipe_state is WipeState.ACCOUNT_ONLY_PENDING
    assert (got.wipe_requested_at, got.wipe_acknowledged_at) == (NOW, None)
    assert (
        store.run_sync(lambda txn: txn.get_device_setting(device.id, "FriendlyName")) == "my phone"
    )
    assert store.run_sync(lambda txn: txn.get_device_setting(device.id, "other")) is None

    store.run_sync(lambda txn: txn.set_wipe_state(device.id, WipeState.SENT, later(5)))
    store.run_sync(lambda txn: txn.set_wipe_state(device.id, WipeState.ACKNOWLEDGED, later(9)))
    got = store.run_sync(lambda txn: txn.get_device(alice.id, "D"))
    assert got is not None
    assert got.wipe_state is WipeState.ACKNOWLEDGED
    assert (got.wipe_requested_at, got.wipe_acknowledged_at) == (NOW, later(9))

    for call in (
        lambda txn: txn.update_device_info(999, model="x"),
        lambda txn: txn.set_access_state(999, AccessState.BLOCKED),
        lambda txn: txn.set_policy_keys(999, policy_key=1, pending_policy_key=0),
        lambda txn: txn.set_wipe_state(999, WipeState.PENDING, NOW),
        lambda txn: txn.set_device_setting(999, "k", "v"),
    ):
        with pytest.raises(NotFound):
            store.run_sync(call)


def test_list_devices_all_or_per_user(store: Store, alice: User) -> None:
    bob = store.run_sync(lambda txn: txn.add_user("bob", "bob@example.test", "Bob", "h", NOW))

    def touch(txn: Txn) -> None:
        txn.touch_device(alice.id, "A1", "iPhone", "16.1", "ua", NOW)
        txn.touch_device(bob.id, "B1", "iPhone", "16.1", "ua", NOW)
        txn.touch_device(alice.id, "A2", "iPad", "16.1", "ua", NOW)

    store.run_sync(touch)
    assert [d.device_id for d in store.run_sync(lambda txn: txn.list_devices(alice.id))] == [
        "A1",
        "A2",
    ]
    assert len(store.run_sync(lambda txn: txn.list_devices())) == 3


# -- folders ------------------------------------------------------------------------------------


def test_folder_lifecycle_bumps_the_hierarchy_modseq(store: Store, alice: User) -> None:
    start = store.run_sync(lambda txn: txn.hierarchy_modseq(alice.id))
    assert start >= 1  # creating the standard folders was a hierarchy change
    created = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Projects", FolderType.USER_MAIL)
    )
    assert created.parent_server_id == "0"
    assert created.server_id.isdigit()
    assert store.run_sync(lambda txn: txn.hierarchy_modseq(alice.id)) == start + 1
    child = store.run_sync(
        lambda txn: txn.create_folder(alice.id, created.server_id, "2026", FolderType.USER_MAIL)
    )
    renamed = store.run_sync(
        lambda txn: txn.update_folder(alice.id, child.server_id, "0", "Archive 2026")
    )
    assert (renamed.display_name, renamed.parent_server_id, renamed.server_id) == (
        "Archive 2026",
        "0",
        child.server_id,
    )
    assert store.run_sync(lambda txn: txn.hierarchy_modseq(alice.id)) == start + 3
    store.run_sync(lambda txn: txn.delete_folder(alice.id, renamed.server_id))
    assert store.run_sync(lambda txn: txn.get_folder(alice.id, renamed.server_id)) is None
    assert store.run_sync(lambda txn: txn.hierarchy_modseq(alice.id)) == start + 4
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.hierarchy_modseq(999))


def test_folder_server_ids_are_unique_and_never_reused(store: Store, alice: User) -> None:
    made = store.run_sync(lambda txn: txn.create_folder(alice.id, "0", "X", FolderType.USER_MAIL))
    store.run_sync(lambda txn: txn.delete_folder(alice.id, made.server_id))
    again = store.run_sync(lambda txn: txn.create_folder(alice.id, "0", "X", FolderType.USER_MAIL))
    assert again.server_id != made.server_id
    ids = [f.server_id for f in store.run_sync(lambda txn: txn.list_folders(alice.id))]
    assert len(ids) == len(set(ids))


def test_folder_conflicts_and_missing_parents(store: Store, alice: User) -> None:
    projects = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Projects", FolderType.USER_MAIL)
    )
    sub = store.run_sync(
        lambda txn: txn.create_folder(alice.id, projects.server_id, "Sub", FolderType.USER_MAIL)
    )
    with pytest.raises(Conflict, match="already exists"):
        store.run_sync(
            lambda txn: txn.create_folder(alice.id, "0", "projects", FolderType.USER_MAIL)
        )
    with pytest.raises(Conflict, match="already exists"):
        store.run_sync(lambda txn: txn.create_folder(alice.id, "0", "Inbox", FolderType.USER_MAIL))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.create_folder(alice.id, "999", "X", FolderType.USER_MAIL))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.create_folder(999, "0", "X", FolderType.USER_MAIL))
    with pytest.raises(Conflict, match="itself"):
        store.run_sync(
            lambda txn: txn.update_folder(alice.id, projects.server_id, sub.server_id, "P")
        )
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.update_folder(alice.id, "999", "0", "P"))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.delete_folder(alice.id, "999"))
    inbox = inbox_of(store, alice)
    with pytest.raises(Conflict, match="standard folder"):
        store.run_sync(lambda txn: txn.delete_folder(alice.id, inbox.server_id))
    with pytest.raises(Conflict, match="standard folder"):
        store.run_sync(lambda txn: txn.update_folder(alice.id, inbox.server_id, "0", "Renamed"))


def test_deleting_a_folder_deletes_its_subfolders_and_their_mail(store: Store, alice: User) -> None:
    def build(txn: Txn) -> tuple[Folder, Folder]:
        top = txn.create_folder(alice.id, "0", "Top", FolderType.USER_MAIL)
        below = txn.create_folder(alice.id, top.server_id, "Below", FolderType.USER_MAIL)
        txn.add_message(below.id, new_message("deep"))
        return top, below

    top, below = store.run_sync(build)
    store.run_sync(lambda txn: txn.delete_folder(alice.id, top.server_id))
    assert store.run_sync(lambda txn: txn.get_folder(alice.id, below.server_id)) is None
    assert store.run_sync(lambda txn: txn.search_messages(alice.id, "deep", None, 10)) == []


def test_folder_by_type_and_get_folder(store: Store, alice: User) -> None:
    sent = store.run_sync(lambda txn: txn.folder_by_type(alice.id, FolderType.SENT_ITEMS))
    assert sent.display_name == "Sent Items"
    assert folder(store, alice, sent.server_id) == sent
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.folder_by_type(alice.id, FolderType.JOURNAL))


# -- messages -----------------------------------------------------------------------------------


def test_add_message_records_the_parsed_fields_and_bumps_modseq(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    new = new_message("Quarterly report", "numbers inside", attachment=b"\x89PNG data")
    added = store.run_sync(lambda txn: txn.add_message(inbox.id, new))
    assert added.server_id == f"{inbox.server_id}:1"
    assert added.folder_id == inbox.id
    assert added.modseq == inbox.modseq + 1 == inbox_of(store, alice).modseq
    assert (added.subject, added.from_addr, added.to_addrs) == (
        "Quarterly report",
        "bob@example.test",
        "alice@example.test",
    )
    assert added.size == len(new.raw)
    assert added.received_at == T0
    assert added.read is False
    assert added.flag == Flag()
    assert added.categories == ()
    assert added.has_attachments is True
    assert [a.file_reference for a in added.attachments] == [f"{added.server_id}:1"]
    assert store.run_sync(lambda txn: txn.raw_message(added.id)) == new.raw
    assert store.run_sync(lambda txn: txn.get_message(alice.id, added.server_id)) == added


def test_several_adds_in_one_transaction_bump_modseq_once(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    added = store.run_sync(
        lambda txn: [txn.add_message(inbox.id, new_message(f"m{i}")) for i in range(3)]
    )
    assert [m.server_id for m in added] == [f"{inbox.server_id}:{n}" for n in (1, 2, 3)]
    assert {m.modseq for m in added} == {inbox.modseq + 1}


def test_message_versions_and_the_received_since_filter(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    old = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("old", received_at=T0)))
    new = store.run_sync(
        lambda txn: txn.add_message(inbox.id, new_message("new", received_at=later(60)))
    )
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {
        old.server_id: old.modseq,
        new.server_id: new.modseq,
    }
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id, later(30))) == {
        new.server_id: new.modseq
    }


def test_get_messages_keeps_the_order_asked_and_skips_unknown_ids(
    store: Store, alice: User
) -> None:
    inbox = inbox_of(store, alice)
    added = store.run_sync(
        lambda txn: [
            txn.add_message(inbox.id, new_message(f"m{i}", attachment=b"a" if i % 2 else None))
            for i in range(5)
        ]
    )
    wanted = [added[3].server_id, "nope:1", added[0].server_id, added[1].server_id]
    got = store.run_sync(lambda txn: txn.get_messages(alice.id, wanted))
    assert got == [added[3], added[0], added[1]]
    assert store.run_sync(lambda txn: txn.get_messages(alice.id, [])) == []


def test_raw_messages_reads_many_at_once_and_skips_unknown_ids(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    added = store.run_sync(
        lambda txn: [txn.add_message(inbox.id, new_message(f"m{i}")) for i in range(3)]
    )
    ids = [added[2].id, 999_999, added[0].id]
    got = store.run_sync(lambda txn: txn.raw_messages(ids))
    one_by_one = store.run_sync(lambda txn: {i: txn.raw_message(i) for i in (ids[0], ids[2])})
    assert got == one_by_one
    assert len(set(got.values())) == 2
    assert store.run_sync(lambda txn: txn.raw_messages([])) == {}


def test_messages_are_private_to_their_user(store: Store, alice: User) -> None:
    bob = store.run_sync(lambda txn: txn.add_user("bob", "bob@example.test", "Bob", "h", NOW))
    inbox = inbox_of(store, alice)
    added = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message(attachment=b"z")))
    assert store.run_sync(lambda txn: txn.get_message(bob.id, added.server_id)) is None
    assert store.run_sync(lambda txn: txn.get_messages(bob.id, [added.server_id])) == []
    reference = added.attachments[0].file_reference
    assert store.run_sync(lambda txn: txn.get_attachment(bob.id, reference)) is None
    bob_inbox = inbox_of(store, bob)
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.move_message(added.id, bob_inbox.id))


def test_read_flag_and_categories_changes_bump_modseq(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    added = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message()))
    read = store.run_sync(lambda txn: txn.set_read(added.id, True))
    assert read.read is True
    assert read.modseq > added.modseq
    same = store.run_sync(lambda txn: txn.set_read(added.id, True))
    assert same.modseq == read.modseq  # no change, no bump
    flag = Flag(status=2, flag_type="Follow up", start_date=T0, due_date=later(60))
    flagged = store.run_sync(lambda txn: txn.set_flag(added.id, flag))
    assert flagged.flag == flag
    assert flagged.modseq > read.modseq
    tagged = store.run_sync(lambda txn: txn.set_categories(added.id, ["Red", "Work", "Red"]))
    assert tagged.categories == ("Red", "Work")
    assert tagged.modseq > flagged.modseq
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {
        added.server_id: tagged.modseq
    }
    assert inbox_of(store, alice).modseq == tagged.modseq
    for call in (
        lambda txn: txn.set_read(999, True),
        lambda txn: txn.set_flag(999, flag),
        lambda txn: txn.set_categories(999, []),
        lambda txn: txn.raw_message(999),
        lambda txn: txn.delete_message(999),
        lambda txn: txn.move_message(999, inbox.id),
    ):
        with pytest.raises(NotFound):
            store.run_sync(call)


def test_move_gives_a_new_server_id_and_bumps_both_folders(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    archive = store.run_sync(
        lambda txn: txn.create_folder(alice.id, "0", "Archive", FolderType.USER_MAIL)
    )
    added = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message(attachment=b"pdf")))
    inbox = inbox_of(store, alice)
    moved = store.run_sync(lambda txn: txn.move_message(added.id, archive.id))
    assert moved.id == added.id
    assert moved.folder_id == archive.id
    assert moved.server_id == f"{archive.server_id}:1"
    assert moved.server_id != added.server_id
    assert inbox_of(store, alice).modseq == inbox.modseq + 1
    assert folder(store, alice, archive.server_id).modseq == archive.modseq + 1
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {}
    assert store.run_sync(lambda txn: txn.get_message(alice.id, added.server_id)) is None
    reference = moved.attachments[0].file_reference
    assert reference.startswith(moved.server_id + ":")
    found = store.run_sync(lambda txn: txn.get_attachment(alice.id, reference))
    assert found is not None
    assert found[1] == b"pdf"
    # Moving into the folder it is in changes nothing.
    assert store.run_sync(lambda txn: txn.move_message(added.id, archive.id)) == moved


def test_delete_and_empty_folder(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    added = store.run_sync(
        lambda txn: [txn.add_message(inbox.id, new_message(f"m{i}")) for i in range(4)]
    )
    store.run_sync(lambda txn: txn.delete_message(added[0].id))
    assert added[0].server_id not in store.run_sync(lambda txn: txn.message_versions(inbox.id))
    before = inbox_of(store, alice).modseq
    assert store.run_sync(lambda txn: txn.empty_folder(inbox.id)) == 3
    assert inbox_of(store, alice).modseq == before + 1
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {}
    assert store.run_sync(lambda txn: txn.empty_folder(inbox.id)) == 0
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.empty_folder(999))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.add_message(999, new_message()))


def test_message_numbers_are_not_reused_after_delete(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    first = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("a")))
    store.run_sync(lambda txn: txn.delete_message(first.id))
    second = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("b")))
    assert second.server_id != first.server_id


def test_get_attachment_returns_the_decoded_part(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    payload = bytes(range(256)) * 10
    added = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message(attachment=payload)))
    found = store.run_sync(
        lambda txn: txn.get_attachment(alice.id, added.attachments[0].file_reference)
    )
    assert found is not None
    attachment, data = found
    assert data == payload
    assert (attachment.filename, attachment.size) == ("data.bin", len(payload))
    assert store.run_sync(lambda txn: txn.get_attachment(alice.id, "1:99:1")) is None


# -- search -------------------------------------------------------------------------------------


def test_search_finds_subject_sender_and_body_words(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    sent = store.run_sync(lambda txn: txn.folder_by_type(alice.id, FolderType.SENT_ITEMS))

    def fill(txn: Txn) -> None:
        txn.add_message(inbox.id, new_message("Budget 2026", "the numbers", received_at=later(1)))
        txn.add_message(inbox.id, new_message("Lunch", "pizza on friday", received_at=later(2)))
        txn.add_message(
            sent.id,
            new_message("Re: budget", "agreed", sender="carol@example.test", received_at=later(3)),
        )

    store.run_sync(fill)

    def subjects(query: str, folder_ids: list[int] | None = None, limit: int = 10) -> list[str]:
        found = store.run_sync(lambda txn: txn.search_messages(alice.id, query, folder_ids, limit))
        return [m.subject for m in found]

    assert subjects("budget") == ["Re: budget", "Budget 2026"]  # newest first
    assert subjects("budget", [inbox.id]) == ["Budget 2026"]
    assert subjects("pizza") == ["Lunch"]
    assert subjects("piz") == ["Lunch"]  # prefix match
    assert subjects("carol") == ["Re: budget"]
    assert subjects("budget numbers") == ["Budget 2026"]  # every word must match
    assert subjects("budget", limit=1) == ["Re: budget"]
    assert subjects('"; DROP TABLE messages; --') == []  # quoted, never parsed as syntax
    assert subjects("   ") == []
    assert subjects("nothing-like-this") == []


@SQLITE_ONLY
def test_search_without_fts5_falls_back_to_like(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from natsync.store import migrations

    monkeypatch.setattr(migrations, "fts5_available", lambda conn: False)
    plain = store_factory()
    alice = plain.run_sync(lambda txn: txn.get_user("alice"))
    assert alice is not None
    inbox = inbox_of(plain, alice)
    added = plain.run_sync(
        lambda txn: txn.add_message(inbox.id, new_message("Budget 100%", "pizza"))
    )

    def subjects(query: str) -> list[str]:
        found = plain.run_sync(lambda txn: txn.search_messages(alice.id, query, None, 10))
        return [m.subject for m in found]

    assert subjects("PIZZA") == ["Budget 100%"]
    assert subjects("budget pizza") == ["Budget 100%"]
    assert subjects("100%") == ["Budget 100%"]
    assert subjects("1_0") == []  # _ is not a wildcard
    assert subjects("budget salad") == []
    plain.run_sync(lambda txn: txn.delete_message(added.id))
    assert subjects("pizza") == []


# -- sync state ---------------------------------------------------------------------------------


def test_sync_state_keeps_exactly_current_and_previous(store: Store, alice: User) -> None:
    device = store.run_sync(lambda txn: txn.touch_device(alice.id, "D", "t", "16.1", "ua", NOW))
    for n in range(1, 6):
        store.run_sync(
            lambda txn, n=n: txn.put_sync_state(device.id, "5", f"k{n}", f"s{n}".encode())
        )
    assert store.run_sync(lambda txn: txn.get_sync_state(device.id, "5", "k5")) == b"s5"
    assert store.run_sync(lambda txn: txn.get_sync_state(device.id, "5", "k4")) == b"s4"
    for gone in ("k1", "k2", "k3"):
        assert store.run_sync(lambda txn, k=gone: txn.get_sync_state(device.id, "5", k)) is None
    assert count_rows(store, "sync_state") == 2
    # Re-putting the current key replaces its state and keeps the previous one.
    store.run_sync(lambda txn: txn.put_sync_state(device.id, "5", "k5", b"s5b"))
    assert store.run_sync(lambda txn: txn.get_sync_state(device.id, "5", "k5")) == b"s5b"
    assert store.run_sync(lambda txn: txn.get_sync_state(device.id, "5", "k4")) == b"s4"


def test_sync_state_is_per_device_and_collection_and_droppable(store: Store, alice: User) -> None:
    def setup(txn: Txn) -> tuple[int, int]:
        a = txn.touch_device(alice.id, "A", "t", "16.1", "ua", NOW).id
        b = txn.touch_device(alice.id, "B", "t", "16.1", "ua", NOW).id
        txn.put_sync_state(a, "1", "k1", b"a1")
        txn.put_sync_state(a, "2", "k1", b"a2")
        txn.put_sync_state(b, "1", "k1", b"b1")
        return a, b

    a, b = store.run_sync(setup)
    assert store.run_sync(lambda txn: txn.get_sync_state(a, "1", "k1")) == b"a1"
    assert store.run_sync(lambda txn: txn.get_sync_state(b, "1", "k1")) == b"b1"
    store.run_sync(lambda txn: txn.drop_sync_state(a, "1"))
    assert store.run_sync(lambda txn: txn.get_sync_state(a, "1", "k1")) is None
    assert store.run_sync(lambda txn: txn.get_sync_state(a, "2", "k1")) == b"a2"
    store.run_sync(lambda txn: txn.drop_sync_state(a))
    assert store.run_sync(lambda txn: txn.get_sync_state(a, "2", "k1")) is None
    assert store.run_sync(lambda txn: txn.get_sync_state(b, "1", "k1")) == b"b1"
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.put_sync_state(999, "1", "k", b""))


# -- outbound queue -----------------------------------------------------------------------------


def test_outbound_queue_due_retry_sent(store: Store) -> None:
    queued = store.run_sync(
        lambda txn: txn.enqueue_outbound(
            "alice@example.test", ["x@remote.test", "y@remote.test"], b"raw", T0
        )
    )
    assert (queued.recipients, queued.attempts, queued.next_attempt_at) == (
        ("x@remote.test", "y@remote.test"),
        0,
        T0,
    )
    second = store.run_sync(
        lambda txn: txn.enqueue_outbound("a@x", ["z@remote.test"], b"2", later(1))
    )
    assert store.run_sync(lambda txn: txn.due_outbound(T0, 10)) == [queued]
    assert store.run_sync(lambda txn: txn.due_outbound(later(5), 10)) == [queued, second]
    assert store.run_sync(lambda txn: txn.due_outbound(later(5), 1)) == [queued]
    store.run_sync(lambda txn: txn.outbound_retry(queued.id, later(30), "421 try later"))
    due = store.run_sync(lambda txn: txn.due_outbound(later(5), 10))
    assert due == [second]
    retried = store.run_sync(lambda txn: txn.due_outbound(later(30), 10))[1]
    assert (retried.attempts, retried.last_error, retried.next_attempt_at) == (
        1,
        "421 try later",
        later(30),
    )
    store.run_sync(lambda txn: txn.outbound_sent(queued.id))
    assert store.run_sync(lambda txn: txn.due_outbound(later(60), 10)) == [second]
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.outbound_sent(queued.id))
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.outbound_retry(queued.id, NOW, "x"))


def test_outbound_claim_is_exclusive_until_its_lease_runs_out(store: Store) -> None:
    first, second, third = (
        store.run_sync(lambda txn, n=n: txn.enqueue_outbound("a@x", [f"{n}@remote.test"], b"r", T0))
        for n in range(3)
    )
    claimed = store.run_sync(lambda txn: txn.claim_outbound(T0, 2, "w1", later(5)))
    assert [m.id for m in claimed] == [first.id, second.id]
    assert {(m.claimed_by, m.lease_until) for m in claimed} == {("w1", later(5))}
    # Another worker gets only what no live claim holds.
    other = store.run_sync(lambda txn: txn.claim_outbound(later(1), 10, "w2", later(6)))
    assert [m.id for m in other] == [third.id]
    assert store.run_sync(lambda txn: txn.claim_outbound(later(1), 10, "w3", later(6))) == []
    # w1's lease ran out (w1 died): w2 takes its entries over; w1 can no longer mark them.
    taken = store.run_sync(lambda txn: txn.claim_outbound(later(5), 10, "w2", later(10)))
    assert [m.id for m in taken] == [first.id, second.id]
    assert store.run_sync(lambda txn: txn.renew_outbound(first.id, "w1", later(20))) is False
    with pytest.raises(Conflict, match="claimed by w2"):
        store.run_sync(lambda txn: txn.outbound_sent(first.id, "w1"))
    with pytest.raises(Conflict):
        store.run_sync(lambda txn: txn.outbound_retry(first.id, later(30), "x", "w1"))
    assert store.run_sync(lambda txn: txn.renew_outbound(first.id, "w2", later(20))) is True
    store.run_sync(lambda txn: txn.outbound_sent(first.id, "w2"))  # marked done once
    with pytest.raises(NotFound):
        store.run_sync(lambda txn: txn.outbound_sent(first.id, "w2"))
    # A retry releases the claim: the entry is due again at its next attempt, for anyone.
    store.run_sync(lambda txn: txn.outbound_retry(second.id, later(30), "421", "w2"))
    # (third, due since T0, comes first: its lease, until later(6), ran out long ago.)
    rest, again = store.run_sync(lambda txn: txn.claim_outbound(later(30), 10, "w3", later(35)))
    assert (again.id, again.attempts, again.claimed_by) == (second.id, 1, "w3")
    assert rest.id == third.id
    # A worker closing hands its claims back.
    assert store.run_sync(lambda txn: txn.release_outbound("w3")) == 2
    assert store.run_sync(lambda txn: txn.release_outbound("w3")) == 0
    [listed] = [
        m for m in store.run_sync(lambda txn: txn.due_outbound(later(30), 10)) if m.id == second.id
    ]
    assert (listed.claimed_by, listed.lease_until) == ("", None)


async def test_two_stores_claiming_together_never_get_the_same_entry(
    store: Store, store_factory: StoreFactory
) -> None:
    entries = 120
    store.run_sync(
        lambda txn: [
            txn.enqueue_outbound("a@x", [f"{n}@remote.test"], b"r", T0) for n in range(entries)
        ]
    )
    other = store_factory(store.path, with_alice=False)  # type: ignore[attr-defined]

    async def drain(on: Store, owner: str) -> list[int]:
        got: list[int] = []
        for _ in range(entries):  # bounded: each round takes at least one entry or stops
            batch = await on.run(lambda txn: txn.claim_outbound(later(1), 3, owner, later(9)))
            if not batch:
                return got
            got.extend(m.id for m in batch)
            await asyncio.sleep(0)
        return got

    one, two = await asyncio.gather(drain(store, "w1"), drain(other, "w2"))
    assert not set(one) & set(two)
    assert len(one) + len(two) == entries
    assert len(set(one) | set(two)) == entries


# -- the message-version cache ------------------------------------------------------------------


def test_message_versions_stay_exact_across_rollbacks_and_other_writers(
    store: SqliteStore, store_factory: StoreFactory, alice: User
) -> None:
    inbox = inbox_of(store, alice)
    first = store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("one")))
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {
        first.server_id: first.modseq
    }

    def add_read_fail(txn: Txn) -> None:
        txn.add_message(inbox.id, new_message("two"))
        txn.add_message(inbox.id, new_message("three"))
        assert len(txn.message_versions(inbox.id)) == 3  # sees its own uncommitted adds
        raise Boom

    with pytest.raises(Boom):
        store.run_sync(add_read_fail)
    # The modseq the rolled-back transaction used is reached again, with other content.
    store.run_sync(lambda txn: txn.add_message(inbox.id, new_message("four")))
    versions = store.run_sync(lambda txn: txn.message_versions(inbox.id))
    assert len(versions) == 2
    assert first.server_id in versions
    # A second process (another store on the same file) changes the folder: seen at once.
    other = store_factory(store.path)
    moved = other.run_sync(
        lambda txn: txn.move_message(
            first.id, txn.folder_by_type(alice.id, FolderType.DELETED_ITEMS).id
        )
    )
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)).keys() == versions.keys() - {
        first.server_id
    }
    assert moved.server_id not in store.run_sync(lambda txn: txn.message_versions(inbox.id))


def test_message_versions_answers_are_copies(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    store.run_sync(lambda txn: txn.add_message(inbox.id, new_message()))
    store.run_sync(lambda txn: txn.message_versions(inbox.id)).clear()
    assert len(store.run_sync(lambda txn: txn.message_versions(inbox.id))) == 1


def test_version_cache_evicts_the_least_recently_used() -> None:
    from natsync.store.sql.base import VersionCache

    cache = VersionCache(limit=3)
    cache.put((1, None), 1, {"1:1": 1, "1:2": 1})
    cache.put((2, None), 1, {"2:1": 1})
    assert cache.get((1, None), 1) == {"1:1": 1, "1:2": 1}
    assert cache.get((1, None), 2) is None  # another modseq: stale
    cache.put((3, None), 1, {"3:1": 1})  # over the limit: folder 2 was used least recently
    assert cache.get((2, None), 1) is None
    assert cache.get((1, None), 1) is not None
    cache.put((4, None), 1, {str(n): 1 for n in range(4)})  # bigger than the cache: not kept
    assert cache.get((4, None), 1) is None


def test_search_indexes_the_body_text_delivery_hands_over(store: Store, alice: User) -> None:
    inbox = inbox_of(store, alice)
    given = replace(new_message("Given", "words in the mime"), body_text="handed over text")
    store.run_sync(lambda txn: txn.add_message(inbox.id, given))
    found = store.run_sync(lambda txn: txn.search_messages(alice.id, "handed", None, 10))
    assert [m.subject for m in found] == ["Given"]
    assert store.run_sync(lambda txn: txn.search_messages(alice.id, "mime", None, 10)) == []


async def hold_the_worker(store: Store, gate: threading.Event) -> asyncio.Future[bool]:
    """Occupy the store's worker until *gate* is set, so that jobs queue up behind it."""
    entered = threading.Event()

    def hold(txn: Txn) -> bool:
        entered.set()
        return gate.wait(10)

    blocker = asyncio.ensure_future(store.run(hold))
    assert await asyncio.to_thread(entered.wait, 10)
    return blocker


async def test_queued_jobs_share_one_commit_and_fail_alone(store: SqliteStore, alice: User) -> None:
    inbox = inbox_of(store, alice)
    gate = threading.Event()
    blocker = await hold_the_worker(store, gate)  # the worker is now inside the blocker

    def job(txn: Txn, i: int) -> str:
        added = txn.add_message(inbox.id, new_message(f"g{i}"))
        if i % 4 == 0:
            raise Boom(i)
        return added.server_id

    jobs = [asyncio.ensure_future(store.run(lambda txn, i=i: job(txn, i))) for i in range(12)]
    await asyncio.sleep(0.05)
    commits_before = store.commits
    gate.set()
    await blocker
    results = await asyncio.gather(*jobs, return_exceptions=True)
    # The blocker commits, then the 12 jobs queued behind it share one COMMIT.
    assert store.commits - commits_before == 2
    failed = [i for i, r in enumerate(results) if isinstance(r, Boom)]
    assert failed == [0, 4, 8]
    stored = store.run_sync(lambda txn: txn.message_versions(inbox.id))
    assert sorted(stored) == sorted(r for r in results if isinstance(r, str))
    subjects = {
        m.subject for m in store.run_sync(lambda txn: txn.get_messages(alice.id, list(stored)))
    }
    assert subjects == {f"g{i}" for i in range(12) if i % 4}


async def test_a_group_whose_transaction_is_lost_fails_every_job(
    store: SqliteStore, alice: User
) -> None:
    inbox = inbox_of(store, alice)
    gate = threading.Event()
    blocker = await hold_the_worker(store, gate)

    def sabotage(txn: Txn) -> None:
        # What SQLite does on an I/O error or a full disk: the whole transaction is gone.
        txn._conn.execute("ROLLBACK")  # type: ignore[attr-defined]
        raise Boom

    jobs = [
        asyncio.ensure_future(store.run(lambda txn: txn.add_message(inbox.id, new_message("a")))),
        asyncio.ensure_future(store.run(sabotage)),
        asyncio.ensure_future(store.run(lambda txn: txn.add_message(inbox.id, new_message("b")))),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await blocker
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {}
    # The store goes on working.
    added = await store.run(lambda txn: txn.add_message(inbox.id, new_message("c")))
    assert store.run_sync(lambda txn: txn.message_versions(inbox.id)) == {
        added.server_id: added.modseq
    }
