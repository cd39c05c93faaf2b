"""The in-process change feed: wakes waiting Pings when a transaction changed their folders.

A server holds thousands of Pings, each waiting on a handful of folders, and a commit touches a
few folders; so the feed keeps a dict ``folder id -> set of subscriptions`` and a publish costs
one lookup per changed folder, not one per waiter. Publishing happens in the store's worker
thread after COMMIT; a subscription is bound to the event loop that awaits it and is woken with
``call_soon_threadsafe``, so it works whichever thread publishes (``Store.run`` or ``run_sync``).

Changes that arrive while nobody is waiting are kept on the subscription and returned by the
next ``wait``: a Ping that subscribes, then checks its folders, then waits, misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable

from natsync.store.api import Subscription


def hierarchy_key(user_id: int) -> int:
    """The feed id that fires when *user_id*'s folder hierarchy changes (create/rename/delete).

    Subscribe to it beside the folder ids (a Ping answers Status 7 when the hierarchy changed,
    MS-ASCMD 2.2.3.177.10). Folder ids are positive, so negative ids cannot collide with them.
    """
    return -user_id


class LocalChangeFeed:
    """A :class:`natsync.store.api.ChangeFeed` for the processes of one store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_folder: dict[int, set[LocalSubscription]] = {}

    def subscribe(self, folder_ids: Iterable[int]) -> LocalSubscription:
        subscription = LocalSubscription(self, frozenset(folder_ids))
        with self._lock:
            for folder_id in subscription.folder_ids:
                self._by_folder.setdefault(folder_id, set()).add(subscription)
        return subscription

    def publish(self, folder_ids: Iterable[int]) -> None:
        """Tell every subscription watching one of *folder_ids* (any thread may call this)."""
        to_wake: dict[LocalSubscription, set[int]] = {}
        with self._lock:
            for folder_id in folder_ids:
                for subscription in self._by_folder.get(folder_id, ()):
                    to_wake.setdefault(subscription, set()).add(folder_id)
            for subscription, changed in to_wake.items():
                subscription._deliver(changed)  # under the feed's lock

    def watched(self) -> list[int]:
        """Every id some subscription watches (to wake them all after missed notifications)."""
        with self._lock:
            return list(self._by_folder)

    def waiting(self) -> int:
        """How many subscriptions are open (for metrics and tests)."""
        with self._lock:
            return len({s for subs in self._by_folder.values() for s in subs})

    def _remove(self, subscription: LocalSubscription) -> None:
        with self._lock:
            for folder_id in subscription.folder_ids:
                subs = self._by_folder.get(folder_id)
                if subs is not None:
                    subs.discard(subscription)
                    if not subs:
                        del self._by_folder[folder_id]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LocalSubscription:
    """One waiter; cheap: a frozenset, a set of pending ids and at most one future."""

    __slots__ = ("_closed", "_feed", "_future", "_loop", "_pending", "folder_ids")

    def __init__(self, feed: LocalChangeFeed, folder_ids: frozenset[int]) -> None:
        self._feed = feed
        self.folder_ids = folder_ids
        self._pending: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None
        self._closed = False

    def _deliver(self, changed: set[int]) -> None:
        """Record *changed* and wake the waiter; called with the feed's lock held."""
        self._pending |= changed
        future, loop = self._future, self._loop
        if future is not None and loop is not None:
            # RuntimeError: the waiter's loop is closed, nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    async def wait(self, timeout: float) -> set[int]:
        """The ids of the folders that changed, or an empty set when *timeout* seconds passed."""
        loop = asyncio.get_running_loop()
        with self._feed._lock:  # one lock orders deliver against this check
            if self._pending or self._closed:
                return self._take()
            future: asyncio.Future[None] = loop.create_future()
            self._loop, self._future = loop, future
        timer = loop.call_later(max(timeout, 0.0), _wake, future)
        try:
            await future
        finally:
            timer.cancel()
            with self._feed._lock:
                self._future = None
        with self._feed._lock:
            return self._take()

    def _take(self) -> set[int]:
        changed, self._pending = self._pending, set()
        return changed

    def close(self) -> None:
        """Stop watching at once; a wait in progress returns what it has (or nothing)."""
        if self._closed:
            return
        self._feed._remove(self)
        with self._feed._lock:
            self._closed = True
            future, loop = self._future, self._loop
        if future is not None and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
