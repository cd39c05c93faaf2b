"""Per-address limits of the edge: open connections, and a token bucket for requests (sans-I/O).

A phone opens one or two connections and sends a request every few seconds at most; a client
over :attr:`~natsync.edge.config.EdgeConfig.max_connections_per_ip` connections or over its
bucket (``requests_per_second_per_ip``, bursts of ``request_burst_per_ip``) gets 503 with
Retry-After from :mod:`natsync.edge.connection`. Time is an argument.
"""

from __future__ import annotations

from natsync.edge.config import EdgeConfig

#: Seconds between two prunes of the full buckets (an address idle long enough to refill its
#: bucket needs no record).
PRUNE_INTERVAL = 60.0


class RateLimiter:
    """Per-address connection counts and token buckets for requests."""

    __slots__ = ("buckets", "burst", "connections", "max_connections", "rate")

    def __init__(self, config: EdgeConfig) -> None:
        self.max_connections = config.max_connections_per_ip
        self.rate = config.requests_per_second_per_ip
        self.burst = float(config.request_burst_per_ip)
        self.connections: dict[str, int] = {}
        #: Address → [tokens, when last taken].
        self.buckets: dict[str, list[float]] = {}

    def connect(self, ip: str) -> bool:
        """One more connection from *ip*; False when it is over the limit (it is counted
        anyway: its :meth:`disconnect` comes all the same)."""
        count = self.connections.get(ip, 0) + 1
        self.connections[ip] = count
        return count <= self.max_connections

    def disconnect(self, ip: str) -> None:
        count = self.connections.get(ip, 1) - 1
        if count <= 0:
            self.connections.pop(ip, None)
        else:
            self.connections[ip] = count

    def allow_request(self, ip: str, now: float) -> bool:
        bucket = self.buckets.get(ip)
        if bucket is None:
            self.buckets[ip] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def prune(self, now: float) -> None:
        """Forget the addresses whose bucket has refilled."""
        full = [ip for ip, (tokens, last) in self.buckets.items() if
                tokens + (now - last) * self.rate >= self.burst]  # fmt: skip
        for ip in full:
            del self.buckets[ip]
