"""natsync: Exchange ActiveSync that works from behind a NAT firewall.

The package holds the whole system of the article it was born from: the ActiveSync server and
its store, the SSL-bridging edge, dynamic DNS, certificates, the doctor and the namespace lab.
See docs/architecture.md for the map.
"""

__version__ = "0.1.0"
