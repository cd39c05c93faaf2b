"""Direct Push at scale: N phones each holding a Ping over TLS to one natsync server process.

    .venv/bin/python bench/push_bench.py                      # N = 1,000 then 10,000
    .venv/bin/python bench/push_bench.py --devices 2000 --messages 200

Everything runs on this machine over loopback and stops by itself (``--time-limit``, default
600 s; children are killed by PID). Per N, a fresh server process (uvloop when installed, TLS,
SMTP in) serves a fresh copy of one SQLite store, and lean client processes (raw asyncio + ssl
on uvloop, prebuilt WBXML, Basic auth; ``--procs`` of them, devices spread evenly) each bring
their devices to a held Ping: Sync the inbox twice (so the inbox counts as seen), then Ping.
Then it measures:

1. server memory per held Ping = (RSS with N held - RSS before any connection) / N;
2. server CPU while all N wait, over ``--idle-seconds``;
3. push latency: ``--messages`` mails sent by SMTP to random users, paced at ``--rate`` per
   second; the time from the SMTP 250 reply (the sender's clock) to the Ping answer at the
   client (same machine, CLOCK_MONOTONIC is shared by processes): p50 / p99 / max;
4. exactly once: after each Status 2 the client Syncs and reports the subjects it got; each
   message must arrive once at its user's device. At most one message per user is in flight
   at a time, so every Ping answer is attributed to exactly one message;
5. the rest of the server still answering: the client-side time of each of those Syncs, made
   while the other N - 1 Pings are held.

Setup shortcuts, said out loud: users = devices (one device per user); users are written
straight into the store with a deliberately cheap scrypt hash (ln=4; the server's login cache
makes the real cost a one-off per user anyway); ``require_provisioning`` is off (Provision is not
what is measured). Client processes are NOT the server: their memory and CPU are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import random
import resource
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PASSWORD = "bench-password"
DOMAIN = "example.test"
#: Concurrent device setups (TLS handshake + 2 Syncs + Ping) per client process: enough to
#: keep the server busy, few enough that no handshake waits for minutes behind the others.
SETUP_CONCURRENCY = 8
#: Attempts per device setup (a handshake may still time out while the server is saturated).
SETUP_ATTEMPTS = 3
#: Devices per client process at most (each holds one socket; the per-process limit is 20,000).
DEVICES_PER_PROC = 2500
#: The heartbeat the bench phones ask for: the default maximum, so none expires mid-run.
HEARTBEAT = 3540
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the uvloop extra is optional: fall back to asyncio's loop
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Any) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# --------------------------------------------------------------------------- setup


def cheap_hash(password: str) -> str:
    """A valid natsync scrypt hash with ln=4 (microseconds to check): bench setup only."""
    salt = b"bench-salt-16byt"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16, r=8, p=1, dklen=32)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=")

    return f"$scrypt$ln=4,r=8,p=1${b64(salt)}${b64(digest)}"


def make_store(path: Path, users: int) -> str:
    """Create *users* users; returns the inbox ServerId (the same for every user)."""
    from natsync.store import open_store
    from natsync.store.api import FolderType, Txn

    store = open_store(path)
    hashed = cheap_hash(PASSWORD)
    now = dt.datetime.now(dt.UTC)
    inboxes: set[str] = set()
    batch = 1000

    def add(first: int) -> Callable[[Txn], None]:
        def fn(txn: Txn) -> None:
            for i in range(first, min(first + batch, users)):
                user = txn.add_user(f"u{i}", f"u{i}@{DOMAIN}", f"User {i}", hashed, now)
                inboxes.add(txn.folder_by_type(user.id, FolderType.INBOX).server_id)

        return fn

    try:
        for first in range(0, users, batch):
            store.run_sync(add(first))
    finally:
        store.close()
    if len(inboxes) != 1:
        raise SystemExit(f"inbox ServerIds differ between users: {sorted(inboxes)[:5]}")
    return inboxes.pop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --------------------------------------------------------------------------- server process


async def serve(args: argparse.Namespace) -> None:
    """The measured process: the natsync server (TLS) and SMTP in, over the bench store.
    Commands on stdin: ``stat`` (prints waiters, tasks and RSS as JSON), ``trace`` (a
    tracemalloc summary, when started with --trace), EOF to stop."""
    from natsync.config import ServerConfig
    from natsync.mail.smtp_in import start_smtp_server
    from natsync.server import start_server
    from natsync.store import open_store

    limit = raise_nofile()
    if args.trace:
        import tracemalloc

        tracemalloc.start(args.trace)
    store = open_store(args.db)  # a SQLite path, or a postgresql:// URL (scale_bench)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=None if args.plain else Path(args.cert),
        tls_key=None if args.plain else Path(args.key),
        data_dir=Path(args.db).parent,
        domains=(DOMAIN,),
        require_provisioning=False,
    )
    server = await start_server(config, store)
    smtp = await start_smtp_server(store, "127.0.0.1", 0, config.domains, hostname="bench")
    loop = asyncio.get_running_loop()
    print(
        json.dumps(
            {
                "https": server.port,
                "smtp": smtp.port,
                "nofile": limit,
                "loop": type(loop).__module__,
            }
        ),
        flush=True,
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    snapshot: Any = None
    while line := (await reader.readline()).decode().strip():
        if line == "stat":
            feed = getattr(store, "feed", None)
            waiting = feed.waiting() if feed is not None else -1
            print(json.dumps({"waiting": waiting, "tasks": len(asyncio.all_tasks())}), flush=True)
        elif line == "trace-base" and args.trace:
            import tracemalloc

            snapshot = tracemalloc.take_snapshot()
            print(json.dumps({"ok": True}), flush=True)
        elif line == "trace" and args.trace:
            import tracemalloc

            now = tracemalloc.take_snapshot()
            stats = now.compare_to(snapshot, "traceback" if args.trace > 1 else "lineno")
            top = []
            for stat in stats[:25]:
                where = " <- ".join(
                    f"{Path(f.filename).name}:{f.lineno}" for f in list(stat.traceback)[:4]
                )
                top.append(f"{stat.size_diff / 1024:9.1f} KiB {stat.count_diff:7d} {where}")
            total = sum(s.size_diff for s in stats)
            print(json.dumps({"total": total, "top": top}), flush=True)
    await smtp.close()
    await server.close()
    store.close()


# --------------------------------------------------------------------------- client process


class Phone:
    """One device on one keep-alive TLS connection: raw HTTP/1.1, prebuilt request heads."""

    def __init__(self, index: int, port: int, inbox: str) -> None:
        self.index = index
        self.port = port
        self.inbox = inbox
        user = f"u{index}"
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        self.head = (
            "POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User="
            + user
            + f"&DeviceId=bench{index}&DeviceType=BenchPhone HTTP/1.1\r\n"
            "Host: localhost\r\n"
            f"Authorization: Basic {token}\r\n"
            "MS-ASProtocolVersion: 16.1\r\n"
            "Content-Type: application/vnd.ms-sync.wbxml\r\n"
            "Content-Length: {length}\r\n\r\n"
        )
        self.key = "0"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, cmd: str, body: bytes) -> bytes:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(self.head.format(cmd=cmd, length=len(body)).encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data = await self.reader.readexactly(length) if length else b""
        if status != b"200":
            raise RuntimeError(f"device {self.index}: {cmd} answered HTTP {status.decode()}")
        return data

    def sync_body(self) -> bytes:
        from natsync.wbxml import E, encode

        ns = "AirSync"
        coll = E(ns, "Collection", E(ns, "SyncKey", self.key), E(ns, "CollectionId", self.inbox))
        return encode(E(ns, "Sync", E(ns, "Collections", coll)))

    async def sync(self) -> list[str]:
        """One Sync of the inbox; the Subjects of the mails it brought."""
        from natsync.wbxml import decode

        data = await self.request("Sync", self.sync_body())
        subjects = []
        if data:
            for el in decode(data).iter():
                if el.tag == "SyncKey":
                    self.key = el.text()
                elif el.tag == "Subject":
                    subjects.append(el.text())
        return subjects


def ping_body(inbox: str) -> bytes:
    from natsync.wbxml import E, encode

    pg = "Ping"
    folder = E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))
    return encode(E(pg, "Ping", E(pg, "HeartbeatInterval", HEARTBEAT), E(pg, "Folders", folder)))


async def hold_pings(
    phone: Phone, body: bytes, report: Callable[[float, list[str], float], None]
) -> None:
    """Ping until the connection fails; after each Status 2, Sync and report (the Ping
    answer's time, the Subjects the Sync brought, the Sync's seconds)."""
    from natsync.wbxml import decode

    while True:
        answer = decode(await phone.request("Ping", body))
        at = time.monotonic()
        status = answer.child_text("Status")
        if status == "2":
            subjects = await phone.sync()
            report(at, subjects, time.monotonic() - at)
        elif status != "1":
            raise RuntimeError(f"device {phone.index}: Ping Status {status}")


async def client(args: argparse.Namespace) -> None:
    """Bring devices first..first+count to a held Ping; report each push on stdout."""

    raise_nofile()
    context = None if args.plain else ssl.create_default_context(cafile=args.cert)
    body = ping_body(args.inbox)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    ready = 0
    errors = 0

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def device(index: int) -> None:
        nonlocal ready, errors
        phone = Phone(index, args.port, args.inbox)
        try:
            for attempt in range(SETUP_ATTEMPTS):
                try:
                    async with gate:
                        phone.key = "0"
                        phone.reader, phone.writer = await asyncio.open_connection(
                            args.host,
                            args.port,
                            ssl=context,
                            server_hostname="localhost" if context else None,
                            # a loopback source of its own (127.0.1.x: held_bench.py), so
                            # 100,000 phones do not run out of one address's ephemeral ports
                            local_addr=(args.source, 0) if args.source else None,
                        )
                        await phone.sync()  # SyncKey 0 -> the first key
                        await phone.sync()  # the inbox is now seen: a Ping on it waits
                    break
                except (OSError, asyncio.IncompleteReadError):
                    if phone.writer is not None:
                        phone.writer.close()
                    if attempt == SETUP_ATTEMPTS - 1:
                        raise
            ready += 1
            if ready == args.count:
                say({"ready": ready})
            await hold_pings(
                phone,
                body,
                lambda at, got, took: say({"d": index, "t": at, "s": got, "sync": took}),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors += 1
            say({"error": f"{type(exc).__name__}: {exc}", "d": index})

    tasks = [asyncio.ensure_future(device(i)) for i in range(args.first, args.first + args.count)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # until the bench closes our stdin
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the bench


class Smtp:
    """A minimal SMTP sender that knows when it finished sending DATA and when 250 came."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Smtp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        smtp = cls(reader, writer)
        await smtp.reply()
        writer.write(b"EHLO bench.test\r\n")
        await smtp.reply()
        return smtp

    async def reply(self) -> bytes:
        while True:
            line = await self.reader.readline()
            if not line:
                raise RuntimeError("SMTP server closed the connection")
            if line[3:4] != b"-":
                return line

    async def send(self, rcpt: str, message: str) -> tuple[float, float]:
        for command in ("MAIL FROM:<sender@elsewhere.test>", f"RCPT TO:<{rcpt}>", "DATA"):
            self.writer.write(command.encode() + b"\r\n")
            line = await self.reply()
            if line[:1] not in (b"2", b"3"):
                raise RuntimeError(f"SMTP {command}: {line!r}")
        self.writer.write(message.encode() + b".\r\n")
        t_data = time.monotonic()
        line = await self.reply()
        t_250 = time.monotonic()
        if not line.startswith(b"250"):
            raise RuntimeError(f"SMTP DATA: {line!r}")
        return t_data, t_250

    async def close(self) -> None:
        self.writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await self.reply()
        self.writer.close()


