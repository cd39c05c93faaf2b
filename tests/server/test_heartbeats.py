"""natsync.server.heartbeats: held requests' heartbeats on one loop timer, on a real loop."""

from __future__ import annotations

import asyncio

import pytest

from natsync.server.heartbeats import COMPACT_AT, Heartbeats, heartbeats


async def test_callbacks_run_at_their_deadlines_in_order_and_a_cancelled_one_never() -> None:
    beats = Heartbeats(asyncio.get_running_loop())
    fired: list[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    at: dict[str, float] = {}

    def note(name: str) -> None:
        fired.append(name)
        at[name] = loop.time() - start

    beats.call_later(0.15, lambda: note("c"))
    beats.call_later(0.05, lambda: note("a"))  # sooner than the armed timer: re-armed
    gone = beats.call_later(0.10, lambda: note("b"))
    beats.call_later(0.10, lambda: note("b2"))
    beats.cancel(gone)
    assert gone[2] is None  # the callback is let go of at once
    assert len(beats) == 3
    await asyncio.sleep(0.3)
    assert fired == ["a", "b2", "c"]
    assert at["a"] >= 0.049
    assert at["b2"] >= 0.099
    assert at["c"] >= 0.149
    assert len(beats) == 0


async def test_a_failing_callback_does_not_hold_up_the_others() -> None:
    loop = asyncio.get_running_loop()
    seen: list[object] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
    beats = Heartbeats(loop)
    fired: list[int] = []

    def fail() -> None:
        raise ValueError("boom")

    beats.call_later(0.02, fail)
    beats.call_later(0.02, lambda: fired.append(1))
    beats.call_later(0.05, lambda: fired.append(2))
    await asyncio.sleep(0.15)
    assert fired == [1, 2]
    assert [type(e) for e in seen] == [ValueError]


async def test_emptied_entries_are_dropped_once_they_are_the_majority() -> None:
    beats = Heartbeats(asyncio.get_running_loop())
    entries = [beats.call_later(3600.0, lambda: None) for _ in range(COMPACT_AT * 4)]
    for i, entry in enumerate(entries[:-5]):
        beats.cancel(entry)
        # phones that come and go faster than their heartbeats cannot grow it: the emptied
        # entries never outnumber both the live ones and COMPACT_AT
        live = len(entries) - i - 1
        assert len(beats._heap) - live <= max(COMPACT_AT, live) + 1
    assert len(beats) == 5
    assert len(beats._heap) <= 5 + COMPACT_AT
    for entry in entries[-5:]:
        beats.cancel(entry)
        beats.cancel(entry)  # twice: no harm
    assert len(beats) == 0


async def test_one_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert heartbeats(loop) is heartbeats(loop)


@pytest.mark.parametrize("delay", [0.0, 0.001])
async def test_a_deadline_already_due_fires_on_the_next_turn(delay: float) -> None:
    beats = Heartbeats(asyncio.get_running_loop())
    fired: list[float] = []
    beats.call_later(delay, lambda: fired.append(delay))
    await asyncio.sleep(0.05)
    assert fired == [delay]
