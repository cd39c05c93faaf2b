"""Errors of the protocol layer: each carries the HTTP status or EAS Status to answer with.

NatsyncError
└── EasError              answered inside the command's response with an EAS Status
    ├── HttpError         answered with a bare HTTP status (and optional headers)
    └── Answered          carries a finished response; raised so the transaction rolls back
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natsync.errors import NatsyncError

if TYPE_CHECKING:
    from natsync.eas.context import Response


class EasError(NatsyncError):
    """The ActiveSync request cannot be served as sent."""

    http_status = 400

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        #: EAS Status to put in the command's response (``None``: answer with http_status).
        self.status = status


class HttpError(EasError):
    """The request is answered with an HTTP status and no body."""

    def __init__(
        self, http_status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.headers = headers or {}


class Answered(EasError):
    """The command failed after it started; its answer is ready, its writes must not stay.

    Raised out of ``store.run`` so the transaction rolls back; the adapter sends ``response``.
    """

    def __init__(self, response: Response, message: str = "the command failed") -> None:
        super().__init__(message)
        self.response = response
