"""natsync.deployment.load_deployment: every table checked, unknown names refused with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.deployment import load_deployment, resolve_config_path
from natsync.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_table_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[server]
port = 9443
domains = ["example.org"]
[edge]
listen = "127.0.0.1:9444"
backend_ca = "ca.pem"
[ddns]
server = "127.0.0.1:5353"
zone = "example.org"
names = ["mail.example.org"]
[portmap]
mappings = ["443:9444/tcp"]
[cert]
mode = "acme"
names = ["mail.example.org"]
acme_directory = "https://127.0.0.1:14000/dir"
[admin]
listen = "127.0.0.1:0"
[run]
server_processes = 2
log_format = "json"
""",
    )
    deployment = load_deployment(path)
    assert deployment.server.port == 9443
    assert deployment.server.data_dir == tmp_path / "natsync-data"
    assert deployment.edge is not None
    assert deployment.edge.backend_ca == tmp_path / "ca.pem"
    assert deployment.ddns.names == ("mail.example.org",)
    assert deployment.portmap.mappings == ("443:9444/tcp",)
    assert deployment.cert is not None
    assert deployment.cert.mode == "acme"
    assert deployment.run.server_processes == 2
    assert deployment.run.log_format == "json"
    assert deployment.public_name == "mail.example.org"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[servr]\nport = 1\n", "unknown table [servr] (did you mean 'server'?)"),
        ("[server]\nprot = 1\n", "unknown setting server.prot (did you mean 'port'?)"),
        ("[edge]\nlisen = 'x:1'\n", "unknown setting edge.lisen (did you mean 'listen'?)"),
        ("server = 1\n", "server must be a table"),
        ("[run]\nlog_format = 'xml'\n", "run.log_format must be text or json"),
        ("[cert]\nmode = 'acme'\n", "cert.name"),
    ],
)
def test_mistakes_named_with_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    assert str(path) in info.value.message
    assert needle in info.value.message


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATSYNC_CONFIG", str(tmp_path / "x.toml"))
    assert resolve_config_path(None) == tmp_path / "x.toml"
    assert resolve_config_path(tmp_path / "y.toml") == tmp_path / "y.toml"
    monkeypatch.delenv("NATSYNC_CONFIG")
    monkeypatch.chdir(tmp_path)
    if not Path("/etc/natsync/natsync.toml").exists():
        with pytest.raises(ConfigError, match="natsync init"):
            resolve_config_path(None)


def test_the_other_parts_tables_are_known(tmp_path: Path) -> None:
    """[sources] (IMAP / DAV mirrors) is checked by its own loader and handed to the server
    part; a mistake inside it is named like any other."""
    good = _write(tmp_path, '[sources]\ndefault = "store"\n')
    deployment = load_deployment(good)
    assert deployment.sources is not None
    assert deployment.sources.default == "store"
    assert deployment.dav is None
    bad = _write(tmp_path, '[sources]\ndefault = "imap1"\n')
    with pytest.raises(ConfigError, match=r"sources\.default must name a source"):
        load_deployment(bad)
    typo = _write(tmp_path, '[source]\ndefault = "store"\n')
    with pytest.raises(ConfigError, match=r"unknown table \[source\] \(did you mean 'sources'"):
        load_deployment(typo)


def test_the_console_table_is_known(tmp_path: Path) -> None:
    assert load_deployment(_write(tmp_path, "[console]\nport = 9999\n")).server.port == 8443
    with pytest.raises(ConfigError, match=r"unknown setting console\.prot"):
        load_deployment(_write(tmp_path, "[console]\nprot = 9999\n"))
