"""The outbound queue: mail waiting for the relay, claimed by one relay worker at a time."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from natsync.store.api import Conflict, NotFound, OutboundMail, StoreError
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _OUTBOUND_COLS, _from_us, _outbound, _to_us


class OutboundMixin(TxnBase):
    """Outbound: see the module docstring."""

    def enqueue_outbound(
        self, sender: str, recipients: Sequence[str], raw: bytes, now: datetime
    ) -> OutboundMail:
        at = _to_us(now)
        outbound_id: int = self._one(
            "INSERT INTO outbound (sender, recipients, raw, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (sender, json.dumps(list(recipients)), raw, at, at),
        )[0]
        return OutboundMail(
            id=outbound_id,
            sender=sender,
            recipients=tuple(recipients),
            raw=raw,
            attempts=0,
            next_attempt_at=_from_us(at),
            last_error="",
        )

    def due_outbound(self, now: datetime, limit: int) -> list[OutboundMail]:
        rows = self._conn.execute(
            f"SELECT {_OUTBOUND_COLS} FROM outbound WHERE next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (_to_us(now), limit),
        )
        return [_outbound(row) for row in rows]

    def claim_outbound(
        self, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        # One UPDATE. SQLite: inside BEGIN IMMEDIATE, one writer at a time, so two processes
        # on one file never both see an entry unclaimed. PostgreSQL: the subquery locks its
        # rows (_CLAIM_LOCK), and the outer conditions are checked again on each row as it is
        # when the lock is taken (READ COMMITTED re-reads an updated row but does not re-run
        # the subquery), so a claim committed in between is never taken twice.
        at = _to_us(now)
        rows = self._conn.execute(
            "UPDATE outbound SET claimed_by = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM outbound WHERE next_attempt_at <= ? AND lease_until <= ?"
            f" ORDER BY next_attempt_at, id LIMIT ?{self._CLAIM_LOCK}"
            f") AND next_attempt_at <= ? AND lease_until <= ? RETURNING {_OUTBOUND_COLS}",
            (owner, _to_us(lease_until), at, at, limit, at, at),
        ).fetchall()
        return sorted((_outbound(row) for row in rows), key=lambda m: (m.next_attempt_at, m.id))

    def renew_outbound(self, outbound_id: int, owner: str, lease_until: datetime) -> bool:
        updated: int = self._conn.execute(
            "UPDATE outbound SET lease_until = ? WHERE id = ? AND claimed_by = ?",
            (_to_us(lease_until), outbound_id, owner),
        ).rowcount
        return updated > 0

    def release_outbound(self, owner: str) -> int:
        released: int = self._conn.execute(
            "UPDATE outbound SET claimed_by = '', lease_until = 0 WHERE claimed_by = ?", (owner,)
        ).rowcount
        return released

    def _outbound_gone(self, outbound_id: int, owner: str | None) -> StoreError:
        """Why a sent/retry statement touched no row: the entry is gone, or not *owner*'s."""
        row = self._one("SELECT claimed_by FROM outbound WHERE id = ?", (outbound_id,))
        if row is None:
            return NotFound(f"outbound mail {outbound_id} does not exist")
        holder = row[0] or "nobody"
        return Conflict(
            f"outbound mail {outbound_id} is claimed by {holder}, not {owner}: its lease ran "
            "out and another relay worker took it over"
        )

    def outbound_sent(self, outbound_id: int, owner: str | None = None) -> None:
        sql = "DELETE FROM outbound WHERE id = ?"
        params: list[Any] = [outbound_id]
        if owner is not None:
            sql += " AND claimed_by = ?"
            params.append(owner)
        if self._conn.execute(sql, params).rowcount == 0:
            raise self._outbound_gone(outbound_id, owner)

    def outbound_retry(
        self, outbound_id: int, next_attempt_at: datetime, error: str, owner: str | None = None
    ) -> None:
        sql = (
            "UPDATE outbound SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            "claimed_by = '', lease_until = 0 WHERE id = ?"
        )
        params: list[Any] = [_to_us(next_attempt_at), error, outbound_id]
        if owner is not None:
            sql += " AND claimed_by = ?"
            params.append(owner)
        if self._conn.execute(sql, params).rowcount == 0:
            raise self._outbound_gone(outbound_id, owner)

    def claim_outbound_from(
        self, sender: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        at = _to_us(now)  # the same claim as claim_outbound's, of one sender's entries
        rows = self._conn.execute(
            "UPDATE outbound SET claimed_by = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM outbound WHERE sender = ? AND next_attempt_at <= ?"
            f" AND lease_until <= ? ORDER BY next_attempt_at, id LIMIT ?{self._CLAIM_LOCK}"
            f") AND next_attempt_at <= ? AND lease_until <= ? RETURNING {_OUTBOUND_COLS}",
            (owner, _to_us(lease_until), sender, at, at, limit, at, at),
        ).fetchall()
        return sorted((_outbound(row) for row in rows), key=lambda m: (m.next_attempt_at, m.id))
