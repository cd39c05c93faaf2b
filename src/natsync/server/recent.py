"""Each device's last requests, kept in the store beside the device (the console's "recent
requests" of a phone that misbehaves, and its "holds a Ping now").

The server records one entry per command that ran, in that command's own transaction (so it
costs no extra commit), as a bounded ring in the device setting :data:`RECENT_KEY`: the newest
:data:`MAX_RECENT` entries, JSON. Requests refused before a transaction (bad query, wrong
password) are not devices' requests yet and are in the access log only. Living in the store, the
record is seen by every process on the store (``natsync console`` run on its own, several server
processes on PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from natsync.store.api import Txn

#: The device setting that holds the ring.
RECENT_KEY = "recent_requests"
#: Entries kept per device: enough to see a phone's last sync cycle (Provision, FolderSync, a
#: few Syncs, Ping) while the setting stays a few KB that one UPDATE rewrites.
MAX_RECENT = 30


@dataclass(frozen=True, slots=True)
class RecentRequest:
    at: datetime
    command: str
    #: HTTP status of the answer, and the EAS Status when the command has one.
    http: int
    status: int | None
    #: Seconds the request was held (a Ping or a held Sync), 0 when answered at once.
    held: int = 0
    #: Milliseconds the command took in its transaction.
    ms: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "cmd": self.command,
            "http": self.http,
            "status": self.status,
            "held": self.held,
            "ms": self.ms,
        }

    @classmethod
    def from_json(cls, doc: object) -> RecentRequest | None:
        """The entry, or None for anything that is not one (the ring is only a record)."""
        if not isinstance(doc, dict):
            return None
        try:
            status = doc.get("status")
            at = datetime.fromisoformat(str(doc["at"]))
            return cls(
                at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
                command=str(doc["cmd"]),
                http=int(doc["http"]),
                status=None if status is None else int(status),
                held=int(doc.get("held", 0)),
                ms=float(doc.get("ms", 0.0)),
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


def record_request(
    txn: Txn,
    user_name: str,
    device_id: str,
    command: str,
    http: int,
    status: int | None,
    held: int,
    now: datetime,
    ms: float = 0.0,
) -> None:
    """Record a command that ran for *user_name*'s *device_id* (nothing when the device is
    gone: a removed user or device has no ring)."""
    user = txn.get_user(user_name)
    device = None if user is None else txn.get_device(user.id, device_id)
    if device is not None:
        record(txn, device.id, RecentRequest(now, command, http, status, held, round(ms, 2)))


def recent_requests(txn: Txn, device: int) -> list[RecentRequest]:
    """The device's ring, newest first."""
    ring = _load(txn.get_device_setting(device, RECENT_KEY))
    entries = [e for e in (RecentRequest.from_json(d) for d in ring) if e is not None]
    return entries[::-1]


def holds_ping(recent: Sequence[RecentRequest], now: datetime) -> bool:
    """By the record: the newest request is a Ping that was held and whose heartbeat has not
    run out. (A phone that dropped its connection still counts until then; a server in the same
    process knows better and says so: natsync.console's live source.)"""
    if not recent:
        return False
    last = recent[0]
    return last.command == "Ping" and last.held > 0 and now < last.at + timedelta(seconds=last.held)
