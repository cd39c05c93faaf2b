"""IMAP source bench: natsync in front of a real Dovecot, side by side with natsync's own store.

Prints: push latency from delivery to the Ping's answer (p50/p99), time until a phone can sync
the newest 100 messages of a large mailbox, and initial mirror throughput (messages/s).
Bounded: a fixed number of deliveries and messages, each wait with a timeout; loopback only.

    .venv/bin/python bench/imap_bench.py [--big 100000] [--pushes 30] [--initial 3000]
        [--format mdbox|maildir]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sources.dovecot import DOVEADM, Dovecot

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.mime import parse_message
from natsync.server import start_server
from natsync.sources import install, sources_from_dict
from natsync.store import open_store
from natsync.store.api import FolderType

#: Longest wait for any one step (a Ping answer, a sync becoming complete).
STEP_TIMEOUT = 600.0


def mail(n: int) -> bytes:
    return (
        f"From: bench@example.org\r\nTo: u@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <bench.{n}@example.org>\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\n"
        f"body of message {n}\r\n"
    ).encode()


def write_maildir(root: Path, count: int) -> None:
    """*count* messages written straight into a maildir's new/ (``--format maildir``): quick
    to make, but Dovecot never saw them arrive, and its first access to each (any FETCH item)
    then costs 50-70 ms here, a look through the 100,000 names — Dovecot's cost on a mailbox
    it did not write, printed as "Dovecot alone"."""
    new = root / "new"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    base = 1_700_000_000
    for n in range(count):
        (new / f"{base + n}.M{n}P1.bench").write_bytes(mail(n))
    shutil.chown(root, "dovecot", "dovecot")
    for sub in ("cur", "new", "tmp"):
        shutil.chown(root / sub, "dovecot", "dovecot")


def import_mailbox(dovecot: Dovecot, login: str, count: int, scratch: Path) -> None:
    """*count* messages put into *login*'s INBOX by Dovecot itself (``doveadm import`` of an
    mbox file; ``--format mdbox``, the default): a mailbox as Dovecot keeps one it delivered
    to, index and cache written as it goes. (Into a maildir, doveadm import slows down as the
    mailbox grows: 100,000 messages take far longer than the bench should.)"""
    root = scratch / f"import-{login}"
    root.mkdir(parents=True, exist_ok=True)
    mbox = root / "inbox"
    with mbox.open("wb") as out:
        for n in range(count):
            out.write(b"From bench@example.org Sun Dec  6 12:00:00 2026\n")
            out.write(mail(n).replace(b"\r\n", b"\n") + b"\n")
    shutil.chown(root, "dovecot", "dovecot")
    shutil.chown(mbox, "dovecot", "dovecot")
    conf = str(dovecot.root / "dovecot.conf")
    location = f"mbox:{root}:INBOX={mbox}"
    subprocess.run(
        [DOVEADM, "-c", conf, "import", "-u", login, location, "", "all"],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    shutil.rmtree(root, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def imap_rig(dovecot: Dovecot, tmp: Path, login: str):  # type: ignore[no-untyped-def]
    store = open_store(tmp / f"{login}.db")
    server = await start_server(ServerConfig(host="127.0.0.1", port=0), store)
    sources = sources_from_dict(
        {
            "imap": {
                "d": {
                    "host": "127.0.0.1",
                    "port": dovecot.imaps_port,
                    "ca_file": str(dovecot.ca_file),
                }
            },
            "default": "d",
        }
    )
    manager = install(server.eas, sources, store)
    phone = EASClient(f"http://127.0.0.1:{server.port}", login, "pw", device_id="BENCH1")
    return store, server, manager, phone


async def push_latency(deliver, phone: EASClient, inbox: str, count: int) -> list[float]:  # type: ignore[no-untyped-def]
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


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--pushes", type=int, default=30)
    ap.add_argument("--initial", type=int, default=3000)
    ap.add_argument("--format", choices=("mdbox", "maildir"), default="mdbox")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="natsync-imap-bench-"))
    users = {"push@example.test": "pw", "big@example.test": "pw", "init@example.test": "pw"}
    # The maildirs live in tmpfs when there is one: writing 100,000 files to this machine's disk
    # takes minutes (about 3 ms a file), which would measure the disk, not natsync.
    shm = Path("/dev/shm")
    in_memory = shm.is_dir()  # noqa: ASYNC240 - once, before anything runs
    scratch = shm if in_memory else tmp
    dovecot = Dovecot(
        tmp / "dovecot",
        users,
        mail_parent=shm if in_memory else None,
        mail_format=args.format,
    )
    dovecot.start()
    try:
        # 1. push latency, IMAP (LMTP delivery -> NOTIFY/IDLE -> mirror -> store -> Ping)
        store, server, manager, phone = await imap_rig(dovecot, tmp, "push@example.test")
        async with phone:
            await phone.provision()
            await phone.folder_sync()
            mirror = manager.mirrors["push@example.test"]
            await asyncio.to_thread(mirror.synced.wait, STEP_TIMEOUT)
            inbox = phone.folder(type=2).server_id

            async def lmtp(n: int) -> None:
                await asyncio.to_thread(dovecot.deliver, "push@example.test", mail(n))

            imap_push = await push_latency(lmtp, phone, inbox, args.pushes)
        await manager.aclose()
        await server.close()
        await store.aclose()
        # ... and natsync's own store (delivery = the store transaction SMTP-in makes)
        own = open_store(tmp / "own.db")
        await own.run(lambda t: t.add_user("own", "own@example.test", "own", _hash(), _now()))
        server = await start_server(ServerConfig(host="127.0.0.1", port=0), own)
        phone = EASClient(f"http://127.0.0.1:{server.port}", "own", "pw", device_id="BENCH2")
        async with phone:
            await phone.provision()
            await phone.folder_sync()
            inbox = phone.folder(type=2).server_id
            user = await own.run(lambda t: t.get_user("own"))
            assert user is not None
            own_id = user.id
            own_inbox = await own.run(lambda t: t.folder_by_type(own_id, FolderType.INBOX).id)

            async def local(n: int) -> None:
                message = parse_message(mail(n), _now())
                await own.run(lambda t: t.add_message(own_inbox, message))

            own_push = await push_latency(local, phone, inbox, args.pushes)
        await server.close()
        await own.aclose()

        # 2. newest 100 of a big mailbox
        t0 = time.perf_counter()
        await asyncio.to_thread(fill, dovecot, "big@example.test", args.big, scratch)
        gen = time.perf_counter() - t0
        # A first SELECT, as the users' own IMAP clients have made: timed apart, done first.
        t0 = time.perf_counter()
        await asyncio.to_thread(_index, dovecot, "big@example.test")
        indexing = time.perf_counter() - t0
        store, server, manager, phone = await imap_rig(dovecot, tmp, "big@example.test")
        async with phone:
            started = time.perf_counter()
            await phone.provision()
            await phone.folder_sync()
            inbox = phone.folder(type=2).server_id
            got = 0
            while got < 100:
                assert time.perf_counter() - started < STEP_TIMEOUT
                # One window, as a phone asks for it (sync() would page to the end).
                page = await phone.sync(inbox, window_size=100, max_rounds=2)
                got += len(page.added)
                if got < 100:
                    await asyncio.sleep(0.05)
            newest100 = time.perf_counter() - started
            phases = manager.mirrors["big@example.test"].full_syncs.get("INBOX", {})
        await manager.aclose()
        # The same newest 100 bodies asked of Dovecot alone (a new session, as the mirror's).
        t0 = time.perf_counter()
        await asyncio.to_thread(_fetch_newest, dovecot, "big@example.test", args.big)
        dovecot_alone = time.perf_counter() - t0
        await server.close()
        await store.aclose()

        # 3. initial mirror throughput: every message of a mailbox in the store
        await asyncio.to_thread(fill, dovecot, "init@example.test", args.initial, scratch)
        store, server, manager, phone = await imap_rig(dovecot, tmp, "init@example.test")
        async with phone:
            started = time.perf_counter()
            await phone.provision()
            user = await store.run(lambda t: t.get_user("init@example.test"))
            assert user is not None
            while True:
                folders = await store.run(lambda t: t.list_mirror_folders(user.id))
                done = folders and all(f.backfill_below == 0 and f.uidvalidity for f in folders)
                if done:
                    break
                assert time.perf_counter() - started < STEP_TIMEOUT
                await asyncio.sleep(0.1)
            count = await store.run(
                lambda t: len(t.message_versions(t.folder_by_type(user.id, FolderType.INBOX).id))
            )
            initial = time.perf_counter() - started
        await manager.aclose()
        await server.close()
        await store.aclose()
        own = open_store(tmp / "own2.db")
        user2 = await own.run(lambda t: t.add_user("o2", "o2@example.test", "o2", _hash(), _now()))
        t0 = time.perf_counter()  # parse and store, as the mirror does per message
        parsed = [parse_message(mail(n), _now()) for n in range(args.initial)]
        o2 = user2.id
        inbox_id = await own.run(lambda t: t.folder_by_type(o2, FolderType.INBOX).id)
        await own.run(lambda t: [t.add_message(inbox_id, m) for m in parsed])
        own_rate = args.initial / (time.perf_counter() - t0)
        await own.aclose()
    finally:
        dovecot.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ms = 1000
    print(f"push latency, delivery -> Ping answer ({args.pushes} deliveries each):")
    print(
        f"  IMAP (Dovecot LMTP, NOTIFY+IDLE): p50 {statistics.median(imap_push) * ms:.0f} ms, "
        f"p99 {pct(imap_push, 99) * ms:.0f} ms"
    )
    print(
        f"  natsync store (direct delivery):  p50 {statistics.median(own_push) * ms:.0f} ms, "
        f"p99 {pct(own_push, 99) * ms:.0f} ms"
    )
    print(
        f"newest 100 of a {args.big}-message IMAP mailbox on the phone: {newest100:.2f} s "
        f"from first login ({args.format}; before: the mailbox made in {gen:.1f} s, a first "
        f"SELECT of it {indexing:.1f} s)"
    )
    print(
        "  of which the mirror's first pass over INBOX: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())
    )
    print(
        "  Dovecot alone, later, login + SELECT + UID FETCH of those 100 bodies: "
        f"{dovecot_alone:.2f} s"
    )
    print(
        f"initial mirror of {count} messages: {count / initial:.0f} messages/s "
        f"(natsync store, direct adds: {own_rate:.0f} messages/s)"
    )


def fill(dovecot: Dovecot, login: str, count: int, scratch: Path) -> None:
    if dovecot.mail_format == "maildir":
        write_maildir(dovecot.mail / login, count)
    else:
        import_mailbox(dovecot, login, count, scratch)


def _index(dovecot: Dovecot, login: str) -> None:
    client = dovecot.imap(login)
    client.enable("QRESYNC")
    client.select("INBOX")
    client.logout()


def _fetch_newest(dovecot: Dovecot, login: str, count: int) -> None:
    client = dovecot.imap(login)
    client.enable("QRESYNC")
    client.select("INBOX")
    client.uid(
        "FETCH", f"{max(1, count - 99)}:{count}", "(UID FLAGS MODSEQ INTERNALDATE BODY.PEEK[])"
    )
    client.logout()


def _now() -> datetime:
    return datetime.now(UTC)


def _hash() -> str:
    from natsync.auth.passwords import hash_password

    return hash_password("pw")


if __name__ == "__main__":
    asyncio.run(main())
