"""Login lockout that a guesser cannot turn against the owner (issue 19), over real sockets
from two loopback addresses: the guesser's (user, address) and address are slowed with
growing locks, the owner's right password from another address still works, and an unknown
user is answered exactly like a wrong password.

The server's login limits run on a clock the test moves (``ManualClock``): a lock ends when the
test advances past it, so a machine too loaded to send the next try within the lock's second
cannot change an answer; scrypt's cost is still timed on the real clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from natsync.server.auth import FIRST_LOCK, MAX_LOCK, Backoff
from tests.server.conftest import Client, ServerFactory, basic, manual_login_clock

GUESSER = "127.0.0.2"


@pytest.fixture
async def from_guesser() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(GUESSER, 0)))
    yield session
    await session.close()


async def options(session: aiohttp.ClientSession, client: Client, auth: str) -> tuple[int, str]:
    async with session.options(client.url, headers={"Authorization": auth}) as answer:
        return answer.status, answer.headers.get("Retry-After", "")


async def test_a_locked_out_guesser_does_not_lock_out_the_owner(
    make_client: ServerFactory, from_guesser: aiohttp.ClientSession
) -> None:
    owner = await make_client(max_failed_logins_per_user=3, max_failed_logins_per_ip=100)
    clock = manual_login_clock(owner)
    wrong = basic("alice", "guess")
    statuses = [(await options(from_guesser, owner, wrong))[0] for _ in range(3)]
    assert statuses == [401, 401, 401]  # the third failure set the first lock
    assert await options(from_guesser, owner, wrong) == (429, "1")
    # even the right password is not checked from the guesser's address while locked ...
    assert (await options(from_guesser, owner, basic()))[0] == 429
    # ... but the owner, from an address that did not fail, logs in
    assert (await options(owner.session, owner, basic()))[0] == 200
    clock.advance(FIRST_LOCK - 0.1)
    assert (await options(from_guesser, owner, wrong)) == (429, "1")  # not over yet
    clock.advance(0.2)  # now it is
    assert (await options(from_guesser, owner, wrong))[0] == 401  # a try, and a longer lock
    assert await options(from_guesser, owner, wrong) == (429, "2")
    assert (await options(owner.session, owner, basic()))[0] == 200


async def test_an_unknown_user_is_answered_like_a_wrong_password(
    make_client: ServerFactory, from_guesser: aiohttp.ClientSession
) -> None:
    client = await make_client(max_failed_logins_per_user=2, max_failed_logins_per_ip=100)
    manual_login_clock(client)
    seen = {}
    for name in ("alice", "nobody"):
        answers, times = [], []
        for _ in range(3):
            started = time.perf_counter()
            answers.append(await options(from_guesser, client, basic(name, "guess")))
            times.append(time.perf_counter() - started)
        seen[name] = answers
        # the checked tries cost one scrypt each, existing user or not
        assert min(times[:2]) > 0.01
    assert seen["alice"] == seen["nobody"] == [(401, "")] * 2 + [(429, "1")]


async def test_an_address_guessing_many_names_is_slowed_as_a_whole(
    make_client: ServerFactory, from_guesser: aiohttp.ClientSession
) -> None:
    client = await make_client(max_failed_logins_per_user=100, max_failed_logins_per_ip=3)
    manual_login_clock(client)
    for n in range(3):
        assert (await options(from_guesser, client, basic(f"user{n}", "x")))[0] == 401
    assert (await options(from_guesser, client, basic("user9", "x")))[0] == 429
    assert (await options(client.session, client, basic()))[0] == 200


def test_locks_double_up_to_the_cap_and_are_forgotten_after_the_window() -> None:
    backoff = Backoff(limit=3, window=60.0)
    now = 1000.0
    for _ in range(2):
        backoff.fail("k", now)
    assert backoff.locked_for("k", now) == 0.0
    locks = []
    for _ in range(12):
        backoff.fail("k", now)
        locks.append(backoff.locked_for("k", now))
        now += locks[-1]
    assert locks[:4] == [FIRST_LOCK, 2 * FIRST_LOCK, 4 * FIRST_LOCK, 8 * FIRST_LOCK]
    assert locks[-1] == MAX_LOCK
    assert backoff.locked_for("k", now + 60.5) == 0.0
    backoff.fail("k", now + 61)  # forgotten: this is a free failure again
    assert backoff.locked_for("k", now + 61) == 0.0
    backoff.clear("k")
    assert backoff.locked_for("other", now) == 0.0
