"""The Duck DNS updater over HTTPS against tests/ddns/fake_duckdns.py (www.duckdns.org/spec.jsp),
which writes into a real BIND serving duckdns.org: A and AAAA apart, OK/KO, no repeats, TXT for
DNS-01, confirmation at the authoritative server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import History
from natsync.ddns.providers import make_updater, txt_publisher
from natsync.ddns.providers.base import TxtPublisher
from natsync.ddns.providers.duckdns import parse_answer, subname
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings
from natsync.errors import ConfigError
from tests.ddns.fake_duckdns import DuckdnsServer
from tests.ddns.fake_http import BindZone, Running, serve
from tests.ddns.providers_common import World, load
from tests.ddns.servers import Named, dig, dig_values, run_named

TOKEN = "a7c4d0ad-114e-40ef-ba1d-d217904a50f2"
HOME = "myhome.duckdns.org"


@pytest.fixture
def duck_named(tmp_path: Path) -> Iterator[Named]:
    with run_named(
        tmp_path / "bind",
        zone="duckdns.org",
        updatable=(HOME, f"*.{HOME}", "other.duckdns.org"),
        txt=True,
    ) as server:
        yield server


@pytest.fixture
def duck(duck_named: Named, tmp_path: Path) -> Iterator[tuple[DuckdnsServer, Running]]:
    provider = DuckdnsServer(BindZone(duck_named.server()), TOKEN, {"myhome"})
    with serve(provider, tmp_path / "tls") as running:
        yield provider, running


def settings_for(
    tmp_path: Path, named: Named, running: Running, token: str = TOKEN, families: str = "[4, 6]"
) -> DdnsSettings:
    (tmp_path / "duck.token").write_text(token)
    return load(
        tmp_path,
        f'provider = "duckdns"\nnames = ["{HOME}"]\nfamilies = {families}\n'
        f'confirm_servers = ["{named.address}"]\nconfirm_timeout = 2\n',
        f'[ddns.duckdns]\nurl = "{running.url}/update"\ntoken_file = "duck.token"\n'
        f'ca_file = "{running.ca_file}"\n',
    )


def test_subname_of_a_duckdns_name() -> None:
    assert subname("myhome.duckdns.org.") == "myhome"
    assert subname("_acme-challenge.myhome.duckdns.org") == "myhome"
    with pytest.raises(DnsUpdateError):
        subname("example.org")


@pytest.mark.parametrize(
    ("body", "lines"),
    [(b"OK", ["OK"]), (b"OK\n192.0.3.10\n\nUPDATED", ["OK", "192.0.3.10", "", "UPDATED"])],
)
def test_ok_answers(body: bytes, lines: list[str]) -> None:
    assert parse_answer(body, "update") == lines


def test_ko_stops_until_the_configuration_changes() -> None:
    with pytest.raises(DnsUpdateError, match="KO") as caught:
        parse_answer(b"KO", "update")
    assert caught.value.fatal


def test_other_answers_are_retried() -> None:
    with pytest.raises(DnsUpdateError) as caught:
        parse_answer(b"<html>", "update")
    assert caught.value.retryable


def test_names_must_be_duckdns_names(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN)
    with pytest.raises(ConfigError, match=r"ddns.names: eas.example.org is not a duckdns.org"):
        load(
            tmp_path,
            'provider = "duckdns"\nnames = ["eas.example.org"]',
            '[ddns.duckdns]\ntoken_file = "t"',
        )


def test_a_then_aaaa_each_alone_and_confirmed(
    duck_named: Named, duck: tuple[DuckdnsServer, Running], tmp_path: Path
) -> None:
    provider, running = duck
    updater = make_updater(settings_for(tmp_path, duck_named, running))
    assert updater.publish(HOME, "A", "192.0.3.10", 60).result == "updated"
    first = provider.updates()[-1].query
    assert first["ip"] == "192.0.3.10"
    assert "ipv6" not in first
    outcome = updater.publish(HOME, "AAAA", "2a00:db8::10", 60)
    assert outcome.result == "updated"
    assert outcome.ttl == 60  # Duck DNS's own TTL, read where it is served
    second = provider.updates()[-1].query
    assert second["ipv6"] == "2a00:db8::10"
    assert "ip" not in second  # an empty ip would mean "detect": never sent
    assert dig_values(duck_named, HOME) == {"192.0.3.10"}
    assert dig_values(duck_named, HOME, "AAAA") == {"2a00:db8::10"}
    # nothing changed: nothing sent
    count = len(provider.updates())
    assert updater.publish(HOME, "A", "192.0.3.10", 60).result == "unchanged"
    assert len(provider.updates()) == count


def test_wrong_token_is_ko_and_stops_the_runner(
    duck_named: Named, duck: tuple[DuckdnsServer, Running], tmp_path: Path
) -> None:
    provider, running = duck
    world = World()
    settings = settings_for(tmp_path, duck_named, running, token="wrong")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert [r.result for r in report.results] == ["error", "blocked"]
        assert "token (ddns.duckdns.token) is wrong" in report.results[0].detail
        world.now += 3600
        assert {r.result for r in runner.update_once().results} == {"blocked"}
    assert len(provider.updates()) == 1
    assert dig_values(duck_named, HOME) == set()


def test_domain_not_in_the_account_is_ko(
    duck_named: Named, duck: tuple[DuckdnsServer, Running], tmp_path: Path
) -> None:
    _provider, running = duck
    updater = make_updater(settings_for(tmp_path, duck_named, running))
    with pytest.raises(DnsUpdateError, match="KO") as caught:
        updater.publish("other.duckdns.org", "A", "192.0.3.10", 60)
    assert caught.value.fatal


def test_txt_for_dns01_is_served_then_cleared(
    duck_named: Named, duck: tuple[DuckdnsServer, Running], tmp_path: Path
) -> None:
    provider, running = duck
    publisher = txt_publisher(settings_for(tmp_path, duck_named, running))
    assert isinstance(publisher, TxtPublisher)
    owner = f"_acme-challenge.{HOME}"
    publisher.add_txt(owner, "token-value-1")
    assert provider.updates()[-1].query["txt"] == "token-value-1"
    # Duck DNS serves its one TXT record at the domain and every name below it
    assert dig_values(duck_named, HOME, "TXT") == {'"token-value-1"'}
    assert dig_values(duck_named, owner, "TXT") == {'"token-value-1"'}
    # a value that is no longer there is not cleared (another challenge may own the record)
    count = len(provider.updates())
    publisher.remove_txt(owner, "old-value")
    assert len(provider.updates()) == count
    publisher.remove_txt(owner, "token-value-1")
    assert provider.updates()[-1].query["clear"] == "true"
    assert dig(duck_named, owner, "TXT") == []
