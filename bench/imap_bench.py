"""IMAP source bench: natsync in front of a real Dovecot, side by side with natsync's own store.

Prints, each IMAP figure beside the same figure of natsync's own store:

1. push latency from delivery to the Ping's answer, p50/p99 (goal: p99 <= 1 s) — IMAP: an LMTP
   delivery to Dovecot (NOTIFY + IDLE -> mirror -> store -> Ping); own store: the store
   transaction SMTP-in makes;
2. time from a phone's first login until it has synced the newest 100 messages of a
   ``--big``-message mailbox (goal <= 5 s), for each way the IMAP mailbox can have got its mail
   (``--fills``, see :data:`FILLS`): delivered through Dovecot (indexed as it goes), or copied
   in as files that Dovecot never indexed (a migration by rsync) — there the first SELECT of
   any IMAP client builds Dovecot's dovecot-uidlist and index, and the bench measures that
   apart: Dovecot alone (Python's imaplib: login, SELECT, FETCH of the newest 100) and
   ``doveadm index`` on identical copies, beside natsync's total and its mirror's phases;
3. initial sync: all ``--initial`` messages of a mailbox to a phone (window 100) from its first
   login, messages/s; and the mirror's own pass (IMAP -> store) alone.

With every figure, the 1-minute load average over its measurement: above 1 (other work shared
the 2 CPUs) the figure is marked noisy.
Bounded: fixed counts, each wait limited by STEP_TIMEOUT; loopback only; every Dovecot it starts
is stopped and every mailbox and store it made removed.

    .venv/bin/python bench/imap_bench.py [--big 100000] [--pushes 30] [--initial 3000]
        [--fills mdbox,maildir-delivered,maildir-copied]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sources.dovecot import DOVEADM, Dovecot

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.mime import parse_message
from natsync.server import start_server
from natsync.sources import install, sources_from_dict
from natsync.sources.imap import MESSAGE_SPEC
from natsync.sources.worker import FIRST_BATCH
from natsync.store import open_store
from natsync.store.api import FolderType, Store

#: Longest wait for any one step (a Ping answer, a sync becoming complete, a doveadm run).
STEP_TIMEOUT = 600.0
#: Messages per `doveadm import` run: one import's time grows with the square of its size into
#: a maildir here (10,000 in 3.5 s, 20,000 in 12 s), batches of 5,000 keep it near linear.
IMPORT_BATCH = 5000
#: Messages per store transaction when filling natsync's own store.
STORE_BATCH = 1000
#: The newest messages of a big mailbox the phone must have (the mirror's first batch).
NEWEST = FIRST_BATCH
#: The window the phone asks with (a phone's usual size; the mirror's first batch).
WINDOW = 100
#: Above this 1-minute load average a figure is marked noisy (the machine has 2 CPUs).
QUIET_LOAD = 1.0

#: How the big IMAP mailbox gets its mail (``--fills``), as the output names it.
FILLS: dict[str, str] = {
    "mdbox": "mdbox, delivered through Dovecot (doveadm import; indexed)",
    "maildir-delivered": "maildir, delivered through Dovecot (doveadm import; indexed)",
    "maildir-copied": (
        "maildir copied in, never indexed (files in cur/ as another server names them, no "
        "dovecot-uidlist, no index: a migration by rsync): first SELECT builds Dovecot's index"
    ),
    "maildir-copied-new": (
        "maildir copied into new/, never indexed: first SELECT builds Dovecot's index and "
        "moves every file to cur/"
    ),
    "maildir-colliding": (
        "maildir copied into new/ with names 1700000000.M0P1.bench, 1700000001.M1P1.bench ... "
        "(the earlier bench's), never indexed: the names collide in Dovecot's file name hash"
    ),
}
DEFAULT_FILLS = "mdbox,maildir-delivered,maildir-copied"


def when(n: int) -> int:
    """When message *n* arrived (Unix seconds): one every ~10 minutes, 100,000 over two years.
    It is the message's Date, its IMAP INTERNALDATE (the mbox From line's date for doveadm
    import, the file's mtime in a copied maildir) and its date in natsync's own store, so
    "newest" means the same everywhere."""
    return 1_700_000_000 + n * 631


def mail(n: int) -> bytes:
    return (
        f"From: bench@example.org\r\nTo: u@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <bench.{n}@example.org>\r\nDate: {formatdate(when(n))}\r\n\r\n"
        f"body of message {n}\r\n"
    ).encode()


# -- the load average


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class Measured:
    """A figure's load: the highest 1-minute load average seen at its start and end."""

    peak: float

    @classmethod
    async def around(cls, step: Callable[[], Awaitable[Any]]) -> tuple[Any, Measured]:
        before = load()
        result = await step()
        return result, cls(max(before, load()))

    def __str__(self) -> str:
        noisy = ": noisy" if self.peak > QUIET_LOAD else ""
        return f"[load {self.peak:.2f}{noisy}]"


