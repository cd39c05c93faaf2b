"""The command line with the edge as a separate process (`natsync edge run`), the way a home user
runs it by hand: `natsync cert placeholder`, then `natsync cert acme --responder edge` with
`--challenge auto`, the challenges handed to the edge (two worker processes) through its
challenge directory, the edge reloaded by SIGHUP; then `natsync cert status`."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509

from natsync.edge.tls import fetch_certificate
from tests.cert.acme_servers import Pebble

pytestmark = pytest.mark.timeout(120)
NATSYNC = str(Path(sys.executable).with_name("natsync"))


async def natsync(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


@asynccontextmanager
async def edge_process(pebble: Pebble, data: Path, name: str) -> AsyncIterator[Path]:
    """`natsync edge run` on pebble's validation ports; yields its pid file."""
    config = data.parent / "natsync.toml"
    config.write_text(f"""[edge]
listen = "127.0.0.1:{pebble.tls_port}"
http_listen = "127.0.0.1:{pebble.http_port}"
challenge_dir = "{data / "acme" / "challenges"}"
backend = "127.0.0.1:9"
insecure_backend = true
admin_listen = ""
forwards = []
workers = 2              # both share 443 and 80 (SO_REUSEPORT); each reads the spool

[[edge.certificates]]
names = ["{name}"]
cert = "{data / "tls" / "server.pem"}"
key = "{data / "tls" / "server.key"}"
""")
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "edge", "run", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "the edge exited"
            if b"listening on" in line:
                break
        pid_file = data.parent / "edge.pid"
        pid_file.write_text(f"{proc.pid}\n")
        yield pid_file
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def served(port: int, name: str) -> x509.Certificate:
    return (await fetch_certificate("127.0.0.1", port, name)).cert


def installed(data: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((data / "tls" / "server.pem").read_bytes())[0]


async def acme(pebble: Pebble, data: Path, pid_file: Path, *extra: str) -> dict[str, object]:
    code, out = await natsync(
        "cert", "acme", "--data-dir", str(data), "--directory", pebble.directory_url,
        "--ca-file", str(pebble.ca_file), "--responder", "edge",
        "--reload-pid-file", str(pid_file), "--json", *extra,
    )  # fmt: skip
    assert code == 0, out
    doc: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return doc


async def test_auto_through_a_separate_edge_process_then_status(
    pebble: Pebble, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    name = f"sep-{uuid.uuid4().hex[:8]}.example.test"
    code, out = await natsync("cert", "placeholder", "--data-dir", str(data), "--name", name)
    assert code == 0, out
    placeholder = installed(data)
    async with edge_process(pebble, data, name) as pid_file:
        assert (await served(pebble.tls_port, name)) == placeholder

        # Port 443 forwarded: auto picks tls-alpn-01, answered by the edge process.
        first = await acme(pebble, data, pid_file, "--name", name, "--ports-open", "443")
        assert first["challenge"] == "tls-alpn-01"
        assert first["challenge_reason"] == "port 443 reaches the edge from outside"
        assert first["challenges_answered"] == 1
        leaf = installed(data)
        for _ in range(100):  # SIGHUP is asynchronous
            if (await served(pebble.tls_port, name)) == leaf:
                break
            await asyncio.sleep(0.05)
        for _ in range(8):  # every worker reloaded (connections spread over both)
            assert (await served(pebble.tls_port, name)) == leaf

        # Only port 80 forwarded: http-01 through the edge's port-80 listener.
        other = f"sep80-{uuid.uuid4().hex[:8]}.example.test"
        second = await acme(pebble, data, pid_file, "--name", other, "--ports-open", "80")
        assert second["challenge"] == "http-01"
        assert second["challenges_answered"] == 1
        assert not list((data / "acme" / "challenges" / "http-01").iterdir())  # withdrawn

    code, out = await natsync("cert", "status", "--data-dir", str(data), "--json")
    assert code == 0, out
    status = json.loads(out)
    assert status["state"] == "valid"
    assert status["healthy"] is True
    assert status["names"] == [other]
    assert status["renew_source"] == "lifetime"
    code, out = await natsync("cert", "status", "--data-dir", str(data))
    assert code == 0, out
    assert f"{other}: valid" in out
