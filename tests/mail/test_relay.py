"""natsync.mail.relay: local routing in one transaction, and the queue worker against a real
aiosmtpd smarthost on loopback (up, down then up, refusing)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from natsync.errors import ConfigError
from natsync.mail.relay import (
    Relay,
    SmartHost,
    build_bounce,
    deliver,
    route_outgoing,
    save_sent_copy,
)
from natsync.mime import CLASS_NDR, body_text
from natsync.store.api import FolderType, Message, OutboundMail, Store, Txn, User

DOMAIN = "example.test"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
OUTGOING = (
    b"From: Alice Example <alice@example.test>\r\nTo: carol@remote.example\r\n"
    b"Subject: outbound\r\nMessage-ID: <out-1@example.test>\r\n\r\nHello Carol\r\n"
)
#: Test timings: fast retries, and an idle poll long enough that only kick() explains speed.
FAST_RETRY = timedelta(milliseconds=200)
IDLE = timedelta(seconds=60)


@dataclass
class Smarthost:
    """A second, real aiosmtpd server: records what it accepted; can refuse recipients."""

    refuse: dict[str, str] = field(default_factory=dict)
    received: list[Envelope] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.AbstractServer | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        self.arrived.set()
        return "250 2.0.0 queued"

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="smarthost.test", loop=loop), "127.0.0.1", port
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def smarthost() -> AsyncIterator[Smarthost]:
    host = Smarthost()
    yield host
    await host.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_relay(store: Store, port: int, idle_poll: timedelta = IDLE) -> Relay:
    return Relay(
        store,
        SmartHost("127.0.0.1", port, starttls=False, timeout=5),
        hostname="mx.example.test",
        retry_base=FAST_RETRY,
        retry_max=FAST_RETRY * 4,
        idle_poll=idle_poll,
    )


async def queue(store: Store) -> list[OutboundMail]:
    return await store.run(lambda txn: txn.due_outbound(FAR_FUTURE, 100))


async def inbox(store: Store, user_id: int) -> list[Message]:
    def run(txn: Txn) -> list[Message]:
        folder = txn.folder_by_type(user_id, FolderType.INBOX)
        return txn.get_messages(user_id, sorted(txn.message_versions(folder.id)))

    return await store.run(run)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_route_outgoing_delivers_locally_queues_remote_and_bounces_unknown(
    store: Store, alice: User, alice_password_hash: str
) -> None:
    bob = await store.run(
        lambda txn: txn.add_user("bob", "bob@example.test", "Bob", alice_password_hash, NOW)
    )
    rcpts = ["Bob@Example.test", "carol@remote.example", "ghost@example.test", "dan@remote.example"]

    def send(txn: Txn) -> object:
        return route_outgoing(txn, alice, OUTGOING, rcpts, NOW, [DOMAIN], "mx.example.test")

    result = await store.run(send)
    assert result.delivered == ("Bob@Example.test",)  # type: ignore[attr-defined]
    assert result.queued == ("carol@remote.example", "dan@remote.example")  # type: ignore[attr-defined]
    assert result.unknown == ("ghost@example.test",)  # type: ignore[attr-defined]
    [bob_copy] = await inbox(store, bob.id)
    assert bob_copy.subject == "outbound"
    [entry] = await queue(store)
    assert entry.sender == "alice@example.test"
    assert entry.recipients == ("carol@remote.example", "dan@remote.example")
    assert entry.raw == OUTGOING
    [bounce] = await inbox(store, alice.id)
    assert bounce.message_class == CLASS_NDR
    assert bounce.subject == "Undeliverable: outbound"


async def test_relay_sends_to_the_smarthost_when_kicked(
    store: Store, alice: User, smarthost: Smarthost
) -> None:
    relay = make_relay(store, await smarthost.start())
    relay.start()
    try:
        await asyncio.sleep(0.1)  # the worker has looked at the empty queue and sleeps (60 s)
        result = await deliver(
            store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN]
        )
        assert result.outbound_id is not None
        relay.kick()
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=5)
    finally:
        await relay.aclose()
    [envelope] = smarthost.received
    assert envelope.mail_from == "alice@example.test"
    assert envelope.rcpt_tos == ["carol@remote.example"]
    assert envelope.original_content is not None
    assert envelope.original_content.replace(b"\r\n", b"\n") == OUTGOING.replace(b"\r\n", b"\n")
    await eventually(lambda: relay.sent == 1)
    assert await queue(store) == []


async def test_smarthost_down_keeps_the_mail_queued_until_it_comes_up(
    store: Store, alice: User, smarthost: Smarthost
) -> None:
    port = free_port()
    relay = make_relay(store, port)
    await deliver(store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
    relay.start()
    try:
        await eventually(lambda: relay.retried >= 2)
        [entry] = await queue(store)
        assert entry.attempts >= 2
        assert "127.0.0.1" in entry.last_error
        assert smarthost.received == []
        await smarthost.start(port)
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=10)
        await eventually(lambda: relay.sent == 1)
    finally:
        await relay.aclose()
    assert len(smarthost.received) == 1
    assert await queue(store) == []
    assert await inbox(store, alice.id) == []  # no bounce for a temporary outage


async def test_permanent_refusal_bounces_to_the_sender_and_leaves_the_queue(
    store: Store, alice: User, smarthost: Smarthost
) -> None:
    smarthost.refuse["nobody@remote.example"] = "550 5.1.1 <nobody@remote.example>: unknown"
    relay = make_relay(store, await smarthost.start())
    await deliver(store, alice.email, ["nobody@remote.example"], OUTGOING, NOW, [DOMAIN])
    relay.start()
    try:
        await eventually(lambda: relay.bounced == 1)
    finally:
        await relay.aclose()
    assert await queue(store) == []
    [bounce] = await inbox(store, alice.id)
    assert bounce.message_class == CLASS_NDR
    raw = await store.run(lambda txn: txn.raw_message(bounce.id))
    assert "nobody@remote.example" in body_text(raw)
    assert b"Status: 5.1.1" in raw
    assert b"Hello Carol" in raw  # the original comes back whole


async def test_partial_temporary_refusal_requeues_only_that_recipient(
    store: Store, alice: User, smarthost: Smarthost
) -> None:
    smarthost.refuse["busy@remote.example"] = "451 4.3.0 try later"
    relay = make_relay(store, await smarthost.start())
    rcpts = ["carol@remote.example", "busy@remote.example"]
    await deliver(store, alice.email, rcpts, OUTGOING, NOW, [DOMAIN])
    relay.start()
    try:
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=5)
        await eventually(lambda: relay.retried >= 1)
        entries = await queue(store)
        assert [e.recipients for e in entries] == [("busy@remote.example",)]
        smarthost.arrived.clear()
        del smarthost.refuse["busy@remote.example"]
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=10)
        await eventually(lambda: relay.sent == 2)
    finally:
        await relay.aclose()
    assert [e.rcpt_tos for e in smarthost.received] == [
        ["carol@remote.example"],
        ["busy@remote.example"],
    ]
    assert await queue(store) == []


def test_backoff_doubles_up_to_the_cap(store: Store) -> None:
    relay = Relay(
        store,
        SmartHost("127.0.0.1"),
        retry_base=timedelta(minutes=1),
        retry_max=timedelta(hours=1),
    )
    delays = [relay.backoff(n) for n in range(9)]
    assert delays[:3] == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]
    assert delays[-1] == timedelta(hours=1)
    assert delays == sorted(delays)


def test_bounce_is_a_delivery_status_report() -> None:
    raw = build_bounce("alice@example.test", {"x@y.z": "550 5.7.1 denied"}, OUTGOING, NOW)
    assert b"Content-Type: multipart/report; report-type=delivery-status" in raw
    assert b"Final-Recipient: rfc822; x@y.z" in raw
    assert b"Status: 5.7.1" in raw
    assert b"Auto-Submitted: auto-replied" in raw


async def test_sent_copy_is_saved_read_in_sent_items(store: Store, alice: User) -> None:
    copy = OUTGOING.replace(b"\r\n\r\n", b"\r\nBcc: secret@remote.example\r\n\r\n", 1)
    saved = await store.run(lambda txn: save_sent_copy(txn, alice, copy, NOW))
    assert saved.read is True
    folder = await store.run(lambda txn: txn.folder_by_type(alice.id, FolderType.SENT_ITEMS))
    assert saved.folder_id == folder.id
    assert await store.run(lambda txn: txn.raw_message(saved.id)) == copy


# -- several workers on one queue (one per server process) ------------------------------------


def numbered(n: int) -> bytes:
    return OUTGOING.replace(b"Subject: outbound", b"Subject: outbound %d" % n)


def subjects(host: Smarthost) -> list[str]:
    found = []
    for envelope in host.received:
        assert envelope.original_content is not None
        head = envelope.original_content.split(b"\r\n\r\n", 1)[0].decode()
        found.extend(line[9:] for line in head.splitlines() if line.startswith("Subject: "))
    return found


async def test_two_relays_on_one_queue_send_every_message_exactly_once(
    store: Store, store_factory: Callable[..., Store], alice: User, smarthost: Smarthost
) -> None:
    count = 40
    port = await smarthost.start()
    for n in range(count):
        await deliver(store, alice.email, [f"r{n}@remote.example"], numbered(n), NOW, [DOMAIN])
    # Another store on the same file / database: what a second server process opens.
    other = store_factory(store.path, with_alice=False)  # type: ignore[attr-defined]
    relays = [make_relay(store, port), make_relay(other, port)]
    for relay in relays:
        relay.start()
    try:
        await eventually(lambda: len(smarthost.received) >= count, timeout=30)
        await eventually(lambda: sum(r.sent for r in relays) >= count)
    finally:
        for relay in relays:
            await relay.aclose()
    got = subjects(smarthost)
    assert sorted(got) == sorted(f"outbound {n}" for n in range(count))  # each once
    assert sum(r.sent for r in relays) == count
    assert await queue(store) == []


async def test_a_dead_workers_claim_is_sent_by_another_after_its_lease(
    store: Store, alice: User, smarthost: Smarthost
) -> None:
    port = await smarthost.start()
    await deliver(store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
    lease = timedelta(seconds=1.5)
    claimed_at = datetime.now(UTC)
    [held] = await store.run(
        lambda txn: txn.claim_outbound(claimed_at, 10, "dead/1/x", claimed_at + lease)
    )
    relay = make_relay(store, port, idle_poll=timedelta(milliseconds=200))  # looks again soon
    relay.start()
    try:
        await asyncio.wait_for(smarthost.arrived.wait(), timeout=10)
        sent_at = datetime.now(UTC)
        await eventually(lambda: relay.sent == 1)
    finally:
        await relay.aclose()
    assert sent_at >= claimed_at + lease  # not before the dead worker's lease ran out
    assert len(smarthost.received) == 1
    assert await queue(store) == []
    assert held.claimed_by == "dead/1/x"


async def test_a_closed_relay_hands_its_claims_back(store: Store, alice: User) -> None:
    await deliver(store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
    relay = make_relay(store, free_port())  # nobody listens: the claim is what matters
    owner = relay.owner
    await store.run(lambda txn: txn.claim_outbound(FAR_FUTURE, 10, owner, FAR_FUTURE))
    await relay.aclose()
    [entry] = await queue(store)
    assert (entry.claimed_by, entry.lease_until) == ("", None)


def test_a_lease_shorter_than_one_smtp_conversation_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="longer than one SMTP conversation"):
        Relay(store, SmartHost("127.0.0.1", 25, timeout=60), lease=timedelta(seconds=30))
