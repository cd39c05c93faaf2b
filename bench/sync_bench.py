"""Initial-sync throughput and SMTP ingest rate of natsync, client and server on this machine.

What it does:

1. makes a fresh data directory (``natsync up``'s layout: store, private CA, demo user) and
   fills the demo Inbox with ``--messages`` messages straight through the store (setup speed);
2. starts ``natsync up --json`` as a subprocess on loopback (server and client then use
   separate processes, as a phone and a server do);
3. initial sync, ``--rounds`` times (each round a new device, so each is a whole initial sync):
   the EAS client (``natsync.client``) provisions and FolderSyncs (not timed), then a lean phone
   (``phone_sync``, over the same client's HTTP exchange) Syncs the Inbox to the end with
   WindowSize ``--window`` and body preference plain text truncated to ``--truncation`` bytes,
   over TLS. The phone decodes every answer whole and checks every item (``check_add``): a
   ServerId it does not hold yet (no duplicate), Subject, From, DateReceived and a plain Body of
   at most ``--truncation`` bytes whose Truncated flag agrees with its EstimatedDataSize, and a
   body that belongs to its subject ("Bench message N" / "Message N."); it keeps the ServerIds,
   not the items. messages/s = messages received / wall time of the Syncs, and the CPU per
   message of the server process and of the client (this process) over the same Syncs. The
   medians of the rounds are the figures (this machine is shared: the wall rate moves with the
   load, the CPU per message much less); the load average is printed and a run above load 1 is
   marked noisy;
4. SMTP ingest: ``--smtp-messages`` messages over ``--smtp-connections`` parallel SMTP sessions
   (aiosmtplib, one session per connection, many messages per session); messages/s = accepted
   messages / wall time; then checks that every accepted message is in the store.

Goals: >= 5,000 messages/s initial sync (issue 27; issue 3 asked 2,000), >= 500 messages/s
SMTP ingest (issue 3).
The server is the part ``natsync up``'s supervisor starts (``python -m natsync.run.parts server
0``, a child process): its CPU, ``--profile-server FILE`` (cProfile stats of that process, written
when it stops) and ``--py-spy DIR`` are all of that child, not of the supervisor.
Never part of the pass/fail suite; bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from natsync.cli.up import DEMO_EMAIL, DEMO_USER, prepare
from natsync.client import BodyPreference, BodyType, Command, EASClient
from natsync.client.protocol import sync_request
from natsync.mime import parse_message
from natsync.store import open_store
from natsync.store.api import FolderType
from natsync.wbxml import Element

#: Seconds `natsync up` may take to print its JSON line before the bench gives up.
STARTUP_TIMEOUT = 60.0
#: CPU seconds the bench process itself (the client side) spent in the SMTP phase.
CLIENT_CPU: dict[str, float] = {}
#: CPU seconds the server process spent in the SMTP phase (load-independent-ish cost).
SERVER_CPU: dict[str, float] = {}
#: Messages per store transaction while filling the Inbox.
FILL_BATCH = 500
#: Whole-bench bound: the SMTP phase stops waiting after this many seconds.
SMTP_TIMEOUT = 300.0

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
)


def make_message(i: int, body_bytes: int = 2000) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {i % 97} <sender{i % 97}@example.test>"
    msg["To"] = f"natsync demo <{DEMO_EMAIL}>"
    msg["Subject"] = f"Bench message {i}: quarterly figures"
    msg["Message-ID"] = f"<bench-{i}@example.test>"
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
    text = (f"Message {i}.\n\n" + LOREM * (body_bytes // len(LOREM) + 1))[:body_bytes]
    msg.set_content(text)
    return msg.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP requires


def fill_inbox(database: Path, count: int) -> float:
    store = open_store(database)
    start = time.perf_counter()
    try:
        user = store.run_sync(lambda txn: txn.get_user(DEMO_USER))
        assert user is not None
        inbox = store.run_sync(lambda txn: txn.folder_by_type(user.id, FolderType.INBOX))
        base = datetime(2026, 11, 1, tzinfo=UTC)
        for first in range(0, count, FILL_BATCH):
            batch = [
                parse_message(make_message(i), base + timedelta(seconds=i))
                for i in range(first, min(count, first + FILL_BATCH))
            ]

            def add(txn, batch=batch):  # type: ignore[no-untyped-def]
                for message in batch:
                    txn.add_message(inbox.id, message)

            store.run_sync(add)
    finally:
        store.close()
    return time.perf_counter() - start


#: The environment variable naming the cProfile output of the server part (see _PROFILE_HOOK).
PROFILE_ENV = "NATSYNC_BENCH_PROFILE"
#: A ``sitecustomize`` for the processes of ``natsync up``: the server part (started by the
#: supervisor as ``python -m natsync.run.parts server N``) profiles itself and writes its stats
#: when it exits; the supervisor (and any other part) runs unprofiled. A Sync runs in the
#: store's worker thread, so every thread gets a profile of its own (cProfile sees only the
#: thread it was enabled in), and the stats of all threads that ended are written together.
_PROFILE_HOOK = f"""
import os, sys
if "natsync.run.parts" in " ".join(sys.orig_argv) and "server" in sys.orig_argv:
    import atexit, cProfile, pstats, threading
    _ended = []
    _thread_run = threading.Thread.run

    def _profiled_run(self):
        profile = cProfile.Profile()
        profile.enable()
        try:
            _thread_run(self)
        finally:
            profile.disable()
            _ended.append(profile)

    threading.Thread.run = _profiled_run
    _main = cProfile.Profile()
    _main.enable()

    def _dump():
        _main.disable()
        stats = pstats.Stats(_main)
        for profile in _ended:
            stats.add(profile)
        stats.dump_stats(os.environ[{PROFILE_ENV!r}])

    atexit.register(_dump)
