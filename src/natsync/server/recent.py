"""Each device's last requests, kept in the store beside the device (the console's "recent
requests" of a phone that misbehaves, and its "holds a Ping now").

The server notes one entry per request it answers (what its access-log line says: command,
HTTP status, EAS Status, time taken — a wrong password too) and one when a Ping starts to be
held, in memory (:class:`RecentBuffer`, no I/O on the request's path); :class:`RecentWriter`
writes what gathered every :data:`FLUSH_EVERY` seconds in one transaction, into a bounded ring
per device in the device setting :data:`RECENT_KEY` (the newest :data:`MAX_RECENT` entries,
JSON). Requests of devices the store does not know (never authenticated) are dropped. Living in
the store, the record is seen by every process on it (``natsync console`` run on its own,
several server processes on PostgreSQL), a few seconds late at most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from natsync.errors import NatsyncError
from natsync.store.api import Store, Txn

log = logging.getLogger("natsync.server.recent")

#: The device setting that holds the ring.
RECENT_KEY = "recent_requests"
#: Entries kept per device: enough to see a phone's last sync cycle (Provision, FolderSync, a
#: few Syncs, Ping) while the setting stays a few KB that one UPDATE rewrites.
MAX_RECENT = 30
#: The device setting that holds its last push latencies ([[time, ms], ...], oldest first), and
#: how many: enough for a p99 that is not just the worst one, a few KB to rewrite.
PUSH_KEY = "push_latency"
MAX_PUSHES = 100
#: Seconds between writes of what gathered: a console shows a request this late at most, and
#: a busy server writes once per interval instead of once per request.
FLUSH_EVERY = 2.0
#: Devices whose entries may wait at once; past it new devices' entries are dropped until the
#: next write (a flood of made-up device ids must not grow memory).
MAX_PENDING_DEVICES = 10_000
#: The longest wait an entry may record (s). A Ping's heartbeat is at most server.heartbeat_max
#: (3540 s by default, MS-ASCMD 2.2.3.84.1); an entry past a day was not written by a server and
#: is not an entry (a huge number would overflow the date arithmetic that reads it).
MAX_RECORDED_HELD = 86_400


@dataclass(frozen=True, slots=True)
class RecentRequest:
    at: datetime
    command: str
    #: HTTP status of the answer, and the EAS Status when the command has one.
    http: int
    status: int | None
    #: On the entry written when a Ping starts to wait: its heartbeat (seconds); else 0.
    held: int = 0
    #: Milliseconds the command took in its transaction.
    ms: float = 0.0
    #: On a held Ping (or Sync) answered because a change came: milliseconds from the end of
    #: SMTP DATA of the mail that made it (or from the commit of a change no mail made) to the
    #: answer — the device's push latency.
    push_ms: float | None = None
    #: Where push_ms starts: "data" (a mail's end of DATA) or "commit"; "" when unknown.
    push_from: str = ""

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "at": self.at.isoformat(),
            "cmd": self.command,
            "http": self.http,
            "status": self.status,
            "held": self.held,
            "ms": self.ms,
        }
        if self.push_ms is not None:
            doc["push"] = self.push_ms
            if self.push_from:
                doc["push_from"] = self.push_from
        return doc

    @classmethod
    def from_json(cls, doc: object) -> RecentRequest | None:
        """The entry, or None for anything that is not one (the ring is only a record)."""
        if not isinstance(doc, dict):
            return None
        try:
            status, push = doc.get("status"), doc.get("push")
            at = datetime.fromisoformat(str(doc["at"]))
            held = int(doc.get("held", 0))
            if not 0 <= held <= MAX_RECORDED_HELD:
                return None
            return cls(
                at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
                command=str(doc["cmd"]),
                http=int(doc["http"]),
                status=None if status is None else int(status),
                held=held,
                ms=float(doc.get("ms", 0.0)),
                push_ms=None if push is None else float(push),
                push_from=str(doc.get("push_from", ""))[:8],
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            return None


def _load(raw: str | None) -> list[object]:
    if not raw:
        return []
    try:
        doc = json.loads(raw)
    except ValueError:
        return []
    return doc if isinstance(doc, list) else []


def record(txn: Txn, device: int, entry: RecentRequest, limit: int = MAX_RECENT) -> None:
    """Add *entry* to the device's ring, dropping the oldest beyond *limit*."""
    ring = _load(txn.get_device_setting(device, RECENT_KEY))
    ring.append(entry.to_json())
    txn.set_device_setting(device, RECENT_KEY, json.dumps(ring[-limit:], separators=(",", ":")))


def record_many(txn: Txn, pending: Mapping[tuple[str, str], Sequence[RecentRequest]]) -> int:
    """Write what gathered, per (user name, DeviceId); how many devices were written (the
    others are unknown to the store and dropped)."""
    written = 0
    users: dict[str, Any] = {}
    # in one order in every process: two server processes flushing at once, each with
    # entries of the same devices (a phone's requests go to whichever process has least in
    # flight), lock the same device_settings rows; in arrival order, PostgreSQL found them
    # deadlocked and dropped one of the batches
    for (user_name, device_id), entries in sorted(pending.items()):
        if user_name not in users:
            users[user_name] = txn.get_user(user_name)
        user = users[user_name]
        device = None if user is None else txn.get_device(user.id, device_id)
        if device is None:
            continue
        ring = _load(txn.get_device_setting(device.id, RECENT_KEY))
        ring.extend(e.to_json() for e in entries)
        txn.set_device_setting(
            device.id, RECENT_KEY, json.dumps(ring[-MAX_RECENT:], separators=(",", ":"))
        )
        pushes = [[e.at.isoformat(), e.push_ms] for e in entries if e.push_ms is not None]
        if pushes:  # a second, longer ring: the device's push latency over its recent pushes
            kept = _load(txn.get_device_setting(device.id, PUSH_KEY)) + pushes
            txn.set_device_setting(
                device.id, PUSH_KEY, json.dumps(kept[-MAX_PUSHES:], separators=(",", ":"))
            )
        written += 1
    return written


