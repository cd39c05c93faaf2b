"""`natsync lab scenario all` dispatches every scenario, in order, on one run, with a pass/fail
line for each and a summary, resets between them and takes the run down; one failing (or
stopping with a lab error) does not stop the others. The scenarios themselves run end to end in
test_scenarios.py; here they are fakes, so this needs neither root nor the lab."""

from __future__ import annotations

import json
import pkgutil
import subprocess
from typing import Any

import pytest
from click.testing import CliRunner

import natsync.cli.lab
import natsync.lab.scenarios as scenarios_pkg
from natsync.cli import main
from natsync.lab.errors import LabError
from natsync.lab.narrate import Narration


def test_the_registry_holds_every_scenario_module() -> None:
    modules = {
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(scenarios_pkg.__path__)
        if not m.name.startswith("_")
    }
    registered = scenarios_pkg.registry()
    assert set(registered) == modules
    assert next(iter(registered)) == "port-forward"
    assert all(doc.strip() for doc, _ in registered.values())


class FakeLab:
    closed = 0

    def close(self) -> None:
        FakeLab.closed += 1


class FakeWorld:
    def __init__(self, calls: list[str]) -> None:
        self.lab = FakeLab()
        self.calls = calls

    def reset(self) -> None:
        self.calls.append("reset")


def test_all_runs_every_scenario_and_narrates_pass_or_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = scenarios_pkg.registry()
    names = list(real)
    calls: list[str] = []

    def fake(name: str) -> Any:
        def run(world: FakeWorld, narr: Narration) -> None:
            calls.append(name)
            if name == names[1]:
                narr.expect("the fix works", expect_ok=True, seen_ok=False, detail="it did not")
            elif name == names[2]:
                raise LabError("the router would not start")
            elif name == names[3]:
                raise subprocess.TimeoutExpired(["dig"], 5)
            else:
                narr.expect("the failure shows", expect_ok=False, seen_ok=False)
                narr.expect("the fix works", expect_ok=True, seen_ok=True)

        return run

    monkeypatch.setattr(natsync.cli.lab, "_root", lambda: None)
    monkeypatch.setattr(natsync.cli.lab, "_build", lambda tag, owner_pid: FakeWorld(calls))
    monkeypatch.setattr(
        scenarios_pkg, "registry", lambda: {n: (doc, fake(n)) for n, (doc, _) in real.items()}
    )
    FakeLab.closed = 0
    done = CliRunner().invoke(main, ["lab", "scenario", "all", "--json"])
    assert done.exit_code == 1, done.output
    expected: list[str] = []
    for name in names:
        expected += [name, "reset"]
    assert calls == expected[:-1]  # reset between scenarios, not after the last
    assert FakeLab.closed == 1
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["scenario"] for r in results] == names
    assert [r["passed"] for r in results] == [n not in names[1:4] for n in names]
    assert results[2]["steps"][-1]["title"] == (
        "the scenario ran to the end: the router would not start"
    )
    assert results[3]["steps"][-1]["title"].startswith(
        "the scenario ran to the end: TimeoutExpired: Command '['dig']' timed out"
    )
    text = done.stderr
    for name in names:
        verdict = "FAIL" if name in names[1:4] else "PASS"
        assert f"{verdict} {name} in " in text
    assert f"{len(names) - 3}/{len(names)} scenarios passed" in text