"""


def start_up(
    data_dir: Path, profile: Path | None
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    args = ["up", "--json", "--data-dir", str(data_dir), "--https-port", "0", "--smtp-port", "0"]
    args.append("--no-edge")  # measure the server itself; bench/edge_bench.py measures the edge
    cmd = [sys.executable, "-c", "from natsync.cli import main; main()", *args]
    env = dict(os.environ)
    if profile is not None:
        hook = data_dir / "bench-profile-hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(_PROFILE_HOOK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
        env[PROFILE_ENV] = str(profile.resolve())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() or proc.poll() is not None:
            break
    if not line.strip():
        proc.kill()
        raise SystemExit("natsync up did not start")
    return proc, json.loads(line)


@dataclass(frozen=True)
class SyncRound:
    messages: int
    seconds: float
    syncs: int
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


class PhoneCheckError(AssertionError):
    """An item of the initial sync is not what the store holds (the bench fails)."""


#: The Email and AirSyncBase elements every synced bench message must carry.
_REQUIRED = frozenset({"Email:Subject", "Email:From", "Email:DateReceived", "AirSyncBase:Body"})
#: Sync rounds one initial sync may take before the bench gives up (bounded).
MAX_ROUNDS = 10_000


def check_add(add: Element, seen: set[str], truncation: int) -> None:
    """Check one Add of the bench Inbox, as the phone stores it (module docstring, step 3)."""
    sid, data = "", None
    for child in add.children:
        if child.tag == "ServerId":
            sid = child.text()
        elif child.tag == "ApplicationData":
            data = child
    if not sid or sid in seen:
        raise PhoneCheckError(f"Add without a new ServerId ({sid!r}): a duplicate or a gap")
    seen.add(sid)
    if data is None:
        raise PhoneCheckError(f"Add {sid} has no ApplicationData")
    fields: dict[str, Element] = {f"{el.namespace}:{el.tag}": el for el in data.children}
    missing = _REQUIRED - fields.keys()
    if missing:
        raise PhoneCheckError(f"Add {sid} lacks {sorted(missing)}")
    body = {el.tag: el.text() for el in fields["AirSyncBase:Body"].children}
    text = body.get("Data", "")
    size = int(body.get("EstimatedDataSize", "-1"))
    if body.get("Type") != "1" or len(text.encode()) > truncation or size < len(text):
        raise PhoneCheckError(f"Add {sid}: not a plain body of at most {truncation} bytes")
    if body.get("Truncated") != ("1" if size > truncation else "0"):
        raise PhoneCheckError(f"Add {sid}: Truncated does not match EstimatedDataSize {size}")
    # make_message: "Bench message N: ..." carries the body "Message N. ...": the body and the
    # headers of one message, not of two.
    number = fields["Email:Subject"].text().removeprefix("Bench message ").partition(":")[0]
    if not text.startswith(f"Message {number}."):
        raise PhoneCheckError(f"Add {sid}: its body is not that of its subject")


async def phone_sync(
    client: EASClient, collection_id: str, window: int, truncation: int
) -> tuple[int, int]:
    """Sync *collection_id* to the end as a lean phone: (items received, Sync requests).

    Every answer is decoded whole (natsync.wbxml, as ``EASClient.request`` does) and every
    Add is checked (``check_add``); the phone keeps the ServerIds it holds, not the items
    (a phone writes them to its own store; the bench has no use for them)."""
    prefs = [BodyPreference(BodyType.PLAIN, truncation_size=truncation)]
    key, seen, rounds = "0", set[str](), 0
    while rounds < MAX_ROUNDS:
        request = sync_request(
            collection_id, key, window_size=window, prefs=prefs, version=client.version
        )
        response = await client.request(Command.Sync, request)
        rounds += 1
        if response.tree is None:
            raise PhoneCheckError(f"Sync {rounds}: an empty answer before the end")
        coll = response.tree.find("Collections")
        coll = coll.find("Collection") if coll is not None else None
        if coll is None or coll.child_text("Status") != "1":
            raise PhoneCheckError(f"Sync {rounds} failed: {response.body[:200]!r}")
        if coll.child_text("CollectionId") != collection_id:
            raise PhoneCheckError(f"Sync {rounds} answered for another collection")
        new_key = coll.child_text("SyncKey") or ""
        if not new_key or new_key == key:
            raise PhoneCheckError(f"Sync {rounds}: the SyncKey did not move on")
        commands = coll.find("Commands")
        for command in commands.children if commands is not None else ():
            if command.tag != "Add":
                raise PhoneCheckError(f"Sync {rounds}: {command.tag} in an initial sync")
            check_add(command, seen, truncation)
        if key != "0" and coll.find("MoreAvailable") is None:
            return len(seen), rounds
        key = new_key
    raise PhoneCheckError(f"the initial sync did not end within {MAX_ROUNDS} Syncs")


async def initial_sync(
    info: dict[str, str], window: int, truncation: int, server_pid: int
) -> SyncRound:
    async with EASClient(
        info["url"],
        info["user"],
        info["password"],
        ca_file=info["ca_file"],
        device_id=f"BENCH{secrets.token_hex(4).upper()}",
    ) as client:
        await client.folder_sync()
        inbox = client.folder(type=FolderType.INBOX)
        start = time.perf_counter()
        cpu, server_cpu = time.process_time(), process_cpu(server_pid)
        received, rounds = await phone_sync(client, inbox.server_id, window, truncation)
        elapsed = time.perf_counter() - start
        server_cpu = process_cpu(server_pid) - server_cpu
        client_cpu = time.process_time() - cpu
        return SyncRound(received, elapsed, rounds, server_cpu, client_cpu)


async def smtp_ingest(smtp: str, count: int, connections: int) -> tuple[int, float]:
    """Send *count* messages over *connections* parallel sessions; (accepted, seconds).

    The messages are built before the clock starts: the bench measures the server, not
    EmailMessage. Each session sends its share back to back (MAIL, RCPT, DATA per message).
    """
    host, _, port = smtp.rpartition(":")
    shares = [
        count // connections + (1 if i < count % connections else 0) for i in range(connections)
    ]
    stamp = secrets.token_hex(4)
    prepared = [
        [make_message(hash((stamp, c, j)) & 0xFFFFFFF, body_bytes=1500) for j in range(n)]
        for c, n in enumerate(shares)
    ]
    accepted = 0

    async def session(messages: list[bytes]) -> None:
        nonlocal accepted
        # opportunistic STARTTLS, as a sending MTA does (the server's certificate is private)
        client = aiosmtplib.SMTP(hostname=host, port=int(port), timeout=60, validate_certs=False)
        await client.connect()
        try:
            for raw in messages:
                await client.sendmail("bench@example.test", [DEMO_EMAIL], raw)
                accepted += 1
        finally:
            await client.quit()

    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.wait_for(asyncio.gather(*(session(m) for m in prepared)), SMTP_TIMEOUT)
    elapsed = time.perf_counter() - start
    CLIENT_CPU["smtp"] = time.process_time() - cpu
    return accepted, elapsed


def server_part(supervisor: int) -> int:
    """The pid of the server part among *supervisor*'s children (from /proc, Linux)."""
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for child in (task / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"natsync.run.parts" in argv and b"server" in argv:
                return int(child)
    raise SystemExit(f"natsync up (pid {supervisor}) has no server part")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process *pid* used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def spy(directory: Path | None, name: str, pid: int) -> Iterator[None]:
    """Sample *pid* with py-spy (all threads, collapsed stacks) while the block runs."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    sampler = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--rate",
            "1000",
            "-o",
            str(directory / name),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)


def count_inbox(database: Path) -> int:
    store = open_store(database)
    try:
        user = store.run_sync(lambda txn: txn.get_user(DEMO_USER))
        assert user is not None
        inbox = store.run_sync(lambda txn: txn.folder_by_type(user.id, FolderType.INBOX))
        return len(store.run_sync(lambda txn: txn.message_versions(inbox.id)))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--truncation", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="initial syncs (median counts)")
    parser.add_argument("--smtp-messages", type=int, default=2_000)
    parser.add_argument("--smtp-connections", type=int, default=16)
    parser.add_argument("--profile-server", type=Path, default=None)
    parser.add_argument("--profile-client", type=Path, default=None)
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="directory for py-spy samples of the server (sync.txt, smtp.txt; collapsed stacks)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the data here and reuse an Inbox filled by an earlier run (fast reruns)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="natsync-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        prepared = prepare(data_dir)
        already = count_inbox(prepared.database)
        fill_s = fill_inbox(prepared.database, args.messages - already) if already == 0 else 0.0
        args.messages = max(already, args.messages)
        proc, info = start_up(data_dir, args.profile_server)
        server_pid = server_part(proc.pid)
        load_before = os.getloadavg()[0]
        sync_rounds: list[SyncRound] = []
        try:
            profiler = cProfile.Profile() if args.profile_client else None
            if profiler is not None:
                profiler.enable()
            with spy(args.py_spy, "sync.txt", server_pid):
                for _ in range(args.rounds):
                    sync_rounds.append(
                        asyncio.run(initial_sync(info, args.window, args.truncation, server_pid))
                    )
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile_client)
            before = process_cpu(server_pid)
            with spy(args.py_spy, "smtp.txt", server_pid):
                accepted, smtp_s = asyncio.run(
                    smtp_ingest(info["smtp"], args.smtp_messages, args.smtp_connections)
                )
            SERVER_CPU["smtp"] = process_cpu(server_pid) - before
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        in_store = count_inbox(prepared.database)

    load_after = os.getloadavg()[0]
    synced = statistics.median(r.messages for r in sync_rounds)
    sync_s = statistics.median(r.seconds for r in sync_rounds)
    sync_rate = statistics.median(r.rate for r in sync_rounds)
    server_ms = statistics.median(r.server_cpu / r.messages * 1e3 for r in sync_rounds)
    client_ms = statistics.median(r.client_cpu / r.messages * 1e3 for r in sync_rounds)
    smtp_rate = accepted / smtp_s
    rows = [
        (
            "store fill (setup, direct)",
            f"{args.messages}" if fill_s else "reused",
            f"{fill_s:.2f}",
            f"{args.messages / fill_s:,.0f}" if fill_s else "-",
            "",
        ),
        (
            f"initial sync (WindowSize {args.window}, plain/{args.truncation} B, TLS)",
            f"{synced:.0f} in {sync_rounds[0].syncs} Syncs",
            f"{sync_s:.2f}",
            f"{sync_rate:,.0f}",
            ">= 5,000",
        ),
        (
            f"SMTP ingest ({args.smtp_connections} connections)",
            f"{accepted}",
            f"{smtp_s:.2f}",
            f"{smtp_rate:,.0f}",
            ">= 500",
        ),
    ]
    print(f"natsync sync bench (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'phase':<58} {'messages':>18} {'seconds':>8} {'msgs/s':>8} {'goal':>9}")
    for row in rows:
        print(f"{row[0]:<58} {row[1]:>18} {row[2]:>8} {row[3]:>8} {row[4]:>9}")
    print(f"initial sync, median of {len(sync_rounds)} rounds; each round:")
    for r in sync_rounds:
        server_ms_r, client_ms_r = (cpu / r.messages * 1e3 for cpu in (r.server_cpu, r.client_cpu))
        print(
            f"  {r.rate:7,.0f} msgs/s  CPU per message: server {server_ms_r:.3f} ms,"
            f" client {client_ms_r:.3f} ms"
        )
    print(f" sync CPU per message (median): server {server_ms:.3f} ms, client {client_ms:.3f} ms")
    print(
        f" the client decoded every answer and checked every item (check_add): a new ServerId,"
        f" Subject, From, DateReceived, a plain body of <= {args.truncation} bytes, Truncated"
        " agreeing with EstimatedDataSize, the body of its own subject; it kept the ServerIds"
    )
    server, client = SERVER_CPU.get("smtp", 0.0), CLIENT_CPU.get("smtp", 0.0)
    print(
        f" smtp CPU: server {server:.2f} s ({server / max(accepted, 1) * 1e3:.2f} ms/msg), "
        f"client {client:.2f} s ({client / max(accepted, 1) * 1e3:.2f} ms/msg)"
    )
    noisy = (
        " - noisy (above 1: other work shared the CPUs)" if max(load_before, load_after) > 1 else ""
    )
    print(f"load average {load_before:.2f} before, {load_after:.2f} after (1 min){noisy}")
    expected = args.messages + accepted
    if args.data_dir is not None:
        expected = in_store  # earlier runs' SMTP messages are in the kept Inbox too
    print(f"Inbox after the run: {in_store} messages (expected {expected})")
    if any(r.messages != args.messages for r in sync_rounds) or in_store != expected:
        raise SystemExit("MISMATCH: messages were lost or duplicated")


if __name__ == "__main__":
    main()
