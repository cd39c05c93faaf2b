"""The [sources.dav] table: defaults, paths, and every refusal naming its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.errors import ConfigError
from natsync.sources.dav import dav_settings
from natsync.sources.dav.settings import DEFAULT_INTERVAL


def test_defaults_and_relative_ca(tmp_path: Path) -> None:
    data = {"sources": {"dav": {"url": "https://dav.example.org/dav", "ca_file": "ca.pem"}}}
    settings = dav_settings(data, tmp_path)
    assert settings is not None
    assert settings.url == "https://dav.example.org/dav/"
    assert settings.ca_file == tmp_path / "ca.pem"
    assert settings.interval == DEFAULT_INTERVAL
    assert settings.wants("anyone")
    assert settings.login_for("ann", "ann@example.org") == "ann"


def test_users_and_login_template() -> None:
    table = {"url": "http://127.0.0.1:5232/", "users": ["Ann"], "login": "{email}", "interval": 5}
    settings = dav_settings({"sources": {"dav": table}})
    assert settings is not None
    assert settings.wants("ann")
    assert not settings.wants("bob")
    assert settings.login_for("ann", "ann@example.org") == "ann@example.org"
    assert settings.interval == 5.0


def test_no_table() -> None:
    assert dav_settings({"server": {}}) is None


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"url": "ftp://x/"}, "sources.dav.url"),
        ({"url": "https:///"}, "names no host"),
        ({"url": "https://x/", "interval": 0}, "sources.dav.interval"),
        ({"url": "https://x/", "interval": True}, "sources.dav.interval"),
        ({"url": "https://x/", "users": "ann"}, "sources.dav.users"),
        ({"url": "https://x/", "login": ""}, "sources.dav.login"),
        ({"url": "https://x/", "password": "x"}, "unknown sources.dav setting(s): password"),
    ],
)
def test_refusals(table: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        dav_settings({"sources": {"dav": table}})
