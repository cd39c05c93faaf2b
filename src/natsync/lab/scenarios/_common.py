"""What the scenarios share: a step decided by one of the doctor's findings, one decided by a
phone's sync, and the last step that stops `natsync run`."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

from natsync.lab.narrate import Narration
from natsync.lab.runner import Lab
from natsync.lab.world import finding

#: Seconds `natsync run` may take to stop after SIGTERM (its parts remove what they hold first:
#: router mappings, held connections).
STOP = 30.0


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


def sync_step(narr: Narration, title: str, synced: dict[str, Any], *, expect_ok: bool) -> None:
    """A step decided by a phone's sync (*synced*: ``World.phone_sync``'s answer): it works when
    the phone synced. Its detail is the address dialled, and why it failed (a failure that
    was expected shows both)."""
    dialled = f"dialled {synced.get('address')}"
    narr.expect(
        title,
        expect_ok=expect_ok,
        seen_ok=bool(synced.get("ok")),
        detail=synced.get("error", dialled)
        if expect_ok
        else f"{dialled}: {synced.get('error', '')}",
    )


def stop_step(
    narr: Narration,
    lab: Lab,
    proc: subprocess.Popen[bytes],
    title: str,
    detail: Callable[[int | None], str] = lambda code: f"exit {code}",
) -> int | None:
    """The step that stops `natsync run` (*proc*) with SIGTERM: it works when the process exits
    0 within :data:`STOP` seconds (else it is killed). *detail* says what was seen, from the
    exit code (None: killed). The exit code is returned."""
    proc.send_signal(signal.SIGTERM)
    code: int | None
    try:
        code = proc.wait(STOP)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    lab.forget(proc)
    narr.expect(title, expect_ok=True, seen_ok=code == 0, detail=detail(code))
    return code
