"""What all updaters share: the interface and TxtPublisher, RFC 2136 behind it (real BIND),
the provider tables (errors name the key, secrets from files, never shown), the NS lookup that
finds where a record is served, and the answer parsers (any bytes decode or raise our error)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import History
from natsync.ddns.provider_settings import CloudflareSettings, DesecSettings, Secret
from natsync.ddns.providers import Authoritative, DnsUpdater, make_updater, txt_publisher
from natsync.ddns.providers.base import HttpAnswer
from natsync.ddns.providers.cloudflare import CloudflareUpdater
from natsync.ddns.providers.desec import DesecUpdater
from natsync.ddns.providers.duckdns import parse_answer as duck_answer
from natsync.ddns.providers.dyndns2 import parse_answer as dyn_answer
from natsync.ddns.providers.rfc2136 import Rfc2136Updater
from natsync.ddns.runner import DdnsRunner
from natsync.errors import ConfigError
from tests.ddns.providers_common import World, load, two_challenges
from tests.ddns.servers import Named, run_named

# -- RFC 2136 behind the interface ---------------------------------------------------------


def rfc2136(tmp_path: Path, named: Named) -> str:
    return (
        f'server = "{named.address}"\nzone = "example.test"\n'
        f'names = ["eas.example.test", "mail.example.test"]\nkey_file = "{named.key_file}"\n'
    )


def test_rfc2136_is_the_default_provider_and_a_txt_publisher(
    named_txt: Named, tmp_path: Path
) -> None:
    settings = load(tmp_path, rfc2136(tmp_path, named_txt), "")
    updater = make_updater(settings)
    assert isinstance(updater, Rfc2136Updater)
    assert isinstance(updater, DnsUpdater)
    outcome = updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert (outcome.result, outcome.old_ttl, outcome.ttl) == ("updated", 300, 60)
    two_challenges(txt_publisher(settings), named_txt)


def test_refused_txt_is_an_error(named: Named, tmp_path: Path) -> None:
    publisher = txt_publisher(load(tmp_path, rfc2136(tmp_path, named), ""))
    with pytest.raises(DnsUpdateError, match="refused"):
        publisher.add_txt("_acme-challenge.www.example.test", "x")


def test_dyndns2_cannot_publish_txt(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw")
    settings = load(
        tmp_path,
        'provider = "dyndns2"\nnames = ["eas.example.test"]',
        '[ddns.dyndns2]\nurl = "https://dyn.example/nic/update"\nusername = "u"\n'
        'password_file = "pw"',
    )
    with pytest.raises(DnsUpdateError, match="cannot set TXT records"):
        txt_publisher(settings)


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ddns", "table", "message"),
    [
        ('provider = "nsone"', "", "ddns.provider must be one of"),
        ('provider = "dyndns2"', "", r"no \[ddns.dyndns2\] table"),
        ("", '[ddns.dyndns2]\nurl = "https://x/nic/update"\nusername = "u"', "password_file"),
        ("", '[ddns.dyndns2]\nurl = "ftp://x"\nusername = "u"\npassword = "p"', "ddns.dyndns2.url"),
        ("", '[ddns.dyndns2]\nurl = "https://x"\npassword = "p"', "ddns.dyndns2.username is req"),
        ("", '[ddns.duckdns]\ntoken = "t"\ntoken_file = "f"', "not both"),
        ("", '[ddns.duckdns]\ntoken_file = "missing"', r"ddns.duckdns.token_file: cannot read"),
        ("", '[ddns.cloudflare]\ntoken = "t"\nconfirm = "maybe"', "ddns.cloudflare.confirm"),
        ("", '[ddns.desec]\ntoken = "t"\ncolour = "blue"', "unknown ddns.desec setting"),
        ("", "[ddns.command]\nargv = []", "ddns.command.argv must be"),
        ("", '[ddns.command]\nargv = ["x"]\ntimeout = 9999', "ddns.command.timeout"),
        ('confirm_servers = ["h:x"]', "", "ddns.confirm_servers"),
        ("confirm_timeout = 0", "", "ddns.confirm_timeout"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, ddns: str, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, ddns, table)


def test_secret_file_is_read_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cf").write_text("  tok-123456  \n")
    settings = load(
        tmp_path,
        'provider = "cloudflare"\nnames = ["eas.example.test"]',
        '[ddns.cloudflare]\ntoken_file = "secrets/cf"',
    )
    table = settings.provider_settings()
    assert table.token.value == "tok-123456"  # type: ignore[union-attr]
    assert "tok-123456" not in repr(settings)
    assert "tok-123456" not in str(Secret("tok-123456"))
    assert "tok-123456" not in make_updater(settings).fingerprint()


def test_secret_file_with_more_than_a_token_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cf").write_text("token\nsecond line\n")
    with pytest.raises(ConfigError, match="alone on one line"):
        load(tmp_path, "", '[ddns.cloudflare]\ntoken_file = "cf"')


def test_secret_is_not_logged_on_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Duck DNS token travels in the URL: it stays out of logs and reports."""
    (tmp_path / "t").write_text("duck-secret-token")
    world = World()
    with (
        run_named(tmp_path / "bind", zone="duckdns.org", updatable=("x.duckdns.org",)) as named,
        caplog.at_level(logging.DEBUG),
    ):
        settings = load(
            tmp_path,
            f'provider = "duckdns"\nnames = ["x.duckdns.org"]\nfamilies = [4]\n'
            f'confirm_servers = ["{named.address}"]',
            '[ddns.duckdns]\ntoken_file = "t"\nurl = "https://127.0.0.1:9/update"\ntimeout = 1',
        )
        history = History(settings.history_path)
        report = DdnsRunner(
            settings, history, observe=world.observe, clock=world.clock, sleep=world.sleep
        ).update_once()
        history.close()
    assert not report.ok
    assert "cannot reach the provider" in report.results[0].detail
    assert "duck-secret-token" not in caplog.text
    assert "duck-secret-token" not in report.results[0].detail


