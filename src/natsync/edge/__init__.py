"""natsync edge: the SSL-bridging proxy in front of the server (what the article's ISA did).

Public API: :func:`start_edge` (→ :class:`RunningEdge`), :class:`EdgeConfig` and
:func:`load_edge_config`. Modules: ``http`` (framing rules, sans-I/O), ``rules`` (publishing),
``tls`` (both TLS sides, pinning), ``proxy`` (the bridge), ``forward`` (TCP + PROXY v2),
``admin`` and ``metrics``, ``trust`` (trust-backend), ``render`` (nginx / HAProxy configs).
"""

from natsync.edge.app import RunningEdge, start_edge
from natsync.edge.config import EdgeConfig, load_edge_config

__all__ = ["EdgeConfig", "RunningEdge", "load_edge_config", "start_edge"]
