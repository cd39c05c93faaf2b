"""Errors of reading and sending mail (natsync.mime, natsync.mail).

NatsyncError
└── MailError                 input that is not a mail message at all, or cannot be sent
    └── EmailChangeError      a client's Change of an email item that does not parse
"""

from __future__ import annotations

from natsync.errors import NatsyncError


class MailError(NatsyncError):
    """The data is not a mail message; send an RFC 5322 message (headers, blank line, body)."""

    http_status = 400
    #: EAS Status to answer a SendMail/SmartReply/SmartForward with (MS-ASCMD 2.2.2 common
    #: status 107, InvalidMIME) when this error reaches the protocol boundary.
    eas_status: int = 107


class EmailChangeError(MailError):
    """A client's change to an email item (Read, Flag, Categories) does not parse."""

    #: MS-ASCMD 2.2.3.177.16 Sync Status 6: error in client/server conversion.
    eas_status = 6
