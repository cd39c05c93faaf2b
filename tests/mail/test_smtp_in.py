"""natsync.mail.smtp_in: a real aiosmtpd server on loopback, real SMTP clients, a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiosmtplib
import pytest

from natsync.mail.smtp_in import SmtpServerHandle, start_smtp_server
from natsync.store.api import FolderType, Store, Txn, User

DOMAIN = "example.test"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MAX_SIZE = 64 * 1024


@pytest.fixture
async def server(store: Store, alice: User) -> AsyncIterator[SmtpServerHandle]:
    handle = await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, hostname="mx.example.test"
    )
    yield handle
    await handle.close()


async def inbox_raws(store: Store, user_id: int) -> list[bytes]:
    def run(txn: Txn) -> list[bytes]:
        inbox = txn.folder_by_type(user_id, FolderType.INBOX)
        ids = sorted(txn.message_versions(inbox.id))
        return [txn.raw_message(m.id) for m in txn.get_messages(user_id, ids)]

    return await store.run(run)


async def add_user(store: Store, name: str, password_hash: str) -> User:
    return await store.run(
        lambda txn: txn.add_user(name, f"{name}@{DOMAIN}", name.title(), password_hash, NOW)
    )


MESSAGE = b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi!\r\n"


async def test_mail_for_a_local_user_lands_in_the_inbox_with_received(
    store: Store, alice: User, server: SmtpServerHandle
) -> None:
    errors, reply = await aiosmtplib.send(
        MESSAGE,
        sender="bob@example.org",
        recipients=["alice@example.test"],
        hostname="127.0.0.1",
        port=server.port,
        local_hostname="client.example.org",
    )
    assert errors == {}
    assert reply.startswith("2.0.0 OK")
    [raw] = await inbox_raws(store, alice.id)
    assert raw.startswith(
        b"Received: from client.example.org ([127.0.0.1])\r\n\tby mx.example.test"
    )
    assert b"for <alice@example.test>" in raw
    assert raw.endswith(MESSAGE)
    assert server.stats["delivered"] == 1


async def test_no_open_relay_external_to_external_is_refused(
    store: Store, alice: User, server: SmtpServerHandle
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port)
    async with client:
        await client.ehlo(hostname="spammer.example")
        await client.mail("spammer@evil.example")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("victim@elsewhere.example")
        assert refused.value.code == 550
        assert "5.7.1" in refused.value.message
        # a local-looking local part at a foreign domain, and a source-routed trick
        for address in ["alice@elsewhere.example", "alice%elsewhere.example@[127.0.0.1]"]:
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await client.rcpt(address)
        with pytest.raises(aiosmtplib.SMTPResponseException) as no_rcpt:
            await client.data(b"Subject: relay\r\n\r\nbuy now\r\n")
        assert no_rcpt.value.code == 503
    assert await inbox_raws(store, alice.id) == []


async def test_relay_through_sendmail_api_is_refused_too(server: SmtpServerHandle) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(
            b"Subject: x\r\n\r\ny\r\n",
            sender="a@outside.example",
            recipients=["b@outside.example"],
            hostname="127.0.0.1",
            port=server.port,
        )
    assert [r.code for r in refused.value.recipients] == [550]


async def test_unknown_local_user_gets_550_5_1_1(server: SmtpServerHandle) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(
            MESSAGE,
            sender="bob@example.org",
            recipients=["nobody@example.test"],
            hostname="127.0.0.1",
            port=server.port,
        )
    assert "5.1.1" in refused.value.recipients[0].message


async def test_every_recipient_gets_one_copy(
    store: Store, alice: User, server: SmtpServerHandle, alice_password_hash: str
) -> None:
    bob = await add_user(store, "bob", alice_password_hash)
    errors, _ = await aiosmtplib.send(
        MESSAGE,
        sender="x@example.org",
        recipients=["alice@example.test", "BOB@example.test", "ghost@example.test"],
        hostname="127.0.0.1",
        port=server.port,
    )
    assert list(errors) == ["ghost@example.test"]
    assert len(await inbox_raws(store, alice.id)) == 1
    [bob_raw] = await inbox_raws(store, bob.id)
    assert b"\tfor <" not in bob_raw  # several recipients: no "for" clause that leaks them


async def test_size_limit_is_announced_and_enforced(
    store: Store, alice: User, server: SmtpServerHandle
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port)
    async with client:
        await client.ehlo()
        assert client.supports_extension("size")
        assert client.esmtp_extensions["size"] == str(MAX_SIZE)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
            await client.mail("bob@example.org", options=[f"SIZE={MAX_SIZE + 1}"])
        assert declared.value.code == 552
        await client.mail("bob@example.org")
        await client.rcpt("alice@example.test")
        big = MESSAGE + (b"x" * 998 + b"\r\n") * (MAX_SIZE // 1000 + 1)
        with pytest.raises(aiosmtplib.SMTPDataError) as too_big:
            await client.data(big)
        assert too_big.value.code == 552
    assert await inbox_raws(store, alice.id) == []


async def smtp_dialogue(port: int, lines: bytes) -> bytes:
    """Send *lines* raw (no client-side dot handling or line-end repair) and read all replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # banner
        writer.write(lines)
        await writer.drain()
        replies = b""
        while not replies.endswith(b"221 Bye\r\n"):
            chunk = await asyncio.wait_for(reader.read(4096), timeout=10)
            if not chunk:
                break
            replies += chunk
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r"])
async def test_smtp_smuggling_bare_line_ends_do_not_end_data(
    store: Store, alice: User, server: SmtpServerHandle, fake_end: bytes
) -> None:
    smuggled = (
        b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
        b"From: ceo@bank.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
    )
    dialogue = (
        b"EHLO attacker.example\r\n"
        b"MAIL FROM:<someone@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
        b"From: someone@example.org\r\nSubject: innocent\r\n\r\nhello" + fake_end + smuggled
    )
    dialogue += b"QUIT\r\n"
    replies = await smtp_dialogue(server.port, dialogue)
    assert replies.count(b"\r\n354 ") == 1  # a line, not digits in a queue id
    raws = await inbox_raws(store, alice.id)
    assert len(raws) == 1
    assert b"Subject: innocent" in raws[0]
    # what the attacker meant as a second message is just text inside the first
    assert b"Subject: smuggled" in raws[0].split(b"\r\n\r\n", 1)[1]


