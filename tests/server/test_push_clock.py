"""Push latency runs from the end of SMTP DATA (issue #27's rule), not from the store's commit.

A real SMTP mail (smtplib to the real SMTP in) wakes a Ping held on the real server over TLS.
Delivery is slowed on purpose (DELAY seconds inside the delivery transaction, before the mail is
inserted): a latency measured from the commit would miss that time, one from the end of DATA
counts it. Checked where an admin reads it: the server's /metrics histogram (``from="data"``),
the device's recorded pushes and the console's device page. On PostgreSQL the mail is delivered
by another store (another worker, as another process would be), so the wake comes through the
NOTIFY payload and its end-of-DATA stamp.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
import urllib.request
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from natsync import admin
from natsync.client import EASClient
from natsync.console import pages
from natsync.mail import smtp_in
from natsync.mail.relay import deliver_to_inbox
from natsync.mail.smtp_in import start_smtp_server
from natsync.store import open_store
from natsync.store.api import FolderType, Store
from natsync.store.feed import LocalChangeFeed, data_key, hierarchy_key
from tests import pg
from tests.e2e.deployment import DOMAIN, Deployment, deployment

#: Seconds the delivery is held back inside its transaction (after DATA ended, before commit).
DELAY = 0.3
#: Seconds the push may take beyond DELAY (in practice milliseconds) and the Ping's heartbeat.
PUSH_TIMEOUT = 20.0
HEARTBEAT = 120
#: Seconds the recorded requests take to reach the store (natsync.server.recent.FLUSH_EVERY: 2).
RECORD_WAIT = 10.0


@pytest.fixture
def slow_delivery(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Delivery sleeps DELAY seconds in its transaction; yields when each delivery started."""
    started: list[float] = []

    def slow(*args: Any, **kwargs: Any) -> bool:
        started.append(time.monotonic())
        time.sleep(DELAY)  # in the store's worker thread: the commit comes DELAY later
        return deliver_to_inbox(*args, **kwargs)

    monkeypatch.setattr(smtp_in, "deliver_to_inbox", slow)
    return started


def send(port: int, to: str, subject: str) -> float:
    """Send one mail; the time.monotonic() just before DATA's end was sent."""
    raw = f"From: bob@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("bob@remote.test")
        smtp.rcpt(to)
        sent = time.monotonic()
        code, _ = smtp.data(raw.encode())
    assert code == 250
    return sent


def server_get(dep: Deployment, path: str) -> str:
    """GET *path* from the server itself (its /metrics answers loopback clients)."""
    context = ssl.create_default_context(cafile=str(dep.ca_file))
    with urllib.request.urlopen(dep.url + path, timeout=10, context=context) as answer:
        return str(answer.read().decode())


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


async def held_ping_pushed(dep: Deployment, smtp_port: int, device: str) -> tuple[float, float]:
    """A held Ping woken by a mail: (seconds from sending DATA's end to the Ping's answer)."""
    async with EASClient(
        dep.url, dep.user, dep.password, ca_file=str(dep.ca_file), device_id=device
    ) as client:
        await client.folder_sync()
        inbox = client.folder(type=FolderType.INBOX).server_id
        await client.sync(inbox)
        ping = asyncio.create_task(client.ping([inbox], heartbeat=HEARTBEAT))
        await asyncio.sleep(0.5)  # held by now
        sent = await asyncio.to_thread(send, smtp_port, dep.email, "clocked")
        assert await asyncio.wait_for(ping, PUSH_TIMEOUT) == [inbox]
        return sent, time.monotonic()


async def recorded_push(store: Store, device: str) -> admin.DeviceRow:
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        rows = await store.run(lambda txn: admin.list_devices(txn, datetime.now(UTC)))
        row = next((r for r in rows if r.device.device_id == device), None)
        if row is not None and row.pushes:
            return row
        assert time.monotonic() < deadline, "the push was never recorded"
        await asyncio.sleep(0.2)


def check_measured_from_data(
    dep: Deployment, row: admin.DeviceRow, sent: float, end: float
) -> None:
    # The server's histogram: one push from the end of DATA, counting the delay; none from commit.
    text = server_get(dep, "/metrics")
    count = metric(text, 'natsync_server_push_latency_seconds_count{from="data"}')
    total = metric(text, 'natsync_server_push_latency_seconds_sum{from="data"}')
    assert count == 1
    assert DELAY <= total <= end - sent
    assert metric(text, 'natsync_server_push_latency_seconds_count{from="commit"}') == 0
    # The device's record and the console's page say the same.
    push = next(r.push_ms for r in row.recent if r.push_ms is not None)
    assert next(r.push_from for r in row.recent if r.push_ms is not None) == "data"
    assert DELAY * 1000 <= push <= (end - sent) * 1000
    html = pages.device(row, "token", datetime.now(UTC))
    assert "after the end of the mail's DATA" in unescape(html)


async def test_a_mail_pushes_from_its_end_of_data(
    tmp_path: Path, slow_delivery: list[float]
) -> None:
    async with deployment(tmp_path) as dep:
        sent, end = await held_ping_pushed(dep, dep.smtp_port, "CLOCKPHONE1")
        assert len(slow_delivery) == 1
        row = await recorded_push(dep.store, "CLOCKPHONE1")
        await asyncio.to_thread(check_measured_from_data, dep, row, sent, end)


async def test_on_postgresql_the_stamp_crosses_by_notify(
    tmp_path: Path, pg_server: pg.PgServer, slow_delivery: list[float]
) -> None:
    url = pg_server.create_database()
    serving = open_store(url)
    delivering = open_store(url)  # another worker: its commits reach `serving` by NOTIFY only
    smtp = None
    try:
        async with deployment(tmp_path, store=serving) as dep:
            smtp = await start_smtp_server(delivering, "127.0.0.1", 0, (DOMAIN,))
            before = getattr(serving, "notifications", 0)
            sent, end = await held_ping_pushed(dep, smtp.port, "CLOCKPHONE2")
            assert getattr(serving, "notifications", 0) > before  # woken by NOTIFY
            row = await recorded_push(serving, "CLOCKPHONE2")
            await asyncio.to_thread(check_measured_from_data, dep, row, sent, end)
    finally:
        if smtp is not None:
            await smtp.close()
        await delivering.aclose()
        await serving.aclose()
        pg_server.drop_database(url)


def test_the_feed_dates_a_wake_by_its_earliest_mail_and_drops_foreign_stamps() -> None:
    feed = LocalChangeFeed()
    sub = feed.subscribe([7, hierarchy_key(3)])
    now = time.monotonic()
    feed.publish([7, data_key(7, now - 0.2), data_key(9, now - 5.0)])  # 9: another folder's
    assert sub.take() == {7}
    assert sub.data_ended_at == pytest.approx(now - 0.2, abs=1e-5)
    feed.publish([7])  # a change no mail made: measured from its commit
    assert sub.take() == {7}
    assert sub.data_ended_at is None
    assert sub.changed_at is not None
    assert sub.changed_at >= now
    feed.publish([7, data_key(7, now + 3600.0)])  # another clock (a later stamp): not believed
    assert sub.take() == {7}
    assert sub.data_ended_at is None
    with pytest.raises(ValueError):
        data_key(0, now)
