"""Mail in and out: MIME ⇄ EAS conversion, SMTP inbound (aiosmtpd), relay outbound (aiosmtplib).

Modules: ``mime`` (parse mail into the store's fields and bodies), ``eas_email`` (the EAS Email
ApplicationData of a stored message; client changes back), ``compose`` (SendMail, SmartReply and
SmartForward messages), ``smtp_in`` (the SMTP server), ``relay`` (local delivery, the outbound
queue and its worker). See docs/mail.md.
"""

from natsync.mail.errors import EmailChangeError, MailError

__all__ = ["EmailChangeError", "MailError"]