async def test_proxy_protocol_records_the_real_client(store: Store, alice: User) -> None:
    handle = await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, proxy_protocol_from={"127.0.0.1"}
    )
    try:
        dialogue = (
            b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n"
            b"HELO far.example\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<alice@example.test>\r\n"
            b"DATA\r\nSubject: proxied\r\n\r\nhi\r\n.\r\nQUIT\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(dialogue)
        await writer.drain()
        replies = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        await writer.wait_closed()
        assert b"250 2.0.0 OK" in replies
        [raw] = await inbox_raws(store, alice.id)
        assert raw.startswith(b"Received: from far.example ([198.51.100.7])")
    finally:
        await handle.close()


async def test_proxy_header_from_an_unlisted_peer_is_dropped(store: Store, alice: User) -> None:
    handle = await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, proxy_protocol_from={"192.0.2.99"}
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\nHELO x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed, no banner
        writer.close()
        await writer.wait_closed()
    finally:
        await handle.close()
    assert await inbox_raws(store, alice.id) == []


async def test_concurrent_senders_share_transactions_and_lose_nothing(
    store: Store, alice: User, server: SmtpServerHandle
) -> None:
    async def send(number: int) -> None:
        body = MESSAGE.replace(b"hello", f"hello {number}".encode())
        await aiosmtplib.send(
            body,
            sender="bob@example.org",
            recipients=["alice@example.test"],
            hostname="127.0.0.1",
            port=server.port,
            source_address=(f"127.0.0.{2 + number % 2}", 0),  # 20 per address at most
        )

    await asyncio.gather(*(send(n) for n in range(30)))
    raws = await inbox_raws(store, alice.id)
    subjects = sorted(int(r.split(b"Subject: hello ")[1].split(b"\r\n")[0]) for r in raws)
    assert subjects == list(range(30))
    assert server.stats["delivered"] == 30
