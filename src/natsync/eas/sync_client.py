"""The client's commands of one Sync collection (MS-ASCMD 2.2.3.29.2 Commands) on the store.

Email: Change (Read, Flag, Categories; a conflict is resolved per the Conflict option, server
wins by default), Delete (DeletesAsMoves default 1: to Deleted Items), Fetch. Add of email items
is accepted for drafts (16.0+, Drafts folder, natsync.eas.drafts), refused elsewhere (Status 6).
The other classes (Calendar, Contacts, Tasks, Notes: MS-ASCAL, MS-ASCNTC, MS-ASTASK, MS-ASNOTE)
go through their class codec (``natsync.eas.registry``): Add (ClientId -> ServerId), Change
(server wins a conflict by default, as for mail), Delete (for good: DeletesAsMoves is for mail;
with a 16.x InstanceId, one occurrence), Fetch; an item the codec cannot take is Status 6, an
unknown one Status 8. After each client write the codec's ``after_client_write`` hook runs in
the same transaction (Calendar sends invitations from it). Each command updates the device's
``known`` items (ServerId -> modseq) so the server's window does not echo it back, and returns
an :class:`Outcome`: its answer and the effects it asks of the adapter (frozen; nothing is
collected in a shared mutable object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from natsync.classes import email as eas_email
from natsync.classes.codec import ClassCodec, PimError
from natsync.eas import drafts, isolation, registry
from natsync.eas.context import Context, Effect, kick_relay, new_uid
from natsync.eas.errors import EasError
from natsync.eas.status import SyncStatus
from natsync.eas.sync_request import NS, CollectionRequest
from natsync.eas.versions import V16_0
from natsync.mime.errors import EmailChangeError, MailError
from natsync.store.api import AccessState, Conflict, Folder, FolderType, Item, Message
from natsync.wbxml import E, Element


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one client command gives back: its answer for the Responses element (None: the
    command needs none) and what it asks of the adapter beyond the store (``KickRelay`` when a
    class hook or a sent draft queued outbound mail). Returned, never collected in a shared
    object: Sync joins the commands' effects into its own Response."""

    reply: Element | None = None
    effects: tuple[Effect, ...] = ()


def reply(tag: str, sid: str, status: int) -> Element:
    return E(NS, tag, E(NS, "ServerId", sid), E(NS, "Status", status))


def _fetched(sid: str, data: Element) -> Element:
    return E(NS, "Fetch", E(NS, "ServerId", sid), E(NS, "Status", SyncStatus.SUCCESS), data)


def _fetch(ctx: Context, sid: str, render: Callable[[], Element]) -> Element:
    """A client's Fetch answered, or Status 6 when the item cannot be rendered (issue 19)."""
    fetched = isolation.build(ctx.skipped, sid, render)
    return reply("Fetch", sid, SyncStatus.CONVERSION_ERROR) if fetched is None else fetched


def client_command(
    ctx: Context,
    folder: Folder,
    req: CollectionRequest,
    cmd: Element,
    known: dict[str, int],
) -> Outcome:
    """Run one client command (Add, Change, Delete, Fetch) on *folder*; *known* is updated."""
    txn = ctx.txn
    if ctx.device.access_state == AccessState.QUARANTINED:
        # A quarantined device touches nothing real (natsync.eas.quarantine).
        if cmd.tag == "Add":
            client_id = cmd.child_text("ClientId", NS) or ""
            status = E(NS, "Status", SyncStatus.CONVERSION_ERROR)
            return Outcome(E(NS, "Add", E(NS, "ClientId", client_id), status))
        sid = cmd.child_text("ServerId", NS) or ""
        return Outcome(reply(cmd.tag, sid, SyncStatus.OBJECT_NOT_FOUND))
    codec = registry.codec_for(folder.type)
    if codec is not None:
        return _item_command(ctx, codec, folder, req, cmd, known)
    if cmd.tag == "Add":
        return _client_add(ctx, folder, cmd, known)
    sid = cmd.child_text("ServerId", NS) or ""
    msg = txn.get_message(ctx.user.id, sid) if sid else None
    if msg is None or msg.folder_id != folder.id:
        known.pop(sid, None)
        return Outcome(reply(cmd.tag, sid, SyncStatus.OBJECT_NOT_FOUND))
    if drafts.is_draft_edit(cmd, folder.type == FolderType.DRAFTS, ctx.version >= V16_0):
        return _draft_change(ctx, folder, msg, cmd, known)
    return Outcome(_email_command(ctx, folder, req, cmd, msg, known))


