"""Mail in and out: SMTP inbound (aiosmtpd), relay outbound (aiosmtplib), iMIP and iTIP.

Modules: ``compose`` (SendMail, SmartReply and SmartForward messages), ``smtp_in`` (the SMTP
server), ``relay`` (local delivery, the outbound queue and its worker), ``imip`` / ``itip``
(invitations in and out), ``oof``, ``conversation``, ``dkim``. Reading a message is
natsync.mime (below the data classes, which read it too); the Email class is
natsync.classes.email. See docs/mail.md.
"""

from natsync.mime.errors import EmailChangeError, MailError

__all__ = ["EmailChangeError", "MailError"]
