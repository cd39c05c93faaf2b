"""ItemOperations Move (MS-ASCMD 2.2.3.117.1; MS-ASCON 2.2.2.7): move a conversation — every
message with the given ``ConversationId`` (MS-ASCON 2.2.2.3, as Sync sends it) — to
``DstFldId``. ``Options/MoveAlways`` (MS-ASCMD 2.2.3.118) must be present: the conversation is
set to be moved always, so the messages of it that arrive later go there too
(natsync.mail.conversation keeps the rule, delivery applies it).

Messages are moved from every mail folder except Sent Items (MS-ASCON 2.2.2.8) and the
destination. The phone learns the result by Sync (a Delete in the source folders, an Add in the
destination), so no device state is adjusted here.

Status (MS-ASCMD 2.2.3.177.8): 1 moved, the rule kept (also when nothing of the conversation is
there yet); 2 protocol error (no 16-byte ConversationId, no DstFldId); 6 the destination is not
a mail folder of the user; 155 MoveAlways missing (MS-ASCMD 2.2.3.118).
"""

from __future__ import annotations

from natsync.eas.context import Context
from natsync.eas.status import ItemOperationsStatus as S
from natsync.eas.sync_window import MAIL_TYPES
from natsync.mail.conversation import CONVERSATION_ID_BYTES, add_rule, conversation_id
from natsync.store.api import FolderType
from natsync.wbxml import E, Element

NS = "ItemOperations"
#: Status when the request lacks MoveAlways (MS-ASCMD 2.2.3.118).
MOVE_ALWAYS_MISSING = 155
#: Messages examined per move (each one's header block is read for its ConversationId).
MAX_SCANNED = 50_000


def _answer(status: int, cid: bytes) -> Element:
    out = E(NS, "Move", E(NS, "Status", status))
    if cid:
        out.append(Element(NS, "ConversationId", [], cid))
    return out


def move_conversation(ctx: Context, op: Element) -> Element:
    value = op.find("ConversationId", NS)
    raw_id = value.value if value is not None else None
    cid = raw_id if isinstance(raw_id, bytes) else (raw_id or "").encode("latin-1", "replace")
    destination = (op.child_text("DstFldId", NS) or "").strip()
    if len(cid) != CONVERSATION_ID_BYTES or not destination:
        return _answer(S.PROTOCOL_ERROR, cid)
    txn = ctx.txn
    folders = txn.list_folders(ctx.user.id)
    dest = next((f for f in folders if f.server_id == destination), None)
    if dest is None or dest.type not in MAIL_TYPES:
        return _answer(S.NOT_FOUND, cid)
    options = op.find("Options", NS)
    if options is None or options.find("MoveAlways", NS) is None:
        return _answer(MOVE_ALWAYS_MISSING, cid)
    scanned = 0
    for folder in folders:
        if folder.id == dest.id or folder.type not in MAIL_TYPES:
            continue
        if folder.type == FolderType.SENT_ITEMS:
            continue
        for msg in txn.get_messages(ctx.user.id, list(txn.message_versions(folder.id))):
            scanned += 1
            if scanned > MAX_SCANNED:
                break
            if conversation_id(txn.raw_message(msg.id), msg.subject) == cid:
                txn.move_message(msg.id, dest.id)
    add_rule(txn, ctx.user, cid, dest.server_id)
    return _answer(S.SUCCESS, cid)