# -- filling mailboxes


def maildir_name(n: int, size: int, flags: str, rng: random.Random) -> str:
    """A file name as Dovecot (and Courier) name a delivered message, and rsync keeps it:
    ``<seconds>.M<microseconds>P<pid>.<host>,S=<size>,W=<CRLF size>:2,<flags>``; a delivery
    delivered at :func:`when`, microseconds and process ids as varied as real ones."""
    usec, pid = rng.randrange(1_000_000), rng.randrange(300, 4_000_000)
    return f"{when(n)}.M{usec}P{pid}.mx.example.org,S={size},W={size}:2,{flags}"


def colliding_name(n: int) -> str:
    """The earlier bench's names: they differ only in two counters far from the end, which
    Dovecot's file name hash (a 32-bit shift-and-fold over the whole name) maps onto few
    values, so its uidlist lookups walk long chains."""
    return f"{1_700_000_000 + n}.M{n}P1.bench"


def write_maildir(root: Path, count: int, fill: str) -> None:
    """*count* messages written straight into a maildir, as a copy (rsync) of another
    server's leaves it: no dovecot-uidlist, no index. The newest NEWEST are unread."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(25)  # the same names for every copy
    for n in range(count):
        raw = mail(n)
        if fill == "maildir-colliding":
            path = root / "new" / colliding_name(n)
        elif fill == "maildir-copied-new":
            path = root / "new" / maildir_name(n, len(raw), "", rng).partition(":")[0]
        else:
            flags = "" if n >= count - NEWEST else "S"
            path = root / "cur" / maildir_name(n, len(raw), flags, rng)
        path.write_bytes(raw)
        os.utime(path, (when(n), when(n)))  # Dovecot's INTERNALDATE of a maildir file
    subprocess.run(["chown", "-R", "dovecot:dovecot", str(root)], check=True)


def import_mailbox(dovecot: Dovecot, login: str, count: int, scratch: Path) -> None:
    """*count* messages put into *login*'s INBOX by Dovecot itself (``doveadm import`` of mbox
    files, IMPORT_BATCH a run): files, dovecot-uidlist and index written as Dovecot writes
    them for an LMTP delivery. All but the newest NEWEST are read (``Status: RO``)."""
    root = scratch / f"import-{login}"
    conf = str(dovecot.root / "dovecot.conf")
    try:
        for first in range(0, count, IMPORT_BATCH):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            mbox = root / "inbox"
            with mbox.open("wb") as out:
                for n in range(first, min(count, first + IMPORT_BATCH)):
                    stamp = time.asctime(time.gmtime(when(n)))
                    out.write(f"From bench@example.org {stamp}\n".encode())
                    if n < count - NEWEST:
                        out.write(b"Status: RO\n")
                    out.write(mail(n).replace(b"\r\n", b"\n") + b"\n")
            subprocess.run(["chown", "-R", "dovecot:dovecot", str(root)], check=True)
            location = f"mbox:{root}:INBOX={mbox}"
            subprocess.run(
                [DOVEADM, "-c", conf, "import", "-u", login, location, "", "all"],
                check=True,
                capture_output=True,
                timeout=STEP_TIMEOUT,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def fill_store(store: Store, folder_id: int, count: int) -> None:
    """*count* messages added to a folder of natsync's own store, STORE_BATCH a transaction."""
    for first in range(0, count, STORE_BATCH):
        batch = [
            parse_message(mail(n), datetime.fromtimestamp(when(n), UTC))
            for n in range(first, min(count, first + STORE_BATCH))
        ]

        def add(txn: Any, batch: list[Any] = batch) -> None:
            for message in batch:
                txn.add_message(folder_id, message)

        await store.run(add)


