"""Errors of natsync.ddns."""

from __future__ import annotations

from natsync.errors import NatsyncError


class DdnsError(NatsyncError):
    """natsync ddns could not find the public address or publish it."""


class SourceError(DdnsError):
    """An address source gave no usable answer."""


class DnsUpdateError(DdnsError):
    """The authoritative DNS server did not accept or confirm the update."""

    #: Whether trying again at once (with backoff) may help (a timeout may; a wrong key will not).
    retryable: bool = False
    #: The provider said to stop until the user changes something (a wrong password, an unknown
    #: host, a blocked client): natsync sends nothing more to it until the configuration changes.
    fatal: bool = False
    #: The provider asked us to wait this many seconds before the next request (dyndns2 911 /
    #: dnserr, HTTP 429 Retry-After); natsync sends nothing to it before then.
    retry_after: float | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        retryable: bool = False,
        fatal: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.fatal = fatal
        self.retry_after = retry_after


class PrerequisiteFailed(DnsUpdateError):
    """The record was not what we expected: another updater changed it; nothing was overwritten."""


class Unconfirmed(DnsUpdateError):
    """The provider accepted the update, but its servers do not serve it (yet): the update was
    sent, so it is not sent again at once (a repeated update counts as abuse with dyndns2)."""
