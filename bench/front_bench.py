#!/usr/bin/env python3
"""The server's own HTTP/1.1 front alone: keep-alive requests per second and the server's CPU per
request, with a handler that answers 200 "ok" at once (so what is measured is the front: its
connection machine, the asyncio shell, the head parser, the writes).

    .venv/bin/python bench/front_bench.py [--seconds 6] [--rounds 3] [--connections 32]

Each round starts a fresh server process (uvloop when installed, plain HTTP on 127.0.0.1, no
store) and drives it with wrk (Debian's ``wrk``) for ``--seconds``; the server reports its own CPU
time from the first request to the end, divided by the requests it answered. The median of the
rounds is printed. The machine is shared: compare CPU per request between runs, not the rate.
Everything is bounded in time, and the server process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

WRK = shutil.which("wrk") or "/usr/bin/wrk"
#: Seconds the server process may take to start before the round is given up.
START_TIMEOUT = 30.0


def serve(seconds: float) -> None:
    """The server role: one Front with a trivial handler; prints its port, then its CPU."""
    from natsync.server.front import Front, Reply, Request

    count = [0]

    async def handler(request: Request) -> Reply:
        count[0] += 1
        return Reply(200, {"Content-Type": "text/plain"}, b"ok")

    async def main() -> None:
        front = await Front.start(handler, "127.0.0.1", 0, None, 1 << 20)
        print(front.port, flush=True)
        start = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - start
        await front.close(0.5)
        print(f"{count[0]} {cpu}", flush=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def one_round(seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request) of one round."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", "server", "--seconds", str(seconds + 2)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        out = subprocess.run(
            [WRK, "-t1", f"-c{connections}", f"-d{round(seconds)}s", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=seconds + START_TIMEOUT,
            check=True,
        ).stdout
        count, cpu = proc.stdout.readline().split()
        proc.wait(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
            proc.wait()
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    rate = float(found.group(1)) if found else 0.0
    return rate, float(cpu) / max(int(count), 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    args = parser.parse_args()
    if args.role == "server":
        serve(args.seconds)
        return
    if not os.path.exists(WRK):
        raise SystemExit("wrk is needed: apt-get install wrk")
    print(f"load average before: {os.getloadavg()}")
    rates, cpus = [], []
    for n in range(args.rounds):
        rate, cpu = one_round(args.seconds, args.connections)
        rates.append(rate)
        cpus.append(cpu)
        print(f"round {n + 1}: {rate:,.0f} req/s, {cpu:.1f} us server CPU per request")
    print(
        f"median: {statistics.median(rates):,.0f} req/s, "
        f"{statistics.median(cpus):.1f} us server CPU per request "
        f"({args.connections} keep-alive connections, {args.seconds:g} s per round)"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
