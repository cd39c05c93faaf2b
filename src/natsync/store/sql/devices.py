"""Devices (policy, wipe, access state, settings) and their sync state per collection and key."""

# S608: every SQL string here is built from this package's own constants, never from input;
# values always travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from natsync.store.api import AccessState, Device, NotFound, WipeState
from natsync.store.sql.base import TxnBase
from natsync.store.sql.rows import _DEVICE_COLS, _device, _to_us


class DevicesMixin(TxnBase):
    """Devices: see the module docstring."""

    def touch_device(
        self,
        user_id: int,
        device_id: str,
        device_type: str,
        protocol_version: str,
        user_agent: str,
        now: datetime,
    ) -> Device:
        at = _to_us(now)
        # One statement with the user's existence check (WHERE EXISTS: no row back when the
        # user is gone). Its SELECT needs that WHERE anyway: SQLite parses the ON CONFLICT of
        # an INSERT ... SELECT only after one.
        row = self._one(
            "INSERT INTO devices (user_id, device_id, device_type, protocol_version, user_agent, "
            "first_seen, last_seen) SELECT ?, ?, ?, ?, ?, ?, ? "
            "WHERE EXISTS (SELECT 1 FROM users WHERE id = ?) "
            "ON CONFLICT (user_id, device_id) DO UPDATE SET device_type = excluded.device_type, "
            "protocol_version = excluded.protocol_version, user_agent = excluded.user_agent, "
            f"last_seen = excluded.last_seen RETURNING {_DEVICE_COLS}, holding",
            (user_id, device_id, device_type, protocol_version, user_agent, at, at, user_id),
        )
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        device = _device(row)
        self._present_users.add(user_id)
        self._present_devices.add(device.id)
        # Read with the row locked: no other process can change it before this COMMIT.
        self._holding[device.id] = bool(row[-1])
        return device

    def get_device(self, user_id: int, device_id: str) -> Device | None:
        row = self._one(
            f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return None if row is None else _device(row)

    def hold_starts(self, device: int) -> None:
        if self._holding.get(device) is not True:
            self._update_device(device, "UPDATE devices SET holding = 1 WHERE id = ?", ())
            self._holding[device] = True

    def hold_ends(self, device: int) -> bool:
        known = self._holding.get(device)
        if known is False:
            return False  # read in this transaction, under its row lock: nothing to end
        row = self._one(
            "UPDATE devices SET holding = 0 WHERE id = ? AND holding <> 0 RETURNING id", (device,)
        )
        self._holding[device] = False
        return row is not None

    def get_device_by_id(self, device: int) -> Device | None:
        """The device by the store's id (an addition to the Txn protocol, for the CLI)."""
        row = self._one(f"SELECT {_DEVICE_COLS} FROM devices WHERE id = ?", (device,))
        return None if row is None else _device(row)

    def list_devices(self, user_id: int | None = None) -> list[Device]:
        if user_id is None:
            rows = self._conn.execute(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY user_id, id")
        else:
            rows = self._conn.execute(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = ? ORDER BY id", (user_id,)
            )
        return [_device(row) for row in rows]

    def _update_device(self, device: int, sql: str, params: Sequence[Any]) -> None:
        if self._conn.execute(sql, (*params, device)).rowcount == 0:
            raise NotFound(f"device {device} does not exist")

    def update_device_info(
        self, device: int, *, model: str | None = None, os: str | None = None
    ) -> None:
        self._update_device(
            device,
            "UPDATE devices SET model = coalesce(?, model), os = coalesce(?, os) WHERE id = ?",
            (model, os),
        )

    def set_access_state(self, device: int, state: AccessState) -> None:
        self._update_device(
            device, "UPDATE devices SET access_state = ? WHERE id = ?", (AccessState(state).value,)
        )

    def set_policy_keys(self, device: int, *, policy_key: int, pending_policy_key: int) -> None:
        self._update_device(
            device,
            "UPDATE devices SET policy_key = ?, pending_policy_key = ? WHERE id = ?",
            (policy_key, pending_policy_key),
        )

    def set_wipe_state(self, device: int, state: WipeState, now: datetime) -> None:
        state = WipeState(state)
        at = _to_us(now)
        if state in (WipeState.PENDING, WipeState.ACCOUNT_ONLY_PENDING):
            sql = (
                "UPDATE devices SET wipe_state = ?, wipe_requested_at = ?, "
                "wipe_acknowledged_at = NULL WHERE id = ?"
            )
            params: tuple[Any, ...] = (state.value, at)
        elif state is WipeState.ACKNOWLEDGED:
            sql = "UPDATE devices SET wipe_state = ?, wipe_acknowledged_at = ? WHERE id = ?"
            params = (state.value, at)
        elif state is WipeState.NONE:
            sql = (
                "UPDATE devices SET wipe_state = ?, wipe_requested_at = NULL, "
                "wipe_acknowledged_at = NULL WHERE id = ?"
            )
            params = (state.value,)
        else:  # SENT: the request time stays, the acknowledgement is still awaited
            sql = "UPDATE devices SET wipe_state = ? WHERE id = ?"
            params = (state.value,)
        self._update_device(device, sql, params)

    def get_device_setting(self, device: int, key: str) -> str | None:
        return self._setting("device_settings", "device_id", device, key)

    def set_device_setting(self, device: int, key: str, value: str) -> None:
        self._require_device(device)
        self._set_setting("device_settings", "device_id", device, key, value)

    def remove_device(self, device: int) -> None:
        """Forget a device and its sync state (an addition to the Txn protocol, for the CLI)."""
        if self._conn.execute("DELETE FROM devices WHERE id = ?", (device,)).rowcount == 0:
            raise NotFound(f"device {device} does not exist")
        self._forget_rows()

    def get_sync_state(self, device: int, collection: str, sync_key: str) -> bytes | None:
        row = self._one(
            "SELECT state FROM sync_state WHERE device_id = ? AND collection = ? AND sync_key = ?",
            (device, collection, sync_key),
        )
        return None if row is None else bytes(row[0])

    def put_sync_state(self, device: int, collection: str, sync_key: str, state: bytes) -> None:
        self._require_device(device)
        # The next seq is read by the INSERT itself (one statement, not two).
        seq = self._one(
            "INSERT INTO sync_state (device_id, collection, sync_key, seq, state) "
            "SELECT ?, ?, ?, coalesce(max(seq), 0) + 1, ? FROM sync_state "
            "WHERE device_id = ? AND collection = ? "
            "ON CONFLICT (device_id, collection, sync_key) "
            "DO UPDATE SET seq = excluded.seq, state = excluded.state RETURNING seq",
            (device, collection, sync_key, state, device, collection),
        )[0]
        # Keep the new key and the one before it (a retransmitted request may still use it).
        # Seqs start at 1: the first two keys of a collection have nothing older to drop.
        if seq <= 2:
            return
        self._conn.execute(
            "DELETE FROM sync_state WHERE device_id = ? AND collection = ? AND seq < ("
            " SELECT coalesce(max(seq), 0) FROM sync_state"
            " WHERE device_id = ? AND collection = ? AND seq < ?)",
            (device, collection, device, collection, seq),
        )

    def drop_sync_state(self, device: int, collection: str | None = None) -> None:
        if collection is None:
            self._conn.execute("DELETE FROM sync_state WHERE device_id = ?", (device,))
        else:
            self._conn.execute(
                "DELETE FROM sync_state WHERE device_id = ? AND collection = ?",
                (device, collection),
            )
