"""The mirror's backfill of a folder's older messages against a real Dovecot (tests/sources/
dovecot.py): ``ImapAccount.uids_below`` finds the newest UIDs below a point by searching
widening windows — the right ones, also where expunges left gaps, without listing every older
UID — and a mirror with small batches brings every message of a gappy INBOX into the store,
each once (natsync.sources.worker: the newest first, then the older ones batch by batch)."""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.server import start_server
from natsync.sources import install, sources_from_dict, worker
from natsync.sources.config import SourcesConfig
from natsync.sources.imap import ImapAccount
from natsync.store import open_store
from natsync.store.api import FolderType
from tests.sources.dovecot import Dovecot, available

pytestmark = pytest.mark.skipif(not available(), reason="dovecot-imapd is not installed (apt)")

SEARCHED = "search@example.test"
MIRRORED = "mirror@example.test"
#: Seconds the mirror may take to bring the whole small mailbox in.
MIRROR_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("dovecot"), {SEARCHED: "pw", MIRRORED: "pw"})
    server.start()
    yield server
    server.stop()


def sources(dovecot: Dovecot) -> SourcesConfig:
    table = {"host": "127.0.0.1", "port": dovecot.imaps_port, "ca_file": str(dovecot.ca_file)}
    return sources_from_dict({"imap": {"d": table}, "default": "d"})


def fill_with_gaps(dovecot: Dovecot, login: str, count: int) -> list[int]:
    """*count* messages APPENDed to *login*'s INBOX, then all but every third (and the first
    two and the last) expunged: the UIDs left, ascending."""
    client = dovecot.imap(login)
    try:
        for n in range(count):
            raw = (
                f"From: bob@example.org\r\nTo: {login}\r\nSubject: message {n}\r\n"
                f"Message-ID: <backfill.{n}@example.org>\r\n\r\nbody {n}\r\n"
            ).encode()
            stamp = imaplib.Time2Internaldate(1_700_000_000 + n * 60)
            client.append("INBOX", "", stamp, raw)
        client.select("INBOX")
        doomed = [uid for uid in range(1, count + 1) if uid % 3 and uid > 2 and uid != count]
        client.uid("STORE", ",".join(map(str, doomed)), "+FLAGS.SILENT", "(\\Deleted)")
        client.expunge()
        typ, data = client.uid("SEARCH", "ALL")
        assert typ == "OK"
        return sorted(int(u) for u in data[0].split())
    finally:
        client.logout()


def test_uids_below_finds_the_newest_below_a_point(dovecot: Dovecot) -> None:
    left = fill_with_gaps(dovecot, SEARCHED, 90)
    assert len(left) < 40  # gaps: most UIDs are gone
    server = sources(dovecot).server_for(SEARCHED)
    assert server is not None
    account = ImapAccount(server, SEARCHED, "pw")
    account.connect()
    try:
        account.select("INBOX")
        for below, at_least in [(91, 3), (91, 50), (60, 5), (30, 1), (4, 10), (2, 3), (1, 5)]:
            older = [uid for uid in left if uid < below]
            got = account.uids_below(below, at_least)
            assert got == sorted(set(got))
            assert set(got) <= set(older), (below, at_least)
            wanted = min(at_least, len(older))
            assert len(got) >= wanted
            assert got[len(got) - wanted :] == older[len(older) - wanted :], (below, at_least)
        # Not every older UID: a window just below the point holds the newest few.
        assert len(account.uids_below(91, 3)) < len(left) - 1
    finally:
        account.close()


async def test_the_backfill_brings_every_message_once(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches: the newest 5 first, then 4 a round, over the gaps fill_with_gaps left.
    monkeypatch.setattr(worker, "FIRST_BATCH", 5)
    monkeypatch.setattr(worker, "BACKFILL_BATCH", 4)
    left = fill_with_gaps(dovecot, MIRRORED, 60)
    store = open_store(tmp_path / "store.db")
    server = await start_server(ServerConfig(host="127.0.0.1", port=0), store)
    manager = install(server.eas, sources(dovecot), store)
    try:
        async with EASClient(
            f"http://127.0.0.1:{server.port}", MIRRORED, "pw", device_id="BACKFILL"
        ) as phone:
            await phone.provision()  # the first login starts the mirror
            user = await store.run(lambda t: t.get_user(MIRRORED))
            assert user is not None
            started = time.monotonic()
            while True:
                folders = await store.run(lambda t: t.list_mirror_folders(user.id))
                inbox = [f for f in folders if f.mailbox == "INBOX"]
                if inbox and inbox[0].uidvalidity and inbox[0].backfill_below == 0:
                    break
                assert time.monotonic() - started < MIRROR_TIMEOUT, inbox
                await asyncio.sleep(0.05)
            folder_id = inbox[0].folder_id
            rows = await store.run(lambda t: t.mirror_messages(folder_id))
            assert sorted(r.uid for r in rows) == left
            stored = await store.run(lambda t: t.message_versions(folder_id))
            assert len(stored) == len(left)
            # ... and the phone gets each of them once.
            await phone.folder_sync()
            got = await phone.sync(phone.folder(type=FolderType.INBOX.value).server_id)
            assert not got.duplicates
            assert len(got.added) == len(left)
    finally:
        await manager.aclose()
        await server.close()
        await store.aclose()
