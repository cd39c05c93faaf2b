"""Soak: natsync behind the edge for a bounded time under steady traffic and a share of hostile
inputs (issue 19, "How we know").

    .venv/bin/python bench/soak_bench.py                   # 10 minutes, 2,000 held Pings
    .venv/bin/python bench/soak_bench.py --minutes 30 --devices 3000

Everything runs on this machine over loopback and stops by itself (every child is stopped by
its PID). What runs:

* one natsync server process (ActiveSync over TLS and SMTP in with STARTTLS, on a SQLite store
  in a temp dir, uvloop; it trusts the edge's X-Forwarded-For) and ``natsync edge run`` in
  front of it (this tree's edge, per-address limits raised because every phone comes from
  127.0.0.1, access log off);
* ``--devices`` phones (bench/scale_bench.py's phone processes) that Sync their Inbox and then
  hold a Ping through the edge; a Ping answered with a change is followed by a Sync, which
  reports the Subjects it brought;
* steady traffic: ``--mail-rate`` mails/s by SMTP to random phones (every tenth to u0, whose
  password the guesser below tries), ``--poison`` of them poison (a raw NUL, a
  quoted-printable ``=00``, C0 control characters in the body); ``--syncers`` more devices
  Sync every ``--sync-interval`` s over keep-alive;
* hostile traffic, each from its own loopback address: a head trickled one byte a second
  (127.0.0.2, every 20 s), a body that stalls after 10 bytes (127.0.0.2, every 20 s), an SMTP
  flood of 40 connections held 2 s (127.0.0.3, every 60 s), a wrong password for u0 every
  second (127.0.0.4, through the edge);
* half-way: the edge gets SIGHUP (it reloads its certificates; held Pings must stay held).
  A public-address change is not part of this bench: it needs the lab's network namespaces
  (natsync.lab) and a DDNS server, which this loopback bench does not set up.

Printed at the end: requests the edge served (by status class) and the 5xx count (must be 0),
errors by kind as the bench's own clients saw them, mails accepted by SMTP vs delivered to a
phone (must be equal; duplicates must be 0), what the hostile clients got (and the longest time
a trickled head was held), and RSS and open descriptors of the edge, the server and the phone
processes at the start (after setup), middle and end of the steady phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import push_bench  # noqa: E402  (bench/ is not a package)
import scale_bench  # noqa: E402
from push_bench import DOMAIN, PASSWORD, Child, Phone, Smtp  # noqa: E402

#: Seconds the phones may take to reach their held Pings.
SETUP_TIMEOUT = 600.0
#: Phone processes: devices per process at most.
DEVICES_PER_PROC = 1500
#: Seconds between hostile attempts of each kind.
TRICKLE_EVERY = 20.0
STALL_EVERY = 20.0
FLOOD_EVERY = 60.0
GUESS_EVERY = 1.0
#: SMTP flood: connections opened at once from one address, and how long they are held.
FLOOD_SIZE = 40
FLOOD_HOLD = 2.0
TRICKLER, FLOODER, GUESSER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
EAS = "/Microsoft-Server-ActiveSync"


# --------------------------------------------------------------------------- server process


async def serve(args: argparse.Namespace) -> None:
    """The server process: natsync's ActiveSync server and SMTP in (STARTTLS offered) on the
    bench store, trusting the edge's X-Forwarded-For. ``stat`` on stdin answers counters."""
    from natsync.config import ServerConfig
    from natsync.fdlimit import raise_open_files_limit
    from natsync.mail.smtp_in import start_smtp_server
    from natsync.server import start_server
    from natsync.server.app import tls_context
    from natsync.store import open_store

    raise_open_files_limit()
    logging.basicConfig(  # the server's log beside its store, not on the bench's output
        filename=str(Path(args.db).parent / "server.log"), level=logging.INFO
    )
    store = open_store(args.db)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=Path(args.cert),
        tls_key=Path(args.key),
        data_dir=Path(args.db).parent,
        domains=(DOMAIN,),
        require_provisioning=False,
        trusted_proxies=("127.0.0.1",),
    ).check()
    server = await start_server(config, store)
    smtp = await start_smtp_server(
        store, "127.0.0.1", 0, config.domains, hostname="soak", tls_context=tls_context(config)
    )
    print(json.dumps({"https": server.port, "smtp": smtp.port}), flush=True)
    reader = await scale_bench.stdin()
    while (await reader.readline()).strip() == b"stat":
        feed = getattr(store, "feed", None)
        stat = {
            "waiting": feed.waiting() if feed is not None else -1,
            "delivered": smtp.stats["delivered"],
            "front": len(server.front.connections),
            "smtp_open": smtp.counts.open if smtp.counts is not None else -1,
        }
        print(json.dumps(stat), flush=True)
    await smtp.close()
    await server.close()
    store.close()


