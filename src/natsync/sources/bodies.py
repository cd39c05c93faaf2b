"""The rest of a lazily mirrored message, fetched when a phone's command needs it.

A large message is stored partial (natsync.sources.structure: its text and the list of its
attachments). Every EAS command of a server with IMAP sources runs through :class:`LazyBodies`
(``EasApp.command_hook``), which hands the command a transaction whose raw-MIME reads notice a
partial message the command needs whole and raise :class:`BodyNeeded` instead. The transaction
rolls back (nothing the command did stays), the user's mirror fetches those messages whole over
IMAP (``UID FETCH ... BODY.PEEK[]`` on a connection of its own), puts them in place, and the
command runs again — now with the whole message. What needs a message whole:

* an attachment's bytes (ItemOperations Fetch by FileReference, GetAttachment — MS-ASCMD
  2.2.1.10, 2.2.1.7), and every command that is not a plain Sync/Search/Find/GetItemEstimate
  (ItemOperations of an item, SmartReply/SmartForward of it, MeetingResponse ...);
* a Sync or Search that asks for MIME (MS-ASAIRS 2.2.2.22.7 Type 4, or MIMESupport 1/2 of
  MS-ASCMD 2.2.3.100.3), fetches items (Fetch) or changes more than their read/flag/category
  state (a draft), or a Sync without Options (it uses the ones it sent before, which may ask
  for MIME);
* any read of a message whose text was longer than what was fetched (its marker says cut).

A plain Sync (Type 1/2/3 bodies, truncated or not) of an uncut message is answered from the
partial copy: that is the point — the newest 100 messages reach the phone without their
attachments being copied first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from natsync.errors import NatsyncError
from natsync.sources.structure import partial_of
from natsync.store.api import Attachment, Txn
from natsync.wbxml.tree import Element

if TYPE_CHECKING:
    from natsync.sources.worker import MirrorManager

log = logging.getLogger("natsync.sources")

#: Fetch-and-run-again rounds of one command: one fetches every message it read; a second covers
#: a message that arrived between the rounds.
MAX_ROUNDS = 3
#: Commands that may read a message's text from its partial copy (when they ask no MIME).
TEXT_COMMANDS = frozenset({"Sync", "Search", "Find", "GetItemEstimate", "Ping"})
#: MS-ASAIRS 2.2.2.22.7: BodyPreference Type 4 is the whole MIME message.
MIME = "4"
#: What a Sync Change may carry and still not read the message (read, follow-up flag,
#: categories: MS-ASCMD 2.2.3.7.2); anything else (a draft's fields) rebuilds it from its MIME.
FLAG_CHANGES = frozenset({"Read", "Flag", "Categories"})


class BodyNeeded(NatsyncError):
    """A command needs messages that are stored partial; they are fetched and it runs again
    (never seen by a phone: if it escapes, 503 tells the phone to try again)."""

    http_status = 503

    def __init__(self, message_ids: Sequence[int]) -> None:
        super().__init__(f"messages {list(message_ids)} are fetched from the IMAP server")
        self.message_ids = tuple(message_ids)


def text_is_enough(cmd: str, body: Any) -> bool:
    """Whether *cmd* with request *body* can be answered from partial copies (module doc)."""
    if cmd not in TEXT_COMMANDS:
        return False
    if not isinstance(body, Element):
        return cmd in ("Ping", "GetItemEstimate")
    elements = list(body.iter())
    for element in elements:
        if element.tag in ("Fetch", "Body"):
            return False
        if element.tag == "ApplicationData" and any(
            child.tag not in FLAG_CHANGES for child in element.children
        ):
            return False
        if element.tag == "MIMESupport" and element.value not in (None, "0"):
            return False
        if element.tag == "Type" and element.value == MIME:
            return False
    if cmd == "Sync":
        collections = [e for e in elements if e.tag == "Collection"]
        if any(c.find("Options") is None for c in collections):
            return False  # options from an earlier request: they may ask MIME
    return True


class _Guard:
    """A Txn whose raw-MIME reads raise BodyNeeded for partial messages the command needs
    whole; everything else is the transaction's own."""

    def __init__(self, txn: Txn, text_ok: bool, key: str) -> None:
        object.__setattr__(self, "_txn", txn)
        object.__setattr__(self, "_text_ok", text_ok)
        object.__setattr__(self, "_key", key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._txn, name, value)

    def _check(self, raws: dict[int, bytes], attachment: bool = False) -> None:
        missing = []
        for message_id, raw in raws.items():
            partial = partial_of(raw, self._key)
            if partial is not None and (attachment or not self._text_ok or partial.cut):
                missing.append(message_id)
        if missing:
            raise BodyNeeded(missing)

    def raw_message(self, message_id: int) -> bytes:
        raw: bytes = self._txn.raw_message(message_id)
        self._check({message_id: raw})
        return raw

    def raw_messages(self, message_ids: Sequence[int]) -> dict[int, bytes]:
        raws: dict[int, bytes] = self._txn.raw_messages(message_ids)
        self._check(raws)
        return raws

    def message_bodies(self, message_ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]:
        # A Sync window reads the raw MIME and the parts kept at delivery in one go.
        bodies: dict[int, tuple[bytes, str | None]] = self._txn.message_bodies(message_ids)
        self._check({message_id: raw for message_id, (raw, _) in bodies.items()})
        return bodies

    def get_attachment(self, user_id: int, file_reference: str) -> tuple[Attachment, bytes] | None:
        found: tuple[Attachment, bytes] | None = self._txn.get_attachment(user_id, file_reference)
        if found is not None:
            message_id = found[0].message_id
            self._check({message_id: self._txn.raw_message(message_id)}, attachment=True)
        return found


class SourceHook:
    """``EasApp.command_hook`` of a server with IMAP sources: lazily mirrored messages fetched
    whole when a command needs them (the module docstring), and Sync (its changes of mirrored
    folders), MoveItems, FolderCreate, FolderUpdate and FolderDelete answered with the IMAP
    server's verdict (natsync.sources.refusals)."""

    def __init__(self, manager: MirrorManager) -> None:
        self.manager = manager

    async def __call__(
        self,
        request: Any,
        user: str,
        body: Any,
        attempt: Callable[[Callable[[Txn], Txn] | None], Any],
    ) -> Any:
        text_ok = text_is_enough(request.cmd, body)
        key = await self.manager.partial_key(user)
        mark = self.manager.refusal_mark(user)
        deleted = ""
        if request.cmd == "FolderDelete" and isinstance(body, Element):
            deleted = await self.manager.mailbox_for(user, body.child_text("ServerId") or "")
        targets = None
        if request.cmd == "Sync" and isinstance(body, Element):
            targets = await self.manager.sync_targets(user, body)

        def guard(txn: Txn) -> Txn:
            return _Guard(txn, text_ok, key) if key else txn

        response = None
        for _ in range(MAX_ROUNDS - 1):
            try:
                response = await attempt(guard)
                break
            except BodyNeeded as needed:
                await self.manager.fetch_whole(user, needed.message_ids)
        if response is None:
            response = await attempt(guard)
        if request.cmd == "MoveItems":
            return await self.manager.write_through_moves(user, response, mark)
        if request.cmd in ("FolderCreate", "FolderUpdate", "FolderDelete"):
            updated = ""
            if request.cmd == "FolderUpdate" and isinstance(body, Element):
                updated = body.child_text("ServerId") or ""
            return await self.manager.write_through_folder(
                user, request.cmd, response, deleted, mark, updated
            )
        if targets is not None:
            device = getattr(request, "device_id", "")
            return await self.manager.write_through_sync(user, targets, response, mark, device)
        return response
