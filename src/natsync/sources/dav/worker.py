"""The CalDAV/CardDAV source of a running server: one mirror task per user who logged in.

Credentials: natsync's server checks every phone request's Basic credentials
(natsync.server.auth); on success its ``on_login`` hook hands the user and the password the
phone just presented to :meth:`DavSource.login`, which keeps them **in memory only** and starts
(or re-credentials) that user's worker. So the DAV login is the same as the phone's, there is
no second password store and nothing secret on disk; the price is that after a restart a user's
mirror waits for their phone's next request (at most one Ping heartbeat). A 401 from the DAV
server parks the worker until the phone presents a password again.

Push to the phone: each round's pull writes into the store, whose change feed answers the held
Pings — so the latency of a change made on the DAV server is at most ``sources.dav.interval``.
A change made on the phone wakes the worker through the same feed and is pushed to the DAV
server at once (a push-only round: no REPORT unless the interval ran out).

Several server processes on one store: a worker mirrors only while it holds the user's "dav"
lease (natsync.sources.lease), renewed between rounds; the others wait and take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from natsync.errors import NatsyncError
from natsync.sources.dav.http import DavAuthError, DavHttp
from natsync.sources.dav.mirror import DavAccount
from natsync.sources.dav.settings import DavSettings
from natsync.sources.dav.xml import DavError
from natsync.sources.lease import DEFAULT_LEASE, Lease, owner_name
from natsync.store.api import Store, User
from natsync.store.feed import hierarchy_key

log = logging.getLogger("natsync.sources.dav")

#: Seconds before a round that failed (server down, bad answer) is tried again, at most.
MAX_BACKOFF = 300.0
#: Seconds between discoveries: a calendar or address book made on the server meanwhile
#: becomes a folder on the phone within this time.
REDISCOVER_SECONDS = 600.0


class _Worker:
    def __init__(self, source: DavSource, user: User, login: str, password: str) -> None:
        self.source = source
        self.user = user
        self.login = login
        self.password = password
        self.fresh_credentials = asyncio.Event()
        self.rounds = 0
        self.last_error = ""
        self.lease = Lease(user.id, "dav", source.owner, source.lease)
        #: Whether this process mirrors the account now (holds the lease).
        self.holding = False
        self.task = asyncio.create_task(self.run(), name=f"dav-{user.name}")

    async def _take_lease(self) -> bool:
        lease = self.lease
        taken = await self.source.store.run(lambda t: lease.take(t, datetime.now(UTC)))
        if taken != self.holding:
            log.info(
                "dav: %s: %s",
                self.user.name,
                "this process mirrors it now" if taken else "another process mirrors it",
            )
        self.holding = taken
        return taken

    async def release(self) -> None:
        if self.holding:
            self.holding = False
            await self.source.store.run(self.lease.release)

    async def run(self) -> None:
        settings = self.source.settings
        backoff = settings.interval
        while True:
            if not await self._take_lease():
                await asyncio.sleep(self.lease.renew_every)
                continue
            rounds = self.rounds
            http = DavHttp(
                self.login, self.password, ca_file=settings.ca_file, timeout=settings.timeout
            )
            account = DavAccount(self.source.store, settings, self.user, http)
            try:
                await account.setup()
                await self._loop(account)
            except DavAuthError as exc:
                self.last_error = exc.message
                log.warning("dav: %s: %s", self.user.name, exc.message)
                self.fresh_credentials.clear()
                await self.fresh_credentials.wait()
                continue
            except DavError as exc:
                self.last_error = exc.message
                log.warning("dav: %s: %s (again in %.0f s)", self.user.name, exc.message, backoff)
            except NatsyncError as exc:  # the store refused a write, say
                self.last_error = exc.message
                log.error("dav: %s: %s (again in %.0f s)", self.user.name, exc.message, backoff)
            except Exception:  # a bug: logged with its traceback, the mirror keeps going
                self.last_error = "internal error (see the log)"
                log.exception(
                    "dav: %s: the mirror failed (again in %.0f s)", self.user.name, backoff
                )
            else:
                backoff = settings.interval
                continue  # a planned rediscovery
            finally:
                await http.aclose()
            if self.rounds > rounds:  # it worked for a while: not a run of failures
                backoff = settings.interval
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _loop(self, account: DavAccount) -> None:
        settings = self.source.settings
        ids = await account.folder_ids()
        with self.source.store.changes.subscribe([*ids, hierarchy_key(self.user.id)]) as sub:
            due = 0.0
            rediscover = time.monotonic() + REDISCOVER_SECONDS
            renew_at = time.monotonic() + self.lease.renew_every
            while True:
                now = time.monotonic()
                full = now >= due
                await account.round(pull=full)
                self.rounds += 1
                self.last_error = ""
                self.source.round_done.set()
                if full:
                    due = now + settings.interval
                changed: set[int] = set()
                while not changed and time.monotonic() < due:
                    wait = min(due, renew_at) - time.monotonic()
                    changed = await sub.wait(max(0.0, wait))
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + self.lease.renew_every
                        if not await self._take_lease():
                            return  # taken over: wait for it again
                if hierarchy_key(self.user.id) in changed or now >= rediscover:
                    return  # folders changed here, or it is time to look for new collections


class DavSource:
    """Mirrors of the users' CalDAV/CardDAV accounts, started by their logins."""

    def __init__(self, store: Store, settings: DavSettings, lease: float = DEFAULT_LEASE) -> None:
        self.store = store
        self.settings = settings
        #: Seconds a worker's lease holds unrenewed (sources.lease), and this process's name.
        self.lease = lease
        self.owner = owner_name()
        self.workers: dict[int, _Worker] = {}
        #: Set after every completed round of any worker (tests and `natsync doctor` wait on it).
        self.round_done = asyncio.Event()

    def attach(self, server: Any) -> None:
        """Take the logins of *server* (a natsync.server.RunningServer) from now on."""
        server.eas.auth.on_login = self.login

    def login(self, user: User, password: str) -> None:
        """The server's on_login hook: *user* just authenticated with *password*."""
        if not self.settings.wants(user.name):
            return
        worker = self.workers.get(user.id)
        if worker is None or worker.task.done():
            login = self.settings.login_for(user.name, user.email)
            self.workers[user.id] = _Worker(self, user, login, password)
        elif worker.password != password:  # the same refused password does not retry
            worker.password = password
            worker.fresh_credentials.set()

    async def aclose(self) -> None:
        for worker in self.workers.values():
            worker.task.cancel()
        for worker in self.workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
        for worker in self.workers.values():
            with contextlib.suppress(NatsyncError):
                await worker.release()  # another process takes over at once
        self.workers.clear()
