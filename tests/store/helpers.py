"""Builders for store tests: small real MIME messages and their NewMessage records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from natsync.store.api import NewAttachment, NewMessage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def new_message(
    subject: str = "Hello",
    body: str = "plain body text",
    *,
    received_at: datetime | None = None,
    attachment: bytes | None = None,
    sender: str = "bob@example.test",
    read: bool = False,
) -> NewMessage:
    """A real MIME message (optionally with one attachment) as delivery would hand it over."""
    mime = EmailMessage()
    mime["Subject"] = subject
    mime["From"] = sender
    mime["To"] = "alice@example.test"
    mime["Message-ID"] = f"<{subject.replace(' ', '.')}@example.test>"
    mime.set_content(body)
    attachments: tuple[NewAttachment, ...] = ()
    if attachment is not None:
        mime.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="data.bin"
        )
        index = next(i for i, part in enumerate(mime.walk()) if part.get_filename() == "data.bin")
        attachments = (
            NewAttachment(
                filename="data.bin",
                content_type="application/octet-stream",
                content_id="",
                is_inline=False,
                size=len(attachment),
                part_index=index,
            ),
        )
    return NewMessage(
        raw=mime.as_bytes(),
        received_at=received_at or T0,
        subject=subject,
        from_addr=sender,
        to_addrs="alice@example.test",
        cc_addrs="",
        reply_to="",
        message_id_header=str(mime["Message-ID"]),
        importance=1,
        message_class="IPM.Note",
        preview=body[:255],
        read=read,
        attachments=attachments,
    )


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)
