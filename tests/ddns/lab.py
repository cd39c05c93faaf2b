"""The ddns and doctor tests' namespace lab: the topology of :mod:`natsync.lab` (LAN host —
router with nftables NAT + miniupnpd — "internet" with STUN and BIND — phone), built by its
runner. Re-exported here under the names these tests use."""

from __future__ import annotations

from natsync.lab.runner import NATSYNC, Lab, cleanup_leftovers, sh
from natsync.lab.topology import (
    CGNAT,
    INET,
    INET6,
    INET_SHARED,
    LAN6_HOST,
    LAN6_ROUTER,
    LAN_HOST,
    LAN_ROUTER,
    PREFIX,
    PUBLIC,
    PUBLIC_NEXT,
    WAN6_ROUTER,
)

__all__ = [
    "CGNAT",
    "INET",
    "INET6",
    "INET_SHARED",
    "LAN6_HOST",
    "LAN6_ROUTER",
    "LAN_HOST",
    "LAN_ROUTER",
    "NATSYNC",
    "PREFIX",
    "PUBLIC",
    "PUBLIC_NEXT",
    "WAN6_ROUTER",
    "Lab",
    "cleanup_leftovers",
    "sh",
]
