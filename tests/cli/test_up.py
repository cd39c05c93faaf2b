"""`natsync up` as a user runs it: a subprocess that prints one JSON line, serves over TLS
with its own CA, keeps its password across runs, and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from natsync.cli import main
from natsync.cli.up import pick_ports, port_free, remembered_ports
from natsync.client import EASClient
from natsync.store.api import FolderType

#: Seconds `natsync up` may take to be ready (CA and key generation, scrypt, store creation).
STARTUP_TIMEOUT = 60.0
#: Seconds it may take to shut down cleanly after SIGTERM.
SHUTDOWN_TIMEOUT = 30.0
UP = [sys.executable, "-c", "from natsync.cli import main; main()"]


def start_up(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start `natsync up --json` and return the process and its JSON line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from natsync.cli import main; main()",
            "up",
            "--json",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NATSYNC_DATA_DIR": ""},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    while time.monotonic() < deadline and not line.strip():
        line = proc.stdout.readline()
        if proc.poll() is not None:
            break
    if not line.strip():
        proc.kill()
        _out, err = proc.communicate(timeout=SHUTDOWN_TIMEOUT)
        raise AssertionError(f"natsync up printed no JSON line; stderr:\n{err.decode()[-3000:]}")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=SHUTDOWN_TIMEOUT)
    return proc.returncode, out, err


async def sync_inbox(info: dict[str, Any]) -> tuple[str, int]:
    async with EASClient(
        info["url"], info["user"], info["password"], ca_file=info["ca_file"]
    ) as phone:
        await phone.folder_sync()
        return phone.folder(type=FolderType.INBOX).display_name, phone.state.policy_key


def test_up_serves_tls_with_its_ca_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, info = start_up(data_dir, "--https-port", "0", "--smtp-port", "0", "--edge-port", "0")
    try:
        assert set(info) >= {"url", "smtp", "user", "password", "ca_file"}
        assert info["url"].startswith("https://localhost:")
        assert info["user"] == "demo"
        assert Path(info["ca_file"]).is_file()
        password_file = data_dir / "demo-password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert password_file.read_text().strip() == info["password"]
        host, _, port = info["smtp"].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as smtp:
            assert smtp.recv(100).startswith(b"220 ")
        name, policy_key = asyncio.run(sync_inbox(info))
        assert name == "Inbox"
        assert policy_key != 0
    finally:
        code, out, err = stop(proc)
    assert code == 0, err.decode()[-3000:]
    assert out == b""  # the JSON line was the only output on stdout

    # a second run keeps the password, the CA and the store; --no-edge serves without the edge
    proc, again = start_up(data_dir, "--https-port", "0", "--smtp-port", "0", "--no-edge")
    try:
        assert again["url"] == again["server_url"]
        assert again["edge_admin"] == ""
        assert asyncio.run(sync_inbox(again))[0] == "Inbox"
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err.decode()[-3000:]
    assert again["password"] == info["password"]
    assert again["ca_file"] == info["ca_file"]


#: A loopback source address that is neither the edge's side toward the server (127.0.0.1)
#: nor anything the server trusts: the "phone" in the forwarded-address test.
PHONE_SOURCE = "127.0.0.5"


def _options(url: str, ca_file: str, source: str, forwarded: str, login: str) -> int:
    """An authenticated TLS OPTIONS (*login*: "user:password") from *source* with a forged
    X-Forwarded-For; the HTTP status."""
    port = int(url.rpartition(":")[2])
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Basic " + base64.b64encode(login.encode()) + b"\r\n"
            b"X-Forwarded-For: " + forwarded.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = tls.recv(1024)
            if not chunk:
                break
            head += chunk
    return int(head.split()[1])


def _access_lines(stderr: bytes) -> list[dict[str, Any]]:
    """The request lines of a `--log-format json` run (every line is one JSON object)."""
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"].endswith(".access")]


def test_up_runs_the_edge_in_front_and_the_server_logs_the_phone_address(
    tmp_path: Path,
) -> None:
    proc, info = start_up(
        tmp_path / "data",
        "--https-port", "0", "--smtp-port", "0", "--edge-port", "0", "--log-format", "json",
    )  # fmt: skip
    try:
        assert info["url"] != info["server_url"]
        assert info["edge_admin"].startswith("http://127.0.0.1:")
        # Through the edge: its X-Forwarded-For (the phone's socket address) is believed and
        # the phone's forged one dropped.
        login = f"{info['user']}:{info['password']}"
        assert _options(info["url"], info["ca_file"], PHONE_SOURCE, "203.0.113.66", login) == 200
        # Straight to the server from an address it does not trust: the header is ignored.
        direct = _options(info["server_url"], info["ca_file"], PHONE_SOURCE, "203.0.113.77", login)
        assert direct == 200
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err.decode()[-3000:]
    # One line per request (the server's, not one per hop), each with its timestamp.
    access = _access_lines(err)
    assert [line["remote"] for line in access] == [PHONE_SOURCE, PHONE_SOURCE]
    assert {line["logger"] for line in access} == {"natsync.server.access"}
    assert all(line["ts"].endswith("Z") for line in access)
    assert b"203.0.113." not in err


def test_a_taken_default_port_gives_way_and_the_ports_are_remembered(tmp_path: Path) -> None:
    with socket.socket() as busy, socket.socket() as spare:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        spare.bind(("127.0.0.1", 0))
        default = spare.getsockname()[1]
        spare.close()  # free now: the default that is free
        assert not port_free("127.0.0.1", taken)
        ports, said = pick_ports(
            tmp_path, "127.0.0.1", {"https": None, "smtp": 12345}, {"https": taken, "smtp": 1}
        )
        assert ports["https"] not in (0, taken)
        assert said == [f"natsync up: https port {taken} is busy; took {ports['https']} instead"]
        assert ports["smtp"] == 12345  # an explicit flag is kept
        assert remembered_ports(tmp_path) == ports
        # The next start takes the remembered port again, though the default is free now.
        busy.close()
        again, said = pick_ports(
            tmp_path, "127.0.0.1", {"https": None, "smtp": None}, {"https": taken, "smtp": default}
        )
        assert again == ports
        assert said == []


def test_up_help_lists_its_options() -> None:
    result = CliRunner().invoke(main, ["up", "--help"])
    assert result.exit_code == 0
    options = ("--data-dir", "--host", "--https-port", "--smtp-port", "--edge-port", "--no-edge")
    for option in (*options, "--json"):
        assert option in result.output


def test_up_and_the_admin_commands_share_one_store(tmp_path: Path) -> None:
    # Regression: `natsync up` once kept its own store file beside the one `natsync user` reads.
    from natsync.cli.up import prepare

    prepare(tmp_path, "127.0.0.1")
    result = CliRunner().invoke(main, ["user", "list", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert [user["name"] for user in json.loads(result.output)] == ["demo"]


def test_the_quickstart_emulator_snippet_runs_as_printed(tmp_path: Path) -> None:
    """docs/quickstart.md: `natsync up` in a folder, a mail by SMTP, then the snippet saved as
    sync.py and run with the environment's Python from the same folder prints the mail."""
    import re
    import smtplib

    doc = (Path(__file__).parents[2] / "docs" / "quickstart.md").read_text()
    snippet = re.search(r"device emulator.*?```python\n(.*?)```", doc, re.S)
    assert snippet is not None
    (tmp_path / "sync.py").write_text(snippet.group(1))
    proc = subprocess.Popen(
        [*UP, "up", "--https-port", "0", "--smtp-port", "0", "--edge-port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        info_file = tmp_path / "natsync-data" / "up.json"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not info_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        info = json.loads(info_file.read_text())
        assert stat.S_IMODE(info_file.stat().st_mode) == 0o600
        host, _, port = info["smtp"].rpartition(":")
        with smtplib.SMTP(host, int(port), timeout=10) as smtp:
            smtp.sendmail(
                "you@example.test", [info["email"]], "Subject: hello\r\n\r\nfrom natsync up\r\n"
            )
        ran = subprocess.run(
            [sys.executable, "sync.py"], cwd=tmp_path, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().endswith(" hello")
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err.decode()[-3000:]
    assert not (tmp_path / "natsync-data" / "up.json").exists()  # removed on stop
