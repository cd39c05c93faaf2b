"""Sans-I/O decisions of the supervisor: when to restart a dead part, and what a reload of the
file changes (``now`` is always passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: A part that ran this long before dying counts as healthy: its next restart is immediate
#: again (a crash once a day is not a crash loop).
STABLE_AFTER = 30.0


@dataclass(slots=True)
class Backoff:
    """Restart delays of one part: ``first`` after a quick death, doubling up to ``most``,
    back to immediate after a run of STABLE_AFTER seconds (gunicorn/uvicorn restart workers
    the same way, minus the doubling that keeps a crash loop from eating a core)."""

    first: float = 1.0
    most: float = 60.0
    delay: float = 0.0
    started_at: float = 0.0
    restarts: int = 0

    def started(self, now: float) -> None:
        self.started_at = now

    def died(self, now: float) -> float:
        """Seconds to wait before the next start of a part that died at *now*."""
        self.restarts += 1
        if now - self.started_at >= STABLE_AFTER:
            self.delay = 0.0
        else:
            self.delay = self.first if self.delay == 0.0 else min(self.most, self.delay * 2)
        return self.delay


#: Which table each part reads: a reload restarts the parts whose tables changed.
PART_TABLES: dict[str, tuple[str, ...]] = {
    "tunnel": ("tunnel",),
    "server": ("server", "sources", "console"),
    "edge": ("edge", "server"),
    "ddns": ("ddns", "server"),
    "portmap": ("portmap", "server"),
    "cert": ("cert", "server", "admin"),
}
#: Settings a reload cannot change: they shape the supervisor itself (restart natsync run).
FIXED_ON_RELOAD = (("admin", "listen"), ("run", "log_format"), ("run", "log_level"))


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    restart: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    #: "table.key" settings that changed but only take effect when natsync run restarts.
    fixed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = field(default_factory=tuple)


def plan_reload(old: dict[str, Any], new: dict[str, Any], parts: tuple[str, ...]) -> ReloadPlan:
    """Compare two parsed files: which parts restart (their tables changed), start (table
    added), stop (table removed), and which settings wait for a full restart."""
    wanted_new = {p for p in PART_TABLES if p == "server" or p in new}
    restart, start, stop, unchanged = [], [], [], []
    for part, tables in PART_TABLES.items():
        running = part in parts
        if running and part not in wanted_new:
            stop.append(part)
        elif not running and part in wanted_new:
            start.append(part)
        elif running:
            if any(old.get(t) != new.get(t) for t in tables):
                restart.append(part)
            else:
                unchanged.append(part)
    processes_changed = old.get("run", {}).get("server_processes") != new.get("run", {}).get(
        "server_processes"
    )
    if processes_changed and "server" in parts and "server" not in restart:
        restart.append("server")
    fixed = [
        f"{table}.{key}"
        for table, key in FIXED_ON_RELOAD
        if old.get(table, {}).get(key) != new.get(table, {}).get(key)
    ]
    return ReloadPlan(tuple(restart), tuple(start), tuple(stop), tuple(fixed), tuple(unchanged))
