"""Drafts written on the phone (EAS 16.0+, MS-ASCMD 2.2.3.7.2: Sync Add of an email in the Drafts
folder). The ApplicationData (To, Cc, Bcc, Subject, Importance, Body) becomes a MIME message
from the user, stored in Drafts like any other message; the store, not the phone, holds the
truth from then on.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import replace
from email.message import EmailMessage

from natsync.eas.context import Context
from natsync.mail.mime import parse_message
from natsync.store.api import Folder, Message
from natsync.wbxml import Element

#: Largest draft body we accept through Sync (bigger ones belong in a sent message's MIME).
MAX_DRAFT_BODY = 4 * 1024 * 1024
_IMPORTANCE = {"0": "Low", "2": "High"}


class DraftError(ValueError):
    """The ApplicationData cannot make a draft."""


def build_draft(ctx: Context, appdata: Element) -> bytes:
    """An RFC 5322 message from the client's ApplicationData."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = email.utils.formataddr((ctx.user.display_name, ctx.user.email))
    for tag, ns, header in (("To", "Email", "To"), ("Cc", "Email", "Cc"), ("Bcc", "Email2", "Bcc")):
        value = appdata.child_text(tag, ns)
        if value:
            msg[header] = value
    msg["Subject"] = appdata.child_text("Subject", "Email") or ""
    msg["Date"] = email.utils.format_datetime(ctx.now)
    msg["Message-ID"] = email.utils.make_msgid(domain=ctx.user.email.rpartition("@")[2])
    importance = _IMPORTANCE.get(appdata.child_text("Importance", "Email") or "")
    if importance:
        msg["Importance"] = importance
    body = appdata.find("Body", "AirSyncBase")
    text = body.child_text("Data", "AirSyncBase") if body is not None else None
    kind = body.child_text("Type", "AirSyncBase") if body is not None else "1"
    text = text or ""
    if len(text) > MAX_DRAFT_BODY:
        raise DraftError("the draft body is too large")
    if kind == "2":
        msg.set_content(text, subtype="html")
    else:
        msg.set_content(text)
    return msg.as_bytes()


def add_draft(ctx: Context, folder: Folder, appdata: Element) -> Message:
    raw = build_draft(ctx, appdata)
    new = replace(parse_message(raw, ctx.now), read=True)
    return ctx.txn.add_message(folder.id, new)