def test_provider_picked_on_the_command_line_needs_its_table(tmp_path: Path) -> None:
    settings = load(tmp_path, 'names = ["eas.example.test"]', "")
    with pytest.raises(ConfigError, match=r"no \[ddns.desec\] table"):
        make_updater(settings, "desec")


# -- where records are served: NS lookup ------------------------------------------------------


def test_authoritative_servers_are_found_by_ns_lookup(tmp_path: Path) -> None:
    """The zone's NS record names ns1.example.test, whose A record is 127.0.0.1: natsync finds
    the zone, its NS, their addresses, and asks them directly."""
    with run_named(tmp_path / "bind", ns_address="127.0.0.1") as named:
        where = Authoritative(resolver=(named.host, named.port), port=named.port)
        assert where.servers_for("mail.example.test") == (("127.0.0.1", named.port),)
        served = where.read("mail.example.test", "A")
        assert served.values == {"192.0.2.1"}
        assert served.ttl == 300


def test_no_authoritative_server_is_a_clear_error() -> None:
    where = Authoritative(resolver=("127.0.0.1", 9), timeout=0.3)
    with pytest.raises(DnsUpdateError, match=r"set ddns\.confirm_servers"):
        where.servers_for("eas.example.test")


# -- parsers: any bytes decode or raise our error -------------------------------------------


@given(st.binary(max_size=300))
def test_dyndns2_answer_parser_never_raises_anything_else(body: bytes) -> None:
    with contextlib.suppress(DnsUpdateError):
        dyn_answer(body)


@given(st.binary(max_size=300))
def test_duckdns_answer_parser_never_raises_anything_else(body: bytes) -> None:
    with contextlib.suppress(DnsUpdateError):
        duck_answer(body, "update")


API_UPDATERS = (
    CloudflareUpdater(CloudflareSettings(Secret("t")), None),
    DesecUpdater(DesecSettings(Secret("t")), None),
)


@example(400, b"[" * 100_000, "")
@given(st.integers(100, 599), st.binary(max_size=300), st.text(max_size=20))
def test_api_answers_never_raise_anything_else(status: int, body: bytes, retry: str) -> None:
    answer = HttpAnswer(status, {"retry-after": retry}, body)
    for updater in API_UPDATERS:
        with contextlib.suppress(DnsUpdateError):
            updater.read_answer(answer, "fuzz")


def test_garbage_instead_of_http_is_our_error(tmp_path: Path, named: Named) -> None:
    """A server that answers with no HTTP at all: DnsUpdateError (retried), nothing foreign."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage() -> None:
        for _ in range(4):  # one per attempt
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")
            conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    (tmp_path / "pw").write_text("pw")
    settings = load(
        tmp_path,
        f'provider = "dyndns2"\nnames = ["mail.example.test"]\n'
        f'confirm_servers = ["{named.address}"]',
        f'[ddns.dyndns2]\nurl = "http://127.0.0.1:{listener.getsockname()[1]}/nic/update"\n'
        'username = "u"\npassword_file = "pw"',
    )
    slept: list[float] = []
    with pytest.raises(DnsUpdateError, match="cannot reach the provider") as caught:
        make_updater(settings, sleep=slept.append).publish(
            "mail.example.test", "A", "192.0.3.9", 60
        )
    assert caught.value.retryable
    assert len(slept) == 3
    thread.join(5)
    listener.close()
