"""The DDNS loop against a real BIND, with observations injected and time simulated."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace
from pathlib import Path

from natsync.ddns.history import History
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings
from natsync.ddns.sources import Observation, Source
from tests.ddns.servers import Named, dig_values, free_port


class World:
    """A public address that the test changes, and a clock that only moves when slept."""

    def __init__(self) -> None:
        self.address = "192.0.3.10"
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def observe(self, settings: DdnsSettings) -> list[Observation]:
        ip = ipaddress.ip_address(self.address)
        return [Observation(Source.STUN, "stun.test", ip.version, address=ip)]

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def settings_for(named: Named, tmp_path: Path, **changes: object) -> DdnsSettings:
    base = DdnsSettings(
        server=named.address,
        zone="example.test",
        names=("eas.example.test", "mail.example.test"),
        key_file=named.key_file,
        interval=30.0,
        families=(4,),
        data_dir=tmp_path / "data",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_update_once_publishes_every_name_and_records_history(named: Named, tmp_path: Path) -> None:
    world = World()
    settings = settings_for(named, tmp_path)
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert report.ok
        assert [(r.name, r.result) for r in report.results] == [
            ("eas.example.test", "updated"),
            ("mail.example.test", "updated"),
        ]
        assert dig_values(named, "mail.example.test") == {"192.0.3.10"}
        again = runner.update_once()
        assert [r.result for r in again.results] == ["unchanged", "unchanged"]
        change = history.last_change("mail.example.test", "A")
        assert change is not None
        assert (change.old, change.new, change.result) == ("192.0.2.1", "192.0.3.10", "updated")
        check = history.last_check(4)
        assert check is not None
        assert (check.kind, check.address) == ("agree", "192.0.3.10")


def test_loop_reacts_within_one_interval_and_mx_target_follows(
    named: Named, tmp_path: Path
) -> None:
    world = World()
    settings = settings_for(named, tmp_path)
    cycles: list[float] = []

    def on_cycle(report: object) -> None:
        cycles.append(world.now)
        if len(cycles) == 2:
            world.address = "192.0.3.11"  # the ISP renumbers right after the second check

    with History(settings.history_path) as history:
        runner = DdnsRunner(
            settings, history, observe=world.observe, clock=world.clock, sleep=world.sleep
        )
        runner.run(lambda: len(cycles) >= 3, on_cycle=on_cycle)
    # checks are one interval apart, so the change is published at the very next check
    assert [b - a for a, b in itertools.pairwise(cycles)] == [30.0, 30.0]
    (target,) = dig_values(named, "example.test", "MX")
    assert target == "mail.example.test."
    assert dig_values(named, target) == {"192.0.3.11"}


def test_persistent_failure_is_an_error_in_report_and_history(named: Named, tmp_path: Path) -> None:
    world = World()
    settings = settings_for(named, tmp_path, server=f"127.0.0.1:{free_port()}", timeout=0.5)
    with History(settings.history_path) as history:
        runner = DdnsRunner(
            settings,
            history,
            observe=world.observe,
            clock=world.clock,
            sleep=world.sleep,
            attempts=3,
            backoff_base=0.01,
        )
        report = runner.update_once()
        assert not report.ok
        assert {r.result for r in report.results} == {"error"}
        assert "cannot reach" in report.results[0].detail
        assert len(world.slept) == 4  # two retries for each of the two names
        last = history.last_change("eas.example.test", "A")
        assert last is not None
        assert last.result == "error"


def test_no_trustworthy_address_skips_and_keeps_the_record(named: Named, tmp_path: Path) -> None:
    world = World()
    world.address = "100.64.0.10"  # only a shared address is seen: carrier-grade NAT
    settings = settings_for(named, tmp_path)
    with History(settings.history_path) as history:
        report = DdnsRunner(
            settings, history, observe=world.observe, clock=world.clock
        ).update_once()
    (verdict,) = report.verdicts
    assert verdict.kind == "cgnat"
    assert {r.result for r in report.results} == {"skipped"}
    assert report.ok
    assert dig_values(named, "mail.example.test") == {"192.0.2.1"}
