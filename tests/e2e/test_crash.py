"""The crash test of issue 3: SIGKILL the server at random points of a sync burst.

`natsync up --json` runs as a subprocess on a data directory; SMTP deliveries and a phone's
Syncs and changes run against it; the server is killed (SIGKILL, no clean-up) at a random
moment, a few rounds, seeded so a failure can be replayed (NATSYNC_CRASH_SEED). After each
kill: the SQLite file passes ``PRAGMA integrity_check``; the server restarts on the same
directory; the phone continues with the keys it had. At the end: every message whose SMTP
transaction completed is in the store exactly once (those cut off mid-DATA at most once), the
device's provisioning survived, the continuing phone never got a duplicate nor lost an item,
and a fresh phone's full sync sees exactly the store's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from natsync.client import ClientChange, ClientError, EASClient
from natsync.eas import state as sync_state
from natsync.errors import NatsyncError
from natsync.store import open_store, store_path
from natsync.store.api import FolderType

pytestmark = pytest.mark.slow

#: Kill rounds; each is bounded by BURST_MAX seconds of traffic.
ROUNDS = 4
BURST_MIN = 0.3
BURST_MAX = 2.0
#: Seconds `natsync up` may take to print its JSON line.
STARTUP_TIMEOUT = 60.0
#: Per-request timeout of the burst's SMTP and EAS traffic (the server may be gone).
REQUEST_TIMEOUT = 10.0
DEVICE = "CRASHPHONE01"


def _message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "load@remote.test"
    msg["To"] = "demo@natsync.test"
    msg["Subject"] = f"crash test {n}"
    msg["Message-ID"] = f"<crash-{n}@remote.test>"
    msg.set_content(f"message {n}\n" + "x" * (n % 7 * 300))
    return msg.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP requires


@dataclass
class Ledger:
    """What the outside world knows was accepted, and what is in doubt."""

    accepted: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)
    next_n: int = 0
    duplicates: list[str] = field(default_factory=list)
    resets: int = 0


async def start_server(
    data_dir: Path, log: Path
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    # stderr goes to a file: a pipe nobody reads would fill and stall the server.
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from natsync.cli import main; main()",
            "up",
            "--json",
            "--data-dir",
            str(data_dir),
            "--https-port",
            "0",
            "--smtp-port",
            "0",
            "--edge-port",  # not the default 9443: another run or service may hold it
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert line.strip(), f"natsync up exited early: {tail(log)}"
    return proc, json.loads(line)


async def smtp_burst(info: dict[str, Any], ledger: Ledger, rng: random.Random) -> None:
    host, _, port = info["smtp"].rpartition(":")
    while True:
        n = ledger.next_n
        ledger.next_n += 1
        mid = f"<crash-{n}@remote.test>"
        try:
            await aiosmtplib.send(
                _message(n),
                sender="load@remote.test",
                recipients=["demo@natsync.test"],
                hostname=host,
                port=int(port),
                timeout=REQUEST_TIMEOUT,
                validate_certs=False,  # opportunistic STARTTLS, as a sending MTA does
            )
        except (aiosmtplib.SMTPException, OSError):
            ledger.in_doubt.add(mid)  # cut off: the server may or may not have committed it
            return
        ledger.accepted.add(mid)
        await asyncio.sleep(rng.uniform(0, 0.02))


async def phone_burst(phone: EASClient, inbox: str, ledger: Ledger, rng: random.Random) -> None:
    while True:
        try:
            known = sorted(phone.state.collection(inbox).server_ids)
            changes = []
            if known and rng.random() < 0.6:
                changes = [ClientChange(rng.choice(known), read=rng.random() < 0.5)]
            result = await phone.sync(inbox, window_size=rng.choice([5, 25, 100]), changes=changes)
        except (ClientError, NatsyncError):
            return
        ledger.duplicates.extend(result.duplicates)
        ledger.resets += result.reset


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def integrity(database: Path) -> str:
    conn = sqlite3.connect(database)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def store_contents(database: Path) -> tuple[dict[str, list[str]], dict[str, int], int]:
    """(Message-ID → server ids over all folders, Inbox server ids → 1, device policy key)."""
    store = open_store(database)
    try:

        def read(txn):  # type: ignore[no-untyped-def]
            user = txn.get_user("demo")
            by_mid: dict[str, list[str]] = {}
            inbox_ids: dict[str, int] = {}
            for folder in txn.list_folders(user.id):
                ids = list(txn.message_versions(folder.id))
                for message in txn.get_messages(user.id, ids):
                    by_mid.setdefault(message.message_id_header, []).append(message.server_id)
                if folder.type == FolderType.INBOX:
                    inbox_ids = dict.fromkeys(ids, 1)
            device = txn.get_device(user.id, DEVICE)
            return by_mid, inbox_ids, device.policy_key if device else 0

        return store.run_sync(read)
    finally:
        store.close()


def why_apart(
    database: Path,
    log: Path,
    inbox: str,
    key: str,
    phone: set[str],
    stored: set[str],
    ledger: Ledger,
) -> str:
    """What a failure of the continuing phone's check needs to be understood (it was seen once in
    CI and not again in 30 runs): the items apart, whether the server's state for the phone's
    last SyncKey counts them as the phone's, and the phone's last Syncs as the log has them."""
    store = open_store(database)
    try:

        def read(txn):  # type: ignore[no-untyped-def]
            user = txn.get_user("demo")
            device = txn.get_device(user.id, DEVICE)
            state = sync_state.load(txn.get_sync_state(device.id, inbox, key)) if device else None
            apart = sorted((phone ^ stored), key=lambda sid: int(sid.rpartition(":")[2]))
            rows = txn.get_messages(user.id, [sid for sid in apart if sid in stored])
            return state, apart, {m.server_id: m.message_id_header for m in rows}

        state, apart, mids = store.run_sync(read)
    finally:
        store.close()
    known = set(state.get("items", {})) if state else set()
    lines = [line for line in log.read_text(errors="replace").splitlines() if "cmd=Sync" in line]
    return (
        f"apart {apart}; on the phone: {sorted(set(apart) & phone)}; in the server's state for "
        f"the phone's key {key}: {sorted(set(apart) & known)} (state "
        f"{'found' if state else 'missing'}, {len(known)} items, keys {sorted(state or {})}); "
        f"Message-IDs {mids}, accepted {[m for m in mids.values() if m in ledger.accepted]}, "
        f"in doubt {[m for m in mids.values() if m in ledger.in_doubt]}; the last Syncs: "
        + " | ".join(lines[-12:])
    )


async def test_sigkill_during_a_sync_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("NATSYNC_CRASH_SEED", "20261125"))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    database = store_path(data_dir)
    log = tmp_path / "server.log"
    state_file = tmp_path / "phone.json"
    ledger = Ledger()
    started = time.monotonic()

    for round_no in range(ROUNDS):
        proc, info = await start_server(data_dir, log)
        try:
            phone = EASClient(
                info["url"],
                info["user"],
                info["password"],
                ca_file=info["ca_file"],
                device_id=DEVICE,
                state_path=state_file,
                timeout=REQUEST_TIMEOUT,
            )
            async with phone:
                await phone.folder_sync()
                inbox = phone.folder(type=FolderType.INBOX).server_id
                tasks = [
                    asyncio.create_task(smtp_burst(info, ledger, rng)),
                    asyncio.create_task(phone_burst(phone, inbox, ledger, rng)),
                ]
                await asyncio.sleep(rng.uniform(BURST_MIN, BURST_MAX))
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                await asyncio.wait_for(asyncio.gather(*tasks), 3 * REQUEST_TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert integrity(database) == "ok", f"round {round_no} (seed {seed})"

    # restart once more and let the phone continue with the keys it kept
    proc, info = await start_server(data_dir, log)
    try:
        async with EASClient(
            info["url"],
            info["user"],
            info["password"],
            ca_file=info["ca_file"],
            device_id=DEVICE,
            state_path=state_file,
        ) as phone:
            policy_key = phone.state.policy_key
            await phone.folder_sync()
            inbox = phone.folder(type=FolderType.INBOX).server_id
            result = await phone.sync(inbox)
            ledger.duplicates.extend(result.duplicates)
            ledger.resets += result.reset
            continuing_ids = set(phone.state.collection(inbox).server_ids)
            continuing_key = phone.state.collection(inbox).sync_key
            assert phone.state.policy_key == policy_key, "the device had to provision again"
        async with EASClient(
            info["url"],
            info["user"],
            info["password"],
            ca_file=info["ca_file"],
            device_id="CRASHFRESH01",
        ) as fresh:
            await fresh.folder_sync()
            full = await fresh.sync(inbox, window_size=100)
            fresh_ids = [i.server_id for i in full.added]
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, tail(log)

    assert integrity(database) == "ok"
    by_mid, inbox_ids, device_key = store_contents(database)
    assert ledger.accepted, "the burst delivered nothing: the test proved nothing"
    missing = sorted(m for m in ledger.accepted if m not in by_mid)
    assert not missing, f"accepted but lost (seed {seed}): {missing}"
    doubled = {m: ids for m, ids in by_mid.items() if len(ids) > 1}
    assert not doubled, f"stored twice (seed {seed}): {doubled}"
    unknown = set(by_mid) - ledger.accepted - ledger.in_doubt
    assert not unknown, f"messages nobody sent: {unknown}"
    assert device_key == policy_key != 0
    assert ledger.duplicates == [], f"the phone got duplicates (seed {seed})"
    assert ledger.resets == 0, f"the server lost a SyncKey it had answered (seed {seed})"
    assert continuing_ids == set(inbox_ids), "the continuing phone lost or kept stale items: " + (
        why_apart(database, log, inbox, continuing_key, continuing_ids, set(inbox_ids), ledger)
    )
    assert len(fresh_ids) == len(set(fresh_ids)) == len(inbox_ids)
    assert set(fresh_ids) == set(inbox_ids)
    assert time.monotonic() - started < 240
