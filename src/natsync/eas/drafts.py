"""Drafts written and edited on the phone (EAS 16.0/16.1: MS-ASCMD 2.2.3.7.2 Sync Add, 2.2.3.24
Sync Change of an email in the Drafts folder; MS-ASEMAIL 2.2.2.69 ``email2:Send``; MS-ASAIRS
2.2.2.2 / 2.2.2.21 attachment Add / Delete).

The store holds a draft as a MIME message from the user, like any other message: the store, not
the phone, is the truth. An Add builds it from the ApplicationData; a Change starts from the
stored message and replaces only the fields the phone sent (To, Cc, ``email2:Bcc``, Subject,
Importance, ``airsyncbase:Body``; an element present but empty clears the field), adds the
attachments in ``airsyncbase:Attachments/Add`` (ClientId, Content, DisplayName, ContentType,
ContentId, IsInline) and drops those named in ``Attachments/Delete`` (by FileReference).
Read, Flag and Categories are applied as on any message.

The store keeps a message's MIME immutable, so a changed draft is stored as a new message and
the old one is deleted in the same transaction: the phone that changed it gets, in the same Sync
answer, the Delete of the old ServerId and the Add of the new one (with its attachments'
FileReferences); every other phone sees the same on its next Sync. The answer to the Add or
Change itself carries the ClientId -> FileReference of each attachment added (MS-ASAIRS
2.2.2.7 in a Responses element).

``<email2:Send/>`` sends the result through the SendMail path (natsync.eas.sendmail.send_mime:
local delivery, relay queue, Sent Items copy) and removes it from Drafts. Retransmission
safety is Sync's: a repeated SyncKey gets the cached answer and no command runs twice.
"""

from __future__ import annotations

import email.policy
import email.utils
import mimetypes
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

from natsync.eas.context import Context
from natsync.eas.errors import EasError
from natsync.eas.status import SyncStatus
from natsync.mail import compose
from natsync.mime import parse_message
from natsync.store.api import Folder, Message
from natsync.wbxml import Element

#: Largest draft body we accept through Sync (bigger ones belong in a sent message's MIME).
MAX_DRAFT_BODY = 4 * 1024 * 1024
#: Largest attachment added through Sync; Exchange's default MaxAttachmentSize is of this order,
#: and the whole request is bounded by server.max_request_body anyway.
MAX_DRAFT_ATTACHMENT = 16 * 1024 * 1024
#: Attachments one draft may carry (a phone adds them one by one; more is a runaway client).
MAX_DRAFT_ATTACHMENTS = 100
#: Longest ClientId of an attachment kept (MS-ASAIRS 2.2.2.14 names no limit; phones send GUIDs).
MAX_ATTACHMENT_CLIENT_ID = 64
_IMPORTANCE = {"0": "Low", "1": "Normal", "2": "High"}
_HEADERS = (("To", "Email", "To"), ("Cc", "Email", "Cc"), ("Bcc", "Email2", "Bcc"))
_ASB = "AirSyncBase"


class DraftError(EasError):
    """The ApplicationData cannot make a draft (the phone is told Status 6)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=SyncStatus.CONVERSION_ERROR)


@dataclass(slots=True)
class _Attachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str = ""
    inline: bool = False
    client_id: str = ""  # set for an attachment added by this request


@dataclass(slots=True)
class _Draft:
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    html: str | None = None
    attachments: list[_Attachment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DraftResult:
    """What an Add or Change of a draft did."""

    message: Message | None  # the stored draft; None when it was sent
    #: (ClientId, FileReference) of each attachment this request added.
    added: tuple[tuple[str, str], ...]
    sent: bool = False
    outbound_queued: bool = False

    def response_data(self) -> Element | None:
        """ApplicationData for the Responses Add/Change: the attachments' FileReferences."""
        if not self.added:
            return None
        attachments = Element(_ASB, "Attachments")
        for client_id, reference in self.added:
            one = attachments.append(Element(_ASB, "Attachment"))
            one.add(_ASB, "ClientId", client_id)
            one.add(_ASB, "FileReference", reference)
        return Element("AirSync", "ApplicationData", [attachments])


#: The ApplicationData elements that edit a draft's content (a Change with none of them only
#: sets Read / Flag / Categories and is handled as on any message, keeping the ServerId).
_CONTENT = frozenset(
    {
        ("Email", "To"),
        ("Email", "Cc"),
        ("Email2", "Bcc"),
        ("Email", "Subject"),
        ("Email", "Importance"),
        (_ASB, "Body"),
        (_ASB, "Attachments"),
        ("Email2", "Send"),
    }
)


