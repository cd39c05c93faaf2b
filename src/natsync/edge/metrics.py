"""Counters of the edge and their Prometheus text exposition (sans-I/O).

Exposed on the admin listener's ``/metrics`` (text format 0.0.4): connections, held Pings,
requests by ActiveSync command and HTTP status, server-side errors by kind, TLS handshakes on
both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")[:64]


#: The longest ActiveSync command name counted under its own name (longer ones: "other"; the
#: request counter's labels stay few whatever clients send).
LONGEST_COUNTED_CMD = 32


@dataclass(slots=True)
class Metrics:
    connections_total: int = 0
    held_pings: int = 0
    backend_handshakes: int = 0
    backend_resumed: int = 0
    forwarded_connections: int = 0
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    backend_errors: dict[str, int] = field(default_factory=dict)

    def count_request(self, cmd: str, status: int) -> None:
        key = (cmd if len(cmd) <= LONGEST_COUNTED_CMD else "other", status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def render(
        self,
        *,
        open_connections: int,
        tls_handshakes: int,
        pooled: int,
        backends: list[tuple[str, bool, int]] | None = None,
    ) -> str:
        """The text exposition; *backends* is (address, up, requests in flight) per server."""
        lines = [
            "# HELP natsync_edge_connections Phone connections open now.",
            "# TYPE natsync_edge_connections gauge",
            f"natsync_edge_connections {open_connections}",
            "# HELP natsync_edge_connections_total Phone connections accepted.",
            "# TYPE natsync_edge_connections_total counter",
            f"natsync_edge_connections_total {self.connections_total}",
            "# HELP natsync_edge_held_pings Ping requests in flight (held by the server).",
            "# TYPE natsync_edge_held_pings gauge",
            f"natsync_edge_held_pings {self.held_pings}",
            "# HELP natsync_edge_pooled_backend_connections Idle server connections kept.",
            "# TYPE natsync_edge_pooled_backend_connections gauge",
            f"natsync_edge_pooled_backend_connections {pooled}",
            "# HELP natsync_edge_tls_handshakes_total TLS handshakes started by phones.",
            "# TYPE natsync_edge_tls_handshakes_total counter",
            f"natsync_edge_tls_handshakes_total {tls_handshakes}",
            "# HELP natsync_edge_backend_tls_handshakes_total TLS sessions opened to the server.",
            "# TYPE natsync_edge_backend_tls_handshakes_total counter",
            f'natsync_edge_backend_tls_handshakes_total{{resumed="false"}} '
            f"{self.backend_handshakes - self.backend_resumed}",
            f'natsync_edge_backend_tls_handshakes_total{{resumed="true"}} {self.backend_resumed}',
            "# HELP natsync_edge_forwarded_connections_total TCP forward connections.",
            "# TYPE natsync_edge_forwarded_connections_total counter",
            f"natsync_edge_forwarded_connections_total {self.forwarded_connections}",
            "# HELP natsync_edge_requests_total Requests by ActiveSync command and HTTP status.",
            "# TYPE natsync_edge_requests_total counter",
        ]
        for (cmd, status), count in sorted(self.requests.items()):
            lines.append(
                f'natsync_edge_requests_total{{cmd="{_label(cmd)}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP natsync_edge_backend_errors_total Failures toward the server, by kind.",
            "# TYPE natsync_edge_backend_errors_total counter",
        ]
        for kind, count in sorted(self.backend_errors.items()):
            lines.append(f'natsync_edge_backend_errors_total{{kind="{_label(kind)}"}} {count}')
        lines += [
            "# HELP natsync_edge_backend_up Whether the edge sends new exchanges to the server.",
            "# TYPE natsync_edge_backend_up gauge",
        ]
        for address, up, _ in backends or []:
            lines.append(f'natsync_edge_backend_up{{backend="{_label(address)}"}} {int(up)}')
        lines += [
            "# HELP natsync_edge_backend_requests Exchanges in flight on the server.",
            "# TYPE natsync_edge_backend_requests gauge",
        ]
        for address, _, active in backends or []:
            lines.append(f'natsync_edge_backend_requests{{backend="{_label(address)}"}} {active}')
        return "\n".join(lines) + "\n"
