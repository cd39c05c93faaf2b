"""SendMail, SmartReply, SmartForward (MS-ASCMD 2.2.1.17, 2.2.1.20, 2.2.1.19).

14.0+: a ComposeMail WBXML body (ClientId, SaveInSentItems, Source, ReplaceMime, Mime opaque).
12.1: the raw MIME message is the body (Content-Type message/rfc822) and the query carries
SaveInSent=T and, for Smart*, ItemId + CollectionId.

Sending is one transaction: local recipients get the message in their Inbox, remote ones are
queued for the smarthost (natsync.mail.relay.route_outgoing), and the Sent Items copy is saved
— all or nothing. A ClientId seen before (a retransmission) is answered with success and sends
nothing again (MS-ASCMD 2.2.3.27: ClientId exists to prevent duplicate messages).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Sequence
from dataclasses import replace

from natsync.eas.context import Context, Response, kick_relay
from natsync.eas.errors import EasError
from natsync.eas.resolverecipients import match_users
from natsync.eas.status import Common
from natsync.eas.versions import V14_0
from natsync.mail import compose, relay
from natsync.mime import parse_message
from natsync.mime.errors import MailError
from natsync.store.api import FolderType, User

NS = "ComposeMail"
#: ClientIds remembered per device to recognise a retransmitted send.
CLIENT_IDS_KEPT = 100
CLIENT_IDS_SETTING = "sendmail.client_ids"
#: Longest ClientId kept (MS-ASCMD 2.2.3.28: at most 40 characters; some clients send GUIDs).
MAX_CLIENT_ID = 64


def _fail(cmd: str, status: int) -> EasError:
    return EasError(f"{cmd} failed with status {status}", status=status)


def _send(ctx: Context, cmd: str) -> Response:
    req = ctx.request
    body = ctx.body
    forwardees: list[str] = []
    original_sid = ""
    replace_mime = False
    client_id = ""
    if body is not None and ctx.version >= V14_0:
        if body.tag != cmd or body.namespace != NS:
            raise _fail(cmd, Common.INVALID_CONTENT)
        mime_el = body.find("Mime", NS)
        if mime_el is None or mime_el.value is None:
            raise _fail(cmd, Common.INVALID_CONTENT)
        mime = mime_el.value if isinstance(mime_el.value, bytes) else mime_el.value.encode()
        save = body.find("SaveInSentItems", NS) is not None
        replace_mime = body.find("ReplaceMime", NS) is not None
        client_id = body.child_text("ClientId", NS) or ""
        if len(client_id) > MAX_CLIENT_ID:
            raise _fail(cmd, Common.INVALID_CONTENT)
        source = body.find("Source", NS)
        if source is not None:
            # A Search result's LongId is the message's ServerId (natsync.eas.search).
            original_sid = source.child_text("ItemId", NS) or source.child_text("LongId", NS) or ""
        forwardees_el = body.find("Forwardees", NS)
        if forwardees_el is not None:
            for fw in forwardees_el.findall("Forwardee", NS):
                forwardees.extend(c.text() for c in fw.children if "@" in c.text())
    else:
        mime = ctx.raw_body
        save = req.save_in_sent
        original_sid = req.item_id
    if not mime.strip():
        raise _fail(cmd, Common.INVALID_MIME)

    if client_id:
        seen = json.loads(ctx.txn.get_device_setting(ctx.device.id, CLIENT_IDS_SETTING) or "[]")
        if client_id in seen:
            return Response(status=1)  # already sent: say so again, send nothing
        seen = [*seen, client_id][-CLIENT_IDS_KEPT:]
        ctx.txn.set_device_setting(ctx.device.id, CLIENT_IDS_SETTING, json.dumps(seen))

    if cmd != "SendMail":
        if not original_sid:
            raise _fail(cmd, Common.INVALID_COMBINATION_OF_IDS)
        original = ctx.txn.get_message(ctx.user.id, original_sid)
        if original is None:
            raise _fail(cmd, Common.ITEM_NOT_FOUND)
        original_raw = ctx.txn.raw_message(original.id)
        try:
            if cmd == "SmartReply":
                mime = compose.build_smart_reply(mime, original_raw, replace_mime, rng=ctx.rng)
            else:
                mime = compose.build_smart_forward(mime, original_raw, replace_mime, rng=ctx.rng)
        except MailError as exc:
            raise _fail(cmd, Common.INVALID_MIME) from exc
    queued = send_mime(ctx, cmd, mime, save=save, extra_recipients=forwardees)
    return Response(status=1, effects=kick_relay(queued))


def send_mime(
    ctx: Context, cmd: str, mime: bytes, *, save: bool, extra_recipients: Sequence[str] = ()
) -> bool:
    """Send *mime* as the user (in the caller's transaction): bare logins in To / Cc / Bcc
    resolved to addresses, local recipients delivered, remote ones queued, the Sent Items copy
    saved when *save*. True when outbound mail was queued (the relay is kicked after commit).
    Raises EasError with the ComposeMail status (116 unresolvable recipient, 119 none, 107)."""
    try:
        mime = resolve_bare_recipients(ctx, mime)
        out = compose.prepare_outgoing(
            mime,
            ctx.user.email,
            ctx.user.display_name,
            ctx.now,
            rng=ctx.rng,
            extra_recipients=extra_recipients,
        )
    except UnresolvedRecipient as exc:
        raise EasError(
            f"{cmd}: no user is called {exc.name!r}", status=Common.MESSAGE_RECIPIENT_UNRESOLVED
        ) from exc
    except MailError as exc:
        status = (
            Common.MESSAGE_HAS_NO_RECIPIENT if "recipient" in exc.message else Common.INVALID_MIME
        )
        raise _fail(cmd, status) from exc
    result = relay.route_outgoing(
        ctx.txn, ctx.user, out.raw, out.recipients, ctx.now, ctx.config.domains
    )
    if save:
        sent = ctx.txn.folder_by_type(ctx.user.id, FolderType.SENT_ITEMS)
        copy = replace(parse_message(out.sent_copy, ctx.now), read=True)
        ctx.txn.add_message(sent.id, copy)
    return result.outbound_id is not None


class UnresolvedRecipient(EasError):
    """A recipient without "@" that names no user (or more than one)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user is called {name!r}", status=Common.MESSAGE_RECIPIENT_UNRESOLVED)
        self.name = name


def resolve_bare_recipients(ctx: Context, mime: bytes) -> bytes:
    """*mime* with every bare name in To / Cc / Bcc (``To: demo``, no "@") replaced by the
    address of the one local user it names, matched as ResolveRecipients matches (login,
    address, display name); UnresolvedRecipient when it names nobody or several.

    Only the header block is rewritten; a message without bare names is returned unchanged."""
    head, sep, rest = _split_head(mime)
    if not sep:
        return mime
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    changed = False
    users: list[User] | None = None
    out: list[bytes] = []
    for field_lines in _fields(head):
        name, _, value_bytes = b" ".join(field_lines).partition(b":")
        if name.strip().lower() not in (b"to", b"cc", b"bcc"):
            out.append(newline.join(field_lines))
            continue
        value = value_bytes.decode("utf-8", "replace")
        pairs = email.utils.getaddresses([value])
        if all("@" in addr for _, addr in pairs if addr):
            out.append(newline.join(field_lines))
            continue
        if users is None:
            users = ctx.txn.list_users()
        resolved: list[str] = []
        for display, addr in pairs:
            if not addr:
                continue
            if "@" in addr:
                resolved.append(email.utils.formataddr((display, addr), "utf-8"))
                continue
            matches = match_users(users, addr)
            if len(matches) != 1:
                raise UnresolvedRecipient(addr)
            user = matches[0]
            resolved.append(
                email.utils.formataddr((display or user.display_name, user.email), "utf-8")
            )
        out.append(name.strip() + b": " + ", ".join(resolved).encode())
        changed = True
    if not changed:
        return mime
    return newline.join(out) + sep + rest


def _fields(head: bytes) -> list[list[bytes]]:
    """The header block's fields, each as its lines (a folded field has several)."""
    fields: list[list[bytes]] = []
    for raw_line in head.split(b"\n"):
        line = raw_line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        elif line:
            fields.append([line])
    return fields


def _split_head(mime: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, the blank line, the body) of *mime*; sep is b"" when there is no body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = mime.find(sep)
        if at >= 0:
            return mime[:at], sep, mime[at + len(sep) :]
    return mime, b"", b""


def handle_sendmail(ctx: Context) -> Response:
    return _send(ctx, "SendMail")


def handle_smartreply(ctx: Context) -> Response:
    return _send(ctx, "SmartReply")


def handle_smartforward(ctx: Context) -> Response:
    return _send(ctx, "SmartForward")
