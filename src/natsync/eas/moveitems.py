"""MoveItems (MS-ASCMD 2.2.1.12): move messages, or items of another class between folders of
that class (a contact from Contacts to a user contacts folder); each gets a new ServerId.

The moving device already shows the item in its new place, so its sync states of both folders
are updated in the same transaction: no Delete and no duplicate Add come back to it.
"""

from __future__ import annotations

from natsync.eas import registry
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import Common, MoveStatus
from natsync.eas.sync_request import adjust_known
from natsync.store.api import Conflict, Item, Message
from natsync.wbxml import E

NS = "Move"
#: Moves one request may carry; a phone moves what the user selected, rarely hundreds.
MAX_MOVES = 1000


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "MoveItems" or body.namespace != NS:
        raise EasError("MoveItems needs a MoveItems body", status=Common.INVALID_CONTENT)
    moves = body.findall("Move", NS)
    if len(moves) > MAX_MOVES:
        raise EasError("too many moves in one request", status=Common.INVALID_CONTENT)
    root = E(NS, "MoveItems")
    txn = ctx.txn
    for move in moves:
        src_msg = move.child_text("SrcMsgId", NS) or ""
        src_fld = move.child_text("SrcFldId", NS) or ""
        dst_fld = move.child_text("DstFldId", NS) or ""
        response = root.add(NS, "Response")
        response.add(NS, "SrcMsgId", src_msg)
        source = txn.get_folder(ctx.user.id, src_fld) if src_fld else None
        dest = txn.get_folder(ctx.user.id, dst_fld) if dst_fld else None
        codec = registry.codec_for(source.type) if source is not None else None
        found: Message | Item | None = None
        if src_msg and codec is None:
            found = txn.get_message(ctx.user.id, src_msg)
        elif src_msg:
            found = txn.get_item(ctx.user.id, src_msg)
        if found is None or source is None or found.folder_id != source.id:
            response.add(NS, "Status", MoveStatus.INVALID_SOURCE)
            continue
        # Items stay within their class: a contact cannot become mail or an event.
        if dest is None or registry.codec_for(dest.type) is not codec:
            response.add(NS, "Status", MoveStatus.INVALID_DESTINATION)
            continue
        if dest.id == source.id:
            response.add(NS, "Status", MoveStatus.SAME_FOLDER)
            continue
        moved: Message | Item
        if isinstance(found, Message):
            moved = txn.move_message(found.id, dest.id)
        else:
            try:
                moved = txn.move_item(found.id, dest.id)
            except Conflict:  # the destination holds an item with the same uid
                response.add(NS, "Status", MoveStatus.FAILURE)
                continue
        adjust_known(ctx, source.server_id, remove=(src_msg,))
        adjust_known(ctx, dest.server_id, add={moved.server_id: moved.modseq})
        response.add(NS, "Status", MoveStatus.SUCCESS)
        response.add(NS, "DstMsgId", moved.server_id)
    return Response.of(root, status=MoveStatus.SUCCESS)