class RecentBuffer:
    """Entries waiting to be written, per (user name, DeviceId); sans-I/O."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], list[RecentRequest]] = {}

    def add(self, user: str, device_id: str, entry: RecentRequest) -> bool:
        """Keep *entry*; False when it was dropped (no user or device, or too many devices)."""
        if not user or not device_id:
            return False
        key = (user, device_id)
        entries = self._pending.get(key)
        if entries is None:
            if len(self._pending) >= MAX_PENDING_DEVICES:
                return False
            entries = self._pending[key] = []
        entries.append(entry)
        if len(entries) > MAX_RECENT:
            # Beyond the ring the oldest go, but not the push latencies (their own ring is
            # longer): a burst of mail must not leave the device's push record short.
            older = [e for e in entries[:-MAX_RECENT] if e.push_ms is not None][-MAX_PUSHES:]
            entries[:] = [*older, *entries[-MAX_RECENT:]]
        return True

    def take(self) -> dict[tuple[str, str], list[RecentRequest]]:
        pending, self._pending = self._pending, {}
        return pending

    def __len__(self) -> int:
        return len(self._pending)


class RecentWriter:
    """The server's side: notes requests (from the access-log fields) and writes them every
    FLUSH_EVERY seconds, in a task it keeps; :meth:`close` writes what is left."""

    def __init__(self, store: Store, every: float = FLUSH_EVERY) -> None:
        self.store = store
        self.every = every
        self.buffer = RecentBuffer()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def answered(self, fields: Mapping[str, Any], now: datetime) -> None:
        """A request was answered: *fields* are its access-log line's (cmd, user, device, http,
        status, ms)."""
        status, push = fields.get("status"), fields.get("push_ms")
        entry = RecentRequest(
            now, str(fields.get("cmd") or "?"), int(fields.get("http") or 0),
            status if isinstance(status, int) else None, 0, float(fields.get("ms") or 0.0),
            float(push) if isinstance(push, int | float) else None,
            str(fields.get("push_from") or "") if push is not None else "",
        )  # fmt: skip
        self._add(fields, entry)

    def holding(self, fields: Mapping[str, Any], heartbeat: int, now: datetime) -> None:
        """A Ping (or a held Sync) of the device starts to wait for up to *heartbeat* s."""
        self._add(fields, RecentRequest(now, str(fields.get("cmd") or "?"), 0, None, heartbeat))

    def _add(self, fields: Mapping[str, Any], entry: RecentRequest) -> None:
        user, device = str(fields.get("user") or ""), str(fields.get("device") or "")
        added = self.buffer.add(user, device, entry)
        if added and self._timer is None and self._task is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(
            self._write(), name="natsync-recent-requests"
        )

    async def flush(self) -> None:
        """Write everything noted so far (after a write already under way)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._write()

    async def _write(self) -> None:
        pending = self.buffer.take()
        try:
            if pending:
                await self.store.run(lambda txn: record_many(txn, pending))
        except NatsyncError as exc:  # a record only: say so, keep serving
            log.warning("could not write the recent requests of %d devices: %s", len(pending), exc)
        except Exception as exc:  # a bug or a store closed under us: never kill the server
            log.error("writing the recent requests failed", exc_info=exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            if len(self.buffer) and self._timer is None and self._task is None and not self._closed:
                self._timer = asyncio.get_running_loop().call_later(self.every, self._start)

    async def close(self) -> None:
        """Write what is left; nothing is scheduled after."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()


def recent_requests(txn: Txn, device: int) -> list[RecentRequest]:
    """The device's ring, newest first."""
    ring = _load(txn.get_device_setting(device, RECENT_KEY))
    entries = [e for e in (RecentRequest.from_json(d) for d in ring) if e is not None]
    return entries[::-1]


def push_latencies(txn: Txn, device: int) -> list[tuple[datetime, float]]:
    """The device's recent push latencies (when, milliseconds), newest first."""
    out = []
    for item in _load(txn.get_device_setting(device, PUSH_KEY)):
        try:
            at, ms = datetime.fromisoformat(str(item[0])), float(item[1])  # type: ignore[index]
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            continue
        if not math.isfinite(ms):  # JSON's NaN or Infinity: not a time
            continue
        out.append((at if at.tzinfo is not None else at.replace(tzinfo=UTC), ms))
    return out[::-1]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of *values* (nearest rank: one of the values, never between two);
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def holds_ping(recent: Sequence[RecentRequest], now: datetime) -> bool:
    """By the record: the newest entry is a Ping that started to wait, with no answer after it,
    and its heartbeat has not run out. (A phone that dropped its connection is not answered, so
    it still counts until then; a server in the same process knows better and says so:
    natsync.console.SupervisorSource.)"""
    if not recent:
        return False
    last = recent[0]
    if last.command != "Ping" or last.held <= 0:
        return False
    try:
        return now < last.at + timedelta(seconds=last.held)
    except OverflowError:  # an entry dated near year 9999: its wait has not run out
        return True