# --------------------------------------------------------------------------- traffic


class Tally:
    """What the bench's own clients saw."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.hostile: Counter[str] = Counter()
        self.accepted: dict[str, str] = {}  # subject -> recipient
        self.rejected: Counter[str] = Counter()
        self.syncs = 0
        self.trickle_held = 0.0


def mail(n: int, user: int, poison: int) -> str:
    body = ["hello\r\n", "a raw NUL: \x00 here\r\n", "qp: a=00b=01c\r\n", "ctl: \x01\x1b\x7f\r\n"]
    qp = "Content-Transfer-Encoding: quoted-printable\r\n" if poison == 2 else ""
    return (
        f"From: sender@elsewhere.test\r\nTo: u{user}@{DOMAIN}\r\nSubject: soak-{n}\r\n"
        f"Message-ID: <soak-{n}@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n{qp}\r\n"
        + body[poison]
    )


async def mailer(args: argparse.Namespace, port: int, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(19)
    smtp = await Smtp.connect(port)
    t0, n = time.monotonic(), 0
    try:
        while not stop.is_set():
            delay = t0 + n / args.mail_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            user = 0 if n % 10 == 0 else rng.randrange(args.devices)
            poison = rng.randrange(1, 4) if rng.random() < args.poison else 0
            subject = f"soak-{n}"
            try:
                await smtp.send(f"u{user}@{DOMAIN}", mail(n, user, poison))
                tally.accepted[subject] = f"u{user}"
            except (RuntimeError, OSError, asyncio.IncompleteReadError) as exc:
                tally.rejected[f"SMTP {str(exc)[:60]}"] += 1
                await smtp.close()
                smtp = await Smtp.connect(port)
            n += 1
    finally:
        await smtp.close()


async def syncer(
    args: argparse.Namespace,
    index: int,
    port: int,
    context: ssl.SSLContext,
    inbox: str,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    phone = Phone(index, port, inbox)
    while not stop.is_set():
        try:
            if phone.writer is None or phone.writer.is_closing():
                phone.reader, phone.writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost"
                )
            await phone.sync()
            tally.syncs += 1
        except (RuntimeError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            tally.errors[f"sync: {str(exc)[:70]}"] += 1
            if phone.writer is not None:
                phone.writer.close()
            phone.writer = None
        await asyncio.sleep(args.sync_interval)
    if phone.writer is not None:
        phone.writer.close()


async def _tls(port: int, context: ssl.SSLContext, source: str) -> Any:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(source, 0)
    )


def _status(answer: bytes) -> str:
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"


async def every(seconds: float, stop: asyncio.Event, attempt: Any, tally: Tally, kind: str) -> None:
    """Run *attempt* every *seconds* (each in its own task) until *stop*."""
    running: set[asyncio.Task[None]] = set()

    async def guarded() -> None:
        try:
            await attempt()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.hostile[f"{kind}: {type(exc).__name__}"] += 1

    while not stop.is_set():
        task = asyncio.ensure_future(guarded())
        running.add(task)
        task.add_done_callback(running.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    await asyncio.gather(*running, return_exceptions=True)


async def trickle(port: int, context: ssl.SSLContext, tally: Tally) -> None:
    reader, writer = await _tls(port, context, TRICKLER)
    started = time.monotonic()
    reading = asyncio.ensure_future(reader.read())
    head = f"POST {EAS}?Cmd=Sync HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".encode() + b"a" * 500
    try:
        for byte in head:
            if reading.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(1.0)
        answer = await asyncio.wait_for(reading, 10)
    finally:
        writer.close()
    tally.trickle_held = max(tally.trickle_held, time.monotonic() - started)
    tally.hostile[f"trickled head: {_status(answer)}"] += 1


async def stall(
    port: int, context: ssl.SSLContext, tally: Tally, timeout: float, user: int
) -> None:
    """A valid Sync whose body stops after 10 bytes: the server, having checked the
    credentials, waits for the body; the edge's body_timeout ends it first."""
    import base64

    reader, writer = await _tls(port, context, TRICKLER)
    token = base64.b64encode(f"u{user}:{PASSWORD}".encode()).decode()
    writer.write(
        f"POST {EAS}?Cmd=Sync&User=u{user}&DeviceId=stall&DeviceType=T HTTP/1.1\r\n"
        f"Host: localhost\r\nAuthorization: Basic {token}\r\nMS-ASProtocolVersion: 16.1\r\n"
        "Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 1000\r\n\r\n".encode()
        + b"x" * 10
    )
    try:
        answer = await asyncio.wait_for(reader.read(), timeout + 10)
    finally:
        writer.close()
    tally.hostile[f"stalled body: {_status(answer)}"] += 1


