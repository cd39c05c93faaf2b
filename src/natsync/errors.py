"""The one exception hierarchy of natsync.

    NatsyncError                  every error natsync raises on purpose
    ├── WBXMLError                 natsync.wbxml: a document that does not decode or encode
    ├── ConfigError                a configuration value that cannot work
    └── (more per part: protocol, store, edge ... each defined beside its part)

Each error carries a *status hint*: the HTTP status (and, for ActiveSync, the EAS Status) that
the boundary answers with. The boundary is the only place that turns an error into a response;
foreign errors are wrapped with ``raise ... from exc`` where they enter.
"""

from __future__ import annotations


class NatsyncError(Exception):
    """natsync could not do what was asked."""

    #: HTTP status a server boundary answers with when this error reaches it.
    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(NatsyncError):
    """The configuration cannot work as written; fix the named setting."""

    http_status = 500
