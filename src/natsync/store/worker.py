"""The hand-off between callers and a store's worker thread, shared by every driver.

A driver owns one thread that owns its database connection (sqlite3 and psycopg connections are
bound to the thread that uses them) and takes jobs ``(fn, done)`` from a queue; this module is the
caller's side of that queue: ``run`` for coroutines, ``run_sync`` for plain code. ``done`` is
called on the worker thread once the transaction has committed or rolled back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from natsync.store.api import StoreError, Txn

T = TypeVar("T")

#: Called on the worker thread with (result, None) or (None, error).
Done = Callable[[Any, BaseException | None], None]

#: Put on the queue by ``close``: the worker finishes the jobs before it, then stops.
STOP: Any = object()

#: Most jobs one group commit takes. Jobs queued while a transaction runs share the next
#: COMMIT (its log write is the largest fixed cost of a small transaction); the cap bounds how
#: long the first job of a group waits for the last.
MAX_GROUP_JOBS = 32


class WorkerJobs:
    """Mixin for a store whose transactions run on ``self._thread``, fed by ``self._jobs``."""

    _jobs: queue.SimpleQueue[Any]
    _thread: threading.Thread
    _closed: bool

    def _next_group(self) -> tuple[list[tuple[Callable[[Txn], Any], Done]], bool]:
        """Block for the next job, then take those queued behind it: (group, stop after it)."""
        group = [self._jobs.get()]
        while len(group) < MAX_GROUP_JOBS and group[-1] is not STOP:
            try:
                group.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        if group[-1] is STOP:
            group.pop()
            return group, True
        return group, False

    def _submit(self, fn: Callable[[Txn], Any], done: Done) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if threading.current_thread() is self._thread:
            raise StoreError("Store.run called inside a store transaction: use the txn you have")
        self._jobs.put((fn, done))

    async def run(self, fn: Callable[[Txn], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)

        def done(result: Any, error: BaseException | None) -> None:
            # RuntimeError: the caller's loop is gone; the transaction stands all the same.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        self._submit(fn, done)
        return await future

    def run_sync(self, fn: Callable[[Txn], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._submit(fn, done)
        return future.result()
