"""Held Pings by the hundred thousand: `natsync run` (several server processes on PostgreSQL,
the edge's workers in front, TLS on both legs) with HAProxy as the peer, in one run.

    .venv/bin/python bench/held_bench.py --steps 2000,5000            # a quick look
    .venv/bin/python bench/held_bench.py --steps 10000,50000,100000   # issue 27, goal 1

The deployment is what an operator runs: the bench writes a natsync.toml ([server] on a
PostgreSQL store, [edge] with ``workers``, [run] with ``server_processes``) and starts it with
``natsync run -c natsync.toml --json``; nothing of the server or the edge is started by the bench
itself. The process counts follow the largest step (``--servers``, ``--edge-workers`` to choose):
the open-files limit here is 20,000 per process and a bridged Ping costs the edge two
descriptors and the server one, so 100,000 held Pings need at least 6 server and 10 edge
processes (the defaults take 10,000 per server process and 7,500 per edge worker). The bench
starts its own PostgreSQL from Debian's binaries (bench/scale_bench.py's ``Postgres``).

Phones are bench/push_bench.py's lean clients (raw HTTP/1.1 over TLS on uvloop: Sync the
inbox twice, then Ping), ``--per-client`` devices per client process, each process dialling
from a loopback address of its own (127.0.1.1, 127.0.1.2, ...: one address has only ~28,000
ephemeral ports toward one port). Per step N (``--steps``), in this order:

1. the edge: new phones up to N in all hold a Ping through the edge; the time from starting
   their clients to every server process counting its Pings held (/metrics,
   ``natsync_server_held_requests``) is the bring-up time; memory per held Ping =
   (memory with N held - memory before any phone) / N, summed over the processes of each
   kind: server (RSS, as bench/push_bench.py measures it, and PSS) and edge (PSS: the
   workers share pages after the fork, and RSS would count them in each);
2. the peer: a fresh HAProxy 2.6 (as many processes as the edge has workers, one thread each,
   SO_REUSEPORT on one port; TLS both ways, the backend verified by its CA, SNI, leastconn over
   the same server processes) holds min(N, ``--peer-held``) Pings of other users the same way;
   its PSS per held Ping; then those phones go and HAProxy stops. Steps 1 and 2 swap at every
   other step (the Rules: interleaved, the order alternating);
3. idle: CPU of every natsync process (the supervisor, the servers, the edge workers) over
   ``--idle-seconds`` with the N Pings held;
4. push: ``--messages`` mails by SMTP (to the first server process, the one `natsync run`
   gives SMTP) at ``--rate``/s to random users among the N, one in flight per user; latency
   from the end of DATA (the sender's clock) to the Ping answer at the phone (through the
   edge); after each answer the phone Syncs: every mail must arrive exactly once
   (bench/scale_bench.py's ``push_phase``).

Bounded: ``--time-limit`` for the whole run; before each step the bench checks MemAvailable
against what the step will take (per held Ping as measured at the step before; a first guess
before that) plus ``--min-free-gib``, and stops there if it does not fit. Every child (natsync
run, HAProxy, the clients, PostgreSQL) is stopped by its PID and the work directory removed.
Loopback only. The load average is printed per step: above 1 the step is marked noisy.
Setup shortcuts, said out loud: users written straight into the store with a cheap scrypt
hash; ``require_provisioning`` off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import socket
import ssl
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
import scale_bench  # noqa: E402
from peers import HAProxyProcesses, haproxy_version  # noqa: E402
from push_bench import DOMAIN, Child, Events  # noqa: E402
from relay_bench import pss, rss  # noqa: E402  (PSS, RSS of a PID in bytes)

#: Held Pings per server process the defaults plan for (one descriptor each, limit 20,000).
PER_SERVER = 10_000
#: Held Pings per edge worker the defaults plan for (two descriptors each: phone + server).
PER_EDGE_WORKER = 7_500
#: Held Pings per HAProxy process (its maxconn: two descriptors each, limit 20,000).
PEER_MAXCONN = 9_000
#: Seconds `natsync run` may take to say every part serves.
RUN_START_TIMEOUT = 120.0
#: Seconds a SIGTERMed `natsync run` (or HAProxy) may take to end before SIGKILL.
STOP_TIMEOUT = 60.0
#: Seconds after the last Ping is held before memory is read (allocator and GC settle).
SETTLE = 3.0
#: Memory per held Ping over everything (clients, kernel, server, edge) assumed before the
#: first step measured it: a generous guess, so the first check errs on the safe side.
GUESS_PER_PING = 250 * 1024
#: Seconds bringing one step's Pings up may take.
BRING_UP_TIMEOUT = 3600.0
#: Seconds between progress lines while Pings come up.
PROGRESS_EVERY = 30.0
#: The held Pings a server counts (its /metrics, loopback only).
HELD_METRIC = "natsync_server_held_requests"


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / push_bench.TICKS


def thread_cpu(pid: int) -> list[float]:
    """CPU seconds of each thread of *pid*, by thread id (the main thread first; in a server
    process the store's worker and its LISTEN thread come next, as they are started)."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out.append((int(fields[11]) + int(fields[12])) / push_bench.TICKS)
    return out


def threads_total(pids: list[int]) -> list[float]:
    """Per thread position (main, then the next 3, then all others), summed over *pids*."""
    sums = [0.0] * 5
    for pid in pids:
        for i, seconds in enumerate(thread_cpu(pid)):
            sums[min(i, 4)] += seconds
    return sums


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def total(pids: list[int], measure: Any) -> int:
    return sum(measure(pid) for pid in pids)


#: The lowest port the bench tries for the server processes (below the ephemeral range).
PORTS_FROM = 20_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> int:
    """A first port P with P..P+count-1 all free on 127.0.0.1 (the server processes')."""
    # below the ephemeral range: a run holding 100,000 Pings uses most of that range's ports
    # on 127.0.0.1 for its own connections (a second, smaller run found no 10 free in a row)
    low = _ephemeral_low()
    for _ in range(200):
        base = random.randrange(PORTS_FROM, max(PORTS_FROM + 1, low - count))
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    # as the servers bind (asyncio sets it): a port whose old connections
                    # linger in TIME_WAIT after an earlier run is free for them
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports in a row on 127.0.0.1")


# --------------------------------------------------------------------------- natsync run


class Deployment:
    """`natsync run -c natsync.toml --json` of this tree, and the PIDs of its parts."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], log: Path) -> None:
        self.proc, self.info, self.log = proc, info, log

    @classmethod
    def start(
        cls,
        work: Path,
        url: str,
        cert: Path,
        key: Path,
        servers: int,
        workers: int,
        health: float = 0.0,
    ) -> Deployment:
        """*health*: edge.health_interval (0: the default)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from natsync.edge.tls import fingerprint

        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        first = free_ports(servers)
        config = {
            "server": {
                "host": "127.0.0.1",
                "port": first,
                "tls_cert": str(cert),
                "tls_key": str(key),
                "data_dir": str(work / "data"),
                "store": url,
                "domains": [DOMAIN],
                "smtp_listen": f"127.0.0.1:{scale_bench_free_port()}",
                "smarthost": "",
                "hostname": "bench.test",
                "trusted_proxies": ["127.0.0.1"],
                "require_provisioning": False,
            },
            "edge": {
                "listen": f"127.0.0.1:{scale_bench_free_port()}",
                "backend_name": "localhost",
                "backend_pin": fingerprint(leaf.public_bytes(Encoding.DER)),
                "admin_listen": "",
                "workers": workers,
                "forwards": [],
                # every phone is on 127.0.1.x: the defaults suit one household's NAT
                "max_connections_per_ip": scale_bench.EDGE_PER_IP,
                "requests_per_second_per_ip": scale_bench.EDGE_PER_IP,
                "request_burst_per_ip": scale_bench.EDGE_PER_IP,
                **({"health_interval": health, "health_timeout": health / 2} if health else {}),
                "certificates": [{"names": ["localhost"], "cert": str(cert), "key": str(key)}],
            },
            "run": {"server_processes": servers, "log_level": "warning", "self_check": False},
            # no supervisor /metrics: its fixed port would stop a second bench on the machine
            "admin": {"listen": ""},
        }
        path = work / "natsync.toml"
        path.write_text(tomlkit.dumps(config), encoding="utf-8")
        log = work / "run.log"
        launcher = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); " + (
            "from natsync.cli import main; main()"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))  # the parts import this tree
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", launcher, "run", "-c", str(path), "--json"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        deployment = cls(proc, {}, log)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        deadline, buf = time.monotonic() + RUN_START_TIMEOUT, b""
        while b"\n" not in buf:
            if proc.poll() is not None or time.monotonic() > deadline:
                deployment.stop()
                raise RuntimeError(f"natsync run did not start: {deployment.log_tail()}")
            buf += proc.stdout.read() or b""
            time.sleep(0.1)
        deployment.info = json.loads(buf.split(b"\n")[0])
        deployment.config = config
        return deployment

    config: dict[str, Any]

    def pids(self, kind: str) -> list[int]:
        return [int(part["pid"]) for part in self.info.get(kind, [])]

    def natsync_pids(self) -> list[int]:
        return [self.proc.pid, *self.pids("server"), *self.pids("edge")]

    def server_ports(self) -> list[int]:
        return [int(part["port"]) for part in self.info["server"]]

    def edge_port(self) -> int:
        return int(self.config["edge"]["listen"].rsplit(":", 1)[1])

    def smtp_port(self) -> int:
        return int(self.config["server"]["smtp_listen"].rsplit(":", 1)[1])

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID (the supervisor stops its parts), SIGKILL if it does not end (its
        parts die with it: natsync.run.lifetime)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def scale_bench_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def held_on(port: int, context: ssl.SSLContext) -> int:
    """The Pings (and Syncs) a server process holds now, from its /metrics."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        text = (await reader.read()).decode(errors="replace")
    finally:
        writer.close()
    for line in text.splitlines():
        if line.startswith(HELD_METRIC + " "):
            return int(float(line.split()[1]))
    raise RuntimeError(f"no {HELD_METRIC} on port {port}")


async def held(ports: list[int], context: ssl.SSLContext) -> list[int]:
    return list(await asyncio.gather(*(held_on(p, context) for p in ports)))


# --------------------------------------------------------------------------- HAProxy


class HAProxy:
    """*count* HAProxy processes (one thread each) on one port (SO_REUSEPORT, HAProxy's default),
    bridging TLS to the server processes as the edge does."""

    def __init__(self, work: Path, cert: Path, key: Path, servers: list[int], count: int) -> None:
        self.port = scale_bench_free_port()
        pem = work / "haproxy.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        lines = "\n".join(
            f"    server s{i} 127.0.0.1:{port} ssl verify required ca-file {cert} "
            "sni str(localhost)"
            for i, port in enumerate(servers)
        )
        self.config = work / "haproxy.cfg"
        self.config.write_text(
            f"""global
    maxconn {PEER_MAXCONN}
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 2h
    timeout server 2h
    timeout http-request 30s
    option forwardfor
frontend phones
    bind 127.0.0.1:{self.port} ssl crt {pem}
    default_backend natsync
backend natsync
    balance leastconn
{lines}
"""
        )
        self.procs = HAProxyProcesses(self.config, work, self.port, count, STOP_TIMEOUT)

    def pids(self) -> list[int]:
        return self.procs.pids()

    def stop(self) -> None:
        self.procs.stop()


# --------------------------------------------------------------------------- phones


class Phones:
    """Client processes (bench/push_bench.py's client role), each from its own 127.0.1.x."""

    def __init__(self, events: Events, cert: Path, inbox: str, per_client: int) -> None:
        self.events, self.cert, self.inbox, self.per_client = events, cert, inbox, per_client
        self.children: list[Child] = []
        self.listeners: list[asyncio.Future[None]] = []
        self.sources = 0

    async def add(self, port: int, first: int, count: int) -> list[Child]:
        """Devices first..first+count-1 through *port*; returns their client processes."""
        started = []
        for at in range(first, first + count, self.per_client):
            self.sources += 1
            if self.sources > 254:
                raise RuntimeError("out of 127.0.1.x source addresses: raise --per-client")
            source = f"127.0.1.{self.sources}"
            child = await Child.start(
                "--role",
                "client",
                "--port",
                str(port),
                "--source",
                source,
                "--cert",
                str(self.cert),
                "--inbox",
                self.inbox,
                "--first",
                str(at),
                "--count",
                str(min(self.per_client, first + count - at)),
                script=push_bench.__file__,
            )
            started.append(child)
            self.listeners.append(asyncio.ensure_future(self.events.listen(child)))
        self.children.extend(started)
        return started

    async def stop(self, children: list[Child] | None = None) -> None:
        for child in list(children if children is not None else self.children):
            await child.stop()
            self.children.remove(child)


# --------------------------------------------------------------------------- the bench


class Cut(Exception):
    """The bring-up deadline came first: *held* per server process at that moment."""

    def __init__(self, held: list[int]) -> None:
        super().__init__(f"{sum(held)} held at the deadline")
        self.held = held


async def wait_held(
    ports: list[int], context: ssl.SSLContext, target: int, events: Events, deadline: float
) -> list[int]:
    """Until the servers hold *target* requests in all; Cut at *deadline* (monotonic)."""
    deadline = min(deadline, time.monotonic() + BRING_UP_TIMEOUT)
    last = 0.0
    while True:
        now = await held(ports, context)
        if sum(now) >= target:
            return now
        if events.errors:
            raise RuntimeError(f"{len(events.errors)} phone error(s), first: {events.errors[0]}")
        if time.monotonic() > deadline:
            raise Cut(now)
        if time.monotonic() - last > PROGRESS_EVERY:
            last = time.monotonic()
            print(f"    {sum(now):,} of {target:,} held", flush=True)
        await asyncio.sleep(1.0)


async def edge_phase(
    run: Deployment,
    phones: Phones,
    context: ssl.SSLContext,
    before: int,
    n: int,
    deadline: float,
) -> dict[str, Any]:
    """Phones before..n-1 through the edge; a partial step ("partial") at *deadline*."""
    kinds = {"server": run.pids("server"), "edge": run.pids("edge")}
    cpu0 = {kind: total(pids, cpu_seconds) for kind, pids in kinds.items()}
    threads0 = threads_total(kinds["server"])
    started = time.monotonic()
    children = await phones.add(run.edge_port(), before, n - before)
    partial = False
    try:
        spread = await wait_held(run.server_ports(), context, n, phones.events, deadline)
    except Cut as cut:
        spread, partial = cut.held, True
    took = time.monotonic() - started
    brought = max(1, sum(spread) - before)
    clients = [c.proc.pid for c in children]
    cpu = {kind: total(pids, cpu_seconds) - cpu0[kind] for kind, pids in kinds.items()}
    cpu["client"] = total(clients, cpu_seconds)
    threads = [b - a for a, b in zip(threads0, threads_total(kinds["server"]), strict=True)]
    return {
        # the server's share by thread: main (TLS, HTTP, EAS), then the next ones by start
        # order (the store's worker, its LISTEN thread, ...), others last
        "server_threads_ms": [seconds * 1000 / brought for seconds in threads],
        "bring_up_s": took,
        "spread": spread,
        "partial": partial,
        # CPU ms per Ping brought up (TLS handshakes both legs, 2 Syncs, the Ping)
        "up_cpu_ms": {kind: seconds * 1000 / brought for kind, seconds in cpu.items()},
        "client_pss": total(clients, pss) / brought,
    }


async def peer_phase(
    args: argparse.Namespace,
    work: Path,
    cert: Path,
    key: Path,
    run: Deployment,
    phones: Phones,
    context: ssl.SSLContext,
    n: int,
    peer_first: int,
    deadline: float,
) -> dict[str, Any]:
    """A fresh HAProxy holds min(N, --peer-held) Pings of users from *peer_first* on."""
    m = min(n, args.peer_held)
    peer = HAProxy(work, cert, key, run.server_ports(), run_workers(run))
    try:
        await asyncio.sleep(1.0)
        idle = total(peer.pids(), pss)
        base = sum(await held(run.server_ports(), context))
        started = time.monotonic()
        children = await phones.add(peer.port, peer_first, m)
        try:
            await wait_held(run.server_ports(), context, base + m, phones.events, deadline)
        except Cut:
            await phones.stop(children)
            return {}  # no peer figure for this step: the time was up
        bring_up = time.monotonic() - started
        await asyncio.sleep(SETTLE)
        after = total(peer.pids(), pss)
        await phones.stop(children)
        return {"peer_n": m, "peer_pss": (after - idle) / m, "peer_bring_up_s": bring_up}
    finally:
        peer.stop()


def fill(work: Path, url: str, users: int) -> str:
    """*users* users in the PostgreSQL database *url*: made in a SQLite store (push_bench's
    make_store, in-process: ~10 times faster than one round trip per row) and copied over by
    natsync.store.copy (what `natsync store copy` runs); the inbox ServerId."""
    from natsync.store import open_store
    from natsync.store.copy import copy

    inbox = push_bench.make_store(work / "users.db", users)
    source, target = open_store(work / "users.db"), open_store(url)
    try:
        copy(source, target)
    finally:
        source.close()
        target.close()
    for suffix in ("", "-wal", "-shm"):
        (work / f"users.db{suffix}").unlink(missing_ok=True)
    return inbox


def run_workers(run: Deployment) -> int:
    return len(run.pids("edge"))


def fits(n_more: int, per_ping: float, margin: int) -> tuple[bool, str]:
    need = int(n_more * per_ping)
    free = mem_available()
    say = (
        f"MemAvailable {free / 2**30:.1f} GiB; the step needs ~{need / 2**30:.1f} GiB "
        f"({per_ping / 1024:.0f} KB per held Ping) + {margin / 2**30:.0f} GiB margin"
    )
    return free - need >= margin, say


async def bench(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The steps; each finished step's row goes to *rows* (kept when --time-limit ends it)."""
    push_bench.raise_nofile()
    steps = [int(x) for x in args.steps.split(",")]
    biggest = max(steps)
    servers = args.servers or max(1, math.ceil(biggest / PER_SERVER))
    workers = args.edge_workers or max(1, math.ceil(biggest / PER_EDGE_WORKER))
    peer_first = biggest  # the peer's phones are other users than the edge's
    work = Path(tempfile.mkdtemp(prefix="held-bench-"))
    postgres = scale_bench.Postgres()
    run: Deployment | None = None
    events = Events()
    phones: Phones | None = None
    margin = int(args.min_free_gib * 2**30)
    # bring-up stops here, leaving time to measure, push and clean up within --time-limit
    deadline = time.monotonic() + args.time_limit - args.reserve
    try:
        cert, key = push_bench.self_signed(work)
        postgres.start()
        url = postgres.url("held")
        scale_bench.sql(postgres.url("postgres"), "CREATE DATABASE held")
        t = time.monotonic()
        users = biggest + (min(biggest, args.peer_held) if args.peer_held else 0)
        inbox = fill(work, url, users)
        print(f"PostgreSQL {postgres.version}: {users:,} users in {time.monotonic() - t:.0f} s")
        t = time.monotonic()
        run = await asyncio.to_thread(
            Deployment.start, work, url, cert, key, servers, workers, args.health_interval
        )
        print(
            f"natsync run: {servers} server process(es), {workers} edge worker(s) serving in "
            f"{time.monotonic() - t:.1f} s",
            flush=True,
        )
        context = ssl.create_default_context(cafile=str(cert))
        phones = Phones(events, cert, inbox, args.per_client)
        await asyncio.sleep(2.0)
        idle_server = {m.__name__: total(run.pids("server"), m) for m in (rss, pss)}
        idle_edge = {m.__name__: total(run.pids("edge"), m) for m in (rss, pss)}
        per_ping_all = float(GUESS_PER_PING)
        before = 0
        for i, n in enumerate(steps):
            peer_n = min(n, args.peer_held) if args.peer_held else 0
            ok, said = fits(n - before + peer_n, per_ping_all, margin)
            print(f"step {n:,}: {said}", flush=True)
            if not ok:
                print(f"step {n:,}: not run, not enough free memory", flush=True)
                break
            row: dict[str, Any] = {"n": n, "before": before, "load_before": os.getloadavg()}
            avail0 = mem_available()
            order = ["edge", "peer"] if i % 2 == 0 or not peer_n else ["peer", "edge"]
            for what in order:
                if what == "edge":
                    row.update(await edge_phase(run, phones, context, before, n, deadline))
                    await asyncio.sleep(SETTLE)
                    # per Ping held: N, or what was held when the time was up
                    count = sum(row["spread"]) if row["partial"] else n
                    row["held"] = count
                    for kind, idle in (("server", idle_server), ("edge", idle_edge)):
                        for measure in (rss, pss):
                            now = total(run.pids(kind), measure)
                            row[f"{kind}_{measure.__name__}"] = (
                                now - idle[measure.__name__]
                            ) / count
                    row["per_proc"] = {
                        kind: [round(rss(p) / 2**20) for p in run.pids(kind)]
                        for kind in ("server", "edge")
                    }
                    row["machine_per_ping"] = (avail0 - mem_available()) / max(1, count - before)
                    # other sessions' memory moves too: never below half the first guess
                    per_ping_all = max(GUESS_PER_PING / 2, row["machine_per_ping"])
                    if row["partial"]:
                        break
                elif peer_n:
                    row.update(
                        await peer_phase(
                            args, work, cert, key, run, phones, context, n, peer_first, deadline
                        )
                    )
            row["order"] = "/".join(order)
            before = n
            kinds = {"run": [run.proc.pid], "server": run.pids("server"), "edge": run.pids("edge")}
            cpu0 = {kind: total(pids, cpu_seconds) for kind, pids in kinds.items()}
            t0 = time.monotonic()
            print(f"step {n:,}: idle for {args.idle_seconds:g} s", flush=True)
            await asyncio.sleep(args.idle_seconds)
            row["idle_kinds"] = {
                kind: (total(pids, cpu_seconds) - cpu0[kind]) / (time.monotonic() - t0)
                for kind, pids in kinds.items()
            }
            row["idle_cpu"] = sum(row["idle_kinds"].values())
            if not row["partial"]:  # a partial step has phones still on their way: no push
                push_args = argparse.Namespace(**vars(args), devices=n)
                # push_phase names its mails push-K-n after its K senders: K = the step's
                # number keeps each step's Subjects apart (all K connections go to one port)
                smtp = [run.smtp_port()] * (i + 1)
                row.update(await scale_bench.push_phase(push_args, i + 1, smtp, events))
            row["load_after"] = os.getloadavg()
            row["errors"] = len(events.errors)
            row["processes"] = (servers, workers, len(phones.children))
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
            if run.proc.poll() is not None:
                raise RuntimeError(f"natsync run ended: {run.log_tail()}")
            if row["partial"]:
                print(f"step {n:,}: the time was up at {row['held']:,} held", flush=True)
                break
    finally:
        if phones is not None:
            await phones.stop()
        if run is not None:
            run.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print()
    print("command:", Path(sys.executable).name, *sys.argv)
    print(
        f"{os.cpu_count()} CPU(s), {os.sysconf('SC_PHYS_PAGES') * push_bench.PAGE / 2**30:.0f} "
        "GiB; `natsync run` on PostgreSQL; TLS 1.3 phone → edge and edge → server (pinned); "
        f"HAProxy {haproxy_version()} the peer (same process count, TLS both ways, verify "
        f"required); push: {args.messages} mails at {args.rate}/s from the end of DATA"
    )
    print()
    print(
        "| held Pings | processes (server / edge / client) | bring-up s (Pings/s) "
        "| server KB per held Ping (RSS / PSS) | edge KB per held Ping (PSS / RSS) "
        "| HAProxy KB per held Ping (PSS, held) | idle CPU % of a core (all natsync) "
        "| push p50 / p99 ms (end of DATA) | arrived once | dup | missing "
        "| load before / after | |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        noisy = "noisy" if max(r["load_before"][0], r["load_after"][0]) > 1 else ""
        peer = f"{r['peer_pss'] / 1024:.1f} ({r['peer_n']:,})" if "peer_pss" in r else "–"
        push = (
            f"{r['d50']:.1f} / {r['d99']:.1f} | {r['once']}/{r['sent']} | {r['dup']} "
            f"| {r['missing']}"
            if "sent" in r
            else "– | – | – | –"
        )
        shown = f"{r['held']:,} of {r['n']:,} (time up)" if r["partial"] else f"{r['n']:,}"
        s, e, c = r["processes"]
        print(
            f"| {shown} | {s} / {e} / {c} | {r['bring_up_s']:.0f} "
            f"({(r['held'] - r['before']) / r['bring_up_s']:,.0f}) "
            f"| {r['server_rss'] / 1024:.1f} / {r['server_pss'] / 1024:.1f} "
            f"| {r['edge_pss'] / 1024:.1f} / {r['edge_rss'] / 1024:.1f} | {peer} "
            f"| {r['idle_cpu'] * 100:.2f} | {push} "
            f"| {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} | {noisy} |"
        )
    print()
    for r in rows:
        print(
            f"{r['held']:,} held: RSS per process MB, server {r['per_proc']['server']}, edge "
            f"{r['per_proc']['edge']}; held per server process {r['spread']}; the machine's "
            f"MemAvailable fell {r['machine_per_ping'] / 1024:.0f} KB per held Ping "
            f"(clients, kernel and other sessions' work included); the bench's clients "
            f"{r['client_pss'] / 1024:.0f} KB PSS per phone; CPU ms per Ping brought up: "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["up_cpu_ms"].items())
            + " (server by thread: "
            + ", ".join(f"{v:.1f}" for v in r.get("server_threads_ms", []))
            + ")"
            + "; idle CPU % of a core: "
            + ", ".join(f"{k} {v * 100:.2f}" for k, v in r["idle_kinds"].items())
            + f"; order: {r['order']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="10000,50000,100000", help="held Pings, ascending")
    parser.add_argument("--servers", type=int, default=0, help="run.server_processes (0: auto)")
    parser.add_argument("--edge-workers", type=int, default=0, help="edge.workers (0: auto)")
    parser.add_argument("--per-client", type=int, default=8000, help="devices per client")
    parser.add_argument("--peer-held", type=int, default=10000, help="HAProxy's Pings (0: none)")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="push mails per second")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for arrivals")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--health-interval", type=float, default=0.0, help="edge.health_interval (0: default)"
    )
    parser.add_argument("--min-free-gib", type=float, default=3.0, help="memory left free")
    parser.add_argument("--time-limit", type=float, default=2400.0)
    parser.add_argument(
        "--reserve", type=float, default=240.0, help="seconds of --time-limit kept for the end"
    )
    args = parser.parse_args()
    if args.steps != ",".join(str(s) for s in sorted(int(x) for x in args.steps.split(","))):
        raise SystemExit("--steps must be ascending")
    rows: list[dict[str, Any]] = []
    try:
        push_bench.run(asyncio.wait_for(bench(args, rows), args.time_limit))
    except TimeoutError:
        print(f"stopped by --time-limit {args.time_limit:.0f} s after {len(rows)} step(s)")
    report(args, rows)


if __name__ == "__main__":
    main()
