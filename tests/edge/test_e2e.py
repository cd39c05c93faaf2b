"""End to end through the edge: the natsync client (a phone) syncs and is pushed to, over TLS, to
the real natsync server on its own certificate, pinned with the real `natsync edge trust-backend`
command; SMTP through the forward with PROXY v2; SIGHUP with a held Ping."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import pytest

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.edge import load_edge_config
from natsync.edge.config import Forward
from natsync.edge.tls import fetch_certificate
from natsync.mail.relay import deliver_to_inbox
from natsync.mail.smtp_in import start_smtp_server
from natsync.mime import parse_message
from natsync.server import RunningServer, start_server
from natsync.store.api import FolderType, Store
from tests.conftest import ALICE_EMAIL, ALICE_NAME, ALICE_PASSWORD
from tests.edge.conftest import PUBLIC_NAME, SERVER_NAME, EdgeFactory, Pki, pem_fingerprint

NATSYNC = [str(Path(sys.executable).with_name("natsync"))]
MAIL = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
    b"Message-ID: <{subject}@example.org>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHi\r\n"
)


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *NATSYNC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def deliver(store: Store, subject: str) -> None:
    raw = MAIL.replace(b"{subject}", subject.encode())

    def txn_fn(txn):  # type: ignore[no-untyped-def]
        user = txn.get_user(ALICE_NAME)
        deliver_to_inbox(txn, user, parse_message(raw, datetime.now(UTC)))

    await store.run(txn_fn)


@pytest.fixture
async def server(store: Store, pki: Pki) -> AsyncIterator[RunningServer]:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        domains=("example.test",),
        heartbeat_min=1,
    )
    running = await start_server(config, store)
    yield running
    await running.close()


def write_config(path: Path, pki: Pki, **extra: str) -> None:
    lines = [
        "# deployment file: comments and other tables survive trust-backend",
        "[server]",
        "heartbeat_max = 900",
        "",
        "[edge]",
        'listen = "127.0.0.1:0"',
        'admin_listen = "127.0.0.1:0"',
        f'backend_name = "{SERVER_NAME}"',
        "forwards = []",
        *(f"{k} = {v}" for k, v in extra.items()),
        "",
        "[[edge.certificates]]",
        f'names = ["{PUBLIC_NAME}"]',
        f'cert = "{pki.edge_cert}"',
        f'key = "{pki.edge_key}"',
    ]
    path.write_text("\n".join(lines) + "\n")


async def test_phone_syncs_and_is_pushed_through_the_edge_pinned_with_trust_backend(
    tmp_path: Path, pki: Pki, store: Store, server: RunningServer, make_edge: EdgeFactory
) -> None:
    config_file = tmp_path / "natsync.toml"
    write_config(config_file, pki)
    with pytest.raises(Exception, match="cannot verify the server"):
        await make_edge(load_edge_config(config_file))  # no pin yet: refuses to start

    backend = f"127.0.0.1:{server.port}"
    code, out = await run_cli(
        "edge", "trust-backend", backend, "--config", str(config_file), "--yes",
        "--name", SERVER_NAME,
    )  # fmt: skip
    assert code == 0, out
    assert pki.server_pin in out
    assert f"CN={SERVER_NAME}" in out
    assert "names:" in out
    assert SERVER_NAME in out
    saved = tomllib.loads(config_file.read_text())
    assert saved["edge"]["backend_pin"] == pki.server_pin
    assert saved["edge"]["backend"] == backend
    assert saved["server"]["heartbeat_max"] == 900  # the rest of the file is kept
    assert config_file.read_text().startswith("# deployment file")

    config = load_edge_config(config_file)
    assert config.read_timeout == 960  # the server's heartbeat + margin
    edge = await make_edge(config)
    url = f"https://{PUBLIC_NAME}:{edge.port}"
    await deliver(store, "before")
    async with EASClient(
        url.replace(PUBLIC_NAME, "127.0.0.1"), ALICE_NAME, ALICE_PASSWORD, ca_file=pki.ca_file
    ) as phone:
        hierarchy = await phone.folder_sync()
        assert hierarchy.added
        inbox = phone.folder(type=int(FolderType.INBOX)).server_id
        first = await phone.sync(inbox)
        assert [item.subject for item in first.added] == ["before"]

        ping = asyncio.create_task(phone.ping([inbox], heartbeat=30))
        for _ in range(200):
            if edge.edge.metrics.held_pings == 1:
                break
            await asyncio.sleep(0.02)
        assert edge.edge.metrics.held_pings == 1
        await asyncio.sleep(0.3)
        assert not ping.done()
        await deliver(store, "pushed")
        assert await asyncio.wait_for(ping, 20) == [inbox]
        second = await phone.sync(inbox)
        assert [item.subject for item in second.added] == ["pushed"]
    assert edge.edge.metrics.backend_errors == {}
    assert ALICE_EMAIL


async def test_wrong_pin_from_trust_backend_of_another_server_is_refused_with_502(
    tmp_path: Path, pki: Pki, store: Store, server: RunningServer, make_edge: EdgeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    config_file = tmp_path / "natsync.toml"
    write_config(config_file, pki)
    # pin the *edge's* certificate (an operator pinning the wrong machine), then point at the server
    other = pem_fingerprint(pki.edge_cert)
    text = config_file.read_text().replace(
        "forwards = []", f'forwards = []\nbackend = "127.0.0.1:{server.port}"\n'
        f'backend_pin = "{other}"'
    )  # fmt: skip
    config_file.write_text(text)
    edge = await make_edge(load_edge_config(config_file))
    async with EASClient(
        f"https://127.0.0.1:{edge.port}", ALICE_NAME, ALICE_PASSWORD, ca_file=pki.ca_file
    ) as phone:
        with pytest.raises(Exception, match="502"):
            await phone.folder_sync()
    assert "not the pinned" in caplog.text
    assert edge.edge.metrics.backend_errors["certificate"] >= 1


async def test_smtp_forward_sends_proxy_v2_and_the_server_records_the_real_sender(
    pki: Pki, store: Store, server: RunningServer, make_edge: EdgeFactory
) -> None:
    smtp = await start_smtp_server(
        store, "127.0.0.1", 0, ["example.test"], proxy_protocol_from={"127.0.0.1"}
    )
    try:
        from tests.edge.conftest import edge_config

        config = edge_config(
            pki, server.port, forwards=(Forward("127.0.0.1:0", f"127.0.0.1:{smtp.port}"),)
        )
        edge = await make_edge(config)
        (port,) = edge.forward_ports
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, source_address=("127.0.0.2", 0), timeout=10
        )
        await client.connect()
        await client.sendmail(
            "bob@example.org", [ALICE_EMAIL], MAIL.replace(b"{subject}", b"via-forward")
        )
        await client.quit()

        def raw_inbox(txn):  # type: ignore[no-untyped-def]
            user = txn.get_user(ALICE_NAME)
            inbox = txn.folder_by_type(user.id, FolderType.INBOX)
            ids = list(txn.message_versions(inbox.id))
            return [txn.raw_message(m.id) for m in txn.get_messages(user.id, ids)]

        (raw,) = await store.run(raw_inbox)
        received = raw.split(b"\r\n\r\n")[0]
        assert b"([127.0.0.2])" in received  # the phone-side address, not the edge's
        assert edge.edge.metrics.forwarded_connections == 1

    finally:
        await smtp.close()


@pytest.mark.slow
async def test_sighup_reloads_certificates_while_a_held_ping_survives(
    tmp_path: Path, pki: Pki, store: Store, server: RunningServer
) -> None:
    import shutil

    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    shutil.copy(pki.edge_cert, cert)
    shutil.copy(pki.edge_key, key)
    config_file = tmp_path / "natsync.toml"
    write_config(config_file, pki)
    text = config_file.read_text()
    text = text.replace(str(pki.edge_cert), str(cert)).replace(str(pki.edge_key), str(key))
    text = text.replace(
        "forwards = []",
        f'forwards = []\nbackend = "127.0.0.1:{server.port}"\nbackend_pin = "{pki.server_pin}"',
    )
    config_file.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        *NATSYNC, "edge", "run", "--config", str(config_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        port = 0
        async with asyncio.timeout(30):
            while not port:
                line = (await proc.stderr.readline()).decode()
                assert line, "natsync edge run exited"
                if "listening on https://" in line:
                    port = int(line.split("https://")[1].split()[0].rsplit(":", 1)[1])
        before = await fetch_certificate("127.0.0.1", port, PUBLIC_NAME)
        async with EASClient(
            f"https://127.0.0.1:{port}", ALICE_NAME, ALICE_PASSWORD, ca_file=pki.ca_file
        ) as phone:
            await phone.folder_sync()
            inbox = phone.folder(type=int(FolderType.INBOX)).server_id
            await phone.sync(inbox)
            ping = asyncio.create_task(phone.ping([inbox], heartbeat=30))
            await asyncio.sleep(1.0)
            # renew the edge certificate on disk, then SIGHUP
            pki.ca.issue_server_cert([PUBLIC_NAME], ["127.0.0.1"], tmp_path, basename="edge")
            proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(10):
                while b"certificates reloaded" not in await proc.stderr.readline():
                    pass
            after = await fetch_certificate("127.0.0.1", port, PUBLIC_NAME)
            assert after.fingerprint != before.fingerprint
            assert after.fingerprint == pem_fingerprint(cert)
            assert not ping.done()  # the held Ping is still held
            await deliver(store, "after-reload")
            assert await asyncio.wait_for(ping, 20) == [inbox]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
