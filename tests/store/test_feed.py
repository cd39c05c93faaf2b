"""The change feed: the right waiters wake after commit, others sleep, releases are immediate."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from natsync.store.api import FolderType, Store, Txn, User
from natsync.store.feed import LocalChangeFeed, hierarchy_key
from natsync.store.sqlite import SqliteStore
from tests.store.helpers import new_message


def folder_ids(store: Store, user: User) -> tuple[int, int]:
    def ids(txn: Txn) -> tuple[int, int]:
        return (
            txn.folder_by_type(user.id, FolderType.INBOX).id,
            txn.folder_by_type(user.id, FolderType.DRAFTS).id,
        )

    return store.run_sync(ids)


async def test_a_commit_wakes_the_watchers_of_that_folder_only(store: Store, alice: User) -> None:
    inbox, drafts = folder_ids(store, alice)
    with (
        store.changes.subscribe([inbox]) as on_inbox,
        store.changes.subscribe([drafts]) as on_drafts,
    ):
        waiting_inbox = asyncio.create_task(on_inbox.wait(5))
        waiting_drafts = asyncio.create_task(on_drafts.wait(0.3))
        await asyncio.sleep(0)
        await store.run(lambda txn: txn.add_message(inbox, new_message()))
        assert await waiting_inbox == {inbox}
        assert await waiting_drafts == set()


async def test_timeout_returns_an_empty_set_in_time(store: Store, alice: User) -> None:
    inbox, _ = folder_ids(store, alice)
    with store.changes.subscribe([inbox]) as subscription:
        started = time.monotonic()
        assert await subscription.wait(0.05) == set()
        assert 0.04 < time.monotonic() - started < 1.0


async def test_a_rolled_back_transaction_wakes_nobody(store: Store, alice: User) -> None:
    inbox, _ = folder_ids(store, alice)

    def fail(txn: Txn) -> None:
        txn.add_message(inbox, new_message())
        raise RuntimeError("no")

    with store.changes.subscribe([inbox]) as subscription:
        with pytest.raises(RuntimeError):
            await store.run(fail)
        assert await subscription.wait(0.05) == set()


async def test_changes_before_wait_are_kept_for_the_next_wait(store: Store, alice: User) -> None:
    inbox, drafts = folder_ids(store, alice)
    with store.changes.subscribe([inbox, drafts]) as subscription:
        await store.run(lambda txn: txn.add_message(inbox, new_message()))
        await store.run(lambda txn: txn.add_message(drafts, new_message()))
        assert await subscription.wait(5) == {inbox, drafts}
        assert await subscription.wait(0.01) == set()


async def test_run_sync_in_another_thread_wakes_a_loop_bound_waiter(
    store: SqliteStore, alice: User
) -> None:
    inbox, _ = folder_ids(store, alice)
    with store.changes.subscribe([inbox]) as subscription:
        waiting = asyncio.create_task(subscription.wait(5))
        await asyncio.sleep(0)
        writer = threading.Thread(
            target=lambda: store.run_sync(lambda txn: txn.add_message(inbox, new_message()))
        )
        writer.start()
        assert await waiting == {inbox}
        writer.join()


async def test_close_releases_at_once_and_ends_a_wait(store: SqliteStore, alice: User) -> None:
    inbox, _ = folder_ids(store, alice)
    subscription = store.changes.subscribe([inbox])
    assert store.feed.waiting() == 1
    waiting = asyncio.create_task(subscription.wait(5))
    await asyncio.sleep(0)
    subscription.close()
    assert store.feed.waiting() == 0
    assert await asyncio.wait_for(waiting, 1) == set()
    await store.run(lambda txn: txn.add_message(inbox, new_message()))
    assert await subscription.wait(0.01) == set()


async def test_hierarchy_changes_fire_the_users_hierarchy_key(store: Store, alice: User) -> None:
    inbox, _ = folder_ids(store, alice)
    with store.changes.subscribe([inbox, hierarchy_key(alice.id)]) as subscription:
        await store.run(lambda txn: txn.create_folder(alice.id, "0", "New", FolderType.USER_MAIL))
        assert await subscription.wait(5) == {hierarchy_key(alice.id)}


async def test_thousands_of_waiters_cost_one_lookup_per_changed_folder() -> None:
    feed = LocalChangeFeed()
    subscriptions = [feed.subscribe([n, n + 1]) for n in range(0, 10_000, 2)]
    waits = [asyncio.create_task(s.wait(5)) for s in subscriptions]
    await asyncio.sleep(0)
    started = time.perf_counter()
    feed.publish([42])
    elapsed = time.perf_counter() - started
    assert await waits[21] == {42}
    assert elapsed < 0.01
    assert not any(w.done() for i, w in enumerate(waits) if i != 21)
    for subscription in subscriptions:
        subscription.close()
    assert feed.waiting() == 0
    done = await asyncio.gather(*waits)
    assert all(result == set() for i, result in enumerate(done) if i != 21)
