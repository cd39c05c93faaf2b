"""natsync.config: embedded defaults, TOML loading, and a clear ConfigError for what cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.config import ServerConfig, load_config, port_of
from natsync.errors import ConfigError


def test_defaults_need_no_file() -> None:
    config = load_config(None)
    assert config == ServerConfig()
    assert config.heartbeat_min <= config.heartbeat_max
    assert config.database.name == "natsync.db"


def test_values_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "natsync.toml"
    path.write_text(
        "[server]\n"
        'host = "0.0.0.0"\n'
        "port = 9443\n"
        'tls_cert = "tls/cert.pem"\n'
        'tls_key = "tls/key.pem"\n'
        'data_dir = "/var/lib/natsync"\n'
        'domains = ["Example.ORG", "mail.example.org"]\n'
        'smarthost = "relay.example.org:587"\n'
        "failed_login_window = 60\n"
        "[server.policy]\n"
        "MaxAttachmentSize = 1048576\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.host == "0.0.0.0"
    assert config.port == 9443
    assert config.tls_cert == tmp_path / "tls/cert.pem"
    assert config.data_dir == Path("/var/lib/natsync")
    assert config.domains == ("example.org", "mail.example.org")
    assert config.failed_login_window == 60.0
    assert config.policy == {"MaxAttachmentSize": 1048576}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("port = 70000", "server.port"),
        ('tls_cert = "c.pem"', "tls_key"),
        ("heartbeat_min = 600\nheartbeat_max = 60", "heartbeat_min"),
        ('smarthost = "nohost"', "server.smarthost"),
        # str.isdigit is true of "²" and of 5,000 digits; int() refuses both: a ConfigError
        ('smarthost = "relay.example.org:5²7"', "server.smarthost"),
        (f'smarthost = "relay.example.org:{"5" * 5000}"', "server.smarthost"),
        ('smtp_listen = "0.0.0.0:65536"', "server.smtp_listen"),
        ('port = "443"', "server.port"),
        ("colour = 1", "colour"),
        ("max_request_body = 10", "max_request_body"),
        ("[server.policy]\nNoSuchSetting = 1", "NoSuchSetting"),
        ("port = ", "not valid TOML"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\n" + text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=names):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_port_of_takes_ascii_digits_up_to_65535() -> None:
    assert [port_of(t) for t in ("0", "587", "065535", "65535")] == [0, 587, None, 65535]
    assert [port_of(t) for t in ("", "65536", "-1", "²", "٣", "+25", " 25", "1" * 5000)] == [
        None
    ] * 8
