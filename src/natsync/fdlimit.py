"""The process's file descriptors: raised to what the system allows at start, and shared out
between listeners so that a flood on one (SMTP) cannot take the descriptors another (HTTPS)
needs to serve (issue 19). Every connection costs one descriptor, and a server that runs out
cannot even accept the connection that would tell it so."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

#: Fewest connections a listener's budget allows, however low the limit is.
MIN_BUDGET = 16


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (no privilege needed; systemd's
    default soft limit is 1024 while the hard one is far above); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-files limit raised from %d to %d", soft, target)
        return target
    return soft


def listener_budget(share: float) -> int:
    """Connections a listener may hold: *share* of the current open-files limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_BUDGET, int(soft * share))
