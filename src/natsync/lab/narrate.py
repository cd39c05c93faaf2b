"""The scenarios' narration: each step says what it expects (the failure first, then the fix
working), what was seen, and whether that matched. Steps are kept as data, so tests assert on
them and the CLI renders them (rich) as they happen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    #: True: this step shows something working; False: it shows the article's failure.
    expect_ok: bool
    #: What the lab saw working (True) or failing (False).
    seen_ok: bool
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.expect_ok == self.seen_ok


@dataclass(slots=True)
class Narration:
    """The steps of one scenario; ``on_step`` shows each one as it happens."""

    scenario: str
    steps: list[Step] = field(default_factory=list)
    #: Doctor reports by label, for the tests to assert on (the real `--json` output).
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_step: Callable[[Step], None] | None = None
    on_note: Callable[[str], None] | None = None

    def expect(self, title: str, *, expect_ok: bool, seen_ok: bool, detail: str = "") -> Step:
        step = Step(title, expect_ok, seen_ok, detail)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    def note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.passed for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "steps": [
                {
                    "title": s.title,
                    "expect": "works" if s.expect_ok else "fails",
                    "seen": "works" if s.seen_ok else "fails",
                    "passed": s.passed,
                    "detail": s.detail,
                }
                for s in self.steps
            ],
        }
