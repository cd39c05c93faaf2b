"""Several natsync server processes on one PostgreSQL behind the edge: held Pings, push, Sync,
a killed process.

    .venv/bin/python bench/scale_bench.py                       # 1, 2, 4 processes, 2,000 Pings
    .venv/bin/python bench/scale_bench.py --servers 2 --devices 500 --messages 100
    .venv/bin/python bench/scale_bench.py --store postgresql://natsync@db/bench   # your own DB
    .venv/bin/python bench/scale_bench.py --direct              # no edge: the servers alone

Everything runs on this machine over loopback and stops by itself (``--time-limit``, default
900 s; every child is stopped by its PID). Unless ``--store`` names a database, the bench starts
its own PostgreSQL from Debian's binaries (initdb in a temp dir, loopback, a free port, default
durability settings) and removes it at the end. Per round of K processes (``--servers``):

* K server processes (bench/push_bench.py's server role: the natsync ActiveSync server over TLS
  and SMTP in, on the PostgreSQL store with its one LISTEN connection, uvloop), on a fresh copy
  of one database holding ``--devices`` users (a device each) and a "demo" user with
  ``--sync-messages`` messages;
* ``natsync edge run`` in front of them (this tree's edge, one process): ``backends`` = the K
  servers, TLS to each pinned to the servers' certificate (``backend_pin``), active health
  checks every ``--health-interval`` s (fall 2, rise 2) plus the edge's passive checks, per-IP
  limits raised (every phone comes from 127.0.0.1), access log off. Phones and the Sync devices
  know only the edge's address; the edge picks a server per exchange (fewest in flight). The
  per-process spread printed is what the edge chose. With ``--direct`` there is no edge: device
  i is on process i mod K and a phone whose process dies moves itself to the next one;
* lean client processes (bench/push_bench.py's ``Phone``: raw HTTP/1.1 over TLS on uvloop) bring
  every device to a held Ping (Sync the inbox twice, then Ping);
* push: ``--messages`` mails by SMTP at ``--rate``/s, each through the next process in turn (SMTP
  goes straight to the processes, as an MTA reaches any MX), one in flight per user; latency =
  SMTP 250 at the sender to the Ping answer at the phone (CLOCK_MONOTONIC is shared by
  processes); after each Status 2 the phone Syncs and reports the Subjects: each must arrive
  exactly once;
* Sync throughput: ``--sync-devices`` new devices of the demo user initial-sync its Inbox at
  once (bench/sync_bench.py's ``initial_sync``: WindowSize 100, plain text truncated to 512
  bytes) while the Pings stay held; messages/s over all of them, ``--sync-rounds`` times with
  new devices (one round lasts about a second: the median, and the range, say how noisy); the
  ratio of the medians to the 1-process round;
* a killed process (K >= 2): a burst of ``--burst`` mails through all processes at
  ``--burst-rate``/s; a third of the way in, the last process gets SIGKILL (its SMTP session is
  cut; the sender sends the rest through the next process, a cut transaction is not retried);
  counted: mails that got a 250, arrived once, duplicated, lost (a 250 but never arrived within
  ``--settle`` s); the Pings the dead process held; the phones whose exchange it cut and that
  came back (a new TLS connection to the edge, a Sync with the SyncKey they had, then Ping);
  kill to resync p50 / max; kill to the edge's ``backend_up`` of that server turning 0 (its
  /metrics, polled every 50 ms); the Pings held on the survivors once it is over.

Load average (1/5/15 min) is printed before and after: on a busy machine the figures are noisy.
Setup shortcuts, said out loud: users are written straight into the store with a cheap scrypt
hash (ln=4), ``require_provisioning`` is off (Provision is not what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomlkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import push_bench  # noqa: E402  (bench/ is not a package)
from push_bench import DOMAIN, PASSWORD, Child, Events, Phone, Smtp, pct  # noqa: E402

#: Seconds a round may take to bring every device to a held Ping.
SETUP_TIMEOUT = 300.0
#: Seconds a server process may take to print its ports.
SERVER_START_TIMEOUT = 60.0
#: Seconds of idle holding over which the servers' CPU is measured.
IDLE_SECONDS = 5.0
#: Times a phone moves to another process before giving up (a dead process, a refused handshake).
MAX_MOVES = 6
#: Seconds PostgreSQL may take to start (pg_ctl -w waits for it).
PG_START_TIMEOUT = 60
#: Seconds the edge may take to print its banner (listening on its port, admin on its port).
EDGE_START_TIMEOUT = 30.0
#: Seconds a SIGTERMed edge may take to end (then SIGKILL).
EDGE_STOP_TIMEOUT = 15.0
#: The edge's per-address limits, high enough for every phone of the bench: they all come from
#: 127.0.0.1, where the defaults (256 connections, 50 requests/s) suit one household's NAT.
EDGE_PER_IP = 1_000_000
#: Seconds between polls of the edge's /metrics after the kill (when did it take the server out).
EDGE_POLL = 0.05
#: The edge's banner (on stderr): ``natsync edge: listening on https://H:PORT admin=PORT ...``.
_EDGE_BANNER = re.compile(r"listening on https://[^:/\s]+:(\d+) admin=(\d+)")


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A throwaway PostgreSQL cluster from Debian's binaries (as "postgres" when we are root)."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise SystemExit("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = found[-1].parent
        # Its own temp dir (not under the bench's, which only root may enter).
        self.directory = Path(tempfile.mkdtemp(prefix="scale-bench-pg-"))
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self.as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.version = self.bin.parent.name

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            argv, check=False, capture_output=True, cwd=self.directory, **self.as_user
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")

    def start(self) -> None:
        data = str(self.directory / "data")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            data,
            "-U",
            "natsync",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c max_connections=200"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "-t",
            str(PG_START_TIMEOUT),
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "stop"
            )
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://natsync@127.0.0.1:{self.port}/{database}"


def sql(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def prepare_database(url: str, devices: int, sync_messages: int) -> str:
    """Users u0..u{devices-1} and "demo" with *sync_messages* messages; the inbox ServerId."""
    from sync_bench import fill_inbox

    from natsync.cli.up import DEMO_EMAIL, DEMO_USER
    from natsync.store import open_store

    inbox = push_bench.make_store(url, devices)  # type: ignore[arg-type]  (a URL opens too)
    store = open_store(url)
    try:
        hashed = push_bench.cheap_hash(PASSWORD)
        now = push_bench.dt.datetime.now(push_bench.dt.UTC)
        store.run_sync(lambda txn: txn.add_user(DEMO_USER, DEMO_EMAIL, "Demo", hashed, now))
    finally:
        store.close()
    fill_inbox(url, sync_messages)  # type: ignore[arg-type]
    return inbox


# --------------------------------------------------------------------------- the edge


class EdgeProcess:
    """``natsync edge run`` (this tree's edge) balancing over the bench's servers."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log
        self.port = self.admin_port = 0

    @classmethod
    def start(
        cls,
        work: Path,
        https_ports: list[int],
        cert: Path,
        key: Path,
        interval: float,
        extra: dict[str, Any] | None = None,
    ) -> EdgeProcess:
        """Backends = the servers, each pinned to the bench's one certificate; quick checks
        (*extra*: more [edge] settings, bench/soak_bench.py's)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from natsync.edge.tls import fingerprint

        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        settings = {
            "listen": "127.0.0.1:0",
            "backends": [f"127.0.0.1:{port}" for port in https_ports],
            "backend_name": "localhost",
            "backend_pin": fingerprint(leaf.public_bytes(Encoding.DER)),
            "admin_listen": "127.0.0.1:0",  # /metrics: when the edge took a server out
            "access_log": "off",
            "forwards": [],
            "health_interval": interval,
            "health_timeout": interval / 2,
            "health_fall": 2,
            "health_rise": 2,
            "max_connections_per_ip": EDGE_PER_IP,
            "requests_per_second_per_ip": EDGE_PER_IP,
            "request_burst_per_ip": EDGE_PER_IP,
            "certificates": [{"names": ["localhost"], "cert": str(cert), "key": str(key)}],
        }
        settings.update(extra or {})
        config = work / "edge.toml"
        config.write_text(tomlkit.dumps({"edge": settings}), encoding="utf-8")
        log = work / "edge.log"
        # This tree's src first (the bench measures the edge next to it), then the CLI as the
        # `natsync` entry point runs it.
        launcher = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); " + (
            "from natsync.cli import main; main()"
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", launcher, "edge", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        edge = cls(proc, log)
        deadline = time.monotonic() + EDGE_START_TIMEOUT
        while (found := _EDGE_BANNER.search(log.read_text(errors="replace"))) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                edge.stop()
                raise RuntimeError(f"natsync edge did not start: {edge.log_tail()}")
            time.sleep(0.05)
        edge.port, edge.admin_port = int(found.group(1)), int(found.group(2))
        return edge

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * push_bench.PAGE

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / push_bench.TICKS

    async def backend_up(self) -> dict[str, int]:
        """``natsync_edge_backend_up`` per server, from the admin listener's /metrics."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            text = (await reader.read()).decode()
        finally:
            writer.close()
        found = re.findall(r'natsync_edge_backend_up\{backend="127\.0\.0\.1:(\d+)"\} (\d)', text)
        return {int(port): int(up) for port, up in found}

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EDGE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- server process


async def stdin() -> asyncio.StreamReader:
    """This child's stdin as a stream: the bench's commands, EOF when it wants us gone."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# --------------------------------------------------------------------------- client process


async def phones(args: argparse.Namespace) -> None:
    """The ``--devices-list`` devices, at home on the first of ``--ports`` (the edge, or in
    --direct mode their own process); a phone whose exchange is cut (a dead process: a cut
    connection, or the edge's 502) reconnects, to the next port, with the SyncKey it had.
    Reports on stdout (JSON lines)."""

    push_bench.raise_nofile()
    # PORT (on 127.0.0.1), or HOST:PORT (bench/soak_bench.py: the public addresses in turn)
    targets = [
        (h or "127.0.0.1", int(p)) for h, _, p in (e.rpartition(":") for e in args.ports.split(","))
    ]
    ports = [port for _, port in targets]
    indices = [int(d) for d in args.devices_list.split(",")]
    context = ssl.create_default_context(cafile=args.cert)
    body = push_bench.ping_body(args.inbox)
    gate = asyncio.Semaphore(push_bench.SETUP_CONCURRENCY)
    ready = 0

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def device(index: int) -> None:
        nonlocal ready
        phone = Phone(index, ports[0], args.inbox)
        at, failures, set_up = 0, 0, False
        while True:
            try:
                # Setup is paced (SETUP_CONCURRENCY); phones cut by a dead process all come
                # back at once, as real ones do (they see the connection close at the kill).
                async with gate if not set_up else contextlib.nullcontext():
                    phone.reader, phone.writer = await asyncio.open_connection(
                        *targets[at], ssl=context, server_hostname="localhost"
                    )
                    subjects = await phone.sync()  # SyncKey 0 -> a key, or the one it had
                    if not set_up:
                        subjects += await phone.sync()
                if set_up:
                    say({"moved": index, "t": time.monotonic(), "s": subjects, "port": ports[at]})
                else:
                    set_up = True
                    ready += 1
                    if ready == len(indices):
                        say({"ready": ready})
                await push_bench.hold_pings(
                    phone, body, lambda at, got, _: say({"d": index, "t": at, "s": got})
                )
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ssl.SSLError) as exc:
                if phone.writer is not None:
                    phone.writer.close()
                if set_up:  # "s": the shared Events takes it as an arrival of nothing
                    say({"cut": index, "t": time.monotonic(), "s": []})
                failures += 1
                if failures > MAX_MOVES:
                    say({"error": f"{type(exc).__name__}: {exc}", "d": index})
                    return
                if set_up:  # a dead process: go to the next one (setup retries at home)
                    at = (at + 1) % len(ports)

    tasks = [asyncio.ensure_future(device(i)) for i in indices]
    await (await stdin()).read()  # until the bench closes our stdin
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the bench


async def start(*argv: str) -> Child:
    """A child running this file in a role."""
    return await Child.start(*argv, script=__file__)


async def start_server(url: str, cert: Path, key: Path) -> Child:
    """A measured server process: push_bench's (the natsync server and SMTP in, TLS, one
    store: here the shared PostgreSQL database). ``stat`` on stdin: the held waits."""
    argv = ("--role", "server", "--db", url, "--cert", str(cert), "--key", str(key))
    return await Child.start(*argv)


def kill(child: Child) -> None:
    """SIGKILL by PID: a machine that dies, no clean-up."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.proc.pid, signal.SIGKILL)


def mail(user: int, subject: str) -> str:
    return (
        f"From: sender@elsewhere.test\r\nTo: u{user}@{DOMAIN}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject}@bench>\r\n\r\nhello\r\n"
    )


async def push_phase(
    args: argparse.Namespace, k: int, smtp_ports: list[int], events: Events
) -> dict[str, Any]:
    rng = random.Random(k)
    sent: dict[str, tuple[float, float]] = {}  # subject -> (end of DATA, 250)
    in_flight: dict[str, int] = {}  # subject -> user, until it arrives (one per user at a time)
    senders = [await Smtp.connect(port) for port in smtp_ports]
    t0 = time.monotonic()
    try:
        for n in range(args.messages):
            delay = t0 + n / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for subject in [s for s in in_flight if s in events.arrivals]:
                del in_flight[subject]
            busy = set(in_flight.values())
            user = rng.choice([u for u in range(args.devices) if u not in busy])
            subject = f"push-{k}-{n}"
            sent[subject] = await senders[n % k].send(f"u{user}@{DOMAIN}", mail(user, subject))
            in_flight[subject] = user
    finally:
        for sender in senders:
            await sender.close()
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline and not all(s in events.arrivals for s in sent):  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # a bounded poll of the bench's own bookkeeping
    await asyncio.sleep(0.5)  # duplicates, if any, have time to show up
    arrived = [(events.arrivals[s][0], times) for s, times in sent.items() if s in events.arrivals]
    latencies = [(at - t_250) * 1000 for at, (_, t_250) in arrived]
    from_data = [(at - t_data) * 1000 for at, (t_data, _) in arrived]
    return {
        "sent": len(sent),
        "once": sum(1 for s in sent if len(events.arrivals.get(s, ())) == 1),
        "dup": sum(1 for s in sent if len(events.arrivals.get(s, ())) > 1),
        "missing": sum(1 for s in sent if s not in events.arrivals),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": pct(latencies, 99) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "d50": statistics.median(from_data) if from_data else float("nan"),
        "d99": pct(from_data, 99) if from_data else float("nan"),
    }


async def sync_phase(args: argparse.Namespace, https_ports: list[int], cert: Path) -> float:
    """Initial syncs of the demo Inbox by --sync-devices new devices at once (spread over
    *https_ports*: the edge's one port, or the processes'); messages/s."""
    from sync_bench import initial_sync

    from natsync.cli.up import DEMO_USER

    infos = [
        {
            "url": f"https://localhost:{https_ports[i % len(https_ports)]}",
            "user": DEMO_USER,
            "password": PASSWORD,
            "ca_file": str(cert),
        }
        for i in range(args.sync_devices)
    ]
    started = time.perf_counter()
    results = await asyncio.gather(*(initial_sync(info, 100, 512) for info in infos))
    elapsed = time.perf_counter() - started
    synced = sum(count for count, _, _ in results)
    if synced != args.sync_devices * args.sync_messages:
        raise RuntimeError(f"initial syncs got {synced} messages, not all of them")
    return synced / elapsed


class CutEvents(Events):
    """push_bench's Events, plus when each phone's exchange was last cut (a dead process)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut: dict[int, float] = {}

    async def listen(self, child: Child) -> None:
        cut = self.cut

        class Tap:  # the child as Events reads it, noting the cuts on the way
            async def line(self) -> dict[str, Any]:
                event = await child.line()
                if "cut" in event:
                    cut[event["cut"]] = event["t"]
                return event

        await super().listen(Tap())  # type: ignore[arg-type]


async def kill_phase(
    args: argparse.Namespace,
    servers: list[Child],
    ports: list[dict[str, int]],
    events: CutEvents,
    edge: EdgeProcess | None,
) -> dict[str, Any]:
    """A burst through every process; SIGKILL the last process a third of the way in."""
    k = len(servers)
    smtp_ports = [p["smtp"] for p in ports]
    rng = random.Random(1000 + k)
    acked: set[str] = set()
    cut: set[str] = set()
    dead: set[int] = set()
    killed = asyncio.Event()
    kill_at: list[float] = []
    watch: dict[str, float] = {}
    shares: list[list[tuple[int, str]]] = [[] for _ in range(k)]
    for n in range(args.burst):
        shares[n % k].append((rng.randrange(args.devices), f"burst-{k}-{n}"))
    t0 = time.monotonic()

    async def sender(home: int) -> None:
        at = home
        smtp = await Smtp.connect(smtp_ports[at])
        for j, (user, subject) in enumerate(shares[home]):
            n = j * k + home
            delay = t0 + n / args.burst_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while at in dead:  # the process is gone: the rest goes through the next one
                at = (at + 1) % k
                smtp = await Smtp.connect(smtp_ports[at])
            try:
                await smtp.send(f"u{user}@{DOMAIN}", mail(user, subject))
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                cut.add(subject)  # no 250: the sender would retry later; not retried here
                dead.add(at)
                continue
            acked.add(subject)
        await smtp.close()

    async def killer() -> None:
        await asyncio.sleep(args.burst / args.burst_rate / 3)
        watch["held"] = (await servers[-1].ask("stat"))["waiting"]
        kill_at.append(time.monotonic())
        kill(servers[-1])
        dead.add(k - 1)
        killed.set()

    async def edge_out() -> None:
        """When the edge's /metrics first says the dead server is out (bounded by --settle)."""
        if edge is None:
            return
        await killed.wait()
        while time.monotonic() < kill_at[0] + args.settle:
            if (await edge.backend_up()).get(ports[-1]["https"]) == 0:
                watch["edge_out"] = time.monotonic() - kill_at[0]
                return
            await asyncio.sleep(EDGE_POLL)

    def back() -> list[float]:
        """Kill to resync of each phone cut by the kill that has resynced since its cut."""
        return [
            events.moved[d] - kill_at[0]
            for d, t in events.cut.items()
            if t >= kill_at[0] and events.moved.get(d, 0.0) > t
        ]

    await asyncio.gather(killer(), edge_out(), *(sender(i) for i in range(k)))
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline and not (  # noqa: ASYNC110  (bounded, own bookkeeping)
        all(s in events.arrivals for s in acked)
        and len(back()) >= sum(1 for t in events.cut.values() if t >= kill_at[0])
        and len(back()) >= watch["held"]
    ):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    moved = back()
    survivors = [(await s.ask("stat"))["waiting"] for s in servers[:-1]]
    return {
        "acked": len(acked),
        "k_once": sum(1 for s in acked if len(events.arrivals.get(s, ())) == 1),
        "k_dup": sum(1 for s in [*acked, *cut] if len(events.arrivals.get(s, ())) > 1),
        "k_lost": sum(1 for s in acked if s not in events.arrivals),
        "cut": len(cut),
        "victims": watch["held"],
        "phones_cut": sum(1 for t in events.cut.values() if t >= kill_at[0]),
        "moved": len(moved),
        "recover_s": max(moved) if moved else float("nan"),
        "recover_p50": statistics.median(moved) if moved else float("nan"),
        "edge_out": watch.get("edge_out", float("nan")),
        "held_end": sum(survivors),
    }


async def wait_all_up(edge: EdgeProcess, https_ports: list[int]) -> None:
    """Until the edge counts every server up (it starts so; bounded by SERVER_START_TIMEOUT)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while (up := await edge.backend_up()) != dict.fromkeys(https_ports, 1):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the edge does not see every server up: {up}")
        await asyncio.sleep(0.2)


async def one_round(
    args: argparse.Namespace, k: int, url: str, work: Path, inbox: str
) -> dict[str, Any]:
    cert, key = work / "cert.pem", work / "key.pem"
    servers = [await start_server(url, cert, key) for _ in range(k)]
    clients: list[Child] = []
    edge: EdgeProcess | None = None
    events = CutEvents()
    listeners: list[asyncio.Future[None]] = []
    try:
        ports = [await asyncio.wait_for(s.line(), SERVER_START_TIMEOUT) for s in servers]
        https, smtp = [p["https"] for p in ports], [p["smtp"] for p in ports]
        if not args.direct:
            edge = EdgeProcess.start(work, https, cert, key, args.health_interval)
            await wait_all_up(edge, https)
        await asyncio.sleep(1.0)
        rss_idle = sum(s.rss() for s in servers)
        edge_idle = edge.rss() if edge else 0
        started = time.monotonic()
        for home in range(k):  # one client process per server (device i in the i mod k one)
            mine = list(range(home, args.devices, k))
            share = -(-len(mine) // args.procs_per_server)
            # direct: device i at home on process i mod k, moving on to the next ones
            targets = [edge.port] if edge else [https[(home + j) % k] for j in range(k)]
            for c in range(args.procs_per_server):
                chunk = mine[c * share : (c + 1) * share]
                if chunk:
                    clients.append(
                        await start(
                            "--role",
                            "phones",
                            "--cert",
                            str(cert),
                            "--inbox",
                            inbox,
                            "--ports",
                            ",".join(map(str, targets)),
                            "--devices-list",
                            ",".join(map(str, chunk)),
                        )
                    )
        listeners = [asyncio.ensure_future(events.listen(c)) for c in clients]
        deadline = time.monotonic() + SETUP_TIMEOUT
        while True:
            waiting = [(await s.ask("stat"))["waiting"] for s in servers]
            if sum(waiting) >= args.devices:
                break
            if events.errors or time.monotonic() > deadline:
                raise RuntimeError(f"setup: {waiting} held, errors: {events.errors[:3]}")
            await asyncio.sleep(0.5)
        setup_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the setup burst settle
        rss_held = sum(s.rss() for s in servers)
        edge_held = edge.rss() if edge else 0
        cpu0, t0 = sum(s.cpu() for s in servers), time.monotonic()
        edge_cpu0 = edge.cpu() if edge else 0.0
        await asyncio.sleep(IDLE_SECONDS)
        idle_cpu = (sum(s.cpu() for s in servers) - cpu0) / (time.monotonic() - t0)
        edge_idle_cpu = ((edge.cpu() if edge else 0.0) - edge_cpu0) / (time.monotonic() - t0)
        row: dict[str, Any] = {
            "k": k,
            "n": args.devices,
            "spread": waiting,
            "setup_s": setup_s,
            "per_ping": (rss_held - rss_idle) / args.devices,
            "idle_cpu": idle_cpu,
            "edge_per_ping": (edge_held - edge_idle) / args.devices,
            "edge_idle_cpu": edge_idle_cpu,
        }
        row.update(await push_phase(args, k, smtp, events))
        rates = [
            await sync_phase(args, [edge.port] if edge else https, cert)
            for _ in range(args.sync_rounds)
        ]
        row["sync_rate"], row["sync_range"] = statistics.median(rates), (min(rates), max(rates))
        if k >= 2:
            row.update(await kill_phase(args, servers, ports, events, edge))
        row["errors"] = len(events.errors)
        if edge is not None and edge.proc.poll() is not None:
            raise RuntimeError(f"the edge died: {edge.log_tail()}")
        return row
    finally:
        for listener in listeners:
            listener.cancel()
        for child in clients:
            await child.stop()
        if edge is not None:
            edge.stop()
        for server in servers:
            await server.stop()


async def bench(args: argparse.Namespace) -> None:
    push_bench.raise_nofile()
    rounds = [int(x) for x in args.servers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    postgres = None
    load_before = os.getloadavg()
    try:
        push_bench.self_signed(work)
        if args.store:
            admin, base = args.store, args.store
        else:
            postgres = Postgres()
            postgres.start()
            admin, base = postgres.url("postgres"), postgres.url("scale_base")
            sql(admin, "CREATE DATABASE scale_base")
        t = time.monotonic()
        inbox = prepare_database(base, args.devices, args.sync_messages)
        print(
            f"database with {args.devices} users made in {time.monotonic() - t:.1f} s", flush=True
        )
        rows = []
        for k in rounds:
            url = base
            if postgres is not None:  # a fresh copy per round: no mail left from the last one
                sql(admin, f"CREATE DATABASE scale_{k} TEMPLATE scale_base")
                url = postgres.url(f"scale_{k}")
            rows.append(await one_round(args, k, url, work, inbox))
            print(f"{k} process(es) done (setup {rows[-1]['setup_s']:.1f} s)", flush=True)
        load_after = os.getloadavg()
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    base_rate = next((r["sync_rate"] for r in rows if r["k"] == 1), None)

    def dash(value: float, spec: str) -> str:
        """An edge figure, or a dash when there is no edge (--direct)."""
        return "–" if args.direct else format(value, spec)

    print()
    print("command:", Path(sys.executable).name, *sys.argv)
    print(
        f"{os.cpu_count()} CPU(s); load average before {load_before[0]:.2f} / {load_before[1]:.2f}"
        f" / {load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / "
        f"{load_after[2]:.2f} (1/5/15 min)"
    )
    front = (
        "no balancer in front (--direct: phones spread over the processes by the bench, and "
        "moved by the phone itself when its process dies)"
        if args.direct
        else f"every phone through one natsync edge process (TLS both ways, backends pinned, "
        f"health checks every {args.health_interval} s, fall 2 / rise 2)"
    )
    print(
        f"PostgreSQL {postgres.version if postgres else '(--store)'} on loopback, default "
        f"durability; TLS 1.3 over loopback; {front}"
    )
    print(
        f"push: {args.messages} mails at {args.rate}/s, each through the next process in turn; "
        f"Sync: {args.sync_devices} devices initial-sync {args.sync_messages} messages each, "
        f"{args.sync_rounds} times; "
        f"kill: {args.burst} mails at {args.burst_rate}/s, last process SIGKILLed a third in"
    )
    print()
    print(
        "| processes | held Pings (per process) | setup s | server KB per held Ping "
        "| edge KB per held Ping | idle CPU % core (servers / edge) "
        "| push p50 / p99 / max ms (from 250) | p50 / p99 (from end of DATA) "
        "| arrived once | dup | missing "
        f"| initial Sync msg/s, median of {args.sync_rounds} (× 1 process) (min–max) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f" (×{r['sync_rate'] / base_rate:.2f})" if base_rate else ""
        print(
            f"| {r['k']} | {r['n']:,} ({' / '.join(map(str, r['spread']))}) | {r['setup_s']:.1f} "
            f"| {r['per_ping'] / 1024:.1f} | {dash(r['edge_per_ping'] / 1024, '.1f')} "
            f"| {r['idle_cpu'] * 100:.2f} / {dash(r['edge_idle_cpu'] * 100, '.2f')} "
            f"| {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} | {r['d50']:.1f} / {r['d99']:.1f} "
            f"| {r['once']}/{r['sent']} "
            f"| {r['dup']} | {r['missing']} | {r['sync_rate']:,.0f}{ratio} "
            f"({r['sync_range'][0]:,.0f}–{r['sync_range'][1]:,.0f}) |"
        )
    killed = [r for r in rows if "acked" in r]
    if killed:
        print()
        print(
            "| processes | burst mails with a 250 | arrived once | duplicated | lost "
            "| cut by the kill (no 250) | Pings the dead process held "
            "| phones cut / resynced on another | recovery p50 / max s (kill to resync) "
            "| edge took it out (s after kill) | Pings held on the survivors at the end |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in killed:
            print(
                f"| {r['k']} | {r['acked']} | {r['k_once']} | {r['k_dup']} | {r['k_lost']} "
                f"| {r['cut']} | {r['victims']} | {r['phones_cut']} / {r['moved']} "
                f"| {r['recover_p50']:.2f} / {r['recover_s']:.2f} | {dash(r['edge_out'], '.2f')} "
                f"| {r['held_end']}/{r['n']} |"
            )
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"\n{errors} phone error(s) (a phone that gave up after {MAX_MOVES} moves)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="1,2,4", help="process counts, comma-separated")
    parser.add_argument("--devices", type=int, default=2000, help="held Pings (all rounds)")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="push mails per second")
    parser.add_argument("--sync-devices", type=int, default=4)
    parser.add_argument("--sync-rounds", type=int, default=3, help="Sync phases (median)")
    parser.add_argument("--sync-messages", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--burst-rate", type=float, default=100.0)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for arrivals")
    parser.add_argument("--procs-per-server", type=int, default=1, help="client processes")
    parser.add_argument("--store", default="", help="an existing empty PostgreSQL database")
    parser.add_argument("--direct", action="store_true", help="no edge: phones on the servers")
    parser.add_argument("--health-interval", type=float, default=1.0, help="edge checks, s")
    parser.add_argument("--time-limit", type=float, default=900.0)
    parser.add_argument("--role", default="bench", choices=["bench", "phones"])
    for name in ("--cert", "--inbox", "--ports", "--devices-list"):
        parser.add_argument(name, default="")
    args = parser.parse_args()
    if args.role == "phones":
        push_bench.run(phones(args))
    else:
        push_bench.run(asyncio.wait_for(bench(args), args.time_limit))


if __name__ == "__main__":
    main()
