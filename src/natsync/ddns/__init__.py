"""Public address discovery and dynamic DNS (RFC 2136 + TSIG).

``sources`` observes the address (router NAT-PMP / UPnP, STUN, interface, HTTPS echo),
``agreement`` judges the observations (including carrier-grade / double NAT), ``update``
publishes with compare-and-swap and confirms, ``runner`` loops, ``history`` remembers.
"""

from natsync.ddns.agreement import CGNAT_WORDS, Verdict, VerdictKind, judge
from natsync.ddns.errors import DdnsError, DnsUpdateError, PrerequisiteFailed, SourceError
from natsync.ddns.sources import Observation, Source

__all__ = [
    "CGNAT_WORDS",
    "DdnsError",
    "DnsUpdateError",
    "Observation",
    "PrerequisiteFailed",
    "Source",
    "SourceError",
    "Verdict",
    "VerdictKind",
    "judge",
]
