"""`natsync server` with its second SMTP listener for mail passed on by `natsync relay`
(server.smtp_relayed_listen): a real process, real sockets, the relay's PROXY v2 header."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natsync.base.proxyv2 import build_header
from natsync.config import ServerConfig
from natsync.errors import ConfigError

NATSYNC = str(Path(sys.executable).parent / "natsync")
#: The sending server the relay names in its PROXY header, and the relay's own address.
SENDER = ("198.51.100.7", 40000)
RELAY = "127.0.0.1"
#: A peer the server must not believe (another loopback address).
STRANGER = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dialogue(source: str, port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def test_relayed_smtp_believes_the_relay_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = subprocess.run(
        [NATSYNC, "user", "add", "alice", "--email", "alice@example.test",
         "--password", "pw-not-secret", "--data-dir", str(data)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    port = free_port()
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{data}"\n'
        'domains = ["example.test"]\nhostname = "mx.example.test"\n'
        f'smtp_relayed_listen = "127.0.0.1:{port}"\nsmtp_proxy_protocol_from = ["{RELAY}"]\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [NATSYNC, "server", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        said = ""
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while time.monotonic() < deadline and "SMTP through the relay" not in said:
            said = proc.stderr.readline()
            assert said, "natsync server ended"
        assert f"at 127.0.0.1:{port} (PROXY from {RELAY})" in said
        header = build_header(SENDER, ("10.77.0.2", 2525))
        mail = (
            b"EHLO far.example\r\nMAIL FROM:<bob@example.org>\r\n"
            b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: via the relay\r\n\r\nhi\r\n.\r\n"
            b"QUIT\r\n"
        )
        replies = dialogue(RELAY, port, header + mail)
        assert b"250 2.0.0 OK" in replies
        # the same header from another peer: dropped before the banner
        assert dialogue(STRANGER, port, header + mail) == b""
        # and no header from the relay: no banner either (a header is required)
        assert dialogue(RELAY, port, mail)[:3] != b"220"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == 0
    from natsync.store import open_store, store_path
    from natsync.store.api import FolderType, Txn

    store = open_store(store_path(data))
    try:

        def raws(txn: Txn) -> list[bytes]:
            user = txn.get_user("alice")
            assert user is not None
            inbox = txn.folder_by_type(user.id, FolderType.INBOX)
            ids = sorted(txn.message_versions(inbox.id))
            return [txn.raw_message(m.id) for m in txn.get_messages(user.id, ids)]

        [raw] = store.run_sync(raws)
    finally:
        store.close()
    assert raw.startswith(b"Received: from far.example ([198.51.100.7])")
    assert b"Subject: via the relay" in raw


def test_relayed_smtp_needs_the_relay_address() -> None:
    with pytest.raises(ConfigError, match="smtp_proxy_protocol_from"):
        ServerConfig(smtp_relayed_listen="10.77.0.2:2525")
    with pytest.raises(ConfigError, match="an IP address is needed"):
        ServerConfig(smtp_relayed_listen="10.77.0.2:2525", smtp_proxy_protocol_from=("relay",))
    with pytest.raises(ConfigError, match="smtp_relayed_listen must be host:port"):
        ServerConfig(smtp_relayed_listen="10.77.0.2", smtp_proxy_protocol_from=("10.77.0.1",))
