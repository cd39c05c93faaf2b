"""Helpers for the provider tests: a config file naming a provider table, and a world whose
public address the test sets, with a clock that moves only when slept."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from natsync.ddns.providers.base import TxtPublisher
from natsync.ddns.settings import DdnsSettings, load_ddns
from natsync.ddns.sources import Observation, Source
from tests.ddns.servers import ACME_OWNER, Named, dig_values


class World:
    def __init__(self, address: str = "192.0.3.10", address6: str = "2a00:db8::10") -> None:
        self.address = address
        self.address6 = address6
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def observe(self, settings: DdnsSettings) -> list[Observation]:
        found = []
        for text in (self.address, self.address6):
            ip = ipaddress.ip_address(text)
            found.append(Observation(Source.STUN, "stun.test", ip.version, address=ip))
        return found

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def write_config(tmp_path: Path, ddns: str, table: str) -> Path:
    path = tmp_path / "natsync.toml"
    path.write_text(f'[server]\ndata_dir = "data"\n[ddns]\n{ddns}\n{table}\n')
    return path


def load(tmp_path: Path, ddns: str, table: str) -> DdnsSettings:
    return load_ddns(write_config(tmp_path, ddns, table))


def two_challenges(publisher: TxtPublisher, named: Named) -> None:
    """What DNS-01 needs of a TxtPublisher, checked at BIND with dig: two values at one owner
    (a name and its wildcard validate at the same owner), each served once added, removed one
    by one."""
    assert isinstance(publisher, TxtPublisher)
    publisher.add_txt(ACME_OWNER, "first")
    publisher.add_txt(ACME_OWNER, "second")
    assert dig_values(named, ACME_OWNER, "TXT") == {'"first"', '"second"'}
    publisher.remove_txt(ACME_OWNER, "first")
    assert dig_values(named, ACME_OWNER, "TXT") == {'"second"'}
    publisher.remove_txt(ACME_OWNER, "second")
    assert dig_values(named, ACME_OWNER, "TXT") == set()
