"""The [relay] and [tunnel] tables and `natsync relay init`: what it writes is what `run` and
`dial` read, keys private from the first byte, and every mistake one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from natsync.edge.config import EdgeConfig
from natsync.errors import ConfigError
from natsync.relay.settings import home_tunnel_settings, load_table, relay_settings
from natsync.relay.wireguard import public_key, read_private_key


def _init(tmp_path: Path, *extra: str) -> tuple[Path, Path, str]:
    result = CliRunner().invoke(
        main,
        ["relay", "init", "relay.example.net", "--dir", str(tmp_path / "vps"),
         "--home-dir", str(tmp_path / "home"), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path / "vps" / "relay.toml", tmp_path / "home" / "home.toml", result.output


def test_init_writes_both_ends_and_they_name_each_other(tmp_path: Path) -> None:
    relay_file, home_file, said = _init(tmp_path)
    relay = relay_settings(load_table(relay_file, "relay"), relay_file.parent)
    home = home_tunnel_settings(load_table(home_file, "tunnel"), home_file.parent)
    relay_key = read_private_key(relay.private_key_file)
    home_key = read_private_key(home.private_key_file)
    assert relay.home_public_key == public_key(home_key)
    assert home.relay_public_key == public_key(relay_key)
    assert home.relay_endpoint == "relay.example.net:51820"
    assert relay.tunnel().peer.allowed_ips == ("10.77.0.2/32",)
    assert home.tunnel().peer.keepalive == 25
    assert home.tunnel().peer.endpoint == "relay.example.net:51820"
    # what to paste at home is printed too, with the edge's relayed listener
    assert "[tunnel]" in said
    assert 'relayed_from = ["10.77.0.1"]' in said
    edge = tomllib.loads(home_file.read_text())["edge"]
    assert edge == {"relayed_listen": "10.77.0.2:8443", "relayed_from": ["10.77.0.1"]}
    # the idle timeouts follow the home's heartbeat as the home edge's do
    assert relay.heartbeat_max == 3540
    assert relay.idle_timeout == EdgeConfig(heartbeat_max=3540).read_timeout == 3600


def test_init_takes_the_homes_heartbeat(tmp_path: Path) -> None:
    relay_file, _, _ = _init(tmp_path, "--heartbeat-max", "900")
    relay = relay_settings(load_table(relay_file, "relay"), relay_file.parent)
    assert relay.heartbeat_max == 900
    assert relay.idle_timeout == EdgeConfig(heartbeat_max=900).read_timeout == 960
    # SMTP through the relay keeps SMTP's own longest wait (RFC 5321 4.5.3.2.6: 10 minutes)
    assert relay.smtp_idle_timeout == 960
    short = relay_settings({**load_table(relay_file, "relay"), "heartbeat_max": 60}, tmp_path)
    assert (short.idle_timeout, short.smtp_idle_timeout) == (120, 600)


def test_init_does_not_overwrite_without_force(tmp_path: Path) -> None:
    _init(tmp_path)
    again = CliRunner().invoke(main, ["relay", "init", "x.example", "--dir", str(tmp_path / "vps")])
    assert again.exit_code == 1
    assert "exists; use --force" in again.output
    assert "Traceback" not in again.output


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"home_public_key": "x", "private_key_file": "k"}, "home_public_key"),
        ({"private_key_file": "k"}, "needs home_public_key"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k", "colour": 1}, "unknown"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k", "https_port": "443"},
         "must be an integer"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k", "listen": "0.0.0.0"},
         "list of addresses"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k", "home_address": "home"},
         "not an IP address"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k",
          "max_connections_per_address": 0}, ">= 1"),
        ({"home_public_key": "A" * 43 + "=", "private_key_file": "k", "heartbeat_max": 0},
         "heartbeat_max must be >= 1"),
    ],
)  # fmt: skip
def test_bad_relay_tables_say_what_is_wrong(
    tmp_path: Path, table: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        relay_settings(table, tmp_path)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"relay_endpoint": "relay.example.net", "relay_public_key": "A" * 43 + "=",
          "private_key_file": "k"}, "host:port"),
        ({"relay_endpoint": "r:1", "relay_public_key": "A" * 43 + "=", "private_key_file": "k",
          "keepalive": 600}, "keepalive"),
    ],
)  # fmt: skip
def test_bad_tunnel_tables_say_what_is_wrong(
    tmp_path: Path, table: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        home_tunnel_settings(table, tmp_path)


def test_run_with_a_key_others_can_read_refuses_in_one_line(tmp_path: Path) -> None:
    relay_file, _, _ = _init(tmp_path)
    (tmp_path / "vps" / "relay.key").chmod(0o644)
    result = CliRunner().invoke(main, ["relay", "run", "-c", str(relay_file)])
    assert result.exit_code == 1
    assert "can be read by others" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["relay", "dial", "-c", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1
    assert "Traceback" not in missing.output
