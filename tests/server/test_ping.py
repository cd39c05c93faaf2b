"""Ping (MS-ASCMD 2.2.1.13) against the real server over real sockets: every status, the
one-live-Ping rule, release on disconnect (the feed's waiter count returns to zero) and the cap
that keeps the heartbeat under the path's idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from natsync.config import ServerConfig
from natsync.errors import ConfigError, NatsyncError
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element
from tests.eas.helpers import folder_id
from tests.server.conftest import Client, ServerFactory
from tests.server.test_http import _deliver_in

PG = "Ping"
AS = "AirSync"


def ping_body(heartbeat: int | None, *folders: str) -> Element:
    root = E(PG, "Ping")
    if heartbeat is not None:
        root.add(PG, "HeartbeatInterval", heartbeat)
    if folders:
        items = (E(PG, "Folder", E(PG, "Id", f), E(PG, "Class", "Email")) for f in folders)
        root.append(E(PG, "Folders", *items))
    return root


async def status(client: Client, body: Element | None) -> Element:
    answer = await client.cmd("Ping", body)
    assert answer.status == 200
    return answer.tree()


async def synced(client: Client, store: Store) -> str:
    """Provision, then Sync the inbox twice (SyncKey 0, then the real key): the device has
    seen everything, so a Ping on the inbox waits."""
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    key = "0"
    for _ in range(2):
        coll = E(AS, "Collection", E(AS, "SyncKey", key), E(AS, "CollectionId", inbox))
        tree = (await client.cmd("Sync", E(AS, "Sync", E(AS, "Collections", coll)))).tree()
        found = tree.find("Collections")
        if found is not None and (c := found.find("Collection")) is not None:
            key = c.child_text("SyncKey") or key
    return inbox


async def until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _new_folder(txn: Txn) -> None:
    user = txn.get_user("alice")
    assert user is not None
    txn.create_folder(user.id, "0", "Projects", FolderType.USER_MAIL)


async def test_heartbeat_out_of_range_is_status_5_with_the_limit(
    make_client: ServerFactory, store: Store
) -> None:
    client = await make_client(heartbeat_min=100, heartbeat_max=200)
    inbox = await synced(client, store)
    low = await status(client, ping_body(99, inbox))
    assert (low.child_text("Status"), low.child_text("HeartbeatInterval")) == ("5", "100")
    high = await status(client, ping_body(201, inbox))
    assert (high.child_text("Status"), high.child_text("HeartbeatInterval")) == ("5", "200")


async def test_too_many_folders_is_status_6_with_max_folders(client: Client, store: Store) -> None:
    from natsync.eas.ping import MAX_FOLDERS

    await client.provision()
    tree = await status(client, ping_body(600, *(str(i) for i in range(MAX_FOLDERS + 1))))
    assert tree.child_text("Status") == "6"
    assert tree.child_text("MaxFolders") == str(MAX_FOLDERS)


async def test_empty_ping_without_history_is_3_then_reuses_the_last_ping(
    make_client: ServerFactory, store: Store
) -> None:
    client = await make_client(heartbeat_min=1)
    inbox = await synced(client, store)
    assert (await status(client, None)).child_text("Status") == "3"
    # Folders without a heartbeat and nothing remembered: missing parameters too.
    assert (await status(client, ping_body(None, inbox))).child_text("Status") == "3"
    started = asyncio.get_running_loop().time()
    assert (await status(client, ping_body(1, inbox))).child_text("Status") == "1"
    # The empty Ping repeats heartbeat (1 s) and folders: it expires after a second ...
    assert (await status(client, None)).child_text("Status") == "1"
    assert asyncio.get_running_loop().time() - started >= 2.0
    # ... and it watches the inbox: a delivery ends it with Status 2 naming the inbox.
    held = asyncio.ensure_future(client.cmd("Ping", None))
    await asyncio.sleep(0.2)
    await store.run(_deliver_in)
    tree = (await asyncio.wait_for(held, 5)).tree()
    assert tree.child_text("Status") == "2"
    found = tree.find("Folders")
    assert found is not None
    assert [f.text() for f in found.findall("Folder")] == [inbox]


async def test_malformed_ping_is_status_4(client: Client, store: Store) -> None:
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    bad_heartbeat = E(PG, "Ping", E(PG, "HeartbeatInterval", "soon"))
    bad_heartbeat.append(ping_body(None, inbox).children[0])
    assert (await status(client, bad_heartbeat)).child_text("Status") == "4"
    wrong_root = E(AS, "Sync", E(AS, "Collections"))
    assert (await status(client, wrong_root)).child_text("Status") == "4"


async def test_hierarchy_change_is_status_7_at_once_and_while_waiting(
    make_client: ServerFactory, store: Store
) -> None:
    client = await make_client(heartbeat_min=1)
    inbox = await synced(client, store)
    fs = await client.cmd(
        "FolderSync", E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))
    )
    fs_key = fs.tree().child_text("SyncKey") or ""
    assert fs_key
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(60, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    await store.run(_new_folder)
    tree = (await asyncio.wait_for(held, 5)).tree()
    assert tree.child_text("Status") == "7"
    # The device has not run FolderSync since: the next Ping is told at once.
    assert (await status(client, ping_body(60, inbox))).child_text("Status") == "7"
    # A folder the device does not know: Status 7 as well.
    assert (await status(client, ping_body(60, "no-such-folder"))).child_text("Status") == "7"


async def test_server_error_is_status_8(
    client: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from natsync.eas import ping

    inbox = await synced(client, store)

    def broken(txn: Txn, wait: Any) -> set[int]:
        raise NatsyncError("the database went away")

    monkeypatch.setattr(ping, "changed_since", broken)
    tree = await status(client, ping_body(600, inbox))
    assert tree.child_text("Status") == "8"
    assert store.feed.waiting() == 0  # type: ignore[attr-defined]


async def test_change_before_the_ping_arrived_answers_at_once(client: Client, store: Store) -> None:
    inbox = await synced(client, store)
    await store.run(_deliver_in)  # after the device's last Sync, before its Ping
    tree = await asyncio.wait_for(status(client, ping_body(600, inbox)), 2)
    assert tree.child_text("Status") == "2"


async def test_a_sync_from_the_same_device_ends_its_ping(client: Client, store: Store) -> None:
    inbox = await synced(client, store)
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    coll = E(AS, "Collection", E(AS, "SyncKey", "0"), E(AS, "CollectionId", inbox))
    await client.cmd("Sync", E(AS, "Sync", E(AS, "Collections", coll)))
    tree = (await asyncio.wait_for(held, 2)).tree()
    assert tree.child_text("Status") == "1"
    assert store.feed.waiting() == 0  # type: ignore[attr-defined]


async def test_another_device_does_not_end_the_ping(
    make_client: ServerFactory, store: Store
) -> None:
    client = await make_client()
    inbox = await synced(client, store)
    other = await make_client()
    other.device = "otherphone"
    await synced(other, store)
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    second = asyncio.ensure_future(other.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 2)  # type: ignore[attr-defined]
    assert not held.done()
    await store.run(_deliver_in)
    for answer in await asyncio.wait_for(asyncio.gather(held, second), 5):
        assert answer.tree().child_text("Status") == "2"


async def test_newer_ping_ends_older_at_once_even_before_validation(
    client: Client, store: Store
) -> None:
    inbox = await synced(client, store)
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(600, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    # The newer Ping is invalid (heartbeat too short); the older one still ends at once.
    newer = await status(client, ping_body(1, inbox))
    assert newer.child_text("Status") == "5"
    assert (await asyncio.wait_for(held, 2)).tree().child_text("Status") == "1"
    assert store.feed.waiting() == 0  # type: ignore[attr-defined]


async def test_client_going_away_releases_everything(client: Client, store: Store) -> None:
    inbox = await synced(client, store)
    eas = client.server.eas
    tasks_before = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as session:
        phone = Client(session, client.server)
        phone.policy_key = client.policy_key
        held = asyncio.ensure_future(phone.cmd("Ping", ping_body(600, inbox)))
        await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
        assert eas._holds
        held.cancel()  # the phone goes away mid-Ping: its connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await held
    await until(lambda: store.feed.waiting() == 0)  # type: ignore[attr-defined]
    assert not eas._holds
    # No handler task is left behind for the dead connection.
    await until(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def test_path_idle_timeout_caps_the_heartbeat_and_says_so(
    make_client: ServerFactory, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await make_client(max_idle_path_seconds=300)
    assert "Ping heartbeat accepted: 60..295 s (capped from 3540 s" in caplog.text
    inbox = await synced(client, store)
    tree = await status(client, ping_body(1800, inbox))
    assert (tree.child_text("Status"), tree.child_text("HeartbeatInterval")) == ("5", "295")
    assert "Ping heartbeat 1800 s of device srvphone capped to 295 s" in caplog.text
    held = asyncio.ensure_future(client.cmd("Ping", ping_body(295, inbox)))
    await until(lambda: store.feed.waiting() == 1)  # type: ignore[attr-defined]
    await store.run(_deliver_in)
    assert (await asyncio.wait_for(held, 5)).tree().child_text("Status") == "2"


def test_path_cap_config() -> None:
    base = ServerConfig()
    assert base.heartbeat_cap == 3540
    assert replace(base, max_idle_path_seconds=7200).heartbeat_cap == 3540
    assert replace(base, max_idle_path_seconds=600).heartbeat_cap == 595
    with pytest.raises(ConfigError, match=r"lower server\.heartbeat_min"):
        replace(base, max_idle_path_seconds=60)
    with pytest.raises(ConfigError, match="max_idle_path_seconds must be >= 0"):
        replace(base, max_idle_path_seconds=-1)
    assert replace(base, max_idle_path_seconds=60, heartbeat_min=30).heartbeat_cap == 55
