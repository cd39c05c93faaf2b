"""Conversations (MS-ASCON): the ConversationId of a message, and the "always move" rules an
ItemOperations Move with MoveAlways leaves behind (MS-ASCMD 2.2.3.118 MoveAlways: later
messages of the conversation go to the destination folder too).

The ConversationId is the one Sync sends (natsync.classes.email: from Outlook's Thread-Index
when the message carries one, else from its normalized topic), so the id a phone took from a
Sync answer names the same messages here. Rules are one user setting (ConversationId hex ->
destination folder ServerId); :func:`on_delivery` applies them to a message just delivered to
the Inbox, in the delivery's transaction.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from natsync.classes.email import CONVERSATION_ID_BYTES, _conversation, thread_topic
from natsync.mime import header_text, parse_tree
from natsync.store.api import Message, Txn, User

log = logging.getLogger("natsync.mail.conversation")

__all__ = ["CONVERSATION_ID_BYTES", "add_rule", "conversation_id", "on_delivery", "rules"]

#: The user setting holding the always-move rules.
ALWAYS_MOVE_SETTING = "conversation.always_move"
#: Any time: the id does not depend on it (only the ConversationIndex, not used here, does).
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Rules kept per user (a phone adds one per "always move this conversation"; the oldest go).
MAX_RULES = 500


def conversation_id(raw: bytes, subject: str) -> bytes:
    """The 16-byte ConversationId of the message *raw* (MS-ASCON 2.2.2.3)."""
    head = parse_tree(raw)
    topic = header_text(head, "Thread-Topic") or thread_topic(subject)
    cid, _index = _conversation(header_text(head, "Thread-Index"), topic, _EPOCH)
    return cid


def rules(txn: Txn, user: User) -> dict[str, str]:
    """ConversationId (hex) -> destination folder ServerId."""
    stored = txn.get_user_setting(user.id, ALWAYS_MOVE_SETTING)
    try:
        value = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def add_rule(txn: Txn, user: User, cid: bytes, destination: str) -> None:
    current = rules(txn, user)
    current.pop(cid.hex(), None)
    current[cid.hex()] = destination
    kept = dict(list(current.items())[-MAX_RULES:])
    txn.set_user_setting(user.id, ALWAYS_MOVE_SETTING, json.dumps(kept))


def on_delivery(txn: Txn, user: User, message: Message, raw: bytes) -> Message:
    """Move *message* (just delivered) when an always-move rule names its conversation; the
    message where it ends up."""
    current = rules(txn, user)
    if not current:
        return message
    destination = current.get(conversation_id(raw, message.subject).hex())
    if destination is None:
        return message
    folder = txn.get_folder(user.id, destination)
    if folder is None or folder.id == message.folder_id:
        return message
    log.info("conversation rule of %s: message moved to %s", user.email, folder.display_name)
    return txn.move_message(message.id, folder.id)
