"""Start and stop one edge: the TLS listener, its admin listener and the TCP forwards."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from natsync.cert.acme_responders import ChallengeStore, start_http01_responder
from natsync.edge.admin import start_admin
from natsync.edge.config import EdgeConfig, bind_host, split_hostport
from natsync.edge.forward import Forwarder
from natsync.edge.health import HealthBoard
from natsync.edge.proxy import TLS_HANDSHAKE_TIMEOUT, ClientConn, Edge, access_log
from natsync.edge.relayed import RelayedListener, trusted_networks
from natsync.edge.tickets import metrics_text as tickets_metrics
from natsync.edge.tickets import share as share_tickets
from natsync.edge.tls import BackendTrust, SiteContexts
from natsync.edge.transport import TLSServer, listen_sockets
from natsync.errors import ConfigError

log = logging.getLogger("natsync.edge")

#: Listen backlog: a burst of phones reconnecting after an outage all arrive at once.
BACKLOG = 4096


@dataclass(slots=True)
class RunningEdge:
    """A started edge: where it listens, reload (SIGHUP) and close."""

    edge: Edge
    server: TLSServer
    host: str
    port: int
    admin: asyncio.Server | None = None
    admin_port: int = 0
    forwarders: list[Forwarder] = field(default_factory=list)
    forward_ports: list[int] = field(default_factory=list)
    relayed: RelayedListener | None = None
    #: The plain-HTTP listener (ACME HTTP-01 answers and redirects), when configured.
    http: asyncio.Server | None = None
    http_port: int = 0
    _sweeper: asyncio.Task[None] | None = None
    _log_handler: logging.Handler | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def reload(self) -> bool:
        """Load the certificate files again; open connections keep theirs. False on error."""
        try:
            self.edge.sites.reload()
        except ConfigError as exc:
            log.error("reload failed, keeping the previous certificates: %s", exc.message)
            return False
        log.info("certificates reloaded; %d connection(s) kept", len(self.edge.clients))
        return True

    async def close(self) -> None:
        self.server.close()
        if self.http is not None:
            self.http.close()
        if self.admin is not None:
            self.admin.close()
        for forwarder in self.forwarders:
            await forwarder.close()
        if self.relayed is not None:
            self.relayed.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.edge.close_all()
        await self.server.wait_closed()
        if self.admin is not None:
            await self.admin.wait_closed()
        if self._log_handler is not None:
            access_log.removeHandler(self._log_handler)
            self._log_handler.close()


async def start_edge(
    config: EdgeConfig,
    *,
    reuse_port: bool = False,
    challenges: ChallengeStore | None = None,
    board: HealthBoard | None = None,
    worker: int = 0,
) -> RunningEdge:
    """Check the configuration, then listen; raises ConfigError when it cannot run safely.

    *challenges*: the certificate manager's ACME challenge store when it runs in this process
    (otherwise ``edge.challenge_dir`` names the spool another process writes). *board*: the
    health checks' verdicts shared by the ``workers`` processes, this one being *worker*
    (each checks its share of the servers: natsync.edge.health)."""
    config.check_runnable()
    for warning in config.timeout_warnings():
        log.warning("%s", warning)
    if challenges is None and config.challenge_dir:
        challenges = ChallengeStore(spool=Path(config.challenge_dir))
    sites = SiteContexts(config.certificates, challenges)
    shared_tickets = share_tickets(sites.listening)  # the workers' common, rotating keys
    trust = BackendTrust(config)
    edge = Edge(config, sites, trust)
    host, port = split_hostport(config.listen, "edge.listen")
    handler: logging.Handler | None = None
    if config.access_log == "off":
        access_log.setLevel(logging.WARNING)
    elif config.access_log:
        handler = logging.FileHandler(config.access_log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
    try:
        sockets = listen_sockets(bind_host(host), port, BACKLOG, reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError(f"edge.listen {config.listen}: {exc.strerror}") from exc
    for sock in sockets:  # one per address family when listening on every address
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited when accepted
    server = TLSServer(
        sockets,
        sites.listening,
        lambda: ClientConn(edge),
        TLS_HANDSHAKE_TIMEOUT,
        peek_hello=challenges is not None and not sites.alpn_probe,
    )
    server.start()
    sock = sockets[0]
    running = RunningEdge(edge, server, host, int(sock.getsockname()[1]), _log_handler=handler)
    running._sweeper = edge.spawn(edge.sweeper(), "edge-sweeper")
    if len(config.servers) > 1:
        if board is not None:
            edge.health.share(board, worker, config.workers)
        edge.spawn(edge.health_checks(), "edge-health-checks")
    if config.admin_listen:
        admin_host, admin_port = split_hostport(config.admin_listen, "edge.admin_listen")

        def render() -> str:
            edge.health.follow()  # the other workers' checks (read when needed: health.py)
            return edge.metrics.render(
                open_connections=len(edge.clients),
                tls_handshakes=sites.handshakes,
                pooled=edge.pooled,
                backends=[(b.address, b.up, b.active) for b in edge.balancer.servers],
            ) + (tickets_metrics() if shared_tickets else "")

        running.admin = await start_admin(admin_host, admin_port, render, lambda: True)
        running.admin_port = int(running.admin.sockets[0].getsockname()[1])
    if config.relayed_listen:
        running.relayed = RelayedListener(
            edge, config.relayed_listen, trusted_networks(config.relayed_from), server
        )
        await running.relayed.start()
    if config.http_listen:
        running.http, running.http_port = await _start_http(
            config, running.port, challenges, reuse_port
        )
    for forward in config.forwards:
        forwarder = Forwarder(forward, edge.metrics)
        running.forward_ports.append(await forwarder.start())
        running.forwarders.append(forwarder)
    log.info(
        "edge listening on %s:%d → %s (name %s, trust %s); idle timeout toward the server %g s; "
        "TLS tickets %s",
        host, running.port, ", ".join(config.servers), config.server_name,
        "pin" if config.backend_pin else "CA file" if config.backend_ca else "NONE (insecure)",
        config.read_timeout, "shared by the workers" if shared_tickets else "per worker",
    )  # fmt: skip
    return running


async def _start_http(
    config: EdgeConfig, https_port: int, challenges: ChallengeStore | None, reuse_port: bool
) -> tuple[asyncio.Server, int]:
    """Port 80: ACME HTTP-01 answers (RFC 8555 section 8.3) from *challenges*, a redirect to
    HTTPS for everything else; nothing is proxied from here."""
    host, port = split_hostport(config.http_listen, "edge.http_listen")
    public_port = split_hostport(config.listen, "edge.listen")[1] or https_port
    try:
        server = await start_http01_responder(
            challenges or ChallengeStore(),
            host,
            port,
            redirect_port=public_port,
            reuse_port=reuse_port,
        )
    except OSError as exc:
        raise ConfigError(f"edge.http_listen {config.http_listen}: {exc.strerror}") from exc
    return server, int(server.sockets[0].getsockname()[1])
