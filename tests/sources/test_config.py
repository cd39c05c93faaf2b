"""The [sources] table: choices per domain and user, defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsync.errors import ConfigError
from natsync.sources.config import SentCopy, TlsMode, sources_from_dict

SERVER = {"host": "mail.example.org"}


def test_nothing_configured_means_the_own_store() -> None:
    config = sources_from_dict(None)
    assert config.server_for("alice@example.org") is None
    assert not config.any_imap


def test_user_wins_over_domain_wins_over_default() -> None:
    config = sources_from_dict(
        {
            "imap": {"home": SERVER},
            "domains": {"Example.org": "home"},
            "users": {"archive@example.org": "store"},
        }
    )
    server = config.server_for("Alice@example.org")
    assert server is not None
    assert (server.host, server.port, server.tls) == ("mail.example.org", 993, TlsMode.IMPLICIT)
    assert (server.submission_host, server.submission_port) == ("mail.example.org", 587)
    assert server.submission_tls is TlsMode.STARTTLS
    assert config.server_for("archive@example.org") is None
    assert config.server_for("bob@example.net") is None
    assert config.any_imap


def test_lease_seconds() -> None:
    assert sources_from_dict(None).lease == 30.0
    assert sources_from_dict({"lease": 5}).lease == 5.0


def test_starttls_defaults_to_port_143_and_465_to_implicit() -> None:
    config = sources_from_dict(
        {"imap": {"h": {**SERVER, "tls": "starttls", "submission_port": 465}}, "default": "h"}
    )
    server = config.server_for("anyone")
    assert server is not None
    assert server.port == 143
    assert server.submission_tls is TlsMode.IMPLICIT


def test_sent_copy_is_appended_unless_the_server_files_it() -> None:
    config = sources_from_dict({"imap": {"a": SERVER, "s": {**SERVER, "sent_copy": "server"}}})
    assert config.imap["a"].sent_copy is SentCopy.APPEND
    assert config.imap["s"].sent_copy is SentCopy.SERVER


def test_ca_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    config = sources_from_dict({"imap": {"h": {**SERVER, "ca_file": "ca.pem"}}}, base=tmp_path)
    assert config.imap["h"].ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"imap": {"h": {}}}, "sources.imap.h.host"),
        ({"imap": {"h": {**SERVER, "port": 0}}}, "sources.imap.h.port"),
        ({"imap": {"h": {**SERVER, "port": True}}}, "sources.imap.h.port"),
        ({"imap": {"h": {**SERVER, "tls": "none"}}}, "sources.imap.h.tls"),
        ({"imap": {"h": {**SERVER, "submission_tls": "plain"}}}, "sources.imap.h.submission_tls"),
        ({"imap": {"h": {**SERVER, "ca_file": "/nonexistent/ca.pem"}}}, "sources.imap.h.ca_file"),
        ({"imap": {"h": {**SERVER, "colour": "red"}}}, "in sources.imap.h: colour"),
        ({"imap": {"store": SERVER}}, "sources.imap.store"),
        ({"default": "elsewhere"}, "sources.default"),
        ({"domains": {"example.org": "nowhere"}}, "sources.domains.'example.org'"),
        ({"users": {"bob": 3}}, "sources.users.bob"),
        ({"imap": []}, "sources.imap"),
        ({"extra": 1}, "in sources: extra"),
        ([], "sources must be a table"),
        ({"lease": 0.5}, "sources.lease"),
        ({"lease": True}, "sources.lease"),
        ({"lease": "30"}, "sources.lease"),
        ({"imap": {"h": {**SERVER, "sent_copy": "sieve"}}}, "sources.imap.h.sent_copy"),
        ({"imap": {"h": {**SERVER, "sent_copy": True}}}, "sources.imap.h.sent_copy"),
    ],
)
def test_mistakes_name_the_key(table: object, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        sources_from_dict(table)
    assert names in info.value.message
