"""Public address discovery and dynamic DNS.

``sources`` observes the address (router NAT-PMP / UPnP, STUN, interface, HTTPS echo),
``agreement`` judges the observations (including carrier-grade / double NAT), ``providers``
publishes through one updater interface (RFC 2136 + TSIG via ``update``, dyndns2, Duck DNS,
Cloudflare, deSEC, a command) and confirms where the record is served, ``runner`` loops and keeps
the providers' rules, ``history`` remembers. DNS-01 uses ``providers.txt_publisher`` (a
``providers.base.TxtPublisher``).
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
