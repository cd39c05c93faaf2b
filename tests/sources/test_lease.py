"""The store's source lease (natsync.store step 8), on both drivers: one owner at a time,
renewal by the owner, takeover after expiry, release at a clean stop, and two processes racing
for it (the claim is one atomic statement, checked with real concurrent connections)."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

from natsync.store.api import Store, User
from tests.conftest import CREATED_AT, StoreFactory

T0 = CREATED_AT
TTL = timedelta(seconds=30)


def test_one_owner_renewal_takeover_release(store: Store, alice: User) -> None:
    def take(owner: str, at: timedelta) -> bool:
        now = T0 + at
        return store.run_sync(
            lambda t: t.take_source_lease(alice.id, "imap", owner, now, now + TTL)
        )

    assert take("p1", timedelta(0))
    assert not take("p2", timedelta(seconds=10))  # held by p1
    assert take("p1", timedelta(seconds=20))  # renewed: now held until 50 s
    assert not take("p2", timedelta(seconds=40))
    held = store.run_sync(lambda t: t.source_lease(alice.id, "imap"))
    assert held == ("p1", T0 + timedelta(seconds=20) + TTL)
    assert take("p2", timedelta(seconds=50))  # p1's lease ran out: taken over
    assert not take("p1", timedelta(seconds=51))
    # Another source of the same user is another lease.
    now = T0
    assert store.run_sync(lambda t: t.take_source_lease(alice.id, "dav", "p1", now, now + TTL))
    # Only the holder's release counts.
    store.run_sync(lambda t: t.release_source_lease(alice.id, "imap", "p1"))
    assert not take("p1", timedelta(seconds=52))
    store.run_sync(lambda t: t.release_source_lease(alice.id, "imap", "p2"))
    assert store.run_sync(lambda t: t.source_lease(alice.id, "imap")) is None
    assert take("p1", timedelta(seconds=53))


def _race(url: str, user_id: int, owner: str, start: object, out: object) -> None:
    from natsync.store import open_store

    store = open_store(url)
    try:
        start.wait()  # type: ignore[attr-defined]
        won = store.run_sync(lambda t: t.take_source_lease(user_id, "imap", owner, T0, T0 + TTL))
        out.put((owner, won))  # type: ignore[attr-defined]
    finally:
        store.close()


def test_two_processes_racing_get_one_lease(
    store_factory: StoreFactory, store_kind: str, tmp_path: Path
) -> None:
    store = store_factory(tmp_path / "race" / "natsync.db")
    alice = store.run_sync(lambda t: t.get_user("alice"))
    url = str(tmp_path / "race" / "natsync.db") if store_kind == "sqlite" else store.url
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=_race, args=(url, alice.id, f"p{n}", start, out)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    winners = [owner for owner, won in results if won]
    assert len(winners) == 1, results
    assert store.run_sync(lambda t: t.source_lease(alice.id, "imap"))[0] == winners[0]
