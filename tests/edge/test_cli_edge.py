"""`natsync edge run` with several workers, and the CLI's refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from tests.edge.conftest import (
    PUBLIC_NAME,
    SERVER_NAME,
    Pki,
    Recorder,
    Target,
    exchange,
    status_of,
)

NATSYNC = str(Path(sys.executable).with_name("natsync"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(pki: Pki, backend_port: int, port: int, **extra: object) -> str:
    lines = [
        "[edge]",
        f'listen = "127.0.0.1:{port}"',
        f'backend = "127.0.0.1:{backend_port}"',
        f'backend_name = "{SERVER_NAME}"',
        f'backend_pin = "{pki.server_pin}"',
        'admin_listen = ""',
        "forwards = []",
        *(f"{k} = {v}" for k, v in extra.items()),
        "[[edge.certificates]]",
        f'names = ["{PUBLIC_NAME}"]',
        f'cert = "{pki.edge_cert}"',
        f'key = "{pki.edge_key}"',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
async def test_two_workers_share_the_port_and_stop_together(
    tmp_path: Path, pki: Pki, recorder: Recorder
) -> None:
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(config_text(pki, recorder.port, port, workers=2))
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "edge", "run", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"natsync edge: listening" not in (line := await proc.stderr.readline()):
                assert line, "natsync edge run exited"
        assert b"workers=2" in line
        children = _children(proc.pid)
        assert len(children) == 1
        request = (
            b"GET /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        target = Target("127.0.0.1", port)
        answers = await asyncio.gather(*(exchange(target, pki, request) for _ in range(8)))
        assert [status_of(a) for a in answers] == [200] * 8
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0
    for child in children:
        assert _state(int(child)) == b"Z"


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1]
    except OSError:
        return b"Z"


def test_run_refuses_an_unverifiable_backend_and_port_0_with_workers(
    tmp_path: Path, pki: Pki
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(config_text(pki, 1, 0).replace(f'backend_pin = "{pki.server_pin}"\n', ""))
    result = CliRunner().invoke(main, ["edge", "run", "--config", str(config)])
    assert result.exit_code != 0
    assert "cannot verify the server" in result.output
    config.write_text(config_text(pki, 1, 0, workers=2))
    result = CliRunner().invoke(main, ["edge", "run", "--config", str(config)])
    assert result.exit_code != 0
    assert "fixed edge.listen port" in result.output


def test_render_cli_writes_a_file(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(config_text(pki, 8443, 443) + "")
    text = config.read_text().replace("[[edge.certificates]]", f'backend_ca = "{pki.ca_file}"\n'
                                      "[[edge.certificates]]")  # fmt: skip
    config.write_text(text)
    out = tmp_path / "haproxy.cfg"
    result = CliRunner().invoke(
        main, ["edge", "render", "haproxy", "--config", str(config), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"sni str({SERVER_NAME})" in out.read_text()
    assert os.path.getsize(out) > 0


async def test_run_says_at_start_that_the_pin_does_not_match(
    tmp_path: Path, pki: Pki, recorder: Recorder
) -> None:
    config = tmp_path / "edge.toml"
    wrong = "sha256:" + ":".join(["AB"] * 32)
    config.write_text(
        config_text(pki, recorder.port, 0).replace(f'"{pki.server_pin}"', f'"{wrong}"')
    )
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "edge", "run", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"not the pinned" not in (line := await proc.stderr.readline()):
                assert line, "natsync edge run exited"
        assert pki.server_pin.encode() in line
        assert b"natsync edge trust-backend" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)


@pytest.mark.slow
async def test_workers_end_when_the_first_one_is_killed(
    tmp_path: Path, pki: Pki, recorder: Recorder
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(config_text(pki, recorder.port, free_port(), workers=2))
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "edge", "run", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        while b"natsync edge: listening" not in await proc.stderr.readline():
            pass
    (child,) = _children(proc.pid)
    proc.kill()
    await proc.wait()
    for _ in range(100):
        if _state(int(child)) == b"Z":
            break
        await asyncio.sleep(0.05)
    assert _state(int(child)) == b"Z"
