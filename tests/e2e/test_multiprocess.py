"""Issue 11's multi-process test: several `natsync server` processes, one PostgreSQL database.

The processes are real (tests/e2e/cluster.py: ``natsync server --config FILE``, loopback, free
ports) and share a fresh database of the session's PostgreSQL server (tests/pg.py). A phone is
the natsync client; "moving" it from process A to process B is what a balancer does: the same
DeviceId, the same credentials, the same remembered SyncKeys (one DeviceState), another address.

* mail delivered through B's SMTP wakes the Ping D holds on A, and D's Sync on A gets the
  message exactly once;
* D's new Ping (or Sync) on B ends the Ping D holds on A at once (A answers Status 1 long
  before the heartbeat), and the new Ping on B is woken by mail delivered through A;
* any process answers any request of any device: FolderSync, Sync and a retransmitted SyncKey
  alternate between A and B, in one SyncKey chain;
* SIGKILL of A in the middle of a burst of deliveries (through A and B) while D holds a Ping on
  A: D resyncs on B with the keys it had and holds every message that got a 250 exactly once
  (a delivery cut off mid-transaction by the kill got no 250: it is there at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from natsync.errors import NatsyncError
from natsync.store import open_store
from natsync.store.api import FolderType
from tests import pg
from tests.e2e.cluster import (
    DOMAIN,
    HEARTBEAT,
    PROMPT,
    SETTLE,
    ServerProcess,
    Tasks,
    database,
    deliver,
    message,
    phone,
    ready_inbox,
    same_device,
    servers,
    timed,
)

pytestmark = pytest.mark.slow

#: Messages delivered through each process in the kill test, and how many A acknowledges
#: before it is killed.
BURST = 30
KILL_AFTER = 8
#: Seconds the kill test's burst may take at most.
BURST_TIMEOUT = 60.0


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(
    pg_server: pg.PgServer, tmp_path_factory: pytest.TempPathFactory, alice_password_hash: str
) -> Iterator[list[ServerProcess]]:
    """Processes A and B on one database, shared by the tests that kill nothing (each test
    uses its own user, so their mail does not mix). Users log in with alice's password (its
    scrypt hash is computed once per session)."""
    users = ["wake", "ping", "sync", "chain"]
    with (
        database(pg_server, users, alice_password_hash) as url,
        servers(tmp_path_factory.mktemp("pair"), url, 2) as running,
    ):
        yield running
        for server in running:
            assert server.alive(), server.log_tail()


# -- push across processes -----------------------------------------------------------------------


async def test_mail_through_b_wakes_the_ping_held_on_a(pair: list[ServerProcess]) -> None:
    a, b = pair
    async with phone(a, "wake") as on_a, Tasks() as tasks:
        inbox = await ready_inbox(on_a)
        held = tasks.start(on_a.ping([inbox], HEARTBEAT))
        await asyncio.sleep(SETTLE)
        assert not held.done(), "the Ping answered before any mail arrived"
        started = time.monotonic()
        await deliver(b, "wake", "through B")
        changed, _ = await timed(held, PROMPT)
        woke_after = time.monotonic() - started
        assert changed == [inbox]  # Status 2 naming the Inbox
        assert woke_after < PROMPT

        got = await on_a.sync(inbox)
        assert [item.subject for item in got.added] == ["through B"]
        assert got.duplicates == []
        again = await on_a.sync(inbox)
        assert again.added == []


@pytest.mark.parametrize("newer", ["Ping", "Sync"])
async def test_newer_request_on_b_ends_the_ping_held_on_a(
    pair: list[ServerProcess], newer: str
) -> None:
    a, b = pair
    user = newer.lower()
    async with phone(a, user) as on_a, same_device(on_a, b) as on_b, Tasks() as tasks:
        inbox = await ready_inbox(on_a)
        await on_b.options()  # B's connection is open too: the newer request goes out at once
        held = tasks.start(on_a.ping([inbox], HEARTBEAT))
        await asyncio.sleep(SETTLE)
        assert not held.done()
        started = time.monotonic()
        if newer == "Ping":
            newer_task: asyncio.Task[Any] = tasks.start(on_b.ping([inbox], HEARTBEAT))
        else:
            newer_task = tasks.start(on_b.sync(inbox))
        changed, _ = await timed(held, PROMPT)
        ended_after = time.monotonic() - started
        assert changed == []  # Status 1: ended as if its heartbeat were up, nothing pending
        assert ended_after < PROMPT < HEARTBEAT

        if newer == "Ping":
            # The newer Ping is the live one: mail through A wakes it on B.
            await asyncio.sleep(SETTLE)
            assert not newer_task.done()
            await deliver(a, user, "through A")
            woken, _ = await timed(newer_task, PROMPT)
            assert woken == [inbox]
            got = await on_b.sync(inbox)
            assert [item.subject for item in got.added] == ["through A"]
        else:
            synced, _ = await timed(newer_task, PROMPT)
            assert synced.added == []


async def test_any_process_answers_any_request_in_one_synckey_chain(
    pair: list[ServerProcess],
) -> None:
    a, b = pair
    async with phone(a, "chain") as on_a, same_device(on_a, b) as on_b:
        await on_a.folder_sync()  # provisions and FolderSyncs on A
        inbox = on_a.folder(type=int(FolderType.INBOX)).server_id
        first = await on_b.sync(inbox)  # the first SyncKey comes from B
        assert first.added == []
        assert not first.reset

        for n in range(3):
            await deliver(a, "chain", f"chain {n}")
        on_a_got = await on_a.sync(inbox)
        assert sorted(i.subject for i in on_a_got.added) == ["chain 0", "chain 1", "chain 2"]

        # A retransmission: A's answer is "lost", the phone sends the same SyncKey again, to B.
        # The previous key stays valid across processes and gets the same items again.
        for n in range(3, 5):
            await deliver(b, "chain", f"chain {n}")
        coll = on_a.state.collection(inbox)
        key_before, ids_before = coll.sync_key, set(coll.server_ids)
        via_a = await on_a.sync(inbox)
        coll.sync_key, coll.server_ids = key_before, set(ids_before)
        via_b = await on_b.sync(inbox)
        assert not via_b.reset
        assert sorted(i.server_id for i in via_b.added) == sorted(i.server_id for i in via_a.added)
        assert sorted(i.subject for i in via_b.added) == ["chain 3", "chain 4"]

        # The folder hierarchy's key chain too: a folder made on B, FolderSync on A.
        made = await on_b.folder_create("Made on B")
        hierarchy = await on_a.folder_sync()
        assert hierarchy.added == []  # the device already knows it, from B's answer
        assert on_a.state.folders[made.server_id].display_name == "Made on B"
        assert on_b.state.collection(inbox).server_ids == {
            i.server_id for i in [*on_a_got.added, *via_b.added]
        }


# -- a process dies ------------------------------------------------------------------------------


async def test_killing_a_mid_burst_loses_and_duplicates_nothing(
    pg_server: pg.PgServer, tmp_path: Path, alice_password_hash: str
) -> None:
    user = "burst"
    with (
        database(pg_server, [user], alice_password_hash) as url,
        servers(tmp_path, url, 2) as (a, b),
    ):
        async with phone(a, user) as on_a, same_device(on_a, b) as on_b, Tasks() as tasks:
            inbox = await ready_inbox(on_a)
            acked: list[str] = []
            cut: list[str] = []  # sent to A, no 250: the kill interrupted the transaction
            seen: list[str] = []  # every subject the phone was handed, in order
            duplicates: list[str] = []
            moved: list[str] = []  # why the phone left A
            a_acked_enough = asyncio.Event()
            burst_over = False
            caught_up = asyncio.Event()  # the burst is over and the phone has every 250'd mail

            def check_caught_up() -> None:
                if burst_over and set(acked) <= set(seen):
                    caught_up.set()

            async def through(server: ServerProcess, prefix: str) -> None:
                smtp = aiosmtplib.SMTP(
                    hostname=server.smtp_host, port=server.smtp_port, timeout=10,
                    validate_certs=False,  # opportunistic STARTTLS, as a sending MTA does
                )  # fmt: skip
                await smtp.connect()
                for n in range(BURST):
                    subject = f"{prefix} {n}"
                    try:
                        await smtp.sendmail(
                            "sender@remote.test", [f"{user}@{DOMAIN}"], message(user, subject)
                        )
                    except (aiosmtplib.SMTPException, OSError):
                        cut.append(subject)
                        return  # the process is gone; the sender would retry later
                    acked.append(subject)
                    if prefix == "A" and n + 1 == KILL_AFTER:
                        a_acked_enough.set()
                with contextlib.suppress(aiosmtplib.SMTPException):
                    await smtp.quit()

            async def device() -> None:
                """Ping; on a change Sync; when A is gone, continue on B with the same keys."""
                client = on_a
                while True:
                    try:
                        changed = await client.ping([inbox], HEARTBEAT)
                        if changed:
                            got = await client.sync(inbox)
                            seen.extend(item.subject for item in got.added)
                            duplicates.extend(got.duplicates)
                            check_caught_up()
                    except NatsyncError as exc:
                        if client is on_b:
                            raise
                        moved.append(exc.message)
                        client = on_b

            async def killer() -> None:
                await a_acked_enough.wait()
                await asyncio.to_thread(a.kill)

            phone_task = tasks.start(device())
            await asyncio.sleep(SETTLE)
            await asyncio.wait_for(
                asyncio.gather(through(a, "A"), through(b, "B"), killer()), BURST_TIMEOUT
            )
            assert not a.alive()
            assert len(acked) >= BURST + KILL_AFTER
            # Let the phone (now on B) catch up, then stop it and Sync to the end on B.
            burst_over = True
            check_caught_up()
            with contextlib.suppress(TimeoutError):  # what is missing is reported below
                await asyncio.wait_for(caught_up.wait(), PROMPT * 2)
            phone_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await phone_task
            final = await on_b.sync(inbox)
            seen.extend(item.subject for item in final.added)
            duplicates.extend(final.duplicates)

        assert len(moved) == 1, moved
        assert "cannot talk to" in moved[0]  # A's Ping was cut by the kill
        assert duplicates == []
        for subject in acked:
            assert seen.count(subject) == 1, subject
        for subject in cut:
            assert seen.count(subject) <= 1, subject
        assert len(seen) == len(set(seen))
        # What the phone holds is exactly what the database holds.
        store = open_store(url)
        try:
            owner = store.run_sync(lambda txn: txn.get_user(user))
            assert owner is not None
            folder = store.run_sync(lambda txn: txn.folder_by_type(owner.id, FolderType.INBOX))
            stored = store.run_sync(lambda txn: txn.message_versions(folder.id))
        finally:
            store.close()
        assert len(stored) == len(seen)
        assert on_b.state.collection(inbox).server_ids == set(stored)
        assert b.alive(), b.log_tail()
