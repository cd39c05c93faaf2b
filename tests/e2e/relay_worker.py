"""One outbound relay worker as a process of its own: ``python -m tests.e2e.relay_worker URL
PORT LEASE TIMEOUT`` relays the store's queue to the smarthost 127.0.0.1:PORT with a short
lease (seconds) and a quick idle poll, until SIGTERM. What a server process runs, without the
rest of the server, so a test can give it a lease of seconds and SIGKILL it mid-send."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from natsync.mail.relay import Relay, SmartHost
from natsync.store import open_store

#: How often the worker looks at the queue when nothing woke it (entries of a dead worker).
IDLE_POLL = timedelta(milliseconds=200)


async def main(url: str, port: int, lease: float, timeout: float) -> None:
    store = open_store(url)
    relay = Relay(
        store,
        SmartHost("127.0.0.1", port, starttls=False, timeout=timeout),
        hostname="relay.test",
        retry_base=timedelta(milliseconds=200),
        retry_max=timedelta(seconds=1),
        idle_poll=IDLE_POLL,
        lease=timedelta(seconds=lease),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    relay.start()
    sys.stderr.write(f"relay worker {relay.owner} ready\n")
    sys.stderr.flush()
    try:
        await stop.wait()
    finally:
        await relay.aclose()
        await store.aclose()
        sys.stderr.write(f"relay worker sent={relay.sent} retried={relay.retried}\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
