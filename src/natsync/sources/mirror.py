"""The mirror's decisions, sans-I/O: which store folder a mailbox becomes, and which IMAP
commands bring a phone's changes to the server.

Write-back is a diff, so the EAS core needs no hooks: for every mirrored folder the store holds
the messages as the phone left them, and ``mirror_messages`` the UID and flags both sides last
agreed on. A message whose read/flag state differs was changed by the phone (STORE); one now in
another mirrored folder was moved (UID MOVE, RFC 6851); one gone was deleted (EXPUNGE: a phone
that deletes "as moves" has moved it to Deleted Items, which is Trash, already); a message
without a mapping row in a mirrored folder was made here (the Sent Items copy of a SendMail, a
draft): APPEND.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from natsync.sources.wire import ListEntry
from natsync.store.api import FolderType, MirrorFolder, MirrorMessage

#: RFC 6154 roles -> the EAS folder each one is (MS-ASCMD 2.2.3.186.3). Junk has no EAS type:
#: it is a user mail folder. \All and \Flagged are virtual views of other mailboxes; mirroring
#: them would show every message twice.
ROLE_TYPES: Mapping[str, FolderType] = {
    "\\Sent": FolderType.SENT_ITEMS,
    "\\Drafts": FolderType.DRAFTS,
    "\\Trash": FolderType.DELETED_ITEMS,
}
SKIPPED_ROLES = frozenset({"\\All", "\\Flagged"})


@dataclass(frozen=True, slots=True)
class FolderPlan:
    entry: ListEntry
    #: A standard folder of the store (Inbox, Sent Items ...) or USER_MAIL for the rest.
    type: FolderType
    #: Display name and parent mailbox (None: top level) for user folders.
    display_name: str
    parent: str | None


def plan_folders(entries: Sequence[ListEntry]) -> list[FolderPlan]:
    """Mailboxes to mirror, parents before children, each with its EAS role."""
    plans: list[FolderPlan] = []
    names = {e.raw_name for e in entries if e.selectable}
    for entry in sorted(entries, key=lambda e: e.raw_name.count(e.delimiter or "\0")):
        if not entry.selectable or entry.special in SKIPPED_ROLES:
            continue
        if entry.raw_name.upper() == "INBOX":
            plans.append(FolderPlan(entry, FolderType.INBOX, "Inbox", None))
            continue
        role = entry.special
        if role is not None and role in ROLE_TYPES:
            plans.append(FolderPlan(entry, ROLE_TYPES[role], entry.name, None))
            continue
        parent = None
        display = entry.name
        if entry.delimiter and entry.delimiter in entry.raw_name:
            head, _, _ = entry.raw_name.rpartition(entry.delimiter)
            if head in names:
                parent = head
            display = entry.name.rpartition(entry.delimiter)[2]
        if role == "\\Junk":
            display = display or "Junk"
        plans.append(FolderPlan(entry, FolderType.USER_MAIL, display, parent))
    return plans


@dataclass(frozen=True, slots=True)
class SetFlag:
    mapping: MirrorMessage
    flag: str  # "\\Seen" or "\\Flagged"
    on: bool


@dataclass(frozen=True, slots=True)
class SetKeywords:
    """Categories the phone added and removed (as category names; see .keywords)."""

    mapping: MirrorMessage
    add: tuple[str, ...]
    remove: tuple[str, ...]
    #: The categories the message has now on the phone (the row's new agreed state).
    now: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Move:
    mapping: MirrorMessage
    to_folder: int


@dataclass(frozen=True, slots=True)
class Expunge:
    mapping: MirrorMessage


@dataclass(frozen=True, slots=True)
class Append:
    folder_id: int
    message_id: int
    seen: bool
    flagged: bool
    categories: tuple[str, ...] = ()


Action = SetFlag | SetKeywords | Move | Expunge | Append


def plan_writeback(
    folder: MirrorFolder,
    mappings: Sequence[MirrorMessage],
    flags: Mapping[int, tuple[bool, bool]],
    location: Mapping[int, int | None],
    mirrored: frozenset[int],
    mapped_ids: frozenset[int],
    categories: Mapping[int, tuple[str, ...]] | None = None,
) -> list[Action]:
    """What the phone changed in *folder* since the mirror last agreed with the server.

    *flags*: message id -> (read, flagged) of the messages now in the folder; *location*:
    for mapped messages no longer there, their folder now (None: deleted); *mirrored*: the ids
    of all mirrored folders of the account; *mapped_ids*: every mapped message of the account
    (a message moved in from another mirrored folder is not new)."""
    names_of: Mapping[int, tuple[str, ...]] = categories or {}
    actions: list[Action] = []
    mapped = set()
    for row in mappings:
        mapped.add(row.message_id)
        if row.message_id in flags:
            read, flagged = flags[row.message_id]
            if read != row.seen:
                actions.append(SetFlag(row, "\\Seen", read))
            if flagged != row.flagged:
                actions.append(SetFlag(row, "\\Flagged", flagged))
            now = tuple(sorted(set(names_of.get(row.message_id, ()))))
            if set(now) != set(row.keywords):
                add = tuple(c for c in now if c not in row.keywords)
                remove = tuple(c for c in row.keywords if c not in now)
                actions.append(SetKeywords(row, add, remove, now))
            continue
        where = location.get(row.message_id)
        if where is not None and where in mirrored:
            actions.append(Move(row, where))
        elif where is None:
            actions.append(Expunge(row))
        # else: moved to a folder that is not mirrored (Outbox): left alone on the server.
    for message_id, (read, flagged) in flags.items():
        if message_id not in mapped and message_id not in mapped_ids:
            names = tuple(sorted(set(names_of.get(message_id, ()))))
            actions.append(Append(folder.folder_id, message_id, read, flagged, names))
    return actions