def is_draft_edit(cmd: Element, in_drafts: bool, draft_version: bool) -> bool:
    """Whether the Sync command *cmd* is a Change that edits a draft's content (16.0+, in
    Drafts, with one of :data:`_CONTENT`); other Changes set Read / Flag / Categories as on any
    message and keep the ServerId."""
    if cmd.tag != "Change" or not in_drafts or not draft_version:
        return False
    appdata = cmd.find("ApplicationData", "AirSync")
    return appdata is not None and any((c.namespace, c.tag) in _CONTENT for c in appdata.children)


def wants_send(appdata: Element) -> bool:
    """``<email2:Send/>`` present (MS-ASEMAIL 2.2.2.69): send the draft, don't keep it."""
    return appdata.find("Send", "Email2") is not None


def _read_stored(ctx: Context, msg: Message) -> _Draft:
    """The fields, bodies and attachments of a stored draft."""
    raw = ctx.txn.raw_message(msg.id)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    draft = _Draft()
    for name in ("To", "Cc", "Bcc", "Subject", "Importance", "In-Reply-To", "References"):
        value = parsed.get(name)
        if value is not None and str(value).strip():
            draft.headers[name] = str(value)
    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    if isinstance(plain, EmailMessage):
        draft.text = str(plain.get_content())
    if isinstance(html, EmailMessage):
        draft.html = str(html.get_content())
    for stored in msg.attachments:
        found = ctx.txn.get_attachment(ctx.user.id, stored.file_reference)
        if found is None:
            continue
        attachment, data = found
        draft.attachments.append(
            _Attachment(
                attachment.filename,
                attachment.content_type,
                data,
                attachment.content_id,
                attachment.is_inline,
            )
        )
    return draft


def _apply(draft: _Draft, appdata: Element, deleted: set[int]) -> None:
    """Replace what *appdata* names; *deleted*: positions of stored attachments to drop."""
    for tag, ns, header in _HEADERS:
        element = appdata.find(tag, ns)
        if element is not None:
            draft.headers[header] = element.text().strip()
    subject = appdata.find("Subject", "Email")
    if subject is not None:
        draft.headers["Subject"] = subject.text()
    importance = appdata.find("Importance", "Email")
    if importance is not None:
        value = _IMPORTANCE.get(importance.text().strip())
        if value is None:
            raise DraftError("Importance is 0, 1 or 2 (MS-ASEMAIL 2.2.2.40)")
        draft.headers["Importance"] = value
    body = appdata.find("Body", _ASB)
    if body is not None:
        text = body.child_text("Data", _ASB) or ""
        if len(text) > MAX_DRAFT_BODY:
            raise DraftError("the draft body is too large")
        if (body.child_text("Type", _ASB) or "1").strip() == "2":
            draft.text, draft.html = "", text
        else:
            draft.text, draft.html = text, None
    if deleted:
        draft.attachments = [a for n, a in enumerate(draft.attachments) if n not in deleted]
    attachments = appdata.find("Attachments", _ASB)
    for add in attachments.findall("Add", _ASB) if attachments is not None else []:
        draft.attachments.append(_new_attachment(add))
    if len(draft.attachments) > MAX_DRAFT_ATTACHMENTS:
        raise DraftError(f"a draft carries at most {MAX_DRAFT_ATTACHMENTS} attachments")


def _new_attachment(add: Element) -> _Attachment:
    client_id = (add.child_text("ClientId", _ASB) or "").strip()
    if not client_id or len(client_id) > MAX_ATTACHMENT_CLIENT_ID:
        raise DraftError("an attachment Add needs a ClientId (MS-ASAIRS 2.2.2.14)")
    content = add.find("Content", _ASB)
    if content is None:
        raise DraftError("an attachment Add needs its Content (MS-ASAIRS 2.2.2.15)")
    value = content.value
    data = value if isinstance(value, bytes) else (value or "").encode()
    if len(data) > MAX_DRAFT_ATTACHMENT:
        raise DraftError("the attachment is too large")
    name = (add.child_text("DisplayName", _ASB) or "").strip() or "attachment"
    ctype = (add.child_text("ContentType", _ASB) or "").strip().lower()
    if "/" not in ctype:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    content_id = (add.child_text("ContentId", _ASB) or "").strip().strip("<>")
    inline = (add.child_text("IsInline", _ASB) or "0").strip() == "1"
    return _Attachment(name, ctype, data, content_id, inline, client_id)


