"""What the console costs the server: the per-device request ring (natsync.server.recent: noted
in memory per request, written in batches every 2 s), and the console's pages over many devices.

    .venv/bin/python bench/console_bench.py                    # 400 requests a round
    .venv/bin/python bench/console_bench.py --requests 1000 --devices 200

Everything on loopback: a natsync server on one SQLite store in a temporary directory, the
device emulator sending FolderSync requests one after another (each a full command with its
transaction), twice — with the ring, and with the server's ``recent.answered`` a no-op — in
alternating blocks so that both rounds see the same machine load. Then ``--devices`` devices
with full rings, and the time to render the Devices page (one store transaction reading every
ring) and a store sample of the Live page. Prints per-request latency p50 / p90 and the
difference, and the page times. Bounded: a fixed number of requests, a 300 s limit.

    .venv/bin/python bench/console_bench.py --pushes 100      # the push latency it shows

With ``--pushes N`` instead: N real pushes on loopback (a held Ping, a mail through SMTP in):
the push latency the server records per device (what the Devices page shows: from the end of
DATA, as SMTP in received it, to the answer) against what the phone sees (from the SMTP
client's start of DATA to the Ping's answer decoded by the emulator).
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from natsync import admin
from natsync.auth.passwords import hash_password
from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.console import settings_from_data_dir, start_console
from natsync.server import RunningServer, recent, start_server
from natsync.server.recent import MAX_RECENT, RecentRequest
from natsync.store import open_store
from natsync.store.api import Store

BLOCK = 50
TIME_LIMIT = 300.0


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _server(data: Path) -> tuple[Store, RunningServer, str, datetime]:
    """A store in *data* with the user bench, and a natsync server on it (loopback)."""
    store = open_store(str(data / "natsync.db"))
    now = datetime.now(UTC)
    hashed = hash_password("bench-password")
    await store.run(lambda t: admin.add_user(t, "bench", "bench@example.test", "", hashed, now))
    config = ServerConfig(
        host="127.0.0.1", port=0, data_dir=data, require_provisioning=False,
        throttle_exempt=("bench",),  # a bench sends far more than a phone's budget
    )  # fmt: skip
    return store, await start_server(config, store), hashed, now


async def run(requests: int, devices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store, server, hashed, now = await _server(data)
        base = server.url.rsplit("/", 1)[0]
        writer = server.eas.recent
        real = writer.answered

        def off(*args: object, **kw: object) -> None:
            return None

        times: dict[str, list[float]] = {"with ring": [], "without": []}
        deadline = time.monotonic() + TIME_LIMIT
        async with EASClient(base, "bench", "bench-password", device_id="BENCH1") as phone:
            await phone.folder_sync()  # warm: device record, auth cache
            done = 0
            while done < requests and time.monotonic() < deadline:
                for name, fn in (("with ring", real), ("without", off)):
                    writer.answered = fn  # type: ignore[method-assign]
                    for _ in range(BLOCK):
                        started = time.perf_counter()
                        await phone.folder_sync()
                        times[name].append((time.perf_counter() - started) * 1000)
                done += BLOCK
        writer.answered = real  # type: ignore[method-assign]
        for name, values in times.items():
            print(
                f"FolderSync {name:9}: n={len(values)} p50 {_pct(values, 50):.2f} ms "
                f"p90 {_pct(values, 90):.2f} ms"
            )
        diff = _pct(times["with ring"], 50) - _pct(times["without"], 50)
        print(f"ring cost per request (p50 difference): {diff:+.2f} ms")

        # Many devices with full rings: the Devices page and a Live sample from the store.
        def fill(txn):  # type: ignore[no-untyped-def]
            user = admin.require_user(txn, "bench")
            for i in range(devices):
                d = txn.touch_device(user.id, f"DEV{i:05d}", "iPhone", "16.1", "bench", now)
                for j in range(MAX_RECENT):
                    recent.record(txn, d.id, RecentRequest(now, "Sync", 200, 1, 0, float(j)))

        await store.run(fill)
        settings = replace(settings_from_data_dir(data), port=0, password_hash=hashed)
        running = await start_console(settings, store)
        console = running.console
        page_ms, sample_ms = [], []
        for _ in range(5):
            started = time.perf_counter()
            rows = await console.device_rows()
            from natsync.console import pages

            pages.devices(rows, "csrf", datetime.now(UTC))
            page_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await console.sample()
            sample_ms.append((time.perf_counter() - started) * 1000)
        print(
            f"Devices page, {devices + 1} devices x {MAX_RECENT} ring entries: "
            f"median {statistics.median(page_ms):.1f} ms; Live store sample: "
            f"median {statistics.median(sample_ms):.1f} ms"
        )
        await running.close()
        await server.close()
        await store.aclose()


def _send(port: int, subject: str) -> float:
    """One mail over SMTP; the perf_counter() just before DATA (the rest of the dialogue, and
    the connection, come before it and are not counted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("a@remote.test")
        smtp.rcpt("bench@example.test")
        started = time.perf_counter()
        smtp.data(f"From: a@remote.test\r\nSubject: {subject}\r\n\r\nhi\r\n")
    return started


async def pushes(count: int) -> None:
    """*count* real pushes (SMTP in → the held Ping answered): the push latency the server
    records for the device (what the console shows) against what the phone sees from the start
    of DATA to the Ping's answer decoded."""
    from natsync.mail.smtp_in import start_smtp_server
    from natsync.server.recent import push_latencies

    with tempfile.TemporaryDirectory() as tmp:
        store, server, _, _ = await _server(Path(tmp))
        smtp = await start_smtp_server(store, "127.0.0.1", 0, ["example.test"])
        seen: list[float] = []
        deadline = time.monotonic() + TIME_LIMIT
        base = server.url.rsplit("/", 1)[0]
        async with EASClient(base, "bench", "bench-password", device_id="PUSH1") as phone:
            await phone.folder_sync()
            inbox = phone.folder(type=2).server_id
            await phone.sync(inbox)
            for i in range(count):
                if time.monotonic() > deadline:
                    break
                ping = asyncio.create_task(phone.ping([inbox], 120))
                for _ in range(2000):  # until the server holds it (10 s at most)
                    if server.eas.held_devices():
                        break
                    await asyncio.sleep(0.005)
                # Past the re-check before it waits: a mail committed within it answers the
                # Ping at once, untimed (as for a real phone, whose Ping waits for minutes).
                await asyncio.sleep(0.02)
                started = await asyncio.to_thread(_send, smtp.port, f"push {i}")
                assert await ping == [inbox]
                seen.append((time.perf_counter() - started) * 1000)
                await phone.sync(inbox)
        await server.eas.recent.flush()

        def ring(txn):  # type: ignore[no-untyped-def]
            device = txn.get_device(admin.require_user(txn, "bench").id, "PUSH1")
            return [ms for _, ms in push_latencies(txn, device.id)]

        recorded = await store.run(ring)
        for name, values in (("server-recorded (end of DATA -> answer)", recorded),
                             ("phone-seen (start of DATA -> answer)", seen)):  # fmt: skip
            print(
                f"push latency {name}: n={len(values)} p50 {_pct(values, 50):.2f} ms "
                f"p99 {_pct(values, 99):.2f} ms"
            )
        await smtp.close()
        await server.close()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--devices", type=int, default=100, help="devices for the page timing")
    parser.add_argument(
        "--pushes", type=int, default=0, help="instead: this many real pushes (SMTP in -> Ping)"
    )
    args = parser.parse_args()
    if args.pushes:
        asyncio.run(pushes(min(args.pushes, 1000)))
    else:
        asyncio.run(run(args.requests, args.devices))


if __name__ == "__main__":
    main()
