"""The edge's I/O side of server health: the periodic ``OPTIONS`` check, and what happens when
a server goes out or comes back (the decisions are :mod:`natsync.edge.balance`'s).

Runs only with several servers (issue 11): each ``health_interval`` every server gets an
``OPTIONS health_path`` over a verified TLS connection of its own; an answer below 500 within
``health_timeout`` is a good check. Exchanges report too: a refused or failed connection
(:meth:`Health.unreachable`), a broken exchange (:meth:`Health.broke`), a whole answer
(:meth:`Health.answered`). A server going out closes its idle pooled connections, so no new
request is sent on a connection to a server known to be out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable

from natsync.edge.balance import Balancer, Server
from natsync.edge.config import EdgeConfig
from natsync.edge.tls import BackendCertError, BackendTrust

log = logging.getLogger("natsync.edge")


class Health:
    """Reports on the servers' health to the balancer and logs their changes."""

    __slots__ = ("balancer", "clock", "config", "on_out")

    def __init__(
        self,
        config: EdgeConfig,
        balancer: Balancer,
        clock: Callable[[], float],
        on_out: Callable[[Server], None],
    ) -> None:
        self.config = config
        self.balancer = balancer
        self.clock = clock
        #: Called when a server goes out (closes its pooled connections).
        self.on_out = on_out

    def unreachable(self, server: Server, reason: str) -> None:
        """Connecting to *server* failed (refused, timed out, TLS or certificate)."""
        if self.balancer.unreachable(server, self.clock(), reason):
            self._log(server)

    def broke(self, server: Server, reason: str) -> None:
        """A server broke an exchange it had (counts as a failed check)."""
        if self.balancer.check_failed(server, self.clock(), reason):
            self._log(server)

    def answered(self, server: Server) -> None:
        """A new connection to *server* was made and verified."""
        if self.balancer.answered(server):
            self._log(server)

    def _log(self, server: Server) -> None:
        if len(self.balancer.servers) == 1:
            return  # one server: the per-request errors say it all
        up = sum(s.up for s in self.balancer.servers)
        total = len(self.balancer.servers)
        if server.up:
            log.warning("server %s is back (%d of %d up)", server.address, up, total)
        else:
            log.error(
                "server %s is out: %s (%d of %d up)", server.address, server.reason, up, total
            )
            self.on_out(server)

    async def run(self, servers: Iterable[tuple[Server, BackendTrust]]) -> None:
        """Check every server each health_interval (several servers only; see balance.py)."""
        targets = list(servers)
        interval = self.config.health_interval
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            await asyncio.gather(*(self.check(server, trust) for server, trust in targets))
            next_round += interval
            await asyncio.sleep(max(0.0, next_round - loop.time()))

    async def check(self, server: Server, trust: BackendTrust) -> None:
        """OPTIONS health_path over a verified TLS connection; below 500 in time is good."""
        request = (
            f"OPTIONS {self.config.health_path} HTTP/1.1\r\nHost: {trust.server_name}\r\n"
            "User-Agent: natsync-edge-check\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        reason = ""
        try:
            async with asyncio.timeout(self.config.health_timeout):
                reader, writer = await asyncio.open_connection(
                    server.host, server.port, ssl=trust.context, server_hostname=trust.server_name
                )
                try:
                    trust.check(writer.get_extra_info("ssl_object"))
                    writer.write(request)
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
            status = int(line[9:12]) if line[:7] == b"HTTP/1." and line[9:12].isdigit() else 0
            if not 100 <= status < 500:
                reason = f"the check answered {line[:40]!r}"
        except TimeoutError:
            reason = f"no answer to the check within {self.config.health_timeout:g} s"
        except BackendCertError:
            reason = "wrong certificate"
        except (OSError, ssl.SSLError) as exc:
            reason = f"check failed: {exc}"
        except ValueError:  # a status line longer than the reader's limit (64 KiB)
            reason = "the check's answer line is too long"
        if reason:
            self.broke(server, reason)
        elif self.balancer.check_passed(server):
            self._log(server)
