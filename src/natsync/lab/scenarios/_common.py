"""What the scenarios share: a step decided by one of the doctor's findings."""

from __future__ import annotations

from typing import Any

from natsync.lab.narrate import Narration
from natsync.lab.world import finding


def doctor_step(
    narr: Narration,
    key: str,
    report: dict[str, Any],
    title: str,
    check: str,
    title_start: str = "",
    *,
    expect_ok: bool,
    cause: bool = False,
) -> dict[str, Any] | None:
    """A step decided by one of the doctor's findings: the doctor's *report* is kept in the
    narration's reports under *key*, and the step works when the finding (``check``, title
    starting so) is ok and fails when it is a failure; its detail is the doctor's own title
    (and cause). The finding is returned for steps that read its data."""
    narr.reports[key] = report
    found = finding(report, check, title_start)
    if found is None:
        detail = f"no {check} finding"
    else:
        detail = found["title"] + (f" — {found['cause']}" if cause and found["cause"] else "")
    seen_ok = found is not None and found["severity"] == "ok"
    if not expect_ok:  # a failure shows only when the doctor really names it
        seen_ok = found is None or found["severity"] != "fail"
    narr.expect(title, expect_ok=expect_ok, seen_ok=seen_ok, detail=detail)
    return found