def _email_command(
    ctx: Context,
    folder: Folder,
    req: CollectionRequest,
    cmd: Element,
    msg: Message,
    known: dict[str, int],
) -> Element | None:
    """Change, Delete or Fetch of a message (no effects beyond the store)."""
    txn = ctx.txn
    sid = msg.server_id
    if cmd.tag == "Change":
        appdata = cmd.find("ApplicationData", NS)
        if appdata is None:
            return reply("Change", sid, SyncStatus.PROTOCOL_ERROR)
        if req.conflict == 1 and sid in known and known[sid] != msg.modseq:
            return None  # server wins (MS-ASCMD 2.2.3.34): its version goes to the client
        try:
            change = eas_email.apply_email_change(appdata)
        except EmailChangeError:
            return reply("Change", sid, SyncStatus.CONVERSION_ERROR)
        if change.read is not None and change.read != msg.read:
            msg = txn.set_read(msg.id, change.read)
        if change.flag is not None:
            msg = txn.set_flag(msg.id, change.flag)
        if change.categories is not None:
            msg = txn.set_categories(msg.id, change.categories)
        known[sid] = msg.modseq  # the client has this version: don't echo it back
        return None
    if cmd.tag == "Delete":
        if req.deletes_as_moves and folder.type != FolderType.DELETED_ITEMS:
            trash = txn.folder_by_type(ctx.user.id, FolderType.DELETED_ITEMS)
            txn.move_message(msg.id, trash.id)
        else:
            txn.delete_message(msg.id)
        known.pop(sid, None)
        return None
    if cmd.tag == "Fetch":
        raw = txn.raw_message(msg.id)

        def render() -> Element:
            data = eas_email.email_application_data(
                msg,
                raw,
                str(ctx.version),
                req.preferences(),
                mime_support=req.mime_support,
                mime_truncation=req.mime_truncation,
            )
            return _fetched(sid, data)

        return _fetch(ctx, sid, render)
    return reply(cmd.tag, sid, SyncStatus.PROTOCOL_ERROR)


def _item_command(
    ctx: Context,
    codec: ClassCodec,
    folder: Folder,
    req: CollectionRequest,
    cmd: Element,
    known: dict[str, int],
) -> Outcome:
    """A client command on an item of a non-email class (see the module docstring)."""
    txn = ctx.txn
    if cmd.tag == "Add":
        return _item_add(ctx, codec, folder, cmd, known)
    sid = cmd.child_text("ServerId", NS) or ""
    item = txn.get_item(ctx.user.id, sid) if sid else None
    if item is None or item.folder_id != folder.id:
        known.pop(sid, None)
        return Outcome(reply(cmd.tag, sid, SyncStatus.OBJECT_NOT_FOUND))
    if cmd.tag == "Fetch":

        def render() -> Element:
            encoded = codec.encode(item.data, ctx.version, req.preferences())
            return _fetched(sid, E(NS, "ApplicationData", *encoded))

        return Outcome(_fetch(ctx, sid, render))
    if cmd.tag not in ("Change", "Delete"):
        return Outcome(reply(cmd.tag, sid, SyncStatus.PROTOCOL_ERROR))
    if req.conflict == 1 and sid in known and known[sid] != item.modseq:
        return Outcome()  # server wins (MS-ASCMD 2.2.3.34): its version goes to the client
    instance = cmd.child_text("InstanceId", "AirSyncBase")
    try:
        if cmd.tag == "Change":
            appdata = cmd.find("ApplicationData", NS)
            if appdata is None:
                return Outcome(reply("Change", sid, SyncStatus.PROTOCOL_ERROR))
            if instance is not None:  # 16.x: one occurrence; the codec reads it in the data
                tag = Element("AirSyncBase", "InstanceId", [], instance)
                appdata = Element(NS, "ApplicationData", [tag, *appdata.children])
            record = codec.apply_change(item.data, appdata, ctx.version)
        elif instance is not None:
            # 16.x: the Delete of one occurrence is a change of the series.
            delete_occurrence = codec.delete_occurrence
            if delete_occurrence is None:
                return Outcome(reply("Delete", sid, SyncStatus.CONVERSION_ERROR))
            record = delete_occurrence(item.data, instance)
        else:
            txn.delete_item(item.id)
            known.pop(sid, None)
            return Outcome(effects=_after_write(ctx, codec, item, None))
    except PimError as exc:
        return Outcome(reply(cmd.tag, sid, exc.eas_status))
    new = txn.update_item(item.id, record)
    known[sid] = new.modseq  # the client has this version: don't echo it back
    effects = _after_write(ctx, codec, item, new)
    rewritten = txn.get_item(ctx.user.id, sid)
    if rewritten is not None and rewritten.data != new.data:
        # The hook changed the item in this transaction (same modseq): send it back.
        known[sid] = -1
    return Outcome(effects=effects)


