"""`natsync server` as a real process under a small open-files limit (issue 19): an SMTP flood
takes only the SMTP listener's budget of descriptors, so HTTPS keeps serving; the server's TLS
offers the edge's policy (no CBC suites, nothing below TLS 1.2), checked with Python's ssl and
with sslscan; the data directory and the store are private."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import self_signed

#: The server's open-files limit in this test: SMTP's share is 1/8 of it (32 connections).
NOFILE = 256


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@dataclass
class Running:
    https: int
    smtp: int
    data: Path
    log: Path
    cert: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("hardened")
    cert, key = self_signed(base)
    https, smtp = _free_port(), _free_port()
    config = base / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {https}\ndata_dir = "{base / "data"}"\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\nsmtp_listen = "127.0.0.1:{smtp}"\n',
        encoding="utf-8",
    )
    log = base / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "natsync"), "server", "--config", str(config)],
            stderr=out,
            preexec_fn=_limit_files,  # noqa: PLW1509 - the limit must hold from the start
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", smtp), 1):
                break
            time.sleep(0.1)
        yield Running(https, smtp, base / "data", log, cert)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _options(port: int, cert: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n\r\n")
        return tls.recv(4096)


def test_an_smtp_flood_leaves_https_serving(server: Running) -> None:
    flood: list[socket.socket] = []
    greetings: list[bytes] = []
    try:
        for n in range(300):  # more than the whole process may open
            sock = socket.create_connection(
                ("127.0.0.1", server.smtp), 5, source_address=(f"127.0.0.{2 + n // 20}", 0)
            )
            flood.append(sock)
            greetings.append(sock.recv(200))
        # while all 300 are open (or refused), HTTPS answers (an anonymous OPTIONS: 401)
        assert _options(server.https, server.cert).startswith(b"HTTP/1.1 401 Unauthorized")
    finally:
        for sock in flood:
            sock.close()
    served = sum(g.startswith(b"220 ") for g in greetings)
    refused = sum(g.startswith(b"421 4.7.0") for g in greetings)
    assert served == NOFILE // 8  # the SMTP listener's budget
    assert served + refused == 300, {g[:12] for g in greetings}
    assert "SMTP connection from 127.0.0.3 refused" in server.log.read_text()


@pytest.mark.parametrize(
    "suite",
    ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-SHA", "AES128-GCM-SHA256"],
)
def test_the_server_refuses_cbc_and_static_rsa_suites(server: Running, suite: str) -> None:
    context = ssl.create_default_context(cafile=str(server.cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(suite)
    with (
        socket.create_connection(("127.0.0.1", server.https), 5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


def test_tls_1_1_is_refused_and_aead_ecdhe_is_taken(server: Running) -> None:
    context = ssl.create_default_context(cafile=str(server.cert))
    with warnings.catch_warnings():  # an old version is what this test offers
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", server.https), 5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    context = ssl.create_default_context(cafile=str(server.cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.https), 5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        name, version, _ = tls.cipher()  # type: ignore[misc]
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-")
        assert "GCM" in name or "CHACHA20" in name


@pytest.mark.skipif(shutil.which("sslscan") is None, reason="sslscan is not installed")
def test_sslscan_sees_only_the_policy(server: Running) -> None:
    scan = subprocess.run(
        ["sslscan", "--no-colour", "--no-heartbleed", f"127.0.0.1:{server.https}"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    accepted = [line.split() for line in scan.stdout.splitlines() if line.startswith(
        ("Preferred", "Accepted"))]  # fmt: skip
    assert accepted, scan.stdout
    for fields in accepted:
        protocol, suite = fields[1], fields[4]
        assert protocol in ("TLSv1.2", "TLSv1.3"), fields
        assert "CBC" not in suite, fields
        assert not suite.endswith("-SHA"), fields  # the SHA-1 MAC suites are all CBC
        if protocol == "TLSv1.2":
            assert suite.startswith("ECDHE-"), fields


def test_the_data_directory_and_store_are_private(server: Running) -> None:
    assert stat.S_IMODE(os.stat(server.data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.data / "natsync.db").st_mode) == 0o600
