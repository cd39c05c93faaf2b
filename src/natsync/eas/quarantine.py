"""What a quarantined device sees (issue 3: "quarantined devices see only a notice").

Like Exchange's quarantine, the device may provision and sync, but its mailbox shows one
message — this notice, in the Inbox — and nothing else; mail-reading and sending commands get
AccessDenied (MS-ASCMD 2.2.2 code 130). The notice is not stored: it is made on the fly with a
fixed ServerId, so the ordinary Sync diff adds it while the device is quarantined and deletes
it (and adds the real mail) once an administrator allows the device.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

from natsync.store.api import Device, Flag, Folder, Message, User

SUBJECT = "Your device is waiting for approval"
#: Version of the notice in sync state (never changes, so it is never sent as a Change).
NOTICE_MODSEQ = 1


def notice_id(folder: Folder) -> str:
    """The notice's ServerId: outside the store's "<folder>:<number>" space."""
    return f"{folder.server_id}:quarantine"


def notice_raw(user: User, device: Device) -> bytes:
    domain = user.email.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = f"natsync <postmaster@{domain}>"
    msg["To"] = user.email
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = f"<quarantine-{device.id}@{domain}>"
    msg.set_content(
        f"This device ({device.device_type}, id {device.device_id}) is quarantined: it cannot "
        "read or send mail until an administrator allows it\n"
        f"(natsync device allow {user.name} {device.device_id}).\n"
    )
    return msg.as_bytes()


def notice_message(folder: Folder, user: User, device: Device, now: datetime) -> Message:
    raw = notice_raw(user, device)
    return Message(
        id=0,
        folder_id=folder.id,
        server_id=notice_id(folder),
        modseq=NOTICE_MODSEQ,
        received_at=device.first_seen or now,
        subject=SUBJECT,
        from_addr=f"postmaster@{user.email.rpartition('@')[2]}",
        to_addrs=user.email,
        cc_addrs="",
        reply_to="",
        message_id_header=f"<quarantine-{device.id}>",
        size=len(raw),
        read=False,
        flag=Flag(),
        categories=(),
        importance=2,
        message_class="IPM.Note",
        has_attachments=False,
        preview="This device is quarantined",
    )
