"""The in-process change feed: wakes waiting Pings when a transaction changed their folders.

A server holds thousands of Pings, each waiting on a handful of folders, and a commit touches a
few folders; so the feed keeps a dict ``feed id -> subscription(s)`` and a publish costs one
lookup per changed id, not one per waiter. Publishing happens in the store's worker thread after
COMMIT; a subscription is bound to the event loop that waits on it and is woken with
``call_soon_threadsafe``, so it works whichever thread publishes (``Store.run`` or
``run_sync``, or the PostgreSQL listener for commits of other processes).

Changes that arrive while nobody is waiting are kept on the subscription and returned by the
next ``wait`` / ``take``: a Ping that subscribes, then checks its folders, then waits, misses
nothing.

Feed ids live in four namespaces of one integer space, so that one NOTIFY payload format and
one dict carry them all:

* folder ids (positive): the folder's content or existence changed;
* :func:`hierarchy_key` (``-user_id``): the user's folder hierarchy changed;
* :func:`hold_key` (below ``-HOLD_KEY_BASE``): a request of the device arrived that ends its
  live hold (Ping or held Sync). This is how the one-live-Ping rule crosses processes: the
  newer request's transaction adds the key to its changes, the commit publishes it (NOTIFY on
  PostgreSQL), and a Ping held on any process for that device wakes and ends (docs/push.md).
* :func:`data_key` (below ``-DATA_KEY_BASE``): never watched, only published beside a folder
  id: "the mail that changed this folder ended its SMTP DATA at this ``time.monotonic()``".
  The delivery adds it to its transaction's changes, so it rides the same in-process publish
  and the same NOTIFY payload to every process; :meth:`LocalChangeFeed.publish` takes it off
  and gives the woken subscription :attr:`LocalSubscription.data_ended_at`, where push latency
  is measured from (docs/push.md "Where the clock starts"). CLOCK_MONOTONIC is one clock for
  every process of a machine; a stamp from another machine's clock is judged implausible and
  dropped (the push is then measured from its commit).

A waiter either awaits :meth:`LocalSubscription.wait` (one task per waiter), or, to hold
thousands without a task each, registers one callback with :meth:`LocalSubscription.notify` and
reads what changed with :meth:`LocalSubscription.take` when it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable

from natsync.store.api import Subscription

#: Hold keys are ``-(HOLD_KEY_BASE + h)`` with ``0 <= h < 2**61``: below every hierarchy key
#: (``-user_id``, user ids are far below 2**62) and, like them, never a folder id.
HOLD_KEY_BASE = 1 << 62


def hierarchy_key(user_id: int) -> int:
    """The feed id that fires when *user_id*'s folder hierarchy changes (create/rename/delete).

    Subscribe to it beside the folder ids (a Ping answers Status 7 when the hierarchy changed,
    MS-ASCMD 2.2.3.177.10). Folder ids are positive, so negative ids cannot collide with them.
    """
    return -user_id


def hold_key(user_id: int, device_id: str) -> int:
    """The feed id that ends the live hold of device *device_id* of user *user_id*.

    A 61-bit BLAKE2b of the pair (DeviceIds compare without regard to case, as in the store), so
    every process computes it from the request alone, before the device row is read; a collision
    (odds 2**-61 per pair) would only end a held Ping early, which answers Status 1.
    """
    data = f"{user_id}\0{device_id.lower()}".encode()
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return -(HOLD_KEY_BASE + (digest >> 3))


def is_hold_key(feed_id: int) -> bool:
    return -DATA_KEY_BASE < feed_id <= -HOLD_KEY_BASE


#: Data keys are ``-(DATA_KEY_BASE + microseconds * DATA_FOLDER_SPAN + folder_id)``: below every
#: hold key (Python ints and the NOTIFY payload's decimal text have room for them).
DATA_KEY_BASE = 1 << 64
#: Folder ids a data key can name (SQLite and PostgreSQL ids are 64-bit; a trillion folders).
DATA_FOLDER_SPAN = 1 << 40
#: Seconds an end of DATA may lie before the commit that delivered it and still be believed
#: (a delivery waits for the store, never this long); older or later stamps come from another
#: clock (another machine's CLOCK_MONOTONIC) and are dropped.
DATA_STAMP_PLAUSIBLE = 600.0


def data_key(folder_id: int, ended_at: float) -> int:
    """The feed id saying "a mail ending its DATA at *ended_at* (``time.monotonic()``) changed
    *folder_id*" (published beside *folder_id*; nobody subscribes to it)."""
    if not 0 < folder_id < DATA_FOLDER_SPAN:
        raise ValueError(f"folder id {folder_id} cannot be stamped")
    return -(DATA_KEY_BASE + int(max(ended_at, 0.0) * 1_000_000) * DATA_FOLDER_SPAN + folder_id)


def split_data_keys(feed_ids: Iterable[int]) -> tuple[list[int], dict[int, float]]:
    """(the ids to publish, folder id -> earliest end of DATA among the data keys)."""
    plain: list[int] = []
    ended: dict[int, float] = {}
    for feed_id in feed_ids:
        if feed_id > -DATA_KEY_BASE:
            plain.append(feed_id)
            continue
        micros, folder_id = divmod(-feed_id - DATA_KEY_BASE, DATA_FOLDER_SPAN)
        at = micros / 1_000_000
        if folder_id not in ended or at < ended[folder_id]:
            ended[folder_id] = at
    return plain, ended


