"""The supervisor's parts as a file others can read: ``DATA_DIR/run/status.json``.

`natsync run` looks every :data:`PUBLISH_EVERY` seconds and writes it when something changed (a
part started, died, came back), and once more when it stops (each write replaces the file
whole: a reader never sees half of one). The console reads it — it runs
inside the first server process, a child that cannot ask its parent — and shows each part's
name, PID, state, restarts and uptime on its Status page; a console started on its own on the
same data directory reads the same file.

:func:`describe` is pure (``now`` passed in); :func:`write_status` and :func:`read_status` are
the I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

#: Where, under the data directory.
STATUS_FILE = Path("run") / "status.json"
#: Seconds between looks: the console shows a part's death this late at most.
PUBLISH_EVERY = 2.0


class _Proc(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...


class _Backoff(Protocol):
    started_at: float
    restarts: int


class _Child(Protocol):
    """What :class:`natsync.run.supervisor.Child` offers (read only)."""

    kind: str
    index: int
    wanted: bool

    @property
    def backoff(self) -> _Backoff: ...
    @property
    def name(self) -> str: ...
    @property
    def proc(self) -> _Proc | None: ...
    @property
    def ready(self) -> Any: ...


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def part_state(child: _Child, stopping: bool) -> tuple[str, int | None]:
    """(state, exit status): starting / running / restarting / stopped."""
    proc = child.proc
    if proc is None:
        return "not started", None
    code = proc.returncode
    if code is None:
        ready = child.ready
        up = ready is not None and ready.done() and not ready.cancelled() and not ready.exception()
        return ("running" if up else "starting"), None
    if child.wanted and not stopping:
        return "restarting", code
    return "stopped", code


def describe(
    children: Iterable[_Child], pid: int, started_at: float, stopping: bool, stopped: bool,
    now: float, monotonic_now: float,
) -> dict[str, Any]:  # fmt: skip
    """The status document: the supervisor (*pid*, *started_at* wall clock) and each part.
    A part's start time comes from its backoff's monotonic start (``monotonic_now`` maps it to
    the wall clock *now*)."""
    parts = []
    for child in children:
        state, code = part_state(child, stopping)
        started = None
        if child.proc is not None and child.backoff.started_at:
            started = _iso(now - (monotonic_now - child.backoff.started_at))
        parts.append({
            "name": child.name, "kind": child.kind, "index": child.index,
            "pid": child.proc.pid if child.proc is not None else None,
            "state": state, "exit_status": code, "restarts": child.backoff.restarts,
            "started_at": started,
        })  # fmt: skip
    state = "stopped" if stopped else "stopping" if stopping else "running"
    supervisor = {"pid": pid, "state": state, "started_at": _iso(started_at), "at": _iso(now)}
    return {"supervisor": supervisor, "parts": parts}


def write_status(data_dir: Path, doc: Mapping[str, Any]) -> None:
    """Replace DATA_DIR/run/status.json with *doc* (OSError: the caller says so)."""
    path = data_dir / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)


class StatusWriter:
    """Writes the document only when it changed (besides its "at"): the file is not rewritten
    every few seconds for nothing — a home server's SD card wears with every write."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = ""

    def write(self, data_dir: Path, doc: Mapping[str, Any]) -> bool:
        """Write *doc* if it differs from the last one written; whether it did."""
        same = {**doc, "supervisor": {**doc.get("supervisor", {}), "at": ""}}
        key = json.dumps(same, sort_keys=True)
        if key == self._last:
            return False
        write_status(data_dir, doc)
        self._last = key
        return True


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The last document written, or None (no file, or not one of ours)."""
    try:
        doc = json.loads((data_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("supervisor"), dict):
        return None
    if not isinstance(doc.get("parts"), list):
        return None
    return doc


def alive(pid: object) -> bool:
    """Whether a process with this PID exists (the supervisor that wrote the file)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
