"""Errors of router port mapping: each says, in plain words, what the router refused and why."""

from __future__ import annotations

from natsync.errors import NatsyncError


class PortMapError(NatsyncError):
    """The router did not create, renew or remove the port mapping."""

    def __init__(self, message: str | None = None, *, code: int | None = None) -> None:
        super().__init__(message)
        #: The router's own code (UPnP errorCode or NAT-PMP result code), when it sent one.
        self.code = code


class RouterUnreachable(PortMapError):
    """No router answered (no UPnP IGD found, or no NAT-PMP reply from the gateway)."""


class MappingRefused(PortMapError):
    """The router answered and refused the request; the message explains its reason."""


class HostNetworkError(PortMapError):
    """This host's own network (its addresses, its routes) could not be read."""