class LocalChangeFeed:
    """A :class:`natsync.store.api.ChangeFeed` for the processes of one store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # One subscription alone on an id (the common case: a user's inbox, hierarchy key and
        # hold key each have one waiter) is stored bare, a set only when several share it.
        self._by_id: dict[int, LocalSubscription | set[LocalSubscription]] = {}

    def subscribe(self, folder_ids: Iterable[int]) -> LocalSubscription:
        # A tuple (without repeats), not a frozenset: a held Ping watches three ids, which a
        # tuple keeps in 64 bytes and a frozenset in 216 (issue 27).
        subscription = LocalSubscription(self, tuple(dict.fromkeys(folder_ids)))
        by_id = self._by_id
        with self._lock:
            for feed_id in subscription.folder_ids:
                found = by_id.get(feed_id)
                if found is None:
                    by_id[feed_id] = subscription
                elif isinstance(found, set):
                    found.add(subscription)
                else:
                    by_id[feed_id] = {found, subscription}
        return subscription

    def publish(self, folder_ids: Iterable[int]) -> None:
        """Tell every subscription watching one of *folder_ids* (any thread may call this);
        data keys among them (:func:`data_key`) date the mails that changed those folders."""
        to_wake: dict[LocalSubscription, set[int]] = {}
        plain, ended = split_data_keys(folder_ids)
        now = time.monotonic()
        with self._lock:
            for feed_id in plain:
                found = self._by_id.get(feed_id)
                if found is None:
                    continue
                for subscription in found if isinstance(found, set) else (found,):
                    to_wake.setdefault(subscription, set()).add(feed_id)
            for subscription, changed in to_wake.items():
                data = [ended[i] for i in changed if i in ended]
                at = min(data) if data else None
                if at is not None and not 0.0 <= now - at <= DATA_STAMP_PLAUSIBLE:
                    at = None  # another clock's stamp: measured from the commit instead
                subscription._deliver(changed, now, at)  # under the feed's lock

    def watched(self) -> list[int]:
        """Every folder and hierarchy id some subscription watches (to wake them all after
        missed notifications). Hold keys are left out: a missed end of hold only lets the old
        Ping run to its heartbeat, while waking every hold would end every held Ping."""
        with self._lock:
            return [i for i in self._by_id if not is_hold_key(i)]

    def waiting(self) -> int:
        """How many subscriptions are open (for metrics and tests)."""
        with self._lock:
            subs: set[LocalSubscription] = set()
            for found in self._by_id.values():
                if isinstance(found, set):
                    subs |= found
                else:
                    subs.add(found)
            return len(subs)

    def _remove(self, subscription: LocalSubscription) -> None:
        by_id = self._by_id
        with self._lock:
            for feed_id in subscription.folder_ids:
                found = by_id.get(feed_id)
                if found is subscription:
                    del by_id[feed_id]
                elif isinstance(found, set):
                    found.discard(subscription)
                    if len(found) == 1:
                        by_id[feed_id] = next(iter(found))
                    elif not found:
                        del by_id[feed_id]


class LocalSubscription:
    """One waiter; cheap: a tuple of ids, the ids changed so far and at most one callback."""

    __slots__ = (
        "_callback",
        "_closed",
        "_feed",
        "_loop",
        "_pending",
        "changed_at",
        "data_ended_at",
        "folder_ids",
    )

    def __init__(self, feed: LocalChangeFeed, folder_ids: tuple[int, ...]) -> None:
        self._feed = feed
        self.folder_ids = folder_ids
        self._pending: set[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], object] | None = None
        self._closed = False
        #: time.monotonic() of the first change since the last take (push latency metrics).
        self.changed_at: float | None = None
        #: time.monotonic() at the end of SMTP DATA of the earliest mail among the changes
        #: since the last take (None: no mail among them); push latency runs from here.
        self.data_ended_at: float | None = None

    def _deliver(self, changed: set[int], now: float, data_ended_at: float | None) -> None:
        """Record *changed* (a mail's end of DATA among them: *data_ended_at*) and wake the
        waiter; called with the feed's lock held."""
        if self._pending is None:
            self.changed_at = now
            self.data_ended_at = data_ended_at
            self._pending = changed
        else:
            self._pending |= changed
            if data_ended_at is not None and (
                self.data_ended_at is None or data_ended_at < self.data_ended_at
            ):
                self.data_ended_at = data_ended_at
        self._fire()

    def _fire(self) -> None:
        """Hand the callback to its loop, once (called with the feed's lock held)."""
        callback, loop = self._callback, self._loop
        if callback is not None and loop is not None:
            self._callback = None
            # RuntimeError: the waiter's loop is closed, nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        """Have *loop* call *callback* once: when an id changed (now, if one already did) or
        the subscription is closed. Read the changes with :meth:`take` then."""
        with self._feed._lock:
            if self._pending or self._closed:
                loop.call_soon(callback)
                return
            self._loop, self._callback = loop, callback

    def cancel_notify(self) -> None:
        """Forget the callback registered by :meth:`notify` (it is not called)."""
        with self._feed._lock:
            self._callback = None

    def take(self) -> set[int]:
        """The ids changed since the last take (and forget them)."""
        with self._feed._lock:
            changed, self._pending = self._pending, None
        return changed or set()

    async def wait(self, timeout: float) -> set[int]:
        """The ids of the folders that changed, or an empty set when *timeout* seconds passed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.notify(loop, wake)
        timer = loop.call_later(max(timeout, 0.0), wake)
        try:
            await future
        finally:
            timer.cancel()
            self.cancel_notify()
        return self.take()

    def close(self) -> None:
        """Stop watching at once; a wait in progress returns what it has (or nothing)."""
        if self._closed:
            return
        self._feed._remove(self)
        with self._feed._lock:
            self._closed = True
            self._fire()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
