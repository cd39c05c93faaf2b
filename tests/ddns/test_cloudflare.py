"""The Cloudflare updater over HTTPS against tests/ddns/fake_cloudflare.py (API v4 as documented
at developers.cloudflare.com/api): zone lookup, create / patch, A and AAAA, TTL (1 = automatic,
60..86400), proxied false, the errors array, 429 with Retry-After, TXT for DNS-01; confirmed
through the API or at a real BIND the stand-in writes into."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import History
from natsync.ddns.providers import make_updater, txt_publisher
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings
from natsync.errors import ConfigError
from tests.ddns.fake_cloudflare import CloudflareServer
from tests.ddns.fake_http import BindZone, MemoryZone, Running, serve
from tests.ddns.providers_common import World, load, two_challenges
from tests.ddns.servers import Named, dig

TOKEN = "cf-scoped-token-0123456789"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.fixture
def cf(tmp_path: Path) -> Iterator[tuple[CloudflareServer, Running]]:
    provider = CloudflareServer(MemoryZone(), TOKEN, {"example.test": ZONE_ID})
    with serve(provider, tmp_path / "tls") as running:
        yield provider, running


def settings_for(
    tmp_path: Path,
    running: Running,
    *,
    token: str = TOKEN,
    confirm: str = "api",
    ddns: str = "",
) -> DdnsSettings:
    (tmp_path / "cf.token").write_text(token)
    return load(
        tmp_path,
        f'provider = "cloudflare"\nnames = ["eas.example.test", "mail.example.test"]\n'
        f"confirm_timeout = 2\n{ddns}",
        f'[ddns.cloudflare]\napi = "{running.url}/client/v4"\ntoken_file = "cf.token"\n'
        f'confirm = "{confirm}"\nca_file = "{running.ca_file}"\n',
    )


def test_record_is_created_then_left_alone(
    cf: tuple[CloudflareServer, Running], tmp_path: Path
) -> None:
    provider, running = cf
    updater = make_updater(settings_for(tmp_path, running))
    outcome = updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert outcome.result == "updated"
    assert outcome.old == frozenset()
    assert outcome.ttl == 60
    (created,) = provider.writes()
    assert created.method == "POST"
    assert created.body == {
        "type": "A",
        "name": "eas.example.test",
        "content": "192.0.3.10",
        "ttl": 60,
        "proxied": False,
    }
    assert created.headers["authorization"] == f"Bearer {TOKEN}"
    # the zone was found by walking up from the name
    lookups = [r.query["name"] for r in provider.requests if r.path.endswith("/zones")]
    assert lookups == ["eas.example.test", "example.test"]
    assert updater.publish("eas.example.test", "A", "192.0.3.10", 60).result == "unchanged"
    assert len(provider.writes()) == 1


def test_existing_record_is_patched_and_extra_ones_removed(
    cf: tuple[CloudflareServer, Running], tmp_path: Path
) -> None:
    provider, running = cf
    updater = make_updater(settings_for(tmp_path, running))
    updater.publish("mail.example.test", "AAAA", "2a00:db8::1", 60)
    zid = ZONE_ID
    # someone added a second AAAA by hand (a round robin)
    provider.handle(
        type(provider.requests[0])(
            "POST",
            f"/client/v4/zones/{zid}/dns_records",
            {},
            {"authorization": f"Bearer {TOKEN}"},
            {"type": "AAAA", "name": "mail.example.test", "content": "2a00:db8::2", "ttl": 60},
        )
    )
    outcome = updater.publish("mail.example.test", "AAAA", "2a00:db8::3", 120)
    assert outcome.result == "updated"
    assert outcome.old == {"2a00:db8::1", "2a00:db8::2"}
    assert outcome.old_ttl == 60
    methods = [r.method for r in provider.writes()[-2:]]
    assert methods == ["PATCH", "DELETE"]
    (left,) = provider.records.values()
    assert (left["content"], left["ttl"], left["proxied"]) == ("2a00:db8::3", 120, False)


def test_ttl_outside_cloudflare_range_is_refused_naming_the_key(
    cf: tuple[CloudflareServer, Running], tmp_path: Path
) -> None:
    _provider, running = cf
    with pytest.raises(ConfigError, match=r"ddns.ttl 30: Cloudflare takes 1 \(automatic\)"):
        settings_for(tmp_path, running, ddns="ttl = 30")
    assert settings_for(tmp_path, running, ddns="ttl = 1").ttl == 1
    assert settings_for(tmp_path, running, ddns="ttl = 86400").ttl == 86400


def test_invalid_token_stops_until_the_configuration_changes(
    cf: tuple[CloudflareServer, Running], tmp_path: Path
) -> None:
    provider, running = cf
    world = World()
    settings = settings_for(tmp_path, running, token="wrong", ddns="families = [4]")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert [r.result for r in report.results] == ["error", "blocked"]
        assert "9109: Invalid access token" in report.results[0].detail
        assert "Zone:Read and DNS:Edit" in report.results[0].detail
        count = len(provider.requests)
        world.now += 86_400
        assert {r.result for r in runner.update_once().results} == {"blocked"}
        assert len(provider.requests) == count
        good = settings_for(tmp_path, running, ddns="families = [4]")
        report = DdnsRunner(good, history, observe=world.observe, clock=world.clock).update_once()
        assert report.ok


def test_rate_limit_waits_as_told(cf: tuple[CloudflareServer, Running], tmp_path: Path) -> None:
    provider, running = cf
    provider.limit = 0
    provider.retry_after = 120
    world = World()
    settings = settings_for(tmp_path, running, ddns="families = [4]")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert [r.result for r in report.results] == ["error", "blocked"]
        assert "throttled (HTTP 429); next request in 120 s" in report.results[0].detail
        assert len(provider.requests) == 1
        world.now += 119
        assert {r.result for r in runner.update_once().results} == {"blocked"}
        assert len(provider.requests) == 1
        provider.limit = 1200
        world.now += 2
        assert {r.result for r in runner.update_once().results} == {"updated"}


def test_api_errors_array_is_reported(cf: tuple[CloudflareServer, Running], tmp_path: Path) -> None:
    _provider, running = cf
    updater = make_updater(settings_for(tmp_path, running))
    with pytest.raises(DnsUpdateError, match="9005: Content for A record is invalid") as caught:
        updater.publish("eas.example.test", "A", "2a00:db8::1", 60)
    assert caught.value.fatal


def test_server_error_is_retried(cf: tuple[CloudflareServer, Running], tmp_path: Path) -> None:
    provider, running = cf
    provider.fail_next = [502]
    slept: list[float] = []
    updater = make_updater(settings_for(tmp_path, running), sleep=slept.append)
    outcome = updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert outcome.result == "updated"
    assert outcome.attempts == 2
    assert len(slept) == 1


def test_unknown_zone_is_fatal(cf: tuple[CloudflareServer, Running], tmp_path: Path) -> None:
    provider, running = cf
    provider.zones = {"example.org": ZONE_ID}
    updater = make_updater(settings_for(tmp_path, running))
    with pytest.raises(DnsUpdateError, match="no zone of this token holds") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal


# -- with BIND behind the stand-in: confirmation at the authoritative server ----------------


@pytest.fixture
def cf_bind(named_txt: Named, tmp_path: Path) -> Iterator[tuple[Named, CloudflareServer, Running]]:
    provider = CloudflareServer(BindZone(named_txt.server()), TOKEN, {"example.test": ZONE_ID})
    with serve(provider, tmp_path / "tls") as running:
        yield named_txt, provider, running


def test_automatic_ttl_is_confirmed_at_the_authoritative_server(
    cf_bind: tuple[Named, CloudflareServer, Running], tmp_path: Path
) -> None:
    named, provider, running = cf_bind
    settings = settings_for(
        tmp_path, running, confirm="dns", ddns=f'ttl = 1\nconfirm_servers = ["{named.address}"]'
    )
    updater = make_updater(settings)
    outcome = updater.publish("mail.example.test", "A", "192.0.3.10", settings.ttl)
    assert outcome.result == "updated"
    assert outcome.old_ttl == 300
    assert outcome.ttl == 300  # "automatic" as served
    assert dig(named, "mail.example.test")[0].split()[1] == "300"
    writes = len(provider.writes())
    assert updater.publish("mail.example.test", "A", "192.0.3.10", 1).result == "unchanged"
    assert len(provider.writes()) == writes


def test_txt_values_for_dns01_coexist_and_are_removed_one_by_one(
    cf_bind: tuple[Named, CloudflareServer, Running], tmp_path: Path
) -> None:
    named, _provider, running = cf_bind
    settings = settings_for(
        tmp_path, running, confirm="dns", ddns=f'confirm_servers = ["{named.address}"]'
    )
    two_challenges(txt_publisher(settings), named)
