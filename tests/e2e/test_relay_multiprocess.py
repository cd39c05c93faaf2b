"""Outbound mail from several processes sharing one PostgreSQL queue: each message leaves once.

The smarthost is a real aiosmtpd server on loopback in the test process; it records every
message it answered "250" to, by Subject.

* two ``natsync server`` processes (tests/e2e/cluster.py), each with the relay configured:
  phones send mail through both (SendMail), both relays work the one queue, and every message
  reaches the smarthost exactly once;
* two relay worker processes (tests/e2e/relay_worker.py, a lease of seconds): one of them is
  SIGKILLed in the middle of a send it holds a claim for; the other sends that message once the
  lease has run out, and the rest of the queue exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from natsync.client import EASClient
from natsync.mail.relay import owner_pid
from natsync.store import open_store
from natsync.store.api import OutboundMail, Txn
from tests import pg
from tests.e2e.cluster import DOMAIN, START_TIMEOUT, STOP_TIMEOUT, database, phone, servers

pytestmark = pytest.mark.slow

#: Messages per test.
COUNT = 30
#: The workers' lease and SMTP timeout (seconds): the timeout must stay under the lease, and
#: long enough that the stalled send is still in flight when the test kills its worker.
LEASE = 4.0
SMTP_TIMEOUT = 3.0
#: Seconds every message may take to reach the smarthost.
DELIVERY_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sink:
    """The smarthost: counts accepted messages by Subject; can hold one Subject's first DATA
    unanswered (the worker sending it is then killed mid-send)."""

    stall: str = ""
    accepted: Counter[str] = field(default_factory=Counter)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.AbstractServer | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        subject = str(BytesHeaderParser().parsebytes(content)["Subject"])
        if subject == self.stall and not self.stalled.is_set():
            self.stalled.set()
            await self.release.wait()  # never answered while the test runs
            return "451 4.3.0 never mind"
        self.accepted[subject] += 1
        return "250 2.0.0 queued"

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="smarthost.test", loop=loop), "127.0.0.1", 0
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    running = Sink()
    yield running
    await running.stop()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


def outgoing(sender: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "someone@remote.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@{DOMAIN}>"
    msg.set_content(f"{subject}\n")
    return msg.as_bytes(policy=SMTP_POLICY)


def queued(url: str) -> list[OutboundMail]:
    store = open_store(url)
    try:
        return store.run_sync(lambda txn: txn.due_outbound(datetime(2100, 1, 1, tzinfo=UTC), 500))
    finally:
        store.close()


# -- two natsync server processes ----------------------------------------------------------------


async def test_mail_sent_through_two_server_processes_leaves_exactly_once(
    pg_server: pg.PgServer, tmp_path: Path, alice_password_hash: str, sink: Sink
) -> None:
    port = await sink.start()
    with (
        database(pg_server, ["relay"], alice_password_hash) as url,
        servers(tmp_path, url, 2, smarthost=f"127.0.0.1:{port}") as (a, b),
    ):
        async with phone(a, "relay", "RELAYA") as on_a, phone(b, "relay", "RELAYB") as on_b:
            sender = f"relay@{DOMAIN}"

            async def send_all(client: EASClient, parity: int) -> None:
                await client.folder_sync()  # provisions the phone first
                for n in range(parity, COUNT, 2):
                    await client.send_mail(outgoing(sender, f"out {n}"))

            await asyncio.gather(send_all(on_a, 0), send_all(on_b, 1))
        await until(lambda: sum(sink.accepted.values()) >= COUNT, DELIVERY_TIMEOUT, "delivery")
        await until(lambda: not queued(url), DELIVERY_TIMEOUT, "queue emptied")
        await asyncio.sleep(1.0)  # a second send of anything would show up now
        for server in (a, b):
            assert server.alive(), server.log_tail()
    assert sink.accepted == Counter({f"out {n}": 1 for n in range(COUNT)})


# -- two relay worker processes, one killed mid-send ----------------------------------------------

_READY = re.compile(r"relay worker (\S+) ready")


@contextlib.contextmanager
def workers(directory: Path, url: str, port: int, count: int) -> Iterator[dict[int, Path]]:
    """*count* relay worker processes: pid -> log; stopped by PID at the end."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for index in range(count):
            log = directory / f"worker-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.e2e.relay_worker",
                        url,
                        str(port),
                        str(LEASE),
                        str(SMTP_TIMEOUT),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            started.append((process, log))
        deadline = time.monotonic() + START_TIMEOUT
        for process, log in started:
            while not _READY.search(log.read_text(errors="replace")):
                assert process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "relay worker did not start"
                time.sleep(0.05)
        yield {process.pid: log for process, log in started}
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def test_a_worker_killed_mid_send_leaves_its_message_to_the_other_after_the_lease(
    pg_server: pg.PgServer, tmp_path: Path, alice_password_hash: str, sink: Sink
) -> None:
    sink.stall = "out 0"
    port = await sink.start()
    with database(pg_server, ["relay"], alice_password_hash) as url:
        now = datetime.now(UTC)

        def enqueue(txn: Txn) -> None:
            for n in range(COUNT):
                txn.enqueue_outbound(
                    f"relay@{DOMAIN}", ["someone@remote.test"], outgoing("x", f"out {n}"), now
                )

        with workers(tmp_path, url, port, 2) as running:
            store = open_store(url)
            try:
                store.run_sync(enqueue)
            finally:
                store.close()
            await asyncio.wait_for(sink.stalled.wait(), DELIVERY_TIMEOUT)
            # The worker whose send is stalled holds the claim on "out 0": kill it by its pid.
            [held] = [m for m in queued(url) if m.raw.count(b"Subject: out 0\r\n")]
            victim = owner_pid(held.claimed_by)
            assert victim in running, (held.claimed_by, list(running))
            assert held.lease_until is not None
            os.kill(victim, signal.SIGKILL)
            killed_at = datetime.now(UTC)
            await until(lambda: sink.accepted["out 0"] >= 1, DELIVERY_TIMEOUT, "takeover")
            taken_over_at = datetime.now(UTC)
            await until(lambda: sum(sink.accepted.values()) >= COUNT, DELIVERY_TIMEOUT, "rest")
            await until(lambda: not queued(url), DELIVERY_TIMEOUT, "queue emptied")
            await asyncio.sleep(1.0)  # a second send of anything would show up now
            [survivor] = [pid for pid in running if pid != victim]
            log = running[survivor].read_text(errors="replace")
    # Not before the dead worker's lease ran out (it was killed well inside it).
    assert killed_at < held.lease_until <= taken_over_at, log
    assert sink.accepted == Counter({f"out {n}": 1 for n in range(COUNT)}), log
