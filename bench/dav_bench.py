"""CalDAV push latency through natsync: a real Radicale, a real natsync server (TLS, SQLite), a
phone (natsync.client.EASClient) holding a Ping on its Calendar.

    .venv/bin/python bench/dav_bench.py                     # interval 1 s, 20 events each way
    .venv/bin/python bench/dav_bench.py --interval 5 --events 10

Radicale → phone: an event PUT into Radicale (a laptop's calendar program) until the phone's
held Ping answers — bounded by ``sources.dav.interval``, since the mirror polls with
sync-collection. Phone → Radicale: a Sync Add on the phone until the event is listed in
Radicale — the store's change feed wakes the mirror, so no interval is involved. Prints p50 /
p99 / max of each. Everything runs on loopback and stops by itself (``--time-limit``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' Radicale launcher

from tests.sources.dav.radicale import DavSide, radicale

from natsync.auth.passwords import hash_password
from natsync.cert import init_ca
from natsync.classes import calendar
from natsync.classes.ical import records_from_ics
from natsync.client import EASClient, ItemCommand
from natsync.config import ServerConfig
from natsync.eas.versions import V16_1
from natsync.server import start_server
from natsync.sources.dav import DavSettings, DavSource
from natsync.store import open_store
from natsync.store.api import FolderType
from natsync.wbxml import E

USER, PASSWORD = "ann", "bench password"


def ics(uid: str, text: str) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261201T090000Z\r\nDTSTART:20261224T180000Z\r\n"
        f"DTEND:20261224T200000Z\r\nSUMMARY:{text}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def figures(name: str, values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return (
        f"{name}: n={len(values)} p50={statistics.median(values) * 1000:.0f} ms "
        f"p99={p99 * 1000:.0f} ms max={values[-1] * 1000:.0f} ms"
    )


async def run(args: argparse.Namespace, work: Path) -> None:
    (work / "radicale").mkdir()
    with radicale(work / "radicale", {USER: PASSWORD}) as server:
        side = DavSide(server, USER, PASSWORD)
        await side.reset()
        ca = init_ca(work / "ca")
        cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], work / "tls")
        store = open_store(work / "natsync.sqlite3")
        hashed = hash_password(PASSWORD)
        now = datetime.now(UTC)
        await store.run(lambda txn: txn.add_user(USER, "ann@bench.test", "Ann", hashed, now))
        running = await start_server(
            ServerConfig(host="127.0.0.1", port=0, tls_cert=cert, tls_key=key), store
        )
        source = DavSource(
            store, DavSettings(url=server.url, ca_file=server.ca_file, interval=args.interval)
        )
        source.attach(running)
        phone = EASClient(
            f"https://localhost:{running.port}", USER, PASSWORD, ca_file=ca.cert_path,
            device_id="DAVBENCH", device_type="iPhone",
        )  # fmt: skip
        try:
            await phone.folder_sync()
            cal = phone.folder(type=FolderType.CALENDAR).server_id
            await phone.sync_items(cal)
            await asyncio.sleep(args.interval * 2)  # the mirror's first round is done
            await phone.sync_items(cal)
            to_phone: list[float] = []
            for n in range(args.events):
                ping = asyncio.create_task(phone.ping([cal], heartbeat=120))
                await asyncio.sleep(0.2 + (n % 7) * args.interval / 7)  # spread over the cycle
                started = time.monotonic()
                await side.request("PUT", f"/{USER}/calendar/b{n}.ics", ics(f"b{n}", f"B{n}"))
                assert await asyncio.wait_for(ping, args.interval * 4 + 30) == [cal]
                to_phone.append(time.monotonic() - started)
                await phone.sync_items(cal)
            to_dav: list[float] = []
            for n in range(args.events):
                record = records_from_ics(ics(f"p{n}", f"P{n}"))[0]
                data = E("AirSync", "ApplicationData", *calendar.CODEC.encode(record, V16_1, []))
                before = set(await side.listing("calendar"))
                started = time.monotonic()
                await phone.sync_items(cal, [ItemCommand.add(data, phone.new_client_id())])
                deadline = started + args.interval * 4 + 30
                while set(await side.listing("calendar")) == before:
                    assert time.monotonic() < deadline, "the phone's event never reached Radicale"
                    await asyncio.sleep(0.01)
                to_dav.append(time.monotonic() - started)
            print(f"sources.dav.interval = {args.interval:g} s")
            print(figures("Radicale PUT -> phone Ping answer", to_phone))
            print(figures("phone Sync Add -> listed in Radicale", to_dav))
        finally:
            await phone.close()
            await source.aclose()
            await running.close()
            await store.aclose()
            await side.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=1.0, help="sources.dav.interval")
    parser.add_argument("--events", type=int, default=20, help="events each way")
    parser.add_argument("--time-limit", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dav-bench-") as tmp:
        asyncio.run(asyncio.wait_for(run(args, Path(tmp)), args.time_limit))


if __name__ == "__main__":
    main()
