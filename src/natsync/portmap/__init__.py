"""Router port mapping (UPnP IGD, NAT-PMP): ask the router to forward 443 and 25 to the edge.

Its own package rather than part of ``natsync.edge`` so that ``natsync ddns`` (which asks the
same router for its external address) and the edge share one router client each.
"""

from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable
from natsync.portmap.manager import MappingSpec, PortMapper, open_backend

__all__ = [
    "MappingRefused",
    "MappingSpec",
    "PortMapError",
    "PortMapper",
    "RouterUnreachable",
    "open_backend",
]