def _item_add(
    ctx: Context,
    codec: ClassCodec,
    folder: Folder,
    cmd: Element,
    known: dict[str, int],
) -> Outcome:
    """A new item from the phone: its ClientId gets a ServerId (MS-ASCMD 2.2.3.24.2)."""
    client_id = cmd.child_text("ClientId", NS) or ""
    out = E(NS, "Add", E(NS, "ClientId", client_id))
    appdata = cmd.find("ApplicationData", NS)
    if appdata is None:
        out.add(NS, "Status", SyncStatus.PROTOCOL_ERROR)
        return Outcome(out)
    try:
        record = codec.decode(appdata, ctx.version)
    except PimError as exc:
        out.add(NS, "Status", exc.eas_status)
        return Outcome(out)
    if "uid" in record and not record["uid"]:  # a class with UIDs (Calendar) gets one: ctx.rng's
        record["uid"] = new_uid(ctx.rng)
    uid = record.get("uid")
    if not isinstance(uid, str) or not uid:
        uid = None
    try:
        item = ctx.txn.add_item(folder.id, record, uid=uid)
    except Conflict:
        # The folder holds that uid already (a second copy of one event): keep both, as a
        # phone that shows both expects; the copy's record keeps the uid the phone sent.
        item = ctx.txn.add_item(folder.id, record)
    known[item.server_id] = item.modseq  # the phone has it: never send it back as an Add
    effects = _after_write(ctx, codec, None, item)
    out.add(NS, "ServerId", item.server_id)
    out.add(NS, "Status", SyncStatus.SUCCESS)
    return Outcome(out, effects)


def _after_write(
    ctx: Context, codec: ClassCodec, old: Item | None, new: Item | None
) -> tuple[Effect, ...]:
    """The class hook after a client write (Calendar: invitations); KickRelay if it queued mail."""
    hook = codec.after_client_write
    return kick_relay(hook is not None and hook(ctx.txn, ctx.user, old, new, ctx.now, ctx.rng))


def _client_add(ctx: Context, folder: Folder, cmd: Element, known: dict[str, int]) -> Outcome:
    """A draft written on the phone (16.0+, Drafts only; natsync.eas.drafts); other email Adds
    are refused with Status 6 (email arrives by SMTP and SendMail, not by Sync)."""
    client_id = cmd.child_text("ClientId", NS) or ""
    out = E(NS, "Add", E(NS, "ClientId", client_id))
    appdata = cmd.find("ApplicationData", NS)
    if folder.type != FolderType.DRAFTS or ctx.version < V16_0 or appdata is None:
        out.add(NS, "Status", SyncStatus.CONVERSION_ERROR)
        return Outcome(out)
    try:
        result = drafts.add_draft(ctx, folder, appdata)
    except (drafts.DraftError, MailError, EasError):
        out.add(NS, "Status", SyncStatus.CONVERSION_ERROR)
        return Outcome(out)
    if result.message is not None:
        known[result.message.server_id] = result.message.modseq  # never sent back as an Add
        out.add(NS, "ServerId", result.message.server_id)
    out.add(NS, "Status", SyncStatus.SUCCESS)
    data = result.response_data()
    if data is not None:
        out.append(data)
    return Outcome(out, kick_relay(result.outbound_queued))


def _draft_change(
    ctx: Context,
    folder: Folder,
    msg: Message,
    cmd: Element,
    known: dict[str, int],
) -> Outcome:
    """A Change (or Send) of a draft (natsync.eas.drafts): the old ServerId is deleted and the
    new draft added, both sent to this phone in the same answer."""
    appdata = cmd.find("ApplicationData", NS)
    if appdata is None:
        return Outcome(reply("Change", msg.server_id, SyncStatus.PROTOCOL_ERROR))
    try:
        change = eas_email.apply_email_change(appdata)
        result = drafts.change_draft(ctx, folder, msg, appdata)
    except (drafts.DraftError, MailError, EasError):
        return Outcome(reply("Change", msg.server_id, SyncStatus.CONVERSION_ERROR))
    effects = kick_relay(result.outbound_queued)
    new = result.message
    if new is not None and change.flag is not None:
        new = ctx.txn.set_flag(new.id, change.flag)
    if new is not None and change.categories is not None:
        ctx.txn.set_categories(new.id, change.categories)
    data = result.response_data()
    if data is None:
        return Outcome(effects=effects)
    answer = E(NS, "Change", E(NS, "ServerId", msg.server_id), E(NS, "Status", 1), data)
    return Outcome(answer, effects)
