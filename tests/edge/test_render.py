"""`natsync edge render nginx|haproxy`: the rendered configs run the real nginx and HAProxy from
Debian (as our own processes, on free loopback ports) in front of the real natsync server, and
the natsync client syncs through them."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.render import render_config, split_nginx
from natsync.errors import ConfigError
from natsync.mail.relay import deliver_to_inbox
from natsync.mime import parse_message
from natsync.server import RunningServer, start_server
from natsync.store.api import FolderType, Store
from tests.conftest import ALICE_NAME, ALICE_PASSWORD
from tests.edge.conftest import PUBLIC_NAME, SERVER_NAME, Pki, edge_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
MAIL = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: rendered\r\n"
    b"Message-ID: <rendered@example.org>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHi\r\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_log(log: Path) -> str:
    return log.read_text() if log.exists() else ""


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise AssertionError(f"exited with {proc.returncode}: {read_log(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on {port}")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def server(store: Store, pki: Pki) -> AsyncIterator[RunningServer]:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        domains=("example.test",),
    )
    running = await start_server(config, store)

    def txn_fn(txn):  # type: ignore[no-untyped-def]
        deliver_to_inbox(txn, txn.get_user(ALICE_NAME), parse_message(MAIL, datetime.now(UTC)))

    await store.run(txn_fn)
    yield running
    await running.close()


async def sync_through(port: int, pki: Pki) -> None:
    async with EASClient(
        f"https://127.0.0.1:{port}", ALICE_NAME, ALICE_PASSWORD, ca_file=pki.ca_file
    ) as phone:
        await phone.folder_sync()
        inbox = phone.folder(type=int(FolderType.INBOX)).server_id
        result = await phone.sync(inbox)
        assert [item.subject for item in result.added] == ["rendered"]
    # an unpublished path is answered at the proxy
    context = pki.client_context()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=PUBLIC_NAME
    )
    writer.write(b"GET /owa/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]


def test_render_needs_a_ca_file_for_verification(pki: Pki) -> None:
    config = edge_config(pki, 8443)
    for kind in ("nginx", "haproxy"):
        with pytest.raises(ConfigError, match="cannot pin"):
            render_config(kind, config)


def test_rendered_nginx_avoids_its_traps(pki: Pki) -> None:
    config = edge_config(pki, 8443, backend_ca=pki.ca_file, heartbeat_max=900)
    main, include = split_nginx(render_config("nginx", config))
    for line in (
        "proxy_ssl_verify on;",
        f"proxy_ssl_trusted_certificate {pki.ca_file};",
        "proxy_ssl_server_name on;",
        f"proxy_ssl_name {SERVER_NAME};",
        "proxy_set_header Host $http_host;",
        "proxy_read_timeout 960s;",
        "proxy_buffering off;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
    ):
        assert line in include
    assert "return 404;" in main
    text = render_config("haproxy", config)
    assert f"ca-file {pki.ca_file}" in text
    assert f"sni str({SERVER_NAME})" in text
    assert "verify required" in text
    assert "timeout server 960s" in text


def test_an_ecdsa_and_an_rsa_certificate_for_the_same_names_share_one_nginx_server(
    pki: Pki, tmp_path: Path
) -> None:
    """ECDSA-first in the renderings: nginx gets both in one server block (two blocks with one
    server_name would leave the second unused); HAProxy lists both crt files on its bind."""
    rsa_cert, rsa_key = pki.ca.issue_server_cert(
        [PUBLIC_NAME], [], tmp_path, basename="rsa", key_type="rsa"
    )
    sites = (
        SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key),
        SiteCert((PUBLIC_NAME,), rsa_cert, rsa_key),
    )
    config = edge_config(pki, 8443, backend_ca=pki.ca_file, certificates=sites)
    main, _ = split_nginx(render_config("nginx", config))
    assert main.count("    server {") == 1
    for site in sites:
        assert f"ssl_certificate {site.cert};\n        ssl_certificate_key {site.key};" in main
    assert f"crt {pki.edge_cert} crt {rsa_cert}" in render_config("haproxy", config)


@pytest.mark.slow
async def test_real_nginx_with_the_rendered_config_bridges_a_sync(
    tmp_path: Path, pki: Pki, server: RunningServer
) -> None:
    port = free_port()
    config = edge_config(
        pki, server.port, backend_ca=pki.ca_file, backend_pin="", listen=f"127.0.0.1:{port}"
    )
    main, include = split_nginx(render_config("nginx", config, runtime_dir=tmp_path))
    (tmp_path / "nginx.conf").write_text(main)
    (tmp_path / "natsync-proxy.inc").write_text(include)
    log = tmp_path / "error.log"
    check = await asyncio.create_subprocess_exec(
        NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
        "-e", str(log), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(log),
        "-g", "daemon off;",
    )  # fmt: skip
    try:
        await wait_listening(port, proc, log)
        await sync_through(port, pki)
    finally:
        await stop(proc)


@pytest.mark.slow
async def test_real_haproxy_with_the_rendered_config_bridges_a_sync(
    tmp_path: Path, pki: Pki, server: RunningServer
) -> None:
    port = free_port()
    cert = tmp_path / "edge.pem"
    shutil.copy(pki.edge_cert, cert)
    shutil.copy(pki.edge_key, tmp_path / "edge.pem.key")  # HAProxy: <cert>.key
    config = edge_config(
        pki, server.port, backend_ca=pki.ca_file, backend_pin="", listen=f"127.0.0.1:{port}"
    )
    config = replace(config, certificates=(SiteCert((PUBLIC_NAME,), cert, pki.edge_key),))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_config("haproxy", config, runtime_dir=tmp_path))
    check = await asyncio.create_subprocess_exec(
        HAPROXY, "-c", "-q", "-f", str(cfg), stderr=asyncio.subprocess.PIPE
    )
    _, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    log = tmp_path / "haproxy.out"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(cfg), stdout=out, stderr=out
        )
    try:
        await wait_listening(port, proc, log)
        await sync_through(port, pki)
    finally:
        await stop(proc)


async def test_rendered_haproxy_refuses_a_server_with_the_wrong_name(
    tmp_path: Path, pki: Pki, server: RunningServer
) -> None:
    """The rendered verification is real: a server name that is not in the certificate fails."""
    port = free_port()
    cert = tmp_path / "edge.pem"
    shutil.copy(pki.edge_cert, cert)
    shutil.copy(pki.edge_key, tmp_path / "edge.pem.key")
    config = edge_config(
        pki, server.port, backend_ca=pki.ca_file, backend_pin="", listen=f"127.0.0.1:{port}",
        backend_name="not-the-server.internal",
    )  # fmt: skip
    config = replace(config, certificates=(SiteCert((PUBLIC_NAME,), cert, pki.edge_key),))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_config("haproxy", config, runtime_dir=tmp_path))
    log = tmp_path / "haproxy.out"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(cfg), stdout=out, stderr=out
        )
    try:
        await wait_listening(port, proc, log)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=pki.client_context(), server_hostname=PUBLIC_NAME
        )
        writer.write(
            b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    finally:
        await stop(proc)


@pytest.fixture
async def second(store: Store, pki: Pki, server: RunningServer) -> AsyncIterator[RunningServer]:
    """A second natsync server on the same store (what balancing is for)."""
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        domains=("example.test",),
    )
    running = await start_server(config, store)
    yield running
    await running.close()


def two_server_config(pki: Pki, port: int, one: RunningServer, two: RunningServer) -> EdgeConfig:
    servers = (f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}")
    return edge_config(
        pki, one.port, backend_ca=pki.ca_file, backend_pin="", listen=f"127.0.0.1:{port}",
        # a check's timeout well above a loaded machine's TLS handshake (a slow check of the
        # running server must not take it out); the stopped one refuses: out at once
        backends=servers, health_interval=2.5, health_timeout=2.0, health_fall=1,
    )  # fmt: skip


def test_rendered_configs_name_every_server_with_their_checks(pki: Pki) -> None:
    config = replace(
        edge_config(pki, 8443, backend_ca=pki.ca_file),
        backends=("127.0.0.1:8443", "127.0.0.1:8444"),
    )
    main, include = split_nginx(render_config("nginx", config))
    assert "least_conn;" in main
    assert "server 127.0.0.1:8444 max_fails=1 fail_timeout=5s;" in main
    assert "proxy_next_upstream_tries 2;" in include
    text = render_config("haproxy", config)
    assert "balance leastconn" in text
    assert "http-check send meth OPTIONS uri /Microsoft-Server-ActiveSync" in text
    assert text.count(" check inter 2000ms fall 2 rise 2 observe layer4") == 2


@pytest.mark.slow
async def test_real_nginx_balances_two_servers_and_survives_one_stopping(
    tmp_path: Path, pki: Pki, server: RunningServer, second: RunningServer
) -> None:
    port = free_port()
    config = two_server_config(pki, port, server, second)
    main, include = split_nginx(render_config("nginx", config, runtime_dir=tmp_path))
    (tmp_path / "nginx.conf").write_text(main)
    (tmp_path / "natsync-proxy.inc").write_text(include)
    log = tmp_path / "error.log"
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(log),
        "-g", "daemon off;",
    )  # fmt: skip
    try:
        await wait_listening(port, proc, log)
        await sync_through(port, pki)
        await second.close()
        for _ in range(3):  # each lands on the stopped one first or not: all succeed
            await sync_through(port, pki)
        assert "connect() failed" in read_log(log)  # it did try the stopped one
    finally:
        await stop(proc)


@pytest.mark.slow
async def test_real_haproxy_balances_two_servers_and_takes_a_stopped_one_out(
    tmp_path: Path, pki: Pki, server: RunningServer, second: RunningServer
) -> None:
    port = free_port()
    cert = tmp_path / "edge.pem"
    shutil.copy(pki.edge_cert, cert)
    shutil.copy(pki.edge_key, tmp_path / "edge.pem.key")
    config = two_server_config(pki, port, server, second)
    config = replace(config, certificates=(SiteCert((PUBLIC_NAME,), cert, pki.edge_key),))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_config("haproxy", config, runtime_dir=tmp_path))
    log = tmp_path / "haproxy.out"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(cfg), stdout=out, stderr=out
        )
    try:
        await wait_listening(port, proc, log)
        await sync_through(port, pki)
        await second.close()
        for _ in range(3):
            await sync_through(port, pki)
        for _ in range(int(config.out_within / 0.05) + 20):  # the active check's bound
            if "natsync2 is DOWN" in read_log(log):
                break
            await asyncio.sleep(0.05)
        assert "natsync2 is DOWN" in read_log(log), read_log(log)
        assert "natsync1 is DOWN" not in read_log(log)
    finally:
        await stop(proc)
