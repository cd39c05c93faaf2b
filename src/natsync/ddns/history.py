"""History of address checks and DNS updates, in its own small SQLite file.

Kept in ``<data_dir>/ddns.db`` (stdlib sqlite3), apart from the main store, so DDNS works
without the ActiveSync server; a later change may move these two tables into the store.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ddns_update (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    name TEXT NOT NULL,
    rdtype TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ddns_update_name ON ddns_update (name, rdtype, id);
CREATE TABLE IF NOT EXISTS ddns_check (
    family INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ddns_block (
    fingerprint TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    at REAL NOT NULL,
    until REAL,
    reason TEXT NOT NULL
);
"""
#: Results that mean "an update was sent to the provider" (for the no-repeat rule).
SENT_RESULTS = ("updated", "unconfirmed")
#: Updates kept per name and type; older rows are pruned so the file stays small on a
#: deployment that runs for years.
KEEP_PER_RECORD = 200
#: Seconds to wait for a lock held by another natsync process (status while run is writing).
BUSY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class UpdateEntry:
    at: float
    name: str
    rdtype: str
    old: str
    new: str
    #: "updated", "unchanged" or "error".
    result: str
    detail: str


@dataclass(frozen=True, slots=True)
class Block:
    """The provider told us to stop (until is None: until the configuration changes) or to
    wait until *until*."""

    fingerprint: str
    provider: str
    at: float
    until: float | None
    reason: str

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class CheckEntry:
    family: int
    at: float
    kind: str
    address: str
    summary: str
    evidence: tuple[str, ...]


class History:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
        with self._db:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_update(self, entry: UpdateEntry) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO ddns_update (at, name, rdtype, old, new, result, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.at,
                    entry.name,
                    entry.rdtype,
                    entry.old,
                    entry.new,
                    entry.result,
                    entry.detail,
                ),
            )
            self._db.execute(
                "DELETE FROM ddns_update WHERE name = ? AND rdtype = ? AND id NOT IN "
                "(SELECT id FROM ddns_update WHERE name = ? AND rdtype = ? "
                "ORDER BY id DESC LIMIT ?)",
                (entry.name, entry.rdtype, entry.name, entry.rdtype, KEEP_PER_RECORD),
            )

    def last_update(self, name: str, rdtype: str) -> UpdateEntry | None:
        row = self._db.execute(
            "SELECT at, name, rdtype, old, new, result, detail FROM ddns_update "
            "WHERE name = ? AND rdtype = ? ORDER BY id DESC LIMIT 1",
            (name, rdtype),
        ).fetchone()
        return UpdateEntry(*row) if row else None

    def last_change(self, name: str, rdtype: str) -> UpdateEntry | None:
        """The last update that changed the record or failed (not the "unchanged" checks)."""
        row = self._db.execute(
            "SELECT at, name, rdtype, old, new, result, detail FROM ddns_update "
            "WHERE name = ? AND rdtype = ? AND result != 'unchanged' ORDER BY id DESC LIMIT 1",
            (name, rdtype),
        ).fetchone()
        return UpdateEntry(*row) if row else None

    def last_sent(self, name: str, rdtype: str) -> UpdateEntry | None:
        """The last update that was sent to the provider (confirmed or not)."""
        row = self._db.execute(
            "SELECT at, name, rdtype, old, new, result, detail FROM ddns_update "
            "WHERE name = ? AND rdtype = ? AND result IN (?, ?) ORDER BY id DESC LIMIT 1",
            (name, rdtype, *SENT_RESULTS),
        ).fetchone()
        return UpdateEntry(*row) if row else None

    def block(self, fingerprint: str) -> Block | None:
        row = self._db.execute(
            "SELECT fingerprint, provider, at, until, reason FROM ddns_block WHERE fingerprint = ?",
            (fingerprint,),
        ).fetchone()
        return Block(*row) if row else None

    def blocks(self) -> list[Block]:
        rows = self._db.execute(
            "SELECT fingerprint, provider, at, until, reason FROM ddns_block ORDER BY at"
        ).fetchall()
        return [Block(*row) for row in rows]

    def set_block(self, block: Block) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO ddns_block (fingerprint, provider, at, until, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                (block.fingerprint, block.provider, block.at, block.until, block.reason),
            )

    def clear_block(self, fingerprint: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM ddns_block WHERE fingerprint = ?", (fingerprint,))

    def updates(self, name: str, rdtype: str, limit: int = 20) -> list[UpdateEntry]:
        rows = self._db.execute(
            "SELECT at, name, rdtype, old, new, result, detail FROM ddns_update "
            "WHERE name = ? AND rdtype = ? ORDER BY id DESC LIMIT ?",
            (name, rdtype, limit),
        ).fetchall()
        return [UpdateEntry(*row) for row in rows]

    def record_check(self, entry: CheckEntry) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO ddns_check (family, at, kind, address, summary, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.family,
                    entry.at,
                    entry.kind,
                    entry.address,
                    entry.summary,
                    json.dumps(list(entry.evidence)),
                ),
            )

    def last_check(self, family: int) -> CheckEntry | None:
        row = self._db.execute(
            "SELECT family, at, kind, address, summary, evidence FROM ddns_check WHERE family = ?",
            (family,),
        ).fetchone()
        if not row:
            return None
        return CheckEntry(row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])))
