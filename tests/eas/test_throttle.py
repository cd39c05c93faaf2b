"""natsync.eas.throttle: per-device token buckets with ``now`` passed in."""

from __future__ import annotations

from natsync.eas.throttle import MAX_TRACKED_DEVICES, Budgets


def test_budget_refills_evenly_and_tells_when_to_retry() -> None:
    budgets = Budgets(requests=3, window=30.0)  # one request back every 10 s
    assert all(budgets.take("alice", "p1", 0.0).allowed for _ in range(3))
    refused = budgets.take("alice", "p1", 0.0)
    assert not refused.allowed
    assert refused.retry_after == 10
    assert refused.first  # the first refusal of an episode is logged
    again = budgets.take("alice", "p1", 4.0)
    assert not again.allowed
    assert not again.first  # ... the next ones are not
    assert again.retry_after == 6
    assert budgets.take("alice", "p1", 10.5).allowed  # one token back
    assert budgets.take("alice", "P2", 10.5).allowed  # another device has its own budget
    assert budgets.take("alice", "p1", 1000.0).allowed  # full again (capped at 3)
    assert budgets.take("alice", "p1", 1000.0).allowed
    assert budgets.take("alice", "p1", 1000.0).allowed
    assert not budgets.take("alice", "p1", 1000.0).allowed


def test_off_and_allowlist() -> None:
    off = Budgets(requests=0, window=60.0)
    assert not off.enabled
    assert all(off.take("alice", "p1", 0.0).allowed for _ in range(1000))
    exempt = Budgets(requests=1, window=60.0, exempt=frozenset({"Admin", "TESTRIG"}))
    assert all(exempt.take("admin", "x", 0.0).allowed for _ in range(10))
    assert all(exempt.take("bob", "testrig", 0.0).allowed for _ in range(10))
    assert exempt.take("bob", "phone", 0.0).allowed
    assert not exempt.take("bob", "phone", 0.0).allowed


def test_tracked_devices_are_bounded() -> None:
    budgets = Budgets(requests=1, window=60.0)
    for n in range(MAX_TRACKED_DEVICES + 10):
        budgets.take("u", f"d{n}", 0.0)
    assert len(budgets._buckets) == MAX_TRACKED_DEVICES
    # The oldest were forgotten: d0 starts again with a full bucket.
    assert budgets.take("u", "d0", 0.0).allowed