def _deleted_positions(msg: Message | None, appdata: Element) -> set[int]:
    attachments = appdata.find("Attachments", _ASB)
    if attachments is None or msg is None:
        return set()
    wanted = {
        (d.child_text("FileReference", _ASB) or "").strip()
        for d in attachments.findall("Delete", _ASB)
    }
    return {n for n, a in enumerate(msg.attachments) if a.file_reference in wanted}


def _to_mime(ctx: Context, draft: _Draft) -> bytes:
    """The draft as MIME; DraftError for what no message can carry (a header with a line
    break, an unusable content type)."""
    try:
        return _compose(ctx, draft)
    except (ValueError, TypeError, LookupError) as exc:
        raise DraftError(f"the draft cannot be made a message: {exc}") from exc


def _compose(ctx: Context, draft: _Draft) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = email.utils.formataddr((ctx.user.display_name, ctx.user.email))
    for name in ("To", "Cc", "Bcc"):
        if draft.headers.get(name):
            msg[name] = draft.headers[name]
    msg["Subject"] = draft.headers.get("Subject", "")
    msg["Date"] = email.utils.format_datetime(ctx.now)
    msg["Message-ID"] = compose.new_message_id(ctx.rng, ctx.now, ctx.user.email.rpartition("@")[2])
    for name in ("In-Reply-To", "References"):
        if draft.headers.get(name):
            msg[name] = draft.headers[name]
    importance = draft.headers.get("Importance")
    if importance and importance != "Normal":
        msg["Importance"] = importance
    if draft.html is not None:
        msg.set_content(draft.html, subtype="html")
    else:
        msg.set_content(draft.text)
    for att in draft.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            att.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=att.filename,
            disposition="inline" if att.inline else "attachment",
            cid=f"<{att.content_id}>" if att.content_id else None,
        )
    compose.give_boundaries(msg, ctx.rng)  # not the email package's own random
    return msg.as_bytes()


def build_draft(ctx: Context, appdata: Element) -> bytes:
    """An RFC 5322 message from the client's ApplicationData (a new draft)."""
    draft = _Draft()
    _apply(draft, appdata, set())
    return _to_mime(ctx, draft)


def _store(ctx: Context, folder: Folder, draft: _Draft, raw: bytes) -> DraftResult:
    new = ctx.txn.add_message(folder.id, replace(parse_message(raw, ctx.now), read=True))
    added: list[tuple[str, str]] = []
    for att, stored in zip(draft.attachments, new.attachments, strict=False):
        if att.client_id:
            added.append((att.client_id, stored.file_reference))
    return DraftResult(new, tuple(added))


def _finish(ctx: Context, folder: Folder, draft: _Draft, send: bool) -> DraftResult:
    raw = _to_mime(ctx, draft)
    if not send:
        return _store(ctx, folder, draft, raw)
    from natsync.eas.sendmail import send_mime  # sendmail imports the mail stack, not us

    queued = send_mime(ctx, "Sync", raw, save=True)
    return DraftResult(None, (), sent=True, outbound_queued=queued)


def add_draft(ctx: Context, folder: Folder, appdata: Element) -> DraftResult:
    """A new draft (or, with Send, a message sent at once) from a Sync Add."""
    draft = _Draft()
    _apply(draft, appdata, set())
    return _finish(ctx, folder, draft, wants_send(appdata))


def change_draft(ctx: Context, folder: Folder, msg: Message, appdata: Element) -> DraftResult:
    """A Sync Change of the stored draft *msg*: the fields sent replace the stored ones; the
    old message goes (see the module docstring) and Read / Flag / Categories carry over."""
    draft = _read_stored(ctx, msg)
    _apply(draft, appdata, _deleted_positions(msg, appdata))
    result = _finish(ctx, folder, draft, wants_send(appdata))
    txn = ctx.txn
    if result.message is not None:
        new = result.message
        if msg.flag.status:
            new = txn.set_flag(new.id, msg.flag)
        if msg.categories:
            new = txn.set_categories(new.id, msg.categories)
        result = replace(result, message=new)
    txn.delete_message(msg.id)
    return result
