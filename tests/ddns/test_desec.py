"""The deSEC updater over HTTPS against tests/ddns/fake_desec.py (desec.readthedocs.io): token
auth, the domain's minimum TTL, bulk PATCH of RRsets, the apex, 429 with Retry-After, TXT for
DNS-01; confirmed through the API or at a real BIND the stand-in writes into."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import History
from natsync.ddns.providers import make_updater, txt_publisher
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings
from tests.ddns.fake_desec import DesecServer
from tests.ddns.fake_http import BindZone, MemoryZone, Running, serve
from tests.ddns.providers_common import World, load, two_challenges
from tests.ddns.servers import Named, dig

TOKEN = "i-T3b1h_OI-H9ab8tRS98stGtURe"


@pytest.fixture
def desec(tmp_path: Path) -> Iterator[tuple[DesecServer, Running]]:
    provider = DesecServer(MemoryZone(), TOKEN, {"example.test"})
    with serve(provider, tmp_path / "tls") as running:
        yield provider, running


def settings_for(
    tmp_path: Path, running: Running, *, token: str = TOKEN, confirm: str = "api", ddns: str = ""
) -> DdnsSettings:
    (tmp_path / "desec.token").write_text(token)
    return load(
        tmp_path,
        f'provider = "desec"\nnames = ["eas.example.test", "mail.example.test"]\n'
        f"confirm_timeout = 2\n{ddns}",
        f'[ddns.desec]\napi = "{running.url}/api/v1"\ntoken_file = "desec.token"\n'
        f'confirm = "{confirm}"\nca_file = "{running.ca_file}"\n',
    )


def test_update_uses_the_domain_minimum_ttl_and_is_not_repeated(
    desec: tuple[DesecServer, Running], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider, running = desec
    updater = make_updater(settings_for(tmp_path, running))
    with caplog.at_level(logging.WARNING):
        outcome = updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert outcome.result == "updated"
    assert outcome.ttl == 3600
    assert "deSEC's minimum TTL for example.test is 3600 s" in caplog.text
    (patch,) = provider.writes()
    assert patch.path == "/api/v1/domains/example.test/rrsets/"
    assert patch.body == [{"subname": "eas", "type": "A", "ttl": 3600, "records": ["192.0.3.10"]}]
    assert patch.headers["authorization"] == f"Token {TOKEN}"
    # the domain was found from the name (owns_qname), its minimum TTL read once
    assert [r.query for r in provider.requests if r.path == "/api/v1/domains/"] == [
        {"owns_qname": "eas.example.test"}
    ]
    assert updater.publish("eas.example.test", "A", "192.0.3.10", 60).result == "unchanged"
    assert len(provider.writes()) == 1


def test_a_lower_minimum_ttl_is_honoured(
    desec: tuple[DesecServer, Running], tmp_path: Path
) -> None:
    provider, running = desec
    provider.minimum_ttl = 60
    updater = make_updater(settings_for(tmp_path, running))
    assert updater.publish("mail.example.test", "AAAA", "2a00:db8::1", 60).ttl == 60
    assert provider.rrsets[("example.test", "mail", "AAAA")]["records"] == ["2a00:db8::1"]


def test_apex_is_subname_empty_and_at_in_urls(
    desec: tuple[DesecServer, Running], tmp_path: Path
) -> None:
    provider, running = desec
    updater = make_updater(settings_for(tmp_path, running))
    assert updater.publish("example.test", "A", "192.0.3.10", 3600).result == "updated"
    assert provider.writes()[0].body[0]["subname"] == ""
    assert any(r.path == "/api/v1/domains/example.test/rrsets/@/A/" for r in provider.requests)


def test_invalid_token_stops_until_the_configuration_changes(
    desec: tuple[DesecServer, Running], tmp_path: Path
) -> None:
    provider, running = desec
    world = World()
    settings = settings_for(tmp_path, running, token="wrong", ddns="families = [4]")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert [r.result for r in report.results] == ["error", "blocked"]
        assert "Invalid token." in report.results[0].detail
        count = len(provider.requests)
        world.now += 86_400
        assert {r.result for r in runner.update_once().results} == {"blocked"}
        assert len(provider.requests) == count


def test_throttled_write_waits_for_retry_after(
    desec: tuple[DesecServer, Running], tmp_path: Path
) -> None:
    provider, running = desec
    provider.write_limit = 0
    world = World()
    settings = settings_for(tmp_path, running, ddns="families = [4]")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert [r.result for r in report.results] == ["error", "blocked"]
        assert "throttled (HTTP 429); next request in 42 s" in report.results[0].detail
        count = len(provider.requests)
        world.now += 41
        assert {r.result for r in runner.update_once().results} == {"blocked"}
        assert len(provider.requests) == count
        provider.write_limit = 15
        world.now += 2
        assert {r.result for r in runner.update_once().results} == {"updated"}


def test_name_in_no_domain_of_the_account_is_fatal(
    desec: tuple[DesecServer, Running], tmp_path: Path
) -> None:
    provider, running = desec
    provider.domains = {"example.org"}
    updater = make_updater(settings_for(tmp_path, running))
    with pytest.raises(DnsUpdateError, match="no domain of this account holds") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 3600)
    assert caught.value.fatal


def test_field_error_is_reported(desec: tuple[DesecServer, Running], tmp_path: Path) -> None:
    _provider, running = desec
    updater = make_updater(settings_for(tmp_path, running))
    with pytest.raises(DnsUpdateError, match="less than or equal to 86400") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 90_000)
    assert caught.value.fatal


@pytest.fixture
def desec_bind(named_txt: Named, tmp_path: Path) -> Iterator[tuple[Named, DesecServer, Running]]:
    provider = DesecServer(BindZone(named_txt.server()), TOKEN, {"example.test"})
    with serve(provider, tmp_path / "tls") as running:
        yield named_txt, provider, running


def test_confirmed_at_the_authoritative_server(
    desec_bind: tuple[Named, DesecServer, Running], tmp_path: Path
) -> None:
    named, _provider, running = desec_bind
    settings = settings_for(
        tmp_path, running, confirm="dns", ddns=f'confirm_servers = ["{named.address}"]'
    )
    outcome = make_updater(settings).publish("mail.example.test", "A", "192.0.3.10", 60)
    assert outcome.old == {"192.0.2.1"}
    assert outcome.old_ttl == 300
    assert dig(named, "mail.example.test")[0].split()[1] == "3600"


def test_txt_values_for_dns01(
    desec_bind: tuple[Named, DesecServer, Running], tmp_path: Path
) -> None:
    named, provider, running = desec_bind
    settings = settings_for(
        tmp_path, running, confirm="dns", ddns=f'confirm_servers = ["{named.address}"]'
    )
    two_challenges(txt_publisher(settings), named)
    bodies = [r.body[0] for r in provider.writes()]
    assert [b["records"] for b in bodies] == [
        ['"first"'],
        ['"first"', '"second"'],
        ['"second"'],
        [],
    ]
    assert {b["ttl"] for b in bodies} == {3600}  # the domain's minimum TTL
    assert ("example.test", "_acme-challenge.eas", "TXT") not in provider.rrsets
