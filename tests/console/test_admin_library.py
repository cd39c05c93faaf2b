"""natsync.admin (the operations both the CLI and the console call) and natsync.server.recent
(the per-device ring), on the real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync import admin
from natsync.auth.passwords import verify_password
from natsync.server.recent import MAX_RECENT, RecentRequest, holds_ping, recent_requests, record
from natsync.store.api import AccessState, Conflict, Store, Txn, WipeState
from tests.conftest import ALICE_PASSWORD

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _phone(store: Store, device_id: str = "PHONE1") -> int:
    def run(txn: Txn) -> int:
        user = admin.require_user(txn, "alice")
        return txn.touch_device(user.id, device_id, "iPhone", "16.1", "Apple-iPhone/1", NOW).id

    return store.run_sync(run)


def test_disable_refuses_login_and_enable_restores_it(store: Store) -> None:
    def hashed(txn: Txn) -> str:
        return txn.password_hash(admin.require_user(txn, "alice").id)

    store.run_sync(lambda t: admin.disable_user(t, "alice"))
    store.run_sync(lambda t: admin.disable_user(t, "alice"))  # twice: still one mark
    stored = store.run_sync(hashed)
    assert stored.startswith("!")
    assert not stored.startswith("!!")
    assert not verify_password(ALICE_PASSWORD, stored)
    rows = store.run_sync(admin.list_users)
    assert [(r.user.name, r.disabled) for r in rows] == [("alice", True)]
    store.run_sync(lambda t: admin.enable_user(t, "alice"))
    assert verify_password(ALICE_PASSWORD, store.run_sync(hashed))


def test_new_password_keeps_a_disabled_user_disabled(
    store: Store, alice_password_hash: str
) -> None:
    store.run_sync(lambda t: admin.disable_user(t, "alice"))
    store.run_sync(lambda t: admin.set_password(t, "alice", alice_password_hash))
    rows = store.run_sync(admin.list_users)
    assert rows[0].disabled


def test_add_user_checks_name_and_address(store: Store, alice_password_hash: str) -> None:
    with pytest.raises(admin.AdminError, match="not an email"):
        store.run_sync(lambda t: admin.add_user(t, "bob", "bob", "", alice_password_hash, NOW))
    with pytest.raises(admin.AdminError, match="login name"):
        store.run_sync(lambda t: admin.add_user(t, "b b", "b@x.test", "", alice_password_hash, NOW))
    with pytest.raises(Conflict):
        store.run_sync(
            lambda t: admin.add_user(t, "alice", "a2@x.test", "", alice_password_hash, NOW)
        )
    bob = store.run_sync(
        lambda t: admin.add_user(t, "bob", "bob@x.test", "", alice_password_hash, NOW)
    )
    assert bob.display_name == "bob"
    with pytest.raises(admin.AdminError, match="too short"):
        admin.check_password("short")


def test_device_operations(store: Store) -> None:
    _phone(store)
    device = store.run_sync(lambda t: admin.set_access(t, "phone1", None, AccessState.QUARANTINED))
    assert device.device_id == "PHONE1"
    store.run_sync(lambda t: admin.set_access(t, "PHONE1", "alice", AccessState.ALLOWED))
    store.run_sync(lambda t: admin.wipe(t, "PHONE1", "alice", NOW, account_only=True))
    rows = store.run_sync(lambda t: admin.list_devices(t, NOW))
    assert rows[0].device.access_state is AccessState.ALLOWED
    assert rows[0].device.wipe_state is WipeState.ACCOUNT_ONLY_PENDING
    store.run_sync(lambda t: admin.cancel_wipe(t, "PHONE1", None, NOW))
    with pytest.raises(admin.AdminError, match="no wipe to cancel"):
        store.run_sync(lambda t: admin.cancel_wipe(t, "PHONE1", None, NOW))
    store.run_sync(lambda t: admin.remove_device(t, "PHONE1", None))
    with pytest.raises(admin.NoSuchDevice):
        store.run_sync(lambda t: admin.find_device(t, "PHONE1"))
    with pytest.raises(admin.NoSuchUser):
        store.run_sync(lambda t: admin.find_device(t, "PHONE1", "nobody"))


def test_mailbox_stats_count_mail_and_items(store: Store) -> None:
    from natsync.store.api import FolderType, NewMessage

    def fill(txn: Txn) -> None:
        user = admin.require_user(txn, "alice")
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        raw = b"Subject: hi\r\n\r\nhello\r\n"
        msg = NewMessage(raw, NOW, "hi", "a@x", "b@x", "", "", "<1@x>", 1, "IPM.Note", "hello")
        txn.add_message(inbox.id, msg)
        txn.add_message(inbox.id, msg)
        notes = txn.folder_by_type(user.id, FolderType.NOTES)
        txn.add_item(notes.id, {"subject": "n"})

    store.run_sync(fill)
    stats = store.run_sync(lambda t: admin.mailbox_stats(t, admin.require_user(t, "alice")))
    assert (stats.messages, stats.items) == (2, 1)
    assert stats.size == 2 * len(b"Subject: hi\r\n\r\nhello\r\n")
    assert ("Inbox", 2, 0) in stats.folders


def test_recent_ring_is_bounded_and_newest_first(store: Store) -> None:
    device = _phone(store)
    for i in range(MAX_RECENT + 5):
        entry = RecentRequest(NOW + timedelta(seconds=i), f"Sync{i}", 200, 1)
        store.run_sync(lambda t, e=entry: record(t, device, e))  # type: ignore[misc]
    ring = store.run_sync(lambda t: recent_requests(t, device))
    assert len(ring) == MAX_RECENT
    assert ring[0].command == f"Sync{MAX_RECENT + 4}"
    assert ring[-1].command == "Sync5"


def test_buffered_entries_are_written_per_device_and_bounded(store: Store) -> None:
    from natsync.server.recent import RecentBuffer, record_many

    device = _phone(store)
    buffer = RecentBuffer()
    for i in range(MAX_RECENT + 3):
        assert buffer.add("alice", "PHONE1", RecentRequest(NOW, f"Sync{i}", 200, 1))
    assert buffer.add("alice", "NOSUCHPHONE", RecentRequest(NOW, "Ping", 200, 1))
    assert buffer.add("mallory", "PHONE1", RecentRequest(NOW, "Ping", 401, None))
    assert not buffer.add("", "PHONE1", RecentRequest(NOW, "Ping", 400, None))
    pending = buffer.take()
    assert len(buffer) == 0
    assert len(pending[("alice", "PHONE1")]) == MAX_RECENT
    assert store.run_sync(lambda t: record_many(t, pending)) == 1  # the unknown ones dropped
    ring = store.run_sync(lambda t: recent_requests(t, device))
    assert [r.command for r in ring][:2] == [f"Sync{MAX_RECENT + 2}", f"Sync{MAX_RECENT + 1}"]


def test_buffered_devices_are_written_in_one_order_whatever_their_arrival(store: Store) -> None:
    # two processes writing the same devices must lock their rows in the same order
    from natsync.server.recent import record_many

    for device_id in ("PHONE2", "PHONE1", "PHONE3"):
        _phone(store, device_id)
    entry = RecentRequest(NOW, "Ping", 200, 1)
    orders = []
    for arrival in (("PHONE3", "PHONE1", "PHONE2"), ("PHONE2", "PHONE3", "PHONE1")):
        written: list[int] = []

        def run(txn: Txn, arrival: tuple[str, ...] = arrival, written: list[int] = written) -> int:
            real = txn.set_device_setting

            def noting(device: int, key: str, value: str) -> None:
                written.append(device)
                real(device, key, value)

            txn.set_device_setting = noting  # type: ignore[method-assign]
            return record_many(txn, {("alice", d): [entry] for d in arrival})

        assert store.run_sync(run) == 3
        orders.append(written)
    assert orders[0] == orders[1]
    ids = {d: _phone(store, d) for d in ("PHONE1", "PHONE2", "PHONE3")}
    assert orders[0][:3] == [ids["PHONE1"], ids["PHONE2"], ids["PHONE3"]]


def test_pending_devices_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from natsync.server import recent

    monkeypatch.setattr(recent, "MAX_PENDING_DEVICES", 3)
    buffer = recent.RecentBuffer()
    entry = RecentRequest(NOW, "Ping", 200, 1)
    assert [buffer.add("u", f"d{i}", entry) for i in range(5)] == [True, True, True, False, False]
    assert buffer.add("u", "d0", entry)  # a device already waiting still gets its entries


async def test_the_writer_writes_in_batches_and_on_close(store: Store) -> None:
    from natsync.server.recent import RecentWriter

    device = _phone(store)
    writer = RecentWriter(store, every=0.05)
    fields = {"cmd": "Ping", "user": "alice", "device": "PHONE1"}
    writer.holding(fields, 60, NOW)
    writer.answered({**fields, "http": 200, "status": 1, "ms": 60000.5}, NOW)
    for _ in range(100):
        ring = await store.run(lambda t: recent_requests(t, device))
        if ring:
            break
        await asyncio.sleep(0.02)
    assert [(r.command, r.held, r.http, r.status) for r in ring] == [
        ("Ping", 0, 200, 1),
        ("Ping", 60, 0, None),
    ]
    assert not holds_ping(ring, NOW)  # answered: no longer waiting
    assert holds_ping(ring[1:], NOW)
    writer.answered({**fields, "cmd": "Sync", "http": 200, "status": 1}, NOW)
    await writer.close()  # written at once, nothing left scheduled
    ring = await store.run(lambda t: recent_requests(t, device))
    assert ring[0].command == "Sync"


def test_holds_ping_until_its_heartbeat_runs_out() -> None:
    ping = RecentRequest(NOW, "Ping", 200, None, held=60)
    assert holds_ping([ping], NOW + timedelta(seconds=59))
    assert not holds_ping([ping], NOW + timedelta(seconds=61))
    assert not holds_ping([RecentRequest(NOW, "Sync", 200, 1)], NOW)
    assert not holds_ping([], NOW)


def test_a_ring_entry_past_any_heartbeat_is_not_an_entry() -> None:
    """An entry no server wrote (a wait longer than a day, or one dated at the calendar's end)
    reads as nothing or as waiting, never as an overflow (fuzz_console_inputs found the first)."""
    from natsync.server.recent import MAX_RECORDED_HELD

    doc = {"at": NOW.isoformat(), "cmd": "Ping", "http": 200, "status": 1, "held": 60}
    assert RecentRequest.from_json(doc) is not None
    assert RecentRequest.from_json({**doc, "held": MAX_RECORDED_HELD}) is not None
    assert RecentRequest.from_json({**doc, "held": MAX_RECORDED_HELD + 1}) is None
    assert RecentRequest.from_json({**doc, "held": 6 * 10**130}) is None
    assert RecentRequest.from_json({**doc, "held": -1}) is None
    last_day = RecentRequest.from_json({**doc, "at": "9999-12-31T23:59:00+00:00"})
    assert last_day is not None
    assert holds_ping([last_day], NOW)


def test_a_damaged_ring_reads_as_what_can_be_read(store: Store) -> None:
    device = _phone(store)
    store.run_sync(lambda t: t.set_device_setting(device, "recent_requests", '[1, {"at": 2}'))
    assert store.run_sync(lambda t: recent_requests(t, device)) == []
    good = RecentRequest(NOW, "Ping", 200, 1).to_json()
    store.run_sync(
        lambda t: t.set_device_setting(
            device, "recent_requests", __import__("json").dumps([{"cmd": "x"}, good])
        )
    )
    assert [r.command for r in store.run_sync(lambda t: recent_requests(t, device))] == ["Ping"]


@given(st.text(max_size=400))
def test_any_ring_text_reads_as_entries_or_nothing(text: str) -> None:
    from natsync.server.recent import _load

    ring = [e for e in (RecentRequest.from_json(d) for d in _load(text)) if e is not None]
    holds_ping(ring, NOW)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "at": st.one_of(st.just("2026-05-01T12:00:00"), st.text(max_size=30)),
                "cmd": st.text(max_size=10),
                "http": st.one_of(st.integers(), st.floats(), st.text(max_size=5)),
                "held": st.one_of(st.integers(), st.floats()),
            }
        ),
        max_size=5,
    )
)
def test_any_ring_document_reads_as_entries_or_nothing(ring: list[dict[str, object]]) -> None:
    import json

    from natsync.server.recent import _load

    entries = [e for e in (RecentRequest.from_json(d) for d in _load(json.dumps(ring))) if e]
    holds_ping(entries, NOW)


async def test_a_pushed_ping_carries_its_latency_into_both_rings(store: Store) -> None:
    """The server notes push_ms on the answer of a Ping a change ended (natsync.server.app's
    Hold); the writer keeps it on the entry and in the device's longer push ring, bounded — a
    burst of pushes between two writes is not cut to the request ring's length."""
    from natsync.server.recent import MAX_PUSHES, RecentWriter, push_latencies

    device = _phone(store)
    writer = RecentWriter(store, every=3600)  # written by flush() and close(), not the timer
    fields = {"user": "alice", "device": "PHONE1", "http": 200}
    for i in range(MAX_PUSHES + 4):  # each push: the Ping answered, a Sync, a new Ping held
        at = NOW + timedelta(seconds=i)
        writer.answered({**fields, "cmd": "Ping", "status": 2, "push_ms": float(i + 1)}, at)
        writer.answered({**fields, "cmd": "Sync", "status": 1}, at)
        writer.holding({**fields, "cmd": "Ping"}, 60, at)
        if i == 10:
            await writer.flush()  # one write in the middle: the push ring grows across writes
    writer.answered({**fields, "cmd": "Ping", "status": 1}, NOW + timedelta(hours=1))  # no push
    await writer.close()
    ring = await store.run(lambda t: recent_requests(t, device))
    assert len(ring) == MAX_RECENT
    assert ring[0].push_ms is None
    assert ring[3].push_ms == float(MAX_PUSHES + 4)
    pushes = await store.run(lambda t: push_latencies(t, device))
    assert [ms for _, ms in pushes] == [float(i) for i in range(MAX_PUSHES + 4, 4, -1)]
    (row,) = await store.run(lambda t: admin.list_devices(t, NOW))
    assert row.pushes[0] == float(MAX_PUSHES + 4)
    # Over the 100 kept (5 .. 104 ms): nearest rank.
    assert (row.push_quantile(0.5), row.push_quantile(0.99)) == (54.0, 103.0)


def test_percentile_is_nearest_rank() -> None:
    from natsync.server.recent import percentile

    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


@given(st.text(max_size=300))
def test_any_push_ring_text_reads_as_latencies_or_nothing(text: str) -> None:
    from natsync.server.recent import PUSH_KEY, push_latencies

    class OneSetting:
        def get_device_setting(self, device: int, key: str) -> str | None:
            return text if key == PUSH_KEY else None

    for at, ms in push_latencies(OneSetting(), 1):  # type: ignore[arg-type]
        assert at.tzinfo is not None
        assert isinstance(ms, float)


def test_a_damaged_push_ring_reads_as_what_can_be_read(store: Store) -> None:
    from natsync.server.recent import PUSH_KEY, push_latencies

    device = _phone(store)
    ring = '[["2026-05-01T12:00:00", NaN], ["2026-05-01T12:00:01", 3.5], [1], "x", {"a": 1}]'
    store.run_sync(lambda t: t.set_device_setting(device, PUSH_KEY, ring))
    read = store.run_sync(lambda t: push_latencies(t, device))
    assert read == [(NOW + timedelta(seconds=1), 3.5)]