async def flood(port: int, tally: Tally) -> None:
    conns = []
    try:
        for _ in range(FLOOD_SIZE):
            conns.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOODER, 0)))
        for reader, _ in conns:
            greeting = await asyncio.wait_for(reader.readline(), 10)
            tally.hostile[f"SMTP flood: {greeting[:3].decode() or 'closed'}"] += 1
        await asyncio.sleep(FLOOD_HOLD)
    finally:
        for _, writer in conns:
            writer.close()


class Guesser:
    """Wrong passwords for u0 over one keep-alive connection through the edge."""

    def __init__(self, port: int, context: ssl.SSLContext, tally: Tally) -> None:
        self.port, self.context, self.tally = port, context, tally
        self.conn: Any = None
        self.n = 0

    async def __call__(self) -> None:
        import base64

        self.n += 1
        token = base64.b64encode(f"u0:guess{self.n}".encode()).decode()
        if self.conn is None:
            self.conn = await _tls(self.port, self.context, GUESSER)
        reader, writer = self.conn
        request = f"OPTIONS {EAS} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {token}"
        writer.write(request.encode() + b"\r\n\r\n")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        except (asyncio.IncompleteReadError, TimeoutError):
            writer.close()
            self.conn = None
            raise
        self.tally.hostile[f"wrong password: {_status(head)}"] += 1


# --------------------------------------------------------------------------- measuring


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * push_bench.PAGE
    except OSError:
        return -1


async def edge_metrics(edge: scale_bench.EdgeProcess) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.admin_port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        text = (await reader.read()).decode()
    finally:
        writer.close()
    requests = Counter[str]()
    for status, count in re.findall(
        r'natsync_edge_requests_total\{cmd="[^"]*",status="(\d+)"\} (\d+)', text
    ):
        requests[status] += int(count)
    held = re.search(r"^natsync_edge_held_pings (\d+)", text, re.M)
    return {"requests": requests, "held": int(held.group(1)) if held else -1}


