"""Sending an IMAP user's mail through their mail server's submission service (RFC 6409), with
their own credentials, so it leaves with their identity and the server's DKIM/SPF.

Blocking smtplib, called from the user's mirror thread (the sender of the queue entries of that
user, see :meth:`natsync.store.api.Txn.claim_outbound_from`). TLS is always on: implicit
(RFC 8314, port 465) or STARTTLS (RFC 3207, port 587).
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence

from natsync.errors import NatsyncError
from natsync.sources.config import ImapServer, TlsMode
from natsync.sources.imap import tls_context

#: Seconds for the whole submission dialogue of one message.
SUBMIT_TIMEOUT = 60.0


class SubmitError(NatsyncError):
    """The submission service did not take the message."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        #: True for a 5xx answer: trying again will not help (the sender gets a bounce).
        self.permanent = permanent


def submit(
    server: ImapServer,
    login: str,
    password: str,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
) -> None:
    context = tls_context(server)
    where = f"{server.submission_host}:{server.submission_port}"
    try:
        if server.submission_tls is TlsMode.IMPLICIT:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                server.submission_host,
                server.submission_port,
                timeout=SUBMIT_TIMEOUT,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                server.submission_host, server.submission_port, timeout=SUBMIT_TIMEOUT
            )
            smtp.starttls(context=context)
        with smtp:
            smtp.login(login, password)
            refused = smtp.sendmail(sender, list(recipients), raw)
    except smtplib.SMTPRecipientsRefused as exc:
        detail = "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items()
        )
        raise SubmitError(f"{where} refused every recipient: {detail}", permanent=True) from exc
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        raise SubmitError(
            f"{where} answered {exc.smtp_code} {text}", permanent=exc.smtp_code >= 500
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise SubmitError(f"cannot submit through {where}: {exc}", permanent=False) from exc
    if refused:
        detail = "; ".join(f"{r}: {c}" for r, (c, _m) in refused.items())
        raise SubmitError(f"{where} refused some recipients: {detail}", permanent=True)
