"""The heartbeats of held requests on one loop timer: a heap of deadlines, not a timer each.

A held Ping waits up to its heartbeat (MS-ASCMD 2.2.3.79: up to an hour). With a
``loop.call_later`` per hold, each held Ping keeps a timer handle alive for that long — about
540 bytes with uvloop's (the handle, libuv's timer, the bound method and its arguments), a
fifth of the server's Python memory per held Ping (issue 27: tracemalloc on 3,000 held). Here a
hold is one heap entry (a three-item list, ~140 bytes) and the loop has one timer, armed for
the earliest deadline.

Ending a hold early (a change, the phone gone) drops the entry's reference to its callback at
once, so nothing of the hold is kept; the emptied entry leaves the heap at its deadline, or
when emptied entries are the heap's majority (the heap is rebuilt, so phones that come and go
faster than their heartbeats cannot grow it without bound).
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Callable
from typing import Any

#: Seconds a deadline may be ahead of the loop's clock and still be due when the timer fires
#: (uvloop's timers have millisecond resolution and may fire that much early).
TIMER_SLACK = 0.001
#: Emptied entries tolerated before a rebuild is considered (below it, the waste is small).
COMPACT_AT = 1024

#: [deadline (loop time), sequence number (ties, never compared further), callback or None].
Entry = list[Any]


class Heartbeats:
    """Callbacks at their deadlines, one loop timer for all (see the module docstring)."""

    __slots__ = ("__weakref__", "_emptied", "_heap", "_loop", "_seq", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[Entry] = []
        self._seq = 0
        self._emptied = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        """Entries not yet fired nor emptied."""
        return len(self._heap) - self._emptied

    def call_later(self, delay: float, callback: Callable[[], object]) -> Entry:
        """Call *callback* in *delay* seconds (unless :meth:`cancel` is given the entry)."""
        self._seq += 1
        entry: Entry = [self._loop.time() + delay, self._seq, callback]
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._arm()
        return entry

    def cancel(self, entry: Entry) -> None:
        """It will not be called; the callback (and what it holds) is let go of now."""
        if entry[2] is None:
            return
        entry[2] = None
        self._emptied += 1
        if self._emptied > COMPACT_AT and self._emptied * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._emptied = 0
            if not self._heap and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _arm(self) -> None:
        at = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return  # already armed for sooner (an early fire re-arms)
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap, now = self._heap, self._loop.time() + TIMER_SLACK
        try:
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                callback = entry[2]
                if callback is None:
                    self._emptied -= 1
                    continue
                entry[2] = None
                try:
                    callback()
                except Exception as exc:  # one hold's failure does not hold up the others
                    self._loop.call_exception_handler(
                        {"message": "a heartbeat callback failed", "exception": exc}
                    )
        finally:
            if heap:
                self._arm()


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeats] = (
    weakref.WeakKeyDictionary()
)


def heartbeats(loop: asyncio.AbstractEventLoop) -> Heartbeats:
    """The running loop's :class:`Heartbeats` (one per loop)."""
    found = _PER_LOOP.get(loop)
    if found is None:
        found = _PER_LOOP[loop] = Heartbeats(loop)
    return found