class Child:
    """A child process of this bench (killed by its PID when the bench ends)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str, script: str = __file__) -> Child:
        """Run *script* (this bench, unless another bench reuses the class) with *argv*."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        return cls(proc)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"child {self.proc.pid} ended")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line()

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


class Events:
    """What the client processes reported: arrivals per Subject (Ping answer times), the
    Syncs that followed a push (ms), devices that moved to another server, errors."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.syncs: list[float] = []
        self.moved: dict[int, float] = {}
        self.errors: list[str] = []
        self.ready = 0

    async def listen(self, child: Child) -> None:
        while True:
            try:
                event = await child.line()
            except RuntimeError:
                return
            if "ready" in event:
                self.ready += event["ready"]
            elif "error" in event:
                self.errors.append(event["error"])
            else:
                if "sync" in event:
                    self.syncs.append(event["sync"] * 1000)
                if "moved" in event:
                    self.moved[event["moved"]] = event["t"]
                for subject in event["s"]:
                    self.arrivals.setdefault(subject, []).append(event["t"])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def one_round(args: argparse.Namespace, n: int, work: Path, inbox: str) -> dict[str, Any]:
    db = work / f"store-{n}.db"
    for suffix in ("", "-wal", "-shm"):
        src = work / f"store.db{suffix}"
        if src.exists():
            shutil.copy(src, str(db) + suffix)
    cert, key = work / "cert.pem", work / "key.pem"
    server_argv = ["--role", "server", "--db", str(db), "--cert", str(cert), "--key", str(key)]
    if args.plain:
        server_argv.append("--plain")
    if args.trace:
        server_argv += ["--trace", str(args.trace)]
    server = await Child.start(*server_argv)
    children: list[Child] = []
    try:
        ports = await asyncio.wait_for(server.line(), 30)
        await asyncio.sleep(1.0)
        rss_idle = server.rss()
        if args.trace:
            await server.ask("trace-base")
        started = time.monotonic()
        procs = max(args.procs, -(-n // DEVICES_PER_PROC))
        share = -(-n // procs)
        events = Events()
        arrivals, errors, syncs = events.arrivals, events.errors, events.syncs
        for p in range(procs):
            first, count = p * share, min(share, n - p * share)
            if count <= 0:
                break
            children.append(
                await Child.start(
                    "--role",
                    "client",
                    "--port",
                    str(ports["https"]),
                    "--cert",
                    str(cert),
                    "--inbox",
                    inbox,
                    *(["--plain"] if args.plain else []),
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                )
            )

        listeners = [asyncio.ensure_future(events.listen(c)) for c in children]
        while True:
            stat = await server.ask("stat")
            if stat["waiting"] >= n:
                break
            if errors:
                raise RuntimeError(f"{len(errors)} device errors, first: {errors[0]}")
            await asyncio.sleep(0.5)
        setup_s = time.monotonic() - started
        await asyncio.sleep(3.0)  # let the setup burst settle (allocator, GC)
        rss_held = server.rss()
        tasks_held = (await server.ask("stat"))["tasks"]
        trace = await server.ask("trace") if args.trace else None
        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        idle_cpu = (server.cpu() - cpu0) / (time.monotonic() - t0)

        # push: one message in flight per user, paced at --rate
        rng = random.Random(n)
        sent: dict[str, tuple[int, float, float]] = {}
        busy: set[int] = set()
        smtp = await Smtp.connect(ports["smtp"])
        cpu1, t1 = server.cpu(), time.monotonic()
        try:
            for k in range(args.messages):
                due = t1 + k / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for subject, (user, _, _) in sent.items():
                    if user in busy and subject in arrivals:
                        busy.discard(user)
                while True:
                    user = rng.randrange(n)
                    if user not in busy:
                        break
                subject = f"push-{n}-{k}"
                msg = (
                    f"From: sender@elsewhere.test\r\nTo: u{user}@{DOMAIN}\r\n"
                    f"Subject: {subject}\r\nMessage-ID: <{subject}@bench>\r\n\r\nhello\r\n"
                )
                t_data, t_250 = await smtp.send(f"u{user}@{DOMAIN}", msg)
                sent[subject] = (user, t_data, t_250)
                busy.add(user)
        finally:
            await smtp.close()
        deadline = time.monotonic() + 30
        # a bounded poll of the bench's own bookkeeping (not of the server)
        while time.monotonic() < deadline and not all(s in arrivals for s in sent):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # duplicates, if any, have time to show up
        push_cpu = server.cpu() - cpu1
        latencies = [(arrivals[s][0] - t) * 1000 for s, (_, _, t) in sent.items() if s in arrivals]
        from_data = [(arrivals[s][0] - t) * 1000 for s, (_, t, _) in sent.items() if s in arrivals]
        once = sum(1 for s in sent if len(arrivals.get(s, ())) == 1)
        dup = sum(1 for s in sent if len(arrivals.get(s, ())) > 1)
        final = await server.ask("stat")
        for listener in listeners:
            listener.cancel()
        return {
            "n": n,
            "setup_s": setup_s,
            "rss_idle": rss_idle,
            "rss_held": rss_held,
            "per_ping": (rss_held - rss_idle) / n,
            "tasks_held": tasks_held,
            "idle_cpu": idle_cpu,
            "push_cpu_ms": push_cpu * 1000 / max(1, len(sent)),
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": pct(latencies, 99) if latencies else float("nan"),
            "max": max(latencies) if latencies else float("nan"),
            "d50": statistics.median(from_data) if from_data else float("nan"),
            "d99": pct(from_data, 99) if from_data else float("nan"),
            "dmax": max(from_data) if from_data else float("nan"),
            "sent": len(sent),
            "once": once,
            "dup": dup,
            "missing": sum(1 for s in sent if s not in arrivals),
            "sync50": statistics.median(syncs) if syncs else float("nan"),
            "sync99": pct(syncs, 99) if syncs else float("nan"),
            "errors": len(errors),
            "waiting_end": final["waiting"],
            "loop": ports["loop"],
            "trace": trace,
        }
    finally:
        for child in children:
            await child.stop()
        await server.stop()


async def bench(args: argparse.Namespace) -> None:
    raise_nofile()
    sizes = [int(x) for x in args.devices.split(",")]
    work = Path(tempfile.mkdtemp(prefix="push-bench-"))
    try:
        print(f"load average before: {os.getloadavg()}", flush=True)
        t = time.monotonic()
        self_signed(work)
        inbox = make_store(work / "store.db", max(sizes))
        print(f"store with {max(sizes)} users made in {time.monotonic() - t:.1f} s", flush=True)
        rows = []
        for n in sizes:
            row = await one_round(args, n, work, inbox)
            rows.append(row)
            if row["trace"]:
                print(f"tracemalloc, N={n}: {row['trace']['total'] / n:.0f} B per held Ping")
                for line in row["trace"]["top"]:
                    print("   ", line)
            print(f"N={n} done (setup {row['setup_s']:.1f} s)", flush=True)
        print()
        print(
            f"server loop: {rows[0]['loop']}; {args.messages} messages at {args.rate}/s; "
            f"users = devices; {'plain HTTP' if args.plain else 'TLS 1.3'} over loopback"
        )
        print(
            "| held Pings | RSS idle | RSS held | KB per held Ping | idle CPU (% core) "
            "| push p50 / p99 / max ms (from 250) | (from end of DATA) | server CPU ms/push "
            "| arrived once | dup | missing | Sync p50 / p99 ms | server tasks held |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['n']:,} | {r['rss_idle'] / 2**20:.0f} MB | {r['rss_held'] / 2**20:.0f} MB "
                f"| {r['per_ping'] / 1024:.1f} | {r['idle_cpu'] * 100:.2f} "
                f"| {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} "
                f"| {r['d50']:.1f} / {r['d99']:.1f} / {r['dmax']:.1f} | {r['push_cpu_ms']:.2f} "
                f"| {r['once']}/{r['sent']} | {r['dup']} | {r['missing']} "
                f"| {r['sync50']:.1f} / {r['sync99']:.1f} | {r['tasks_held']} |"
            )
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1000,10000", help="held Pings, comma-separated")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--procs", type=int, default=2, help="client processes (at least)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--plain", action="store_true", help="no TLS (to see TLS's share)")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: off)")
    parser.add_argument("--role", default="bench", choices=["bench", "server", "client"])
    for name in ("--db", "--cert", "--key", "--inbox"):
        parser.add_argument(name, default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1", help="client role: where to dial")
    parser.add_argument("--source", default="", help="client role: the address to dial from")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    args, _ = parser.parse_known_args()
    if args.role == "server":
        run(serve(args))
    elif args.role == "client":
        run(client(args))
    else:
        run(asyncio.wait_for(bench(args), args.time_limit))


if __name__ == "__main__":
    main()