def sample(procs: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    return {
        name: (sum(rss(p) for p in pids), sum(fds(p) for p in pids)) for name, pids in procs.items()
    }


# --------------------------------------------------------------------------- the bench


async def bench(args: argparse.Namespace) -> None:
    push_bench.raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    cert, key = push_bench.self_signed(work)
    db = work / "natsync.db"
    users = args.devices + args.syncers
    inbox = push_bench.make_store(db, users)
    context = ssl.create_default_context(cafile=str(cert))
    tally = Tally()
    server = await Child.start(
        "--role", "server", "--db", str(db), "--cert", str(cert), "--key", str(key), script=__file__
    )
    children: list[Child] = [server]
    edge: scale_bench.EdgeProcess | None = None
    listeners: list[asyncio.Task[None]] = []
    try:
        ports = await server.line()
        edge = scale_bench.EdgeProcess.start(
            work,
            [ports["https"]],
            cert,
            key,
            2.0,
            {"header_timeout": args.header_timeout, "body_timeout": args.body_timeout},
        )
        events = scale_bench.CutEvents()
        per = -(-args.devices // DEVICES_PER_PROC)
        phones = []
        for p in range(per):
            indices = range(p, args.devices, per)
            child = await Child.start(
                "--role",
                "phones",
                "--cert",
                str(cert),
                "--inbox",
                inbox,
                "--ports",
                str(edge.port),
                "--devices-list",
                ",".join(map(str, indices)),
                script=scale_bench.__file__,
            )
            phones.append(child)
            listeners.append(asyncio.ensure_future(events.listen(child)))
        children += phones
        started = time.monotonic()
        while (await server.ask("stat"))["waiting"] < args.devices:
            if time.monotonic() - started > SETUP_TIMEOUT or events.errors:
                raise RuntimeError(f"setup did not finish: {events.errors[:3]}")
            await asyncio.sleep(1.0)
        setup = time.monotonic() - started
        print(f"setup: {args.devices} held Pings through the edge in {setup:.0f} s", flush=True)
        procs = {
            "edge": [edge.proc.pid],
            "server": [server.proc.pid],
            "phones": [c.proc.pid for c in phones],
        }
        samples = {"start": sample(procs)}
        stop = asyncio.Event()
        guesser = Guesser(edge.port, context, tally)
        load = [
            asyncio.ensure_future(mailer(args, ports["smtp"], tally, stop)),
            *(
                asyncio.ensure_future(
                    syncer(args, args.devices + i, edge.port, context, inbox, tally, stop)
                )
                for i in range(args.syncers)
            ),
            asyncio.ensure_future(
                every(
                    TRICKLE_EVERY,
                    stop,
                    lambda: trickle(edge.port, context, tally),
                    tally,
                    "trickled head",
                )
            ),
            asyncio.ensure_future(
                every(
                    STALL_EVERY,
                    stop,
                    lambda: stall(edge.port, context, tally, args.body_timeout, args.devices),
                    tally,
                    "stalled body",
                )
            ),
            asyncio.ensure_future(
                every(FLOOD_EVERY, stop, lambda: flood(ports["smtp"], tally), tally, "SMTP flood")
            ),
            asyncio.ensure_future(every(GUESS_EVERY, stop, guesser, tally, "wrong password")),
        ]
        steady = args.minutes * 60
        await asyncio.sleep(steady / 2)
        samples["middle"] = sample(procs)
        held_before = (await edge_metrics(edge))["held"]
        os.kill(edge.proc.pid, signal.SIGHUP)
        await asyncio.sleep(2.0)
        held_after = (await edge_metrics(edge))["held"]
        print(
            f"SIGHUP to the edge: held Pings {held_before} before, {held_after} 2 s after",
            flush=True,
        )
        await asyncio.sleep(steady / 2 - 2.0)
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and not all(s in events.arrivals for s in tally.accepted):  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        samples["end"] = sample(procs)
        metrics = await edge_metrics(edge)
        stat = await server.ask("stat")
        report(args, tally, events, metrics, stat, samples, held_before, held_after)
    finally:
        for listener in listeners:
            listener.cancel()
        if edge is not None:
            edge.stop()
        for child in children:
            await child.stop()


def report(
    args: argparse.Namespace,
    tally: Tally,
    events: Any,
    metrics: dict[str, Any],
    stat: dict[str, Any],
    samples: dict[str, dict[str, tuple[int, int]]],
    held_before: int,
    held_after: int,
) -> None:
    requests: Counter[str] = metrics["requests"]
    total = sum(requests.values())
    by_class = Counter[str]()
    for status, count in requests.items():
        by_class[status[0] + "xx"] += count
    errors_5xx = by_class["5xx"]
    accepted = tally.accepted
    arrived = [s for s in accepted if s in events.arrivals]
    duplicates = sum(1 for s in accepted if len(events.arrivals.get(s, ())) > 1)
    to_u0 = [s for s, user in accepted.items() if user == "u0"]
    print(
        f"\nsoak: {args.minutes:g} min steady, {args.devices} held Pings through the edge, "
        f"{args.mail_rate:g} mails/s ({args.poison:.0%} poison), {args.syncers} syncers"
    )
    print(
        f"requests the edge served: {total:,} "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(by_class.items()))
    )
    print(f"  by status: {dict(sorted(requests.items()))}")
    print(f"5xx: {errors_5xx}  (must be 0)")
    pushes = sum(len(times) for times in events.arrivals.values())
    print(f"Syncs by the syncers: {tally.syncs:,}; mails a phone's Ping + Sync brought: {pushes:,}")
    print(
        f"mails accepted (250): {len(accepted):,}  delivered to a phone: {len(arrived):,}  "
        f"duplicates: {duplicates}  (accepted = delivered, 0 duplicates)"
    )
    print(
        f"  to u0 (the guessed user): accepted {len(to_u0)}, delivered "
        f"{sum(1 for s in to_u0 if s in events.arrivals)}; server delivered "
        f"{stat['delivered']:,} in all"
    )
    print(f"mails refused by SMTP: {dict(tally.rejected) or 0}")
    print(
        f"errors by kind (bench clients): {dict(tally.errors) or 0}; phone errors: "
        f"{len(events.errors)} {events.errors[:3]}; phone connections cut: {len(events.cut)}"
    )
    print("hostile clients got:")
    for kind, count in sorted(tally.hostile.items()):
        print(f"  {kind}: {count}")
    print(
        f"  longest a trickled head was held: {tally.trickle_held:.1f} s "
        f"(edge header_timeout {args.header_timeout:g} s + 1 s sweep)"
    )
    print(f"edge SIGHUP: held Pings {held_before} -> {held_after}")
    print("process       RSS MiB start/middle/end      open fds start/middle/end")
    for name in samples["start"]:
        mib = [samples[at][name][0] / 2**20 for at in ("start", "middle", "end")]
        fd = [samples[at][name][1] for at in ("start", "middle", "end")]
        print(
            f"{name:10} {mib[0]:8.1f} {mib[1]:8.1f} {mib[2]:8.1f}"
            f"      {fd[0]:7d} {fd[1]:7d} {fd[2]:7d}"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the steady phase")
    parser.add_argument("--devices", type=int, default=2000, help="held Pings")
    parser.add_argument("--mail-rate", type=float, default=5.0, help="SMTP mails per second")
    parser.add_argument("--poison", type=float, default=0.05, help="share of poison mails")
    parser.add_argument("--syncers", type=int, default=4)
    parser.add_argument("--sync-interval", type=float, default=1.0, help="s between Syncs")
    parser.add_argument("--header-timeout", type=float, default=30.0, help="the edge's")
    parser.add_argument("--body-timeout", type=float, default=60.0, help="the edge's")
    parser.add_argument("--settle", type=float, default=60.0, help="s to wait for the last mails")
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    for name in ("--db", "--cert", "--key"):
        parser.add_argument(name, default="")
    args = parser.parse_args()
    if args.role == "server":
        push_bench.run(serve(args))
    else:
        limit = args.minutes * 60 + SETUP_TIMEOUT + args.settle + 120
        push_bench.run(asyncio.wait_for(bench(args), limit))


if __name__ == "__main__":
    main()
