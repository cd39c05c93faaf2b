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
"""

from __future__ import annotations

import argparse
import asyncio
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
from natsync.server import recent, start_server
from natsync.server.recent import MAX_RECENT, RecentRequest
from natsync.store import open_store

BLOCK = 50
TIME_LIMIT = 300.0


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def run(requests: int, devices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = open_store(str(data / "natsync.db"))
        now = datetime.now(UTC)
        hashed = hash_password("bench-password")
        await store.run(lambda t: admin.add_user(t, "bench", "b@example.test", "", hashed, now))
        config = ServerConfig(host="127.0.0.1", port=0, data_dir=data, require_provisioning=False)
        server = await start_server(config, store)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--devices", type=int, default=100, help="devices for the page timing")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.devices))


if __name__ == "__main__":
    main()
