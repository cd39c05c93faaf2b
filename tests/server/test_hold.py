"""One live Ping per device across processes: two servers on one PostgreSQL database (each with
its own store: worker and LISTEN connections, as two `natsync server` processes have); a Ping
held on A ends at once when the same device's newer Ping or Sync reaches B. And the hold key's
place among the feed ids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from natsync.server import RunningServer, start_server
from natsync.store.api import Store
from natsync.store.feed import HOLD_KEY_BASE, LocalChangeFeed, hierarchy_key, hold_key
from natsync.wbxml import E
from tests.conftest import StoreFactory
from tests.server.conftest import BASE_CONFIG, Client, ServerFactory
from tests.server.test_http import _deliver_in
from tests.server.test_ping import ping_body, synced, until

POSTGRES_ONLY = pytest.mark.parametrize("store_kind", ["postgres"])
#: A held Ping must end within this (the notification crosses PostgreSQL: milliseconds).
PROMPT = 3.0


def test_hold_keys_are_their_own_namespace() -> None:
    key = hold_key(7, "Phone1")
    assert key == hold_key(7, "PHONE1")  # DeviceIds compare without regard to case
    assert key != hold_key(7, "phone2")
    assert key != hold_key(8, "phone1")
    assert key <= -HOLD_KEY_BASE < hierarchy_key(2**40) < 0  # never a folder or hierarchy id
    feed = LocalChangeFeed()
    sub = feed.subscribe([5, hierarchy_key(7), key])
    # Waking every watcher after missed notifications re-checks folders; it must not end holds.
    assert sorted(feed.watched()) == [hierarchy_key(7), 5]
    feed.publish([key])
    assert sub.take() == {key}
    sub.close()
    assert feed.waiting() == 0


@pytest.fixture
async def server_b(store: Store, store_factory: StoreFactory) -> AsyncIterator[RunningServer]:
    """A second server on the same database through a store of its own."""
    other = store_factory(store.path)  # type: ignore[attr-defined]
    server = await start_server(BASE_CONFIG, other)
    yield server
    await server.close()


@POSTGRES_ONLY
@pytest.mark.parametrize("newer", ["Ping", "Sync"])
async def test_a_newer_request_on_another_process_ends_the_held_ping(
    make_client: ServerFactory, store: Store, server_b: RunningServer, newer: str
) -> None:
    on_a = await make_client()
    inbox = await synced(on_a, store)
    store_b: Any = server_b.eas.store
    async with aiohttp.ClientSession() as session:
        on_b = Client(session, server_b)  # the same user and DeviceId, through B
        on_b.policy_key = on_a.policy_key
        assert (await on_b.raw("", method="OPTIONS")).status == 200
        held = asyncio.ensure_future(on_a.cmd("Ping", ping_body(600, inbox)))
        await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        assert not held.done()
        started = time.monotonic()
        if newer == "Ping":
            second = asyncio.ensure_future(on_b.cmd("Ping", ping_body(600, inbox)))
        else:
            coll = E("AirSync", "Collection", E("AirSync", "SyncKey", "0"))
            coll.add("AirSync", "CollectionId", inbox)
            body = E("AirSync", "Sync", E("AirSync", "Collections", coll))
            second = asyncio.ensure_future(on_b.cmd("Sync", body))
        answer = await asyncio.wait_for(held, PROMPT)
        assert time.monotonic() - started < PROMPT
        assert answer.tree().child_text("Status") == "1"  # ended as if its time were up
        assert store.feed.waiting() == 0  # type: ignore[attr-defined]
        assert not on_a.server.eas._holds
        if newer == "Ping":
            # The newer Ping on B is the live one: a delivery committed through A wakes it.
            await until(lambda: store_b.feed.waiting() == 1)
            await asyncio.sleep(0.2)
            assert not second.done()
            await store.run(_deliver_in)
            woken = await asyncio.wait_for(second, PROMPT)
            assert woken.tree().child_text("Status") == "2"
        else:
            assert (await asyncio.wait_for(second, PROMPT)).status == 200


@POSTGRES_ONLY
async def test_another_device_on_another_process_leaves_the_ping_alone(
    make_client: ServerFactory, store: Store, server_b: RunningServer
) -> None:
    on_a = await make_client()
    inbox = await synced(on_a, store)
    async with aiohttp.ClientSession() as session:
        other = Client(session, server_b)
        other.device = "otherphone"
        await synced(other, store)
        held = asyncio.ensure_future(on_a.cmd("Ping", ping_body(600, inbox)))
        await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
        second = asyncio.ensure_future(other.cmd("Ping", ping_body(600, inbox)))
        await until(lambda: server_b.eas.store.feed.waiting() == 1)  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
        assert not held.done()
        await store.run(_deliver_in)
        for answer in await asyncio.wait_for(asyncio.gather(held, second), PROMPT):
            assert answer.tree().child_text("Status") == "2"


@POSTGRES_ONLY
async def test_only_a_request_that_ends_a_recorded_hold_wakes_the_other_process(
    make_client: ServerFactory, store: Store, server_b: RunningServer
) -> None:
    """Bringing a phone up (Syncs, then its first Ping) announces nothing to other processes:
    no hold of the device is recorded. The request after a held Ping announces its end."""
    store_b: Any = server_b.eas.store
    on_a = await make_client()
    inbox = await synced(on_a, store)
    coll = E("AirSync", "Collection", E("AirSync", "SyncKey", "0"))
    coll.add("AirSync", "CollectionId", inbox)
    sync = E("AirSync", "Sync", E("AirSync", "Collections", coll))
    await asyncio.sleep(0.3)  # whatever the setup announced has arrived
    base = store_b.notifications
    assert (await on_a.cmd("Sync", sync)).status == 200
    held = asyncio.ensure_future(on_a.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    assert store_b.notifications == base  # neither the Sync nor the Ping announced
    assert (await on_a.cmd("Sync", sync)).status == 200  # ends the held Ping: announced
    assert (await asyncio.wait_for(held, PROMPT)).tree().child_text("Status") == "1"
    await until(lambda: store_b.notifications == base + 1)