# -- Dovecot alone


def dovecot_alone(dovecot: Dovecot, login: str) -> tuple[float, float]:
    """What any IMAP client pays: (login + SELECT, FETCH of the newest NEWEST by sequence
    number, with the items the mirror asks) in seconds, on a new session."""
    started = time.perf_counter()
    client = dovecot.imap(login)
    client.enable("QRESYNC")
    typ, data = client.select("INBOX")
    assert typ == "OK", data
    selected = time.perf_counter() - started
    exists = int(data[0] or 0)
    started = time.perf_counter()
    typ, data = client.fetch(f"{max(1, exists - NEWEST + 1)}:{exists}", MESSAGE_SPEC)
    assert typ == "OK", data
    fetched = time.perf_counter() - started
    client.logout()
    return selected, fetched


def first_select(dovecot: Dovecot, login: str) -> float:
    """Seconds of one login + SELECT of *login*'s INBOX (the user's own IMAP client's)."""
    started = time.perf_counter()
    client = dovecot.imap(login)
    typ, data = client.select("INBOX")
    assert typ == "OK", data
    client.logout()
    return time.perf_counter() - started


def doveadm_index(dovecot: Dovecot, login: str) -> float:
    """``doveadm index`` of *login*'s INBOX: an administrator's way to build the index of a
    copied-in maildir before anyone logs in."""
    started = time.perf_counter()
    subprocess.run(
        [DOVEADM, "-c", str(dovecot.root / "dovecot.conf"), "index", "-u", login, "INBOX"],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    return time.perf_counter() - started


# -- natsync


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Rig:
    store: Store
    server: Any
    manager: Any
    phone: EASClient

    async def aclose(self) -> None:
        if self.manager is not None:
            await self.manager.aclose()
        await self.server.close()
        await self.store.aclose()


async def imap_rig(dovecot: Dovecot, tmp: Path, login: str, name: str = "") -> Rig:
    """natsync with an IMAP source (this Dovecot) and a phone of *login*; its store is
    ``<name or login>.db`` in *tmp*."""
    store = open_store(tmp / f"{name or login}.db")
    server = await start_server(ServerConfig(host="127.0.0.1", port=0), store)
    table = {"host": "127.0.0.1", "port": dovecot.imaps_port, "ca_file": str(dovecot.ca_file)}
    sources = sources_from_dict({"imap": {"d": table}, "default": "d"})
    manager = install(server.eas, sources, store)
    phone = EASClient(f"http://127.0.0.1:{server.port}", login, "pw", device_id="BENCH1")
    return Rig(store, server, manager, phone)


async def own_rig(tmp: Path, name: str) -> tuple[Rig, int]:
    """natsync's own store with one user *name* (password "pw"); the rig and its Inbox id."""
    store = open_store(tmp / f"own-{name}.db")
    hashed = _hash()
    user = await store.run(lambda t: t.add_user(name, f"{name}@example.test", name, hashed, _now()))
    inbox = await store.run(lambda t: t.folder_by_type(user.id, FolderType.INBOX).id)
    server = await start_server(ServerConfig(host="127.0.0.1", port=0), store)
    phone = EASClient(f"http://127.0.0.1:{server.port}", name, "pw", device_id="BENCH2")
    return Rig(store, server, None, phone), inbox


async def push_latency(
    deliver: Callable[[int], Awaitable[None]], phone: EASClient, inbox: str, count: int
) -> list[float]:
    await phone.sync(inbox)
    out: list[float] = []
    for n in range(count):
        ping = asyncio.create_task(phone.ping([inbox], 60))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await deliver(n)
        changed = await asyncio.wait_for(ping, STEP_TIMEOUT)
        out.append(time.perf_counter() - started)
        assert changed == [inbox], changed
        await phone.sync(inbox)
    return out


@dataclass
class Timeline:
    """Seconds from a phone's first request until it held the messages it wanted, and the
    first two steps' share of them."""

    total: float
    provision: float  # the first login (for an IMAP user: the password checked by IMAP)
    folder_sync: float

    def __str__(self) -> str:
        syncs = self.total - self.provision - self.folder_sync
        return (
            f"{self.total:.2f} s (Provision {self.provision:.2f} s, FolderSync "
            f"{self.folder_sync:.2f} s, Syncs {syncs:.2f} s)"
        )


async def phone_gets(phone: EASClient, wanted: int, total: int) -> Timeline:
    """From the phone's first request: provision, FolderSync, then Sync the Inbox a window at
    a time (as a phone does, again while the mirror is still filling it) until it holds
    *wanted* messages, which must be the newest of the mailbox's *total*."""
    started = time.perf_counter()
    await phone.provision()
    provisioned = time.perf_counter()
    await phone.folder_sync()
    listed = time.perf_counter()
    inbox = phone.folder(type=2).server_id
    subjects: set[str] = set()
    while len(subjects) < wanted:
        assert time.perf_counter() - started < STEP_TIMEOUT, f"{len(subjects)} on the phone"
        page = await phone.sync(inbox, window_size=WINDOW, max_rounds=2)
        subjects.update(item.subject for item in page.added)
        if len(subjects) < wanted and not page.added:
            await asyncio.sleep(0.05)
    done = time.perf_counter()
    newest = {f"message {n}" for n in range(total - wanted, total)}
    assert newest <= subjects, f"not the newest {wanted}: {sorted(newest - subjects)[:3]} ..."
    return Timeline(done - started, provisioned - started, listed - provisioned)


# -- the sections


async def push_section(tmp: Path, dovecot: Dovecot, pushes: int) -> None:
    login = "push@example.test"
    rig = await imap_rig(dovecot, tmp, login)
    async with rig.phone as phone:
        await phone.provision()
        # The mirror's first round first: a FolderSync before it maps the mailboxes would be
        # out of date (a Ping answers Status 7 to it).
        await asyncio.to_thread(rig.manager.mirrors[login].synced.wait, STEP_TIMEOUT)
        await phone.folder_sync()
        inbox = phone.folder(type=2).server_id

        async def lmtp(n: int) -> None:
            await asyncio.to_thread(dovecot.deliver, login, mail(n))

        imap, imap_load = await Measured.around(lambda: push_latency(lmtp, phone, inbox, pushes))
    await rig.aclose()

    own, own_inbox = await own_rig(tmp, "push")
    async with own.phone as phone:
        await phone.provision()
        await phone.folder_sync()
        inbox = phone.folder(type=2).server_id

        async def local(n: int) -> None:
            message = parse_message(mail(n), _now())
            await own.store.run(lambda t: t.add_message(own_inbox, message))

        mine, own_load = await Measured.around(lambda: push_latency(local, phone, inbox, pushes))
    await own.aclose()
    ms = 1000
    print(f"push latency, delivery -> Ping answer ({pushes} deliveries each; goal p99 <= 1 s):")
    print(
        f"  natsync store (direct delivery):          p50 {statistics.median(mine) * ms:4.0f} ms, "
        f"p99 {pct(mine, 99) * ms:4.0f} ms {own_load}"
    )
    print(
        f"  IMAP (Dovecot maildir, LMTP, NOTIFY+IDLE): p50 {statistics.median(imap) * ms:4.0f} ms, "
        f"p99 {pct(imap, 99) * ms:4.0f} ms {imap_load}",
        flush=True,
    )


async def initial_section(tmp: Path, dovecot: Dovecot, count: int, scratch: Path) -> None:
    # The mirror alone: from the first login until every message is in the store.
    login = "init@example.test"
    await asyncio.to_thread(import_mailbox, dovecot, login, count, scratch)
    rig = await imap_rig(dovecot, tmp, login)
    async with rig.phone as phone:

        async def mirror_all() -> float:
            started = time.perf_counter()
            await phone.provision()
            user = await rig.store.run(lambda t: t.get_user(login))
            assert user is not None
            while True:
                folders = await rig.store.run(lambda t: t.list_mirror_folders(user.id))
                if folders and all(f.backfill_below == 0 and f.uidvalidity for f in folders):
                    break
                assert time.perf_counter() - started < STEP_TIMEOUT
                await asyncio.sleep(0.05)
            inbox = await rig.store.run(lambda t: t.folder_by_type(user.id, FolderType.INBOX).id)
            stored = await rig.store.run(lambda t: len(t.message_versions(inbox)))
            assert stored == count, (stored, count)
            return time.perf_counter() - started

        mirror, mirror_load = await Measured.around(mirror_all)
    await rig.aclose()
    # A phone's whole initial sync from its first login (the mirror filling meanwhile).
    login = "phone@example.test"
    await asyncio.to_thread(import_mailbox, dovecot, login, count, scratch)
    rig = await imap_rig(dovecot, tmp, login)
    async with rig.phone as phone:
        imap, imap_load = await Measured.around(lambda: phone_gets(phone, count, count))
    await rig.aclose()
    # natsync's own store: the same messages, the same phone.
    own, inbox_id = await own_rig(tmp, "initial")
    await fill_store(own.store, inbox_id, count)
    async with own.phone as phone:
        mine, own_load = await Measured.around(lambda: phone_gets(phone, count, count))
    await own.aclose()
    print(f"initial sync of {count} messages to a phone (window {WINDOW}), from its first login:")
    rate = "messages/s"
    print(f"  natsync store:                         {count / mine.total:6.0f} {rate} {own_load}")
    print(f"  IMAP (Dovecot maildir):                {count / imap.total:6.0f} {rate} {imap_load}")
    print(f"  IMAP, the mirror's pass alone (store): {count / mirror:6.0f} {rate} {mirror_load}")
    sys.stdout.flush()


async def newest_own(tmp: Path, big: int) -> None:
    own, inbox_id = await own_rig(tmp, "big")
    started = time.perf_counter()
    await fill_store(own.store, inbox_id, big)
    made = time.perf_counter() - started
    async with own.phone as phone:
        seconds, measured = await Measured.around(lambda: phone_gets(phone, NEWEST, big))
    await own.aclose()
    print(
        f"newest {NEWEST} of a {big}-message mailbox on a phone, from its first login "
        "(goal <= 5 s):"
    )
    print(f"  natsync store: {seconds} {measured}")
    print(f"    (the mailbox made in {made:.1f} s)")


async def newest_imap(tmp: Path, scratch: Path, fill: str, big: int) -> None:
    """One fill of :data:`FILLS`: its own Dovecot, the big mailbox made that way (and, for the
    copied-in fills, identical copies for Dovecot alone and for doveadm index), natsync's
    newest NEWEST from the phone's first login, and Dovecot alone."""
    login = "big@example.test"
    users = {login: "pw", "alone@example.test": "pw", "admin@example.test": "pw"}
    mail_format = "mdbox" if fill == "mdbox" else "maildir"
    dovecot = Dovecot(tmp / f"dovecot-{fill}", users, mail_parent=scratch, mail_format=mail_format)
    dovecot.start()
    try:
        copied = fill not in ("mdbox", "maildir-delivered")
        started = time.perf_counter()
        if copied:
            for user in users:
                await asyncio.to_thread(write_maildir, dovecot.mail / user, big, fill)
        else:
            await asyncio.to_thread(import_mailbox, dovecot, login, big, scratch)
        made = time.perf_counter() - started
        before = f"the mailbox made in {made:.1f} s"
        #: Dovecot alone: (which session, (login + SELECT, FETCH) seconds, its load).
        alone: list[tuple[str, tuple[float, float], Measured]] = []
        admin = 0.0
        if copied:
            # Dovecot's own cost on identical never-indexed copies, before natsync sees its own.
            first, first_load = await Measured.around(
                lambda: asyncio.to_thread(dovecot_alone, dovecot, "alone@example.test")
            )
            alone.append(("first session, on an identical never-indexed copy", first, first_load))
            admin = await asyncio.to_thread(doveadm_index, dovecot, "admin@example.test")
        else:
            # A first SELECT, as the user's own IMAP client has made: timed apart, done first.
            selected = await asyncio.to_thread(first_select, dovecot, login)
            before += f", a first SELECT (the user's own IMAP client) {selected:.2f} s"
        rig = await imap_rig(dovecot, tmp, login, name=fill)
        async with rig.phone as phone:
            seconds, measured = await Measured.around(lambda: phone_gets(phone, NEWEST, big))
            phases = rig.manager.mirrors[login].full_syncs.get("INBOX", {})
        await rig.aclose()
        # Later, a new session: what every session after the first pays.
        again = "alone@example.test" if copied else login
        later, later_load = await Measured.around(
            lambda: asyncio.to_thread(dovecot_alone, dovecot, again)
        )
        session = "later, a new session" + (" on that copy" if copied else "")
        alone.append((session, later, later_load))
    finally:
        dovecot.stop()
    print(f"  IMAP, {FILLS[fill]}:")
    print(f"    natsync: {seconds} {measured}")
    print(f"      before: {before}")
    print(
        "      the mirror's first pass over INBOX: "
        + ", ".join(f"{name} {value:.2f} s" for name, value in phases.items())
    )
    for when, (select, fetch), alone_load in alone:
        print(
            f"    Dovecot alone ({when}): login + SELECT {select:.2f} s, FETCH of the newest "
            f"{NEWEST} {fetch:.2f} s {alone_load}"
        )
    if copied:
        print(f"    doveadm index of another identical copy: {admin:.2f} s")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--big", type=int, default=100_000, help="messages of the big mailbox")
    ap.add_argument("--pushes", type=int, default=30, help="deliveries timed, each side")
    ap.add_argument("--initial", type=int, default=3000, help="messages of the initial sync")
    ap.add_argument(
        "--fills",
        default=DEFAULT_FILLS,
        help=f"big IMAP mailboxes to make, comma-separated, of: {', '.join(FILLS)}",
    )
    ap.add_argument(
        "--scratch",
        type=Path,
        default=Path("/dev/shm"),
        help="where the mailboxes go (tmpfs: writing 100,000 files to this disk takes minutes, "
        "about 3 ms a file, which would measure the disk; default /dev/shm)",
    )
    args = ap.parse_args()
    fills = [f for f in args.fills.split(",") if f]
    unknown = [f for f in fills if f not in FILLS]
    if unknown:
        ap.error(f"unknown fill {unknown[0]!r}: choose from {', '.join(FILLS)}")
    if args.big < NEWEST or args.pushes < 1 or args.initial < 1:
        ap.error(f"--big must be at least {NEWEST}, --pushes and --initial at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="natsync-imap-bench-"))
    scratch = args.scratch if args.scratch.is_dir() else tmp
    print(
        f"load average (1 min) at the start: {load():.2f}; a figure measured above "
        f"{QUIET_LOAD:g} is marked noisy",
        flush=True,
    )
    dovecot = Dovecot(tmp / "dovecot", {}, mail_parent=scratch, mail_format="maildir")
    for login in ("push@example.test", "init@example.test", "phone@example.test"):
        dovecot.users[login] = "pw"
    dovecot.start()
    try:
        await push_section(tmp, dovecot, args.pushes)
        await initial_section(tmp, dovecot, args.initial, scratch)
    finally:
        dovecot.stop()
    try:
        await newest_own(tmp, args.big)
        for fill in fills:
            await newest_imap(tmp, scratch, fill, args.big)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average (1 min) at the end: {load():.2f}")


def _now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _hash() -> str:
    from natsync.auth.passwords import hash_password

    return hash_password("pw")


if __name__ == "__main__":
    asyncio.run(main())
