"""-c/--config and NATSYNC_CONFIG, the same on every command that reads the deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from tests.cli.test_run import free_ports, init_file

#: Commands that read the deployment file (the rest of the -c commands are user/device/
#: import/export/store, which read its store).
COMMANDS = [
    ("run",), ("check",), ("server",), ("edge", "run"), ("edge", "trust-backend"),
    ("doctor",), ("ddns", "run"), ("ddns", "update"), ("portmap", "hold"),
    ("cert", "init-ca"), ("cert", "issue"), ("cert", "export-ca"), ("cert", "renew"),
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_dash_c_and_the_environment(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "-c, --config FILE" in result.output
    assert "NATSYNC_CONFIG" in " ".join(result.output.split())


def test_cert_finds_the_data_directory_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = init_file(tmp_path, free_ports(4))  # init made the CA in tmp_path/data/ca
    monkeypatch.delenv("NATSYNC_DATA_DIR", raising=False)
    out = tmp_path / "ca.pem"
    result = CliRunner().invoke(main, ["cert", "export-ca", "-c", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (tmp_path / "data" / "ca" / "ca.pem").read_bytes()
    monkeypatch.setenv("NATSYNC_CONFIG", str(config))
    again = tmp_path / "again.pem"
    result = CliRunner().invoke(main, ["cert", "export-ca", "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == out.read_bytes()
    monkeypatch.setenv("NATSYNC_CONFIG", str(tmp_path / "missing.toml"))
    result = CliRunner().invoke(main, ["cert", "export-ca", "-o", str(again)])
    assert result.exit_code == 1
    assert "cannot read config file" in result.output
    assert "Traceback" not in result.output
