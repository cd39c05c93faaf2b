"""`natsync console passwd`, `natsync console` serving on its own until stopped, and the
`natsync user disable / enable` commands that call natsync.admin."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.auth.passwords import verify_password
from natsync.cli import main
from tests.console.conftest import browser_like

NATSYNC = str(Path(sys.executable).with_name("natsync"))


def _setup(data: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        main, ["console", "passwd", "--data-dir", str(data), "--password-stdin"],
        input="admin-password\n",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        main,
        ["user", "add", "carol", "--email", "carol@example.test", "--password-stdin",
         "--data-dir", str(data)],
        input="carol-password\n",
    )  # fmt: skip
    assert out.exit_code == 0, out.output


def test_passwd_writes_a_private_hash(tmp_path: Path) -> None:
    _setup(tmp_path)
    path = tmp_path / "console" / "admin.hash"
    assert path.stat().st_mode & 0o777 == 0o600
    assert verify_password("admin-password", path.read_text().strip())
    out = CliRunner().invoke(
        main, ["console", "passwd", "--data-dir", str(tmp_path), "--password", "short"]
    )
    assert out.exit_code != 0
    assert "too short" in out.output


def test_console_refuses_to_start_without_an_admin_password(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["console", "--data-dir", str(tmp_path), "--port", "0"])
    assert out.exit_code != 0
    assert "natsync console passwd" in out.output


def test_user_disable_and_enable(tmp_path: Path) -> None:
    _setup(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["user", "disable", "carol", "--data-dir", str(tmp_path)])
    assert out.output.strip() == "user carol disabled"
    out = runner.invoke(main, ["user", "enable", "carol", "--data-dir", str(tmp_path)])
    assert out.output.strip() == "user carol enabled"
    out = runner.invoke(main, ["user", "disable", "nobody", "--data-dir", str(tmp_path)])
    assert out.exit_code != 0
    assert "no user named 'nobody'" in out.output


async def test_natsync_console_serves_until_stopped(tmp_path: Path) -> None:
    _setup(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "console", "--data-dir", str(tmp_path), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NATSYNC_NO_UVLOOP": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        async with browser_like() as http:
            data = {"user": "admin", "password": "admin-password"}
            async with http.post(base + "/login", data=data) as resp:
                assert resp.status == 200
            async with http.get(base + "/users") as resp:
                assert "carol@example.test" in await resp.text()
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def _signals_ignored_and_blocked() -> None:
    """What a script's background job or some supervisors hand a child: SIGINT ignored, SIGINT
    and SIGTERM blocked (both survive exec)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_natsync_console_stops_on_a_signal_it_was_started_without(
    tmp_path: Path, sig: signal.Signals
) -> None:
    _setup(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        NATSYNC, "console", "--data-dir", str(tmp_path), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NATSYNC_NO_UVLOOP": "1"}, preexec_fn=_signals_ignored_and_blocked,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "natsync console on http://127.0.0.1:" in line, line
    finally:
        proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert code == 0


def test_settings_from_the_deployment_file(tmp_path: Path) -> None:
    import pytest

    from natsync.console import load_settings
    from natsync.errors import ConfigError

    config = tmp_path / "natsync.toml"
    config.write_text(
        '[server]\ndata_dir = "data"\npublic_name = "mail.example.test"\n'
        '[console]\nhost = "192.168.1.2"\nport = 9000\nmetrics_url = "http://127.0.0.1:9100/metrics"\n'
    )
    settings = load_settings(config)
    assert settings.data_dir == tmp_path / "data"
    assert settings.store_url == str(tmp_path / "data" / "natsync.db")
    assert (settings.host, settings.port) == ("192.168.1.2", 9000)
    assert settings.doctor_url == "https://mail.example.test"
    assert settings.public_name == "mail.example.test"
    assert settings.config_path == config
    config.write_text("[console]\nlisten = 1\n")
    with pytest.raises(ConfigError, match="unknown console setting"):
        load_settings(config)
    config.write_text("[console]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        load_settings(config)
    config.write_text("[console]\ndoctor_heartbeat = 0\n")
    assert load_settings(config).doctor_heartbeat == 0
    config.write_text("[console]\ndoctor_heartbeat = 4000\n")
    with pytest.raises(ConfigError, match=r"doctor_heartbeat must be 0\.\.3540"):
        load_settings(config)


def test_publish_settings(tmp_path: Path) -> None:
    """console.publish needs the console's own TLS; its publish_port defaults to port + 1 and
    the public name becomes a host it answers to."""
    import pytest

    from natsync.console import load_settings
    from natsync.errors import ConfigError

    config = tmp_path / "natsync.toml"
    server = '[server]\ndata_dir = "data"\npublic_name = "mail.example.test"\n'
    config.write_text(server + '[console]\nport = 9000\npublish = "0.0.0.0:8445"\n')
    with pytest.raises(ConfigError, match="needs the console's own TLS"):
        load_settings(config)
    tls = 'tls_cert = "c.pem"\ntls_key = "k.pem"\n'
    config.write_text(server + '[console]\nport = 9000\npublish = "0.0.0.0:8445"\n' + tls)
    settings = load_settings(config)
    assert settings.published_port == 9001
    assert "mail.example.test" in settings.allowed_hosts
    config.write_text(server + '[console]\npublish = "8445"\n' + tls)
    with pytest.raises(ConfigError, match=r"console\.publish must be host:port"):
        load_settings(config)
    config.write_text(
        server + '[console]\nport = 9000\npublish_port = 9000\npublish = "0.0.0.0:8445"\n' + tls
    )
    with pytest.raises(ConfigError, match=r"publish_port must be 1\.\.65535"):
        load_settings(config)
    config.write_text(server + "[console]\nport = 9000\n")
    assert load_settings(config).publish == ""  # the default: never published
    assert "mail.example.test" not in load_settings(config).allowed_hosts


def test_proxied_clients_forget_closed_connections() -> None:
    from natsync.console.published import TLS_HANDSHAKE_TIMEOUT, ProxiedClients

    class Conn:
        transport: object | None = object()

    clients = ProxiedClients()
    first, second = Conn(), Conn()
    clients.note(first, "192.0.2.1", 0.0)
    assert clients.remote(first) == "192.0.2.1"
    assert clients.remote(second) is None
    first.transport = None  # closed
    clients.note(second, "192.0.2.2", 1.0)  # within the handshake time: kept
    assert clients.remote(first) == "192.0.2.1"
    clients.note(Conn(), "192.0.2.3", TLS_HANDSHAKE_TIMEOUT + 1.0)
    assert clients.remote(first) is None
    assert clients.remote(second) == "192.0.2.2"
    assert len(clients) == 2
