"""Issue 11, through the edge: `natsync edge` balancing over two `natsync server` processes.

Both servers speak TLS with certificates from one private CA and share a PostgreSQL database;
the edge (``backends = [...]``, quick health checks) verifies them against that CA. The phone
only knows the edge's address. SIGKILL one server while the phone holds a Ping: the phone's next
requests, to the same address, are answered by the other server, continue its SyncKey chain and
bring every message exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from natsync.errors import NatsyncError
from tests import pg
from tests.e2e.cluster import (
    HEARTBEAT,
    PROMPT,
    SETTLE,
    Pki,
    Tasks,
    database,
    deliver,
    edge,
    phone,
    ready_inbox,
    servers,
)

pytestmark = pytest.mark.slow


async def test_through_the_edge_a_killed_server_is_taken_out_and_nothing_is_duplicated(
    pg_server: pg.PgServer, tmp_path: Path, alice_password_hash: str
) -> None:
    """`natsync edge` balancing over two TLS servers: SIGKILL one, and the phone's next
    requests (through the same edge address) succeed on the other, without duplicates."""
    user = "edge"
    pki = Pki.make(tmp_path / "pki")
    with (
        database(pg_server, [user], alice_password_hash) as url,
        servers(tmp_path / "servers", url, 2, pki=pki) as (a, b),
        edge(tmp_path / "edge", [a, b], pki) as front,
    ):
        async with phone(front, user, ca_file=pki.ca_file) as device, Tasks() as tasks:
            inbox = await ready_inbox(device)
            for n in range(3):
                await deliver(a if n % 2 else b, user, f"before {n}")
            got = await device.sync(inbox)
            assert sorted(i.subject for i in got.added) == ["before 0", "before 1", "before 2"]

            held = tasks.start(device.ping([inbox], HEARTBEAT))
            await asyncio.sleep(SETTLE)
            a.kill()
            await deliver(b, user, "after the kill")
            # The Ping ends either way: woken on B, or cut with A (the edge answers 502).
            with contextlib.suppress(NatsyncError):
                await asyncio.wait_for(held, PROMPT)
            for n in range(3):  # every request from now on goes to B, and succeeds
                if n:
                    await deliver(b, user, f"after {n}")
                    assert await device.ping([inbox], HEARTBEAT) == [inbox]
                synced = await device.sync(inbox)
                assert synced.duplicates == []
                assert not synced.reset
                expected = "after the kill" if n == 0 else f"after {n}"
                assert [i.subject for i in synced.added] == [expected]
        assert b.alive(), b.log_tail()
        assert front.alive(), front.log_tail()
