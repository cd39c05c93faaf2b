"""The one error the codec raises: a document that does not decode, or a tree that cannot encode."""

from __future__ import annotations

from natsync.errors import NatsyncError


class WBXMLError(NatsyncError):
    """The WBXML document is malformed, over a limit, or uses something EAS does not."""

    #: A peer that sends an undecodable body made a bad request (MS-ASHTTP 3.1.5.2: HTTP 400).
    http_status = 400

    def __init__(self, message: str | None = None, offset: int | None = None) -> None:
        if message is not None and offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message)
        #: Byte offset in the document where the problem was found; ``None`` when encoding or
        #: when no single byte is to blame.
        self.offset = offset
