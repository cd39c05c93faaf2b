"""SMTP in under floods, on real sockets (issue 19): per-address and total connection limits
answered 421, the idle timeout (shorter near the limit), the command limit before MAIL, the
limit behind the edge's PROXY header, and STARTTLS with the deployment's certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from natsync.cert import init_ca
from natsync.cert.policy import server_context
from natsync.mail.smtp_in import SmtpLimits, SmtpServerHandle, start_smtp_server
from natsync.store.api import Store, User
from tests.mail.test_smtp_in import DOMAIN, MAX_SIZE, MESSAGE, inbox_raws

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def opened() -> AsyncIterator[list[Conn]]:
    conns: list[Conn] = []
    yield conns
    for _, writer in conns:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def banner(port: int, conns: list[Conn], source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    conns.append((reader, writer))
    return await asyncio.wait_for(reader.readline(), 5)


async def start(store: Store, **limits: float) -> SmtpServerHandle:
    return await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, hostname="mx.example.test",
        limits=SmtpLimits(**limits),  # type: ignore[arg-type]
    )  # fmt: skip


async def test_the_21st_connection_from_one_address_gets_421_and_others_are_served(
    store: Store, alice: User, opened: list[Conn], caplog: pytest.LogCaptureFixture
) -> None:
    handle = await start(store)
    try:
        for _ in range(20):
            assert (await banner(handle.port, opened)).startswith(b"220 ")
        with caplog.at_level(logging.WARNING, "natsync.mail.smtp_in"):
            refused = await banner(handle.port, opened)
        assert refused.startswith(b"421 4.7.0 "), refused
        assert await opened[-1][0].read() == b""  # and closed
        assert "SMTP connection from 127.0.0.1 refused" in caplog.text
        # another address is served, and its mail delivered, while the first holds 20
        await aiosmtplib.send(
            MESSAGE, hostname="127.0.0.1", port=handle.port, sender="bob@example.org",
            recipients=["alice@example.test"], source_address=("127.0.0.2", 0),
        )  # fmt: skip
        assert len(await inbox_raws(store, alice.id)) == 1
        # one of the 20 leaves: the address may connect again
        opened[0][1].close()
        await asyncio.sleep(0.1)
        assert (await banner(handle.port, opened)).startswith(b"220 ")
    finally:
        await handle.close()


async def test_the_total_budget_is_a_limit_too(store: Store, opened: list[Conn]) -> None:
    handle = await start(store, total=5)
    try:
        sources = [f"127.0.0.{n}" for n in range(2, 8)]
        answers = [await banner(handle.port, opened, source) for source in sources]
        assert [a[:4] for a in answers] == [b"220 "] * 5 + [b"421 "]
        assert handle.counts is not None
        assert handle.counts.open == 5
    finally:
        await handle.close()


async def test_idle_connections_are_closed_sooner_near_the_limit(
    store: Store, opened: list[Conn]
) -> None:
    handle = await start(store, total=5, idle_timeout=30.0, busy_idle_timeout=0.5)
    try:
        await banner(handle.port, opened)
        start_time = time.monotonic()
        reader, writer = opened[0]
        writer.write(b"NOOP\r\n")
        assert (await reader.readline()).startswith(b"250")
        with pytest.raises(TimeoutError):  # one of five: not busy, the 30 s timeout holds
            await asyncio.wait_for(reader.read(), 1.0)
        for n in range(4):  # five of five: busy
            await banner(handle.port, opened, f"127.0.0.{n + 2}")
        writer.write(b"NOOP\r\n")  # the next timeout is the short one
        assert (await reader.readline()).startswith(b"250")
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert time.monotonic() - start_time < 4
    finally:
        await handle.close()


async def test_idle_timeout_closes_a_silent_client(store: Store, opened: list[Conn]) -> None:
    handle = await start(store, idle_timeout=0.5)
    try:
        await banner(handle.port, opened)
        started = time.monotonic()
        assert await asyncio.wait_for(opened[0][0].read(), 5) == b""
        assert 0.4 <= time.monotonic() - started < 2
    finally:
        await handle.close()


async def test_commands_without_mail_are_limited(store: Store, alice: User) -> None:
    handle = await start(store, commands_before_mail=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        await reader.readline()
        # a transaction resets the count: 4 commands, MAIL, then 5 more are fine
        writer.write(b"EHLO x\r\nNOOP\r\nNOOP\r\nRSET\r\nMAIL FROM:<b@example.org>\r\n")
        writer.write(b"RCPT TO:<alice@example.test>\r\nRSET\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
        writer.write(b"NOOP\r\n")  # the sixth since MAIL
        replies = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
        assert codes[-1] == b"421", replies
        assert codes.count(b"250") == 10
    finally:
        await handle.close()


async def test_behind_the_edge_the_proxy_header_address_is_limited(
    store: Store, opened: list[Conn]
) -> None:
    handle = await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, proxy_protocol_from={"127.0.0.1"},
        limits=SmtpLimits(per_address=2),
    )  # fmt: skip
    try:
        answers = []
        for client in ("198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.8"):
            reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
            opened.append((reader, writer))
            writer.write(f"PROXY TCP4 {client} 192.0.2.1 40000 25\r\n".encode())
            answers.append(await asyncio.wait_for(reader.readline(), 5))
        assert [a[:4] for a in answers] == [b"220 ", b"220 ", b"421 ", b"220 "]
    finally:
        await handle.close()


async def test_starttls_is_offered_with_the_certificate_and_mail_arrives(
    store: Store, alice: User, tmp_path: Path
) -> None:
    ca = init_ca(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["mx.example.test"], ["127.0.0.1"], tmp_path, basename="mx")
    context = server_context()
    context.load_cert_chain(str(cert), str(key))
    handle = await start_smtp_server(
        store, "127.0.0.1", 0, [DOMAIN], MAX_SIZE, hostname="mx.example.test",
        tls_context=context,
    )  # fmt: skip
    try:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=handle.port, start_tls=False,
            tls_context=ssl.create_default_context(cafile=str(ca.cert_path)),
        )  # fmt: skip
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls(server_hostname="mx.example.test")
        info = client.get_transport_info("ssl_object")
        assert info.version() in ("TLSv1.2", "TLSv1.3")
        await client.sendmail("bob@example.org", ["alice@example.test"], MESSAGE)
        await client.quit()
        [raw] = await inbox_raws(store, alice.id)
        assert b"with ESMTPS id" in raw.split(b"\r\n\r\n")[0]
    finally:
        await handle.close()
