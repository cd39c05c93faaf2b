"""The [edge] table: one server by default, several with ``backends`` (balancing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.edge import load_edge_config
from natsync.errors import ConfigError


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text("[edge]\n" + body)
    return path


def test_one_backend_is_the_default(tmp_path: Path) -> None:
    config = load_edge_config(write(tmp_path, 'backend = "10.0.0.5:8443"\n'))
    assert config.servers == ("10.0.0.5:8443",)
    assert config.backends == ()


def test_backends_list_with_health_settings(tmp_path: Path) -> None:
    config = load_edge_config(
        write(
            tmp_path,
            'backends = ["127.0.0.1:8443", "127.0.0.1:8444"]\n'
            "health_interval = 0.5\nhealth_timeout = 0.2\nhealth_fall = 3\nhealth_rise = 1\n",
        )
    )
    assert config.servers == ("127.0.0.1:8443", "127.0.0.1:8444")
    assert config.backend == "127.0.0.1:8443"  # what one-server messages name
    assert config.server_name == "127.0.0.1"
    assert (config.health_fall, config.health_rise) == (3, 1)
    assert config.out_within == pytest.approx(0.5 * 3 + 0.2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('backend = "a:1"\nbackends = ["b:2"]\n', "not both"),
        ("backends = []\n", "list of"),
        ('backends = ["a:1", "a:1"]\n', "twice"),
        ('backends = ["nohost"]\n', "edge.backends must be host:port"),
        ('backends = ["a:1", "b:2"]\nhealth_timeout = 3.0\n', "shorter than"),
        ('health_path = "x"\n', "health_path"),
        ("health_fall = 0\n", "health_fall"),
    ],
)
def test_bad_backends_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_edge_config(write(tmp_path, body))
