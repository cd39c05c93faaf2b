"""What a supervisor hands :func:`natsync.console.start_console`: its processes and its
servers' held Pings (exact, where the store's record only says what the phone last did)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natsync.console.status import ProcessState

if TYPE_CHECKING:
    from natsync.server import RunningServer


def _none() -> list[ProcessState]:
    return []


@dataclass(slots=True)
class SupervisorSource:
    """A :class:`natsync.console.StatusSource` over the servers a supervisor runs in its own
    process, and a callable that says how its processes are (name, running, detail)."""

    servers: Sequence[RunningServer] = ()
    list_processes: Callable[[], list[ProcessState]] = field(default=_none)

    def processes(self) -> list[ProcessState]:
        return self.list_processes()

    def held_devices(self) -> frozenset[tuple[int, str]] | None:
        if not self.servers:
            return None
        held: set[tuple[int, str]] = set()
        for server in self.servers:
            held |= server.eas.held_devices()
        return frozenset(held)

    def metrics_text(self) -> str | None:
        """The servers' own /metrics text, read in process (None: no server here); the Live
        page charts it as it would charts a scraped /metrics."""
        if not self.servers:
            return None
        return "".join(s.eas.metrics.render(len(s.eas.held_devices())) for s in self.servers)
