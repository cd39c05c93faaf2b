"""Behind a relay, DNS names the relay: the ``relay`` source (the default when the deployment
has a [tunnel] table) publishes the relay's public address, to a real BIND, whatever the home's
own sources see; a relay without IPv6 leaves AAAA to them; an unknown relay address publishes
nothing rather than the home's."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from natsync.ddns.agreement import VerdictKind, judge
from natsync.ddns.history import History
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings, load_ddns
from natsync.ddns.sources import Observation, Source, from_relay, gather
from natsync.errors import ConfigError
from natsync.relay.wireguard import generate_private_key, public_key
from tests.ddns.servers import Named, dig_values

RELAY4, RELAY6 = "203.0.113.10", "2001:db8:77::10"
HOME4, HOME6 = "100.64.0.10", "2a01:4f8:c0c:1::20"  # STUN refuses a reserved IPv6


def _deployment(tmp_path: Path, named: Named | None, ddns: str = "", endpoint: str = "") -> Path:
    server = named.address if named else "127.0.0.1:53"
    key = named.key_file if named else tmp_path / "ddns.key"
    path = tmp_path / "natsync.toml"
    path.write_text(
        f"""[ddns]
server = "{server}"
zone = "example.test"
names = ["eas.example.test", "mail.example.test"]
key_file = "{key}"
families = [4, 6]
data_dir = "{tmp_path / "data"}"
{ddns}
[tunnel]
relay_endpoint = "{endpoint or RELAY4}:51820"
relay_public_key = "{public_key(generate_private_key())}"
private_key_file = "tunnel.key"
"""
    )
    return path


def test_a_tunnel_makes_the_relay_the_source(tmp_path: Path) -> None:
    settings = load_ddns(_deployment(tmp_path, None))
    assert settings.sources == (Source.RELAY,)
    assert settings.relay == (RELAY4,)
    # written sources are kept; the relay named in [ddns] wins over the tunnel's endpoint
    mixed = load_ddns(
        _deployment(tmp_path, None, f'sources = ["relay", "stun"]\nrelay = ["{RELAY6}"]')
    )
    assert mixed.sources == (Source.RELAY, Source.STUN)
    assert mixed.relay == (RELAY6,)


def test_relay_mistakes_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the relay is not known"):
        DdnsSettings(names=("eas.example.test",), sources=(Source.RELAY,))
    with pytest.raises(ConfigError, match="a name ddns itself publishes"):
        load_ddns(_deployment(tmp_path, None, endpoint="eas.example.test"))


def test_relay_addresses_by_family_names_resolved() -> None:
    (four,) = from_relay(("localhost",), (4,))
    assert four.address == ipaddress.ip_address("127.0.0.1")
    assert four.via == "localhost"
    (only4, no6) = from_relay((RELAY4,), (4, 6))
    assert str(only4.address) == RELAY4
    assert no6.address is None
    assert "no IPv6 address" in no6.error
    (lost,) = from_relay(("relay.invalid",), (4,))
    assert lost.address is None
    assert "does not resolve" in lost.error


def test_the_relay_wins_over_the_homes_carrier_grade_address() -> None:
    home = [
        Observation(Source.NATPMP, "192.168.1.1", 4, address=ipaddress.ip_address(HOME4)),
        Observation(Source.STUN, "stun.test", 4, address=ipaddress.ip_address("198.51.100.1")),
    ]
    verdict = judge([*home, *from_relay((RELAY4,), (4,))], 4)
    assert verdict.kind == VerdictKind.AGREE
    assert str(verdict.address) == RELAY4
    assert "the relay's public address" in verdict.summary
    assert any("natpmp" in line for line in verdict.evidence)  # the home's view stays evidence


def test_bind_gets_the_relays_a_and_aaaa(named: Named, tmp_path: Path) -> None:
    """The deployment's file as `natsync run` reads it, the real sources, a real BIND."""
    path = _deployment(tmp_path, named, f'relay = ["{RELAY4}", "{RELAY6}"]')
    settings = load_ddns(path)
    with History(settings.history_path) as history:
        report = DdnsRunner(settings, history).update_once()
    assert report.ok, report
    for name in ("eas.example.test", "mail.example.test"):
        assert dig_values(named, name) == {RELAY4}
        assert dig_values(named, name, "AAAA") == {RELAY6}


def test_an_ipv4_relay_leaves_aaaa_to_the_homes_ipv6(named: Named, tmp_path: Path) -> None:
    """A relay for IPv4 and the home's own IPv6 (a pinhole): A → relay, AAAA → home."""
    path = _deployment(tmp_path, named, 'sources = ["relay", "stun"]')
    settings = load_ddns(path)

    def observe(s: DdnsSettings) -> list[Observation]:
        home6 = Observation(Source.STUN, "stun6.test", 6, address=ipaddress.ip_address(HOME6))
        return [*gather(s), home6]

    with History(settings.history_path) as history:
        report = DdnsRunner(settings, history, observe=observe).update_once()
    assert report.ok, report
    assert dig_values(named, "eas.example.test") == {RELAY4}
    assert dig_values(named, "eas.example.test", "AAAA") == {HOME6}


def test_an_unknown_relay_publishes_nothing(named: Named, tmp_path: Path) -> None:
    """The relay's name does not resolve: the home's address is not published in its place."""
    path = _deployment(tmp_path, named, 'sources = ["relay", "stun"]\nrelay = ["relay.invalid"]')
    settings = load_ddns(path)
    before = dig_values(named, "mail.example.test")

    def observe(s: DdnsSettings) -> list[Observation]:
        home = Observation(Source.STUN, "stun.test", 4, address=ipaddress.ip_address(HOME4))
        return [*gather(s), home]

    with History(settings.history_path) as history:
        report = DdnsRunner(settings, history, observe=observe).update_once()
    assert {r.result for r in report.results} == {"skipped"}
    assert "could not be found" in report.results[0].detail
    assert dig_values(named, "mail.example.test") == before
