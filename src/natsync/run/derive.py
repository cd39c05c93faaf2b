"""What `natsync run` derives from the deployment file for its parts: each server process's
settings, the edge's (its servers follow [server] unless [edge] names them), where the cert part
hands challenges to the edge, and the address the self-check dials. Plain functions of the
:class:`~natsync.deployment.Deployment`, in one place so the supervisor, its parts, its checks
and the doctor derive the same thing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from natsync.config import ServerConfig
from natsync.deployment import Deployment


def wildcard_to_loopback(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - comparing, not binding
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def server_for(deployment: Deployment, index: int) -> ServerConfig:
    """The server settings of process *index*: the first also receives SMTP and relays."""
    config = deployment.server
    if index == 0:
        return config
    return replace(config, port=config.port + index, smtp_listen="", smarthost="")


def edge_for(deployment: Deployment) -> Any:
    """The edge settings under run: the servers it forwards to follow [server] (its port, one
    per server process) unless [edge] names them, and its held-request timeout follows the
    heartbeat the server accepts."""
    from natsync.edge.config import EdgeConfig

    edge: EdgeConfig = deployment.edge
    table = deployment.tables.get("edge", {})
    server = deployment.server
    changes: dict[str, Any] = {}
    if "backend" not in table and "backends" not in table:
        host = wildcard_to_loopback(server.host)
        shown = f"[{host}]" if ":" in host else host
        ports = [server.port + i for i in range(deployment.run.server_processes)]
        servers = tuple(f"{shown}:{p}" for p in ports)
        changes["backend"] = servers[0]
        changes["backends"] = servers if len(servers) > 1 else ()
    if "heartbeat_max" not in table:
        changes["heartbeat_max"] = server.heartbeat_cap
    if "access_log" not in table:
        # One line per request, not one per hop: the server's (with the phone's address from
        # X-Forwarded-For, the user, device and command) is the one kept.
        changes["access_log"] = "off"
    cert = deployment.cert
    if "challenge_dir" not in table and cert is not None and cert.mode == "acme":
        # The cert part (another process) hands TLS-ALPN-01 and HTTP-01 answers over.
        changes["challenge_dir"] = str(challenge_spool(deployment))
    published = published_console(deployment)
    if published is not None:
        changes["forwards"] = (*edge.forwards, published)
    return replace(edge, **changes) if changes else edge


def published_console(deployment: Deployment) -> Any:
    """The edge's forward of the console when [console] publish says so (docs/console.md
    "Publishing it"): that address to the console's loopback publish_port, PROXY v2 first
    (the console reads the browser's address from it). None: not published (the default)."""
    if deployment.path is None or not deployment.tables.get("console", {}).get("publish"):
        return None
    from natsync.console.settings import load_settings
    from natsync.edge.config import Forward
    from natsync.errors import ConfigError

    try:
        console = load_settings(deployment.path)
    except ConfigError:
        return None  # `natsync check` (run's first step) reports it and stops the run
    return Forward(console.publish, f"127.0.0.1:{console.published_port}", proxy_protocol=True)


def edge_health_board(deployment: Deployment) -> Path:
    """The file the edge's workers share their servers' health on (natsync.edge.health)."""
    return deployment.server.data_dir / "edge" / "health-board"


def challenge_spool(deployment: Deployment) -> Path:
    """Where the cert part hands pending challenges to the edge (edge.challenge_dir)."""
    spool = getattr(deployment.edge, "challenge_dir", "")
    return Path(spool) if spool else deployment.server.data_dir / "acme" / "challenges"


def self_check_url(deployment: Deployment, edge_port: int | None) -> str:
    """What a phone outside types: https://<public name>[:port]. The port is 443 when the
    router maps 443 or the edge listens on it, else the port the edge (or server) listens on."""
    name = deployment.public_name
    if not name:
        return ""
    external = {
        spec.split("/")[0].split(":")[0]
        for spec in (deployment.portmap.mappings if deployment.portmap else ())
    }
    port = edge_port if edge_port is not None else deployment.server.port
    if "443" in external or port == 443:
        return f"https://{name}/Microsoft-Server-ActiveSync"
    return f"https://{name}:{port}/Microsoft-Server-ActiveSync"
