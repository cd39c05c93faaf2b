"""`natsync doctor`: says exactly why a phone cannot sync, and what to change.

It looks at the picture of the article from the phone's side (DNS, the port, TLS, HTTP, the
ActiveSync session, a held Ping, Autodiscover) and, given the deployment's config, from inside
(carrier-grade NAT, router mappings, the edge's pinned backend). Gathering (``gather``) is the
only I/O; each check family (``names``, ``relay``, ``reach``, ``ipv6``, ``tls``, ``http``,
``session``, ``push``, ``autodiscover``, ``inside``) is a pure function from evidence to
:class:`Finding` s; ``report`` renders them for people (terminal, HTML) and scripts (JSON).
"""

from natsync.doctor.findings import Check, Finding, Report, Severity
from natsync.doctor.run import DEFAULT_HEARTBEAT, QUICK_HEARTBEAT, Options, diagnose

__all__ = [
    "DEFAULT_HEARTBEAT",
    "QUICK_HEARTBEAT",
    "Check",
    "Finding",
    "Options",
    "Report",
    "Severity",
    "diagnose",
]
