"""MeetingResponse (MS-ASCMD 2.2.1.11) for a server without calendars: the user accepts,
tentatively accepts or declines a meeting request that arrived by mail (an iMIP REQUEST,
RFC 6047), and

* from EAS 16.0 on, when the client asks for it (SendResponse), the server sends the organizer
  the iMIP REPLY (RFC 5546 3.2.3) with the user's PARTSTAT, through the usual outbound path;
  earlier clients send their own reply by SendMail (MS-ASCMD 3.1.5.8);
* the meeting request leaves the Inbox for Deleted Items, as Exchange does after a response;
  the responding device's sync state is told, so no Delete comes back to it.

No CalendarId is returned: there is no calendar folder to hold the event.
"""

from __future__ import annotations

import email.utils
import enum
import re
from email.message import EmailMessage

from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.sync import adjust_known
from natsync.eas.versions import V16_0
from natsync.mail import compose, relay
from natsync.mail.errors import MailError
from natsync.mail.mime import CLASS_MEETING_REQUEST, parse_tree
from natsync.store.api import FolderType
from natsync.wbxml import E, Element

NS = "MeetingResponse"
#: Requests one command may carry (a user answers a handful of invitations at a time).
MAX_REQUESTS = 100
_PARTSTAT = {1: "ACCEPTED", 2: "TENTATIVE", 3: "DECLINED"}
_VERB = {1: "Accepted", 2: "Tentative", 3: "Declined"}
#: Properties of the invitation's VEVENT copied into the reply (RFC 5546 3.2.3).
_COPIED = ("UID", "DTSTART", "DTEND", "DURATION", "SEQUENCE", "RECURRENCE-ID", "SUMMARY")


# MS-ASCMD 2.2.3.177.9 Status (MeetingResponse).
class MeetingStatus(enum.IntEnum):
    SUCCESS = 1
    INVALID_REQUEST = 2
    MAILBOX_ERROR = 3
    SERVER_ERROR = 4


def _calendar_text(raw: bytes) -> str | None:
    for part in parse_tree(raw).walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return None


def _event_lines(ics: str) -> list[str]:
    """The unfolded content lines of the first VEVENT (RFC 5545 3.1 line folding)."""
    unfolded = re.sub(r"\r?\n[ \t]", "", ics)
    lines: list[str] = []
    inside = False
    for line in unfolded.splitlines():
        if line.upper() == "BEGIN:VEVENT":
            inside = True
        elif line.upper() == "END:VEVENT":
            break
        elif inside:
            lines.append(line)
    return lines


def build_reply(ics: str, attendee: str, display_name: str, answer: int, stamp: str) -> str | None:
    """The iMIP REPLY for *attendee*, or None when the invitation has no UID or organizer."""
    lines = _event_lines(ics)
    props = {line.split(":", 1)[0].split(";", 1)[0].upper(): line for line in lines if ":" in line}
    if "UID" not in props or "ORGANIZER" not in props:
        return None
    out = ["BEGIN:VCALENDAR", "PRODID:-//natsync//EN", "VERSION:2.0", "METHOD:REPLY"]
    out += ["BEGIN:VEVENT", f"DTSTAMP:{stamp}", props["ORGANIZER"]]
    out += [props[name] for name in _COPIED if name in props]
    cn = display_name.replace('"', "")
    out.append(f'ATTENDEE;PARTSTAT={_PARTSTAT[answer]};CN="{cn}":mailto:{attendee}')
    out += ["END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(out) + "\r\n"


def _organizer(ics: str) -> str:
    for line in _event_lines(ics):
        if line.upper().startswith("ORGANIZER"):
            value = line.split(":", 1)[1] if ":" in line else ""
            if value.lower().startswith("mailto:"):
                value = value[7:]
            return value.strip()
    return ""


def _send_reply(ctx: Context, ics: str, subject: str, answer: int) -> bool:
    organizer = _organizer(ics)
    stamp = ctx.now.strftime("%Y%m%dT%H%M%SZ")
    reply = build_reply(ics, ctx.user.email, ctx.user.display_name, answer, stamp)
    if reply is None or "@" not in organizer:
        return False
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((ctx.user.display_name, ctx.user.email))
    msg["To"] = organizer
    msg["Subject"] = f"{_VERB[answer]}: {subject}"
    msg.set_content(f"{ctx.user.display_name or ctx.user.email} {_VERB[answer].lower()}.\n")
    msg.add_alternative(reply, subtype="calendar", params={"method": "REPLY"})
    try:
        out = compose.prepare_outgoing(
            msg.as_bytes(), ctx.user.email, ctx.user.display_name, ctx.now
        )
    except MailError:
        return False
    result = relay.route_outgoing(
        ctx.txn, ctx.user, out.raw, out.recipients, ctx.now, ctx.config.domains
    )
    return result.outbound_id is not None


def _one(ctx: Context, request: Element) -> tuple[Element, bool]:
    request_id = request.child_text("RequestId", NS) or request.child_text("LongId", "Search") or ""
    result = E(NS, "Result", E(NS, "RequestId", request_id))
    answer_text = request.child_text("UserResponse", NS) or ""
    answer = int(answer_text) if answer_text.isdigit() else 0
    msg = ctx.txn.get_message(ctx.user.id, request_id) if request_id else None
    if answer not in _PARTSTAT or msg is None or msg.message_class != CLASS_MEETING_REQUEST:
        result.add(NS, "Status", MeetingStatus.INVALID_REQUEST)
        return result, False
    ics = _calendar_text(ctx.txn.raw_message(msg.id))
    if ics is None:
        result.add(NS, "Status", MeetingStatus.INVALID_REQUEST)
        return result, False
    queued = False
    if ctx.version >= V16_0 and request.find("SendResponse", NS) is not None:
        queued = _send_reply(ctx, ics, msg.subject, answer)
    folder = next((f for f in ctx.txn.list_folders(ctx.user.id) if f.id == msg.folder_id), None)
    trash = ctx.txn.folder_by_type(ctx.user.id, FolderType.DELETED_ITEMS)
    if folder is not None and folder.id != trash.id:
        moved = ctx.txn.move_message(msg.id, trash.id)
        adjust_known(ctx, folder.server_id, remove=(msg.server_id,))
        adjust_known(ctx, trash.server_id, add={moved.server_id: moved.modseq})
    result.add(NS, "Status", MeetingStatus.SUCCESS)
    return result, queued


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "MeetingResponse" or body.namespace != NS:
        raise EasError("MeetingResponse needs a body", status=MeetingStatus.INVALID_REQUEST)
    requests = body.findall("Request", NS)
    if not requests or len(requests) > MAX_REQUESTS:
        raise EasError(
            "MeetingResponse needs 1..100 requests", status=MeetingStatus.INVALID_REQUEST
        )
    root = E(NS, "MeetingResponse")
    queued = False
    for request in requests:
        result, sent = _one(ctx, request)
        root.append(result)
        queued = queued or sent
    return Response.of(root, status=MeetingStatus.SUCCESS, outbound_queued=queued)
