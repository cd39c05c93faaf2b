"""Which server the next exchange goes to, and which servers are healthy (sans-I/O).

The edge may stand in front of several natsync servers on one shared store (issue 11): any of
them can answer any request of any device. This module holds the decisions only — the I/O
(connecting, the periodic ``OPTIONS`` check) lives in :mod:`natsync.edge.pool` and
:mod:`natsync.edge.health`, which report what happened here and ask where to go next. Time is
an argument.

* **Choice**: the healthy server with the fewest exchanges in flight (held Pings count, so a
  server that holds many is not given more), ties taken in turn.
* **Passive**: a server that refuses a connection, does not finish TCP + TLS in time or
  presents the wrong certificate is out at once (:meth:`Balancer.unreachable`); the caller
  then tries the next one, which is safe because not one byte of the request reached a server.
  A server that breaks a request it had (502) counts as one failed check.
* **Active**: ``fall`` failed checks in a row take a server out; ``rise`` good ones in a row
  put it back. A server that answers a real exchange is back at once.
* When every server is out, they are all still offered (longest-out last): the one that came
  back first answers, rather than the phone getting a 503 while a check is pending.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from natsync.edge.config import split_hostport


@dataclass(slots=True)
class Server:
    """One server and what the edge knows about its health."""

    address: str
    host: str
    port: int
    up: bool = True
    #: Failed checks in a row (passive 502s count too).
    fails: int = 0
    #: Good checks in a row while out.
    passes: int = 0
    #: Exchanges in flight on it now.
    active: int = 0
    #: When it went out (loop time), 0 while up.
    down_since: float = 0.0
    #: Why it went out last (for the log and /metrics readers).
    reason: str = ""


class Balancer:
    """Health and choice over a fixed list of servers."""

    __slots__ = ("_turn", "fall", "rise", "servers")

    def __init__(self, addresses: Iterable[str], *, fall: int, rise: int) -> None:
        self.servers = [Server(a, *split_hostport(a, "edge.backends")) for a in addresses]
        self.fall = fall
        self.rise = rise
        self._turn = 0

    def candidates(self, tried: Iterable[Server] = ()) -> list[Server]:
        """Servers to try, best first: healthy ones by load (ties in turn), then the ones out."""
        skip = set(map(id, tried))
        count = len(self.servers)
        start = self._turn % count
        self._turn += 1
        ordered = [self.servers[(start + i) % count] for i in range(count)]
        ordered = [s for s in ordered if id(s) not in skip]
        healthy = sorted((s for s in ordered if s.up), key=lambda s: s.active)
        out = sorted((s for s in ordered if not s.up), key=lambda s: -s.down_since)
        return healthy + out

    def choose(self, tried: Iterable[Server] = ()) -> Server | None:
        found = self.candidates(tried)
        return found[0] if found else None

    def unreachable(self, server: Server, now: float, reason: str) -> bool:
        """Connect, TLS or certificate failure: out at once. True when this took it out."""
        server.fails += 1
        server.passes = 0
        return self._take_out(server, now, reason)

    def check_failed(self, server: Server, now: float, reason: str) -> bool:
        """A failed active check or a broken exchange. True when this took it out."""
        server.fails += 1
        server.passes = 0
        if server.fails >= self.fall:
            return self._take_out(server, now, reason)
        return False

    def check_passed(self, server: Server) -> bool:
        """A good active check. True when this put the server back."""
        server.fails = 0
        if server.up:
            return False
        server.passes += 1
        if server.passes >= self.rise:
            return self._put_back(server)
        return False

    def answered(self, server: Server) -> bool:
        """A real exchange reached it (connected and verified): back at once when it was out."""
        server.fails = 0
        return self._put_back(server) if not server.up else False

    def _take_out(self, server: Server, now: float, reason: str) -> bool:
        server.reason = reason
        if not server.up:
            return False
        server.up = False
        server.down_since = now
        return True

    def _put_back(self, server: Server) -> bool:
        server.up = True
        server.passes = 0
        server.down_since = 0.0
        return True
