"""Soak: natsync behind the edge for a bounded time under steady traffic and a share of hostile
inputs (issue 19, "How we know").

    .venv/bin/python bench/soak_bench.py                   # 10 minutes, 2,000 held Pings
    .venv/bin/python bench/soak_bench.py --minutes 30 --devices 2000   # the figures in docs
    .venv/bin/python bench/soak_bench.py --quick           # 30 s, 40 phones: tests/bench

Everything runs on this machine and stops by itself (every child is stopped by its PID; the
whole run is bounded by ``--minutes`` plus setup and settle limits). As root, the bench runs in
a network namespace of its own (``nssoak-<pid>``: only its loopback, no link and no route out;
deleted at the end), where the public-address change below is played with nftables; without
root, or with ``--no-address-change``, it runs on the host's loopback without that change.
What runs:

* one natsync server process (ActiveSync over TLS and SMTP in with STARTTLS, on a SQLite store
  in a temp dir, uvloop; it trusts the edge's X-Forwarded-For) and ``natsync edge run`` in
  front of it (this tree's edge on 127.0.0.1, per-address limits raised because every phone
  comes from one address, access log off);
* ``--devices`` phones (bench/scale_bench.py's phone processes) that Sync their Inbox and then
  hold a Ping through the edge; a Ping answered with a change is followed by a Sync, which
  reports the Subjects it brought. In the namespace they dial the deployment's public address
  (192.0.3.10:443, which the "router" — an nftables DNAT in the namespace — forwards to the
  edge), as phones outside a NAT do;
* steady traffic: ``--mail-rate`` mails/s by SMTP to random phones (every tenth to u0, whose
  password the guesser below tries), ``--poison`` of them poison (a raw NUL, a
  quoted-printable ``=00``, C0 control characters in the body); ``--syncers`` more devices
  Sync every ``--sync-interval`` s over keep-alive;
* hostile traffic, each from its own loopback address: a head trickled one byte a second
  (127.0.0.2, every 20 s), a body that stalls after 10 bytes (127.0.0.2, every 20 s), an SMTP
  flood of 40 connections held 2 s (127.0.0.3, every 60 s), a wrong password for u0 every
  second (127.0.0.4, through the edge);
* a quarter of the way in, the public address changes (192.0.3.10 -> 192.0.3.11), as when an
  ISP renumbers a home line: the router forwards the new address, and every packet of the
  connections made to the old one is dropped from then on (new ones to it are refused). Each
  phone notices its connection died (the bench aborts the phone's side; its RST is dropped too,
  so the edge and the server keep their side, as they would) and dials the new address: a new
  TLS connection, a Sync with the SyncKey it had, a new Ping, all at once. DNS is not played:
  the phones know both addresses (natsync ddns publishing the new one is tested in the lab,
  docs/lab/dynamic-address.md);
* half-way: the edge gets SIGHUP (it reloads its certificates; held Pings must stay held);
* all along, a probe opens a new TCP + TLS connection straight to the server every 0.5 s, as
  the edge does for a new exchange, and times the two steps (the edge allows 0.9 s for TCP and
  5 s for the handshake: natsync.edge.tls).

Printed at the end: requests the edge served (by status class) and the 5xx count (must be 0),
the edge's log lines about unreachable servers, errors by kind as the bench's own clients saw
them, mails accepted by SMTP vs delivered to a phone (must be equal; duplicates must be 0), what
the hostile clients got (and the longest time a trickled head was held), the address change
(phones cut, how soon all were back), the probe's times, and RSS and open descriptors of the
edge, the server and the phone processes every ``--sample-every`` s; for the edge and the server
the RSS growth after warm-up (least-squares slope over the samples from 40% of the steady phase
on, once the address change's reconnection storm is over; limit :data:`RSS_GROWTH_LIMIT`).
The exit status is 1 when a "must" fails.
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
import shutil
import signal
import ssl
import subprocess
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

from natsync.edge.tls import BACKEND_CONNECT_TIMEOUT, BACKEND_HANDSHAKE_TIMEOUT  # noqa: E402

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
#: The deployment's public address before and after the change (192.0.3.0/24: natsync.lab's
#: "internet"; here it exists only on the namespace's loopback) and the port phones dial.
PUBLIC_OLD, PUBLIC_NEW, PUBLIC_PORT = "192.0.3.10", "192.0.3.11", 443
#: When the address changes and the edge gets SIGHUP (fractions of the steady phase).
CHANGE_AT, RELOAD_AT = 0.25, 0.5
#: Where the RSS fit starts (fraction of the steady phase): past the setup, the address change
#: and its reconnection storm (the allocator's high-water mark is reached by then).
WARMED_UP_AT = 0.4
#: Seconds every phone has to be back (Sync + Ping on the new address) after the change.
CHANGE_TIMEOUT = 180.0
#: Most RSS growth allowed over the fitted part of the run, as a share of the RSS at its start:
#: a leak of 100 bytes per request at this traffic (~20 requests/s) grows the server by ~7 MiB
#: an hour, 2% of its ~110 MiB over the 18 fitted minutes of a 30-minute run. Runs shorter
#: than :data:`FLAT_MIN_MINUTES` print the figure without a verdict (too short to tell
#: warm-up from growth).
RSS_GROWTH_LIMIT = 0.02
FLAT_MIN_MINUTES = 10.0
#: Seconds a syncer waits for a Sync's answer: one that never comes is an error of its kind
#: (the bench goes on), not a stalled bench.
SYNC_TIMEOUT = 30.0
#: Seconds between two probe connections straight to the server.
PROBE_EVERY = 0.5
#: The nftables table of the namespace (the "router" between the phones and the edge).
NFT_TABLE = "soak"


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
    )
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
            await asyncio.wait_for(phone.sync(), SYNC_TIMEOUT)
            tally.syncs += 1
        except (RuntimeError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            tally.errors[f"sync: {str(exc)[:70] or type(exc).__name__}"] += 1
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
        except (
            OSError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            TimeoutError,
            RuntimeError,
        ) as exc:
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
        #: One guess at a time on the connection: a slow answer (the 429's growing lock, a
        #: loaded machine) holds the next guess back instead of two reads racing.
        self.lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self.lock:
            await self._guess()

    async def _guess(self) -> None:
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


#: Scrapes of the edge's /metrics tried before the bench gives up (a loaded edge may cut one).
METRICS_TRIES = 3


async def _scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return (await reader.read()).decode()
    finally:
        writer.close()


async def edge_metrics(edge: scale_bench.EdgeProcess) -> dict[str, Any]:
    for attempt in range(METRICS_TRIES):
        try:
            text = await _scrape(edge.admin_port)
            break
        except OSError as exc:  # the admin listener cut it (its 5 s read deadline, a busy loop)
            if attempt == METRICS_TRIES - 1:
                raise
            print(f"  (edge /metrics scrape failed: {exc}; again)", flush=True)
            await asyncio.sleep(1.0)
    requests = Counter[str]()
    for status, count in re.findall(
        r'natsync_edge_requests_total\{cmd="[^"]*",status="(\d+)"\} (\d+)', text
    ):
        requests[status] += int(count)
    held = re.search(r"^natsync_edge_held_pings (\d+)", text, re.M)
    return {"requests": requests, "held": int(held.group(1)) if held else -1}


class Probe:
    """A new TCP + TLS connection straight to the server every PROBE_EVERY s, as the edge makes
    one for a new exchange: how long each step took, by phase."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.phase = "setup"
        self.times: dict[str, list[tuple[float, float]]] = {}
        self.failures: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            writer = None
            try:
                async with asyncio.timeout(BACKEND_CONNECT_TIMEOUT + BACKEND_HANDSHAKE_TIMEOUT + 5):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    tcp = time.monotonic() - started
                    await writer.start_tls(self.context, server_hostname="localhost")
                    tls = time.monotonic() - started - tcp
                self.times.setdefault(self.phase, []).append((tcp, tls))
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                self.failures[f"{self.phase}: {type(exc).__name__}"] += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(max(0.0, started + PROBE_EVERY - time.monotonic()))

    def lines(self) -> list[str]:
        out = []
        for phase, times in self.times.items():
            tcp = sorted(t for t, _ in times)
            tls = sorted(t for _, t in times)
            late = [
                sum(1 for t in tcp if t > BACKEND_CONNECT_TIMEOUT),
                sum(1 for t in tls if t > BACKEND_CONNECT_TIMEOUT),
                sum(1 for t in tls if t > BACKEND_HANDSHAKE_TIMEOUT),
            ]
            tcp_ms = [
                push_bench.pct(tcp, 50) * 1000,
                push_bench.pct(tcp, 99) * 1000,
                tcp[-1] * 1000,
            ]
            tls_ms = [
                push_bench.pct(tls, 50) * 1000,
                push_bench.pct(tls, 99) * 1000,
                tls[-1] * 1000,
            ]
            out.append(
                f"  {phase:15} {len(times):5d} probes"
                f"  TCP ms p50 {tcp_ms[0]:6.1f} p99 {tcp_ms[1]:7.1f} max {tcp_ms[2]:7.1f}"
                f"  TLS ms p50 {tls_ms[0]:6.1f} p99 {tls_ms[1]:7.1f} max {tls_ms[2]:7.1f}"
                f"  TCP > {BACKEND_CONNECT_TIMEOUT:g} s: {late[0]}, TLS > "
                f"{BACKEND_CONNECT_TIMEOUT:g} s: {late[1]}, "
                f"> {BACKEND_HANDSHAKE_TIMEOUT:g} s: {late[2]}"
            )
        if self.failures:
            out.append(f"  probe failures: {dict(self.failures)}")
        return out


def nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def router_up(edge_port: int) -> None:
    """The namespace's "router": the public address forwarded to the edge (DNAT)."""
    for address in (PUBLIC_OLD, PUBLIC_NEW):
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    nft(
        f"table ip {NFT_TABLE} {{\n"
        "  chain nat_out { type nat hook output priority -100; }\n"
        "  chain filter_out { type filter hook output priority 0; }\n"
        "}\n"
        f"add rule ip {NFT_TABLE} nat_out ip daddr {PUBLIC_OLD} tcp dport {PUBLIC_PORT} "
        f"dnat to 127.0.0.1:{edge_port}\n"
    )


def change_address(edge_port: int) -> int:
    """The public address changes: the new one is forwarded, every packet of a connection made
    to the old one is dropped (a new one is refused), and the phones' side of those connections
    is aborted (their RSTs are dropped: the edge keeps its side). The phones' sockets cut."""
    rule = f"add rule ip {NFT_TABLE} filter_out ct original ip daddr {PUBLIC_OLD}"
    nft(
        f"add rule ip {NFT_TABLE} nat_out ip daddr {PUBLIC_NEW} tcp dport {PUBLIC_PORT} "
        f"dnat to 127.0.0.1:{edge_port}\n"
        # the refusal below is a RST toward the phone (reply direction): let it through
        f"{rule} ct direction reply tcp flags rst accept\n"
        f"{rule} ct state new reject with tcp reset\n"
        f"{rule} drop\n"
    )
    killed = subprocess.run(
        ["ss", "-K", "-H", "-t", "dst", PUBLIC_OLD, "dport", "=", f":{PUBLIC_PORT}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sum(1 for line in killed.stdout.splitlines() if line.strip())


def growth(points: list[tuple[float, int]]) -> tuple[float, float]:
    """Least-squares slope of RSS over time (MiB/h) and the growth it makes over the points'
    span as a share of the first point's RSS."""
    n = len(points)
    if n < 3:
        return 0.0, 0.0
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    slope = sum((t - mt) * (r - mr) for t, r in points) / var if var else 0.0  # bytes/s
    span = points[-1][0] - points[0][0]
    return slope * 3600 / 2**20, slope * span / points[0][1]


def sample(procs: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    return {
        name: (sum(rss(p) for p in pids), sum(fds(p) for p in pids)) for name, pids in procs.items()
    }


# --------------------------------------------------------------------------- the bench


async def bench(args: argparse.Namespace) -> bool:
    push_bench.raise_nofile()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()

    def stop_early() -> None:  # once: the cleanup below must not be cancelled in turn
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            loop.add_signal_handler(signum, lambda: None)
        main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):  # stopped early: the children still stop
        loop.add_signal_handler(signum, stop_early)
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
    probe_stop = asyncio.Event()
    probe_task: asyncio.Future[None] | None = None
    load: list[asyncio.Future[Any]] = []
    try:
        ports = await server.line()
        probe = Probe(ports["https"], context)
        probe_task = asyncio.ensure_future(probe.run(probe_stop))
        edge = scale_bench.EdgeProcess.start(
            work,
            [ports["https"]],
            cert,
            key,
            2.0,
            {"header_timeout": args.header_timeout, "body_timeout": args.body_timeout},
        )
        dial = str(edge.port)
        if args.in_netns:
            router_up(edge.port)
            dial = f"{PUBLIC_OLD}:{PUBLIC_PORT},{PUBLIC_NEW}:{PUBLIC_PORT}"
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
                dial,
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
        probe.phase = "steady"
        procs = {
            "edge": [edge.proc.pid],
            "server": [server.proc.pid],
            "phones": [c.proc.pid for c in phones],
        }
        steady = args.minutes * 60
        t0 = time.monotonic()
        samples: list[tuple[float, dict[str, tuple[int, int]]]] = [(0.0, sample(procs))]
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.sample_every)
                samples.append((time.monotonic() - t0, sample(procs)))

        guesser = Guesser(edge.port, context, tally)
        load += [
            asyncio.ensure_future(sampler()),
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
        change: dict[str, Any] = {}
        if args.in_netns:
            await asyncio.sleep(t0 + steady * CHANGE_AT - time.monotonic())
            change = await address_change(edge, events, args.devices, probe)
        await asyncio.sleep(max(0.0, t0 + steady * RELOAD_AT - time.monotonic()))
        held_before = (await edge_metrics(edge))["held"]
        reload_at = time.monotonic()
        os.kill(edge.proc.pid, signal.SIGHUP)
        await asyncio.sleep(2.0)
        held_after = (await edge_metrics(edge))["held"]
        print(
            f"SIGHUP to the edge: held Pings {held_before} before, {held_after} 2 s after",
            flush=True,
        )
        await asyncio.sleep(max(0.0, t0 + steady - time.monotonic()))
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and not all(s in events.arrivals for s in tally.accepted):  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        samples.append((time.monotonic() - t0, sample(procs)))
        metrics = await edge_metrics(edge)
        stat = await server.ask("stat")
        unreachable = [
            line
            for line in edge.log.read_text(errors="replace").splitlines()
            if "cannot reach the server" in line
        ]
        return report(
            args, tally, events, metrics, stat, samples, (held_before, held_after, reload_at),
            change, probe, unreachable,
        )  # fmt: skip
    finally:
        for task in load:  # done already, unless stopped early
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        probe_stop.set()
        if probe_task is not None:
            await asyncio.gather(probe_task, return_exceptions=True)
        for listener in listeners:
            listener.cancel()
        if edge is not None:
            edge.stop()
        for child in children:
            await child.stop()
        if args.keep:
            print(f"kept: {work} (the store, the edge's and the server's logs)", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def address_change(
    edge: scale_bench.EdgeProcess, events: Any, devices: int, probe: Probe
) -> dict[str, Any]:
    """Change the public address; wait until every phone is back on the new one."""
    before = await edge_metrics(edge)
    probe.phase = "address change"
    at = time.monotonic()
    cut = change_address(edge.port)
    print(
        f"public address {PUBLIC_OLD} -> {PUBLIC_NEW}: {cut} phone connections aborted",
        flush=True,
    )
    back: list[float] = []
    peak_held = before["held"]
    while time.monotonic() - at < CHANGE_TIMEOUT:
        back = [t - at for t in events.moved.values() if t >= at]
        peak_held = max(peak_held, (await edge_metrics(edge))["held"])
        if len(back) >= devices:
            break
        await asyncio.sleep(0.5)
    probe.phase = "after change"
    after = await edge_metrics(edge)
    print(
        f"  phones back (Sync + Ping on {PUBLIC_NEW}): {len(back)} of {devices}"
        + (f", the last after {max(back):.1f} s" if back else ""),
        flush=True,
    )
    return {
        "cut": cut,
        "back": len(back),
        "last": max(back) if back else -1.0,
        "p50": push_bench.pct(back, 50) if back else -1.0,
        "held": (before["held"], peak_held, after["held"]),
        "at": at,
    }


def report(
    args: argparse.Namespace,
    tally: Tally,
    events: Any,
    metrics: dict[str, Any],
    stat: dict[str, Any],
    samples: list[tuple[float, dict[str, tuple[int, int]]]],
    reload: tuple[int, int, float],
    change: dict[str, Any],
    probe: Probe,
    unreachable: list[str],
) -> bool:
    """Print the figures; True when every "must" holds."""
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
    failed: list[str] = []
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
    if errors_5xx:
        failed.append("5xx")
    print(f"edge log, server unreachable: {len(unreachable)}")
    for line in unreachable[:5]:
        print(f"  {line[:200]}")
    pushes = sum(len(times) for times in events.arrivals.values())
    print(f"Syncs by the syncers: {tally.syncs:,}; mails a phone's Ping + Sync brought: {pushes:,}")
    print(
        f"mails accepted (250): {len(accepted):,}  delivered to a phone: {len(arrived):,}  "
        f"duplicates: {duplicates}  (accepted = delivered, 0 duplicates)"
    )
    if len(arrived) != len(accepted) or duplicates or not accepted:
        failed.append("mail delivery")
    print(
        f"  to u0 (the guessed user): accepted {len(to_u0)}, delivered "
        f"{sum(1 for s in to_u0 if s in events.arrivals)}; server delivered "
        f"{stat['delivered']:,} in all"
    )
    print(f"mails refused by SMTP: {dict(tally.rejected) or 0}")
    held_before, held_after, reload_at = reload
    at = change.get("at", reload_at)
    # A phone's last cut: by the address change, by the SIGHUP (must be none), or elsewhen.
    cut_by_change = sum(1 for t in events.cut.values() if at <= t < reload_at)
    cut_by_reload = sum(1 for t in events.cut.values() if t >= reload_at)
    print(
        f"errors by kind (bench clients): {dict(tally.errors) or 0}; phone errors: "
        f"{len(events.errors)} {events.errors[:3]}; phone connections cut: "
        f"{len(events.cut) - cut_by_change - cut_by_reload} (besides the address change's "
        f"{cut_by_change} and the SIGHUP's below)"
    )
    if tally.errors or events.errors or len(events.cut) != cut_by_change + cut_by_reload:
        failed.append("client errors")
    print("hostile clients got:")
    for kind, count in sorted(tally.hostile.items()):
        print(f"  {kind}: {count}")
    print(
        f"  longest a trickled head was held: {tally.trickle_held:.1f} s "
        f"(edge header_timeout {args.header_timeout:g} s + 1 s sweep)"
    )
    if change:
        held = change["held"]
        print(
            f"public address change {PUBLIC_OLD} -> {PUBLIC_NEW}: {change['cut']} phone "
            f"connections cut, {change['back']} of {args.devices} phones back (Sync + Ping on the "
            f"new address), p50 {change['p50']:.1f} s, last {change['last']:.1f} s; edge held "
            f"requests {held[0]} before, {held[1]} at most, {held[2]} after"
        )
        if change["back"] < args.devices:
            failed.append("address change")
    else:
        print("public address change: not played (needs root: --no-address-change or not root)")
    # (a Ping answered by a mail a moment before is not held while its phone Syncs: the counts
    # may differ by a few; a held Ping the reload cut shows as a phone's cut)
    print(
        f"edge SIGHUP: held Pings {held_before} -> {held_after} 2 s later; phone connections it "
        f"cut: {cut_by_reload} (must be 0)"
    )
    if cut_by_reload:
        failed.append("SIGHUP")
    print(
        "new connections straight to the server (the probe; the edge allows "
        f"{BACKEND_CONNECT_TIMEOUT:g} s for TCP, {BACKEND_HANDSHAKE_TIMEOUT:g} s for TLS):"
    )
    for line in probe.lines():
        print(line)
    names = list(samples[0][1])
    print("RSS MiB / open descriptors every sample (s into the steady phase):")
    print("   s  " + "".join(f"{name:>20}" for name in names))
    for t, values in samples:
        cells = "".join(f"{values[n][0] / 2**20:12.1f} /{values[n][1]:6d}" for n in names)
        print(f"{t:5.0f}  {cells}")
    steady = args.minutes * 60
    fitted = [(t, v) for t, v in samples if t >= steady * WARMED_UP_AT]
    verdict = args.minutes >= FLAT_MIN_MINUTES
    for name in ("edge", "server"):
        points = [(t, v[name][0]) for t, v in fitted]
        slope, share = growth(points)
        flat = share <= RSS_GROWTH_LIMIT
        judged = ("flat" if flat else "GROWING") if verdict else "no verdict: run too short"
        print(
            f"RSS {name}: from {WARMED_UP_AT:.0%} of the run on ({len(points)} samples) "
            f"{points[0][1] / 2**20 if points else 0:.1f} -> "
            f"{points[-1][1] / 2**20 if points else 0:.1f} MiB, slope {slope:+.2f} MiB/h, "
            f"fitted growth {share:+.2%} (limit {RSS_GROWTH_LIMIT:.0%}): {judged}"
        )
        if verdict and not flat:
            failed.append(f"RSS {name}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"result: {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}")
    return not failed


def netns_run(argv: list[str]) -> int:
    """Run this bench again inside a network namespace of its own (deleted at the end)."""
    name = f"nssoak-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        command = ["ip", "netns", "exec", name, sys.executable, __file__, *argv, "--in-netns"]
        inner = subprocess.Popen(command)
        try:
            return inner.wait()
        except KeyboardInterrupt:  # stopped early: the inner bench stops its children first
            inner.send_signal(signal.SIGTERM)
            return inner.wait(120)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


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
    parser.add_argument("--sample-every", type=float, default=60.0, help="s between RSS samples")
    parser.add_argument(
        "--no-address-change", action="store_true", help="run on the host's loopback, no change"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="30 s, 40 phones, 3 s edge timeouts, a sample every 3 s (tests/bench)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (store, edge and server logs)"
    )
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    for name in ("--db", "--cert", "--key"):
        parser.add_argument(name, default="")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.devices, args.settle, args.sample_every = 0.5, 40, 20.0, 3.0
        args.header_timeout = args.body_timeout = 3.0
    if args.role == "server":
        push_bench.run(serve(args))
        return
    if not args.in_netns and not args.no_address_change:
        if os.geteuid() == 0:
            sys.exit(netns_run(sys.argv[1:]))
        print("not root: no network namespace, so no public-address change", flush=True)
    limit = args.minutes * 60 + SETUP_TIMEOUT + CHANGE_TIMEOUT + args.settle + 120
    try:
        passed = push_bench.run(asyncio.wait_for(bench(args), limit))
    except asyncio.CancelledError:
        print("stopped early (SIGINT or SIGTERM): no figures", flush=True)
        sys.exit(130)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
