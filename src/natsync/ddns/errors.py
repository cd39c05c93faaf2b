"""Errors of natsync.ddns."""

from __future__ import annotations

from natsync.errors import NatsyncError


class DdnsError(NatsyncError):
    """natsync ddns could not find the public address or publish it."""


class SourceError(DdnsError):
    """An address source gave no usable answer."""


class DnsUpdateError(DdnsError):
    """The authoritative DNS server did not accept or confirm the update."""

    #: Whether trying again may help (a timeout may; a wrong key or a refused name will not).
    retryable: bool = False

    def __init__(self, message: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class PrerequisiteFailed(DnsUpdateError):
    """The record was not what we expected: another updater changed it; nothing was overwritten."""
