from __future__ import annotations

from pathlib import Path

import pytest

from natsync.ddns.history import KEEP_PER_RECORD, CheckEntry, History, UpdateEntry
from natsync.ddns.settings import DEFAULT_INTERVAL, DEFAULT_TTL, load_ddns, load_portmap
from natsync.ddns.sources import Source
from natsync.ddns.update import parse_key
from natsync.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text(text)
    return path


def test_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\ndata_dir = "state"\n[ddns]\nserver = "192.0.2.53:5353"\nzone = "example.test"\n'
        'names = ["eas.example.test"]\nkey_file = "ddns.key"\nsources = ["stun", "echo"]\n',
    )
    settings = load_ddns(path)
    assert settings.ttl == DEFAULT_TTL == 60
    assert settings.interval == DEFAULT_INTERVAL == 30
    assert settings.key_file == tmp_path / "ddns.key"
    assert settings.history_path == tmp_path / "state" / "ddns.db"
    assert settings.sources == (Source.STUN, Source.ECHO)
    assert (settings.server_host, settings.server_port) == ("192.0.2.53", 5353)


def test_no_file_means_defaults() -> None:
    assert load_ddns(None).names == ()
    assert load_portmap(None).method == "auto"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("ttl = 0", "ddns.ttl"),
        ("interval = -1", "ddns.interval"),
        ('sources = ["carrier-pigeon"]', "ddns.sources"),
        ("families = [5]", "ddns.families"),
        ('zone = "example.test"\nnames = ["eas.other.test"]', "not inside"),
        ('server = "ns:99999"', "port out of range"),
        # str.isdigit is true of "²" and of 5,000 digits; int() refuses both: a ConfigError
        ('server = "ns:5²"', "port is not a number"),
        (f'resolver = "ns:{"5" * 5000}"', "port out of range"),
        ('stun_servers = ["stun.example.net:x"]', "ddns.stun_servers"),
        ("bogus = 1", "unknown ddns setting"),
        ('ttl = "60"', "must be an integer"),
    ],
)
def test_bad_ddns_settings_name_the_setting(tmp_path: Path, table: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_ddns(write(tmp_path, f"[ddns]\n{table}\n"))


def test_bad_portmap_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"portmap\.method"):
        load_portmap(write(tmp_path, '[portmap]\nmethod = "pcp-maybe"\n'))
    with pytest.raises(ConfigError, match=r"portmap\.mappings"):
        load_portmap(write(tmp_path, '[portmap]\nmappings = ["443/sctp"]\n'))


def test_key_file_parsing_hides_the_secret() -> None:
    key = parse_key('key "k1" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0LXZhbHVl";\n};\n')
    assert key.name == "k1"
    assert key.secret == b"secret-value"
    assert "c2VjcmV0" not in repr(key)
    assert "secret-value" not in repr(key)
    with pytest.raises(ConfigError, match="not supported"):
        parse_key('key "k" { algorithm hmac-md5; secret "c2VjcmV0"; };')
    with pytest.raises(ConfigError, match="no key"):
        parse_key("nothing here")


def test_history_records_and_prunes(tmp_path: Path) -> None:
    with History(tmp_path / "d" / "ddns.db") as history:
        for i in range(KEEP_PER_RECORD + 5):
            history.record_update(
                UpdateEntry(
                    float(i),
                    "eas.example.test",
                    "A",
                    "",
                    f"192.0.3.{i % 250}",
                    "updated" if i % 2 else "unchanged",
                    "",
                )
            )
        history.record_update(
            UpdateEntry(999.0, "mail.example.test", "A", "", "x", "error", "boom")
        )
        assert len(history.updates("eas.example.test", "A", limit=10_000)) == KEEP_PER_RECORD
        last = history.last_update("eas.example.test", "A")
        assert last is not None
        assert last.at == KEEP_PER_RECORD + 4
        change = history.last_change("eas.example.test", "A")
        assert change is not None
        assert change.result == "updated"
        history.record_check(CheckEntry(4, 5.0, "cgnat", "", "summary", ("a", "b")))
        history.record_check(CheckEntry(4, 6.0, "agree", "192.0.3.1", "ok", ()))
    with History(tmp_path / "d" / "ddns.db") as again:
        check = again.last_check(4)
        assert check == CheckEntry(4, 6.0, "agree", "192.0.3.1", "ok", ())
        assert again.last_check(6) is None
        failed = again.last_change("mail.example.test", "A")
        assert failed is not None
        assert failed.detail == "boom"
