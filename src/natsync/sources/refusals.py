"""What a phone is told when the IMAP server refuses its change, sans-I/O.

The write-back of a phone's change runs after the command committed (natsync.sources.worker).
For Sync (when it carried changes for a mirrored folder), MoveItems, FolderCreate, FolderUpdate
and FolderDelete the phone's answer waits for it (natsync.sources.bodies): the mirror is woken
at once, its write-back round runs, and what the server refused is answered with the command's
own status for the server's response code (RFC 5530; RFC 3501 §7.1 TRYCREATE; RFC 9208
OVERQUOTA; RFC 7162 §3.1.3 MODIFIED) in place of success. In every case the store was put
back to the server's state as well (the change is undone), so the phone's next Sync shows it.

* Sync (MS-ASCMD 2.2.3.177.17, per item, in the collection's ``Responses``: 2.2.3.154; a
  failed Change or Delete gets a response, MS-ASCMD 2.2.3.42.2):

  - a Change (read, flag, categories) a laptop overtook — ``UNCHANGEDSINCE`` failed,
    MODIFIED — is **7**, "conflict": the server's version wins (EAS's default, Conflict 1,
    MS-ASCMD 2.2.3.34: Status 7 tells the client its object was discarded) and comes with
    the next Sync;
  - a Change of a message whose mailbox is gone (``[NONEXISTENT]``/``[TRYCREATE]``; the
    mirror gives a refused SELECT of a mailbox no longer in LIST ``[NONEXISTENT]``, as
    Dovecot words it without a code) is **8**, "object not found";
  - a Delete the server refused is **8** whatever the code: the undo brings the message back
    under a *new* ServerId (it is moved back, or fetched again), so the one the phone sent
    is no longer valid — 8's resolution, "issue a synchronization request", gives the phone
    the message back once, where a status that made it keep the old item would leave two;
  - a draft's Add (APPEND to Drafts) refused is, like any other refusal, **5** when the
    server says it is busy (``[INUSE]``, ``[UNAVAILABLE]``: "a temporary condition", the
    phone may try again) and otherwise (``[OVERQUOTA]``, ``[NOPERM]``, ``[LIMIT]``, none
    given) **6**, the status of an item the server will not take ("stop sending the item");
    the failed Add carries no ServerId (no item was made).

  A changed draft is stored as a new message and the old one deleted, both sent to the phone
  in the same answer (Delete of the old ServerId, Add of the new): when the server refuses
  the new version (its APPEND; the old draft stays on the server), the Change is answered
  **6** and the new version's Add leaves the answer — the phone never shows what the server
  refused, and gets the server's draft back (fetched again, a new ServerId) at its next Sync.
  The answer kept for a retransmission of the Sync (natsync.eas.state) is the one sent, with
  the statuses; the ServerIds of a failed Add or a removed new version leave the items the
  phone is known to have (no Delete of them follows).
* MoveItems (MS-ASCMD 2.2.3.177.10), per item; the store was already put back (the message
  returns to its source folder, as the phone keeps it);
* FolderCreate (MS-ASCMD 2.2.3.177.3), FolderUpdate (2.2.3.177.6) and FolderDelete
  (2.2.3.177.4): the answer is only the Status (no new ServerId, no new SyncKey: the phone
  keeps its hierarchy as it was); the store follows the server (a refused folder is removed,
  a refused rename takes back its old name, a mailbox the server kept comes back).

The Sent copy of SendMail/SmartReply/SmartForward keeps today's behaviour — the command was
answered when the mail was queued, so a refused APPEND of the copy is only undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from natsync.eas.status import FolderStatus, MoveStatus, SyncStatus
from natsync.wbxml import E, decode, encode
from natsync.wbxml.tree import Element

#: IMAP response codes -> the MoveItems status the phone gets for a refused MOVE.
MOVE_STATUS: Mapping[str, MoveStatus] = {
    # The destination mailbox does not exist (any more): the phone should FolderSync.
    "TRYCREATE": MoveStatus.INVALID_DESTINATION,
    "NONEXISTENT": MoveStatus.INVALID_DESTINATION,
    # Busy: the phone may try again later (MS-ASCMD: "locked", retry).
    "INUSE": MoveStatus.LOCKED,
    "UNAVAILABLE": MoveStatus.LOCKED,
}
#: Any other refusal (OVERQUOTA, LIMIT, NOPERM, CANNOT ... or none given): the move failed.
DEFAULT_MOVE_STATUS = MoveStatus.FAILURE


def move_status(code: str) -> MoveStatus:
    return MOVE_STATUS.get(code.upper(), DEFAULT_MOVE_STATUS)


def moved(body: bytes) -> dict[str, str]:
    """DstMsgId -> SrcMsgId of the items a MoveItems answer reports moved (Status 3)."""
    if not body:
        return {}
    root = decode(body)
    found: dict[str, str] = {}
    for response in root.findall("Response"):
        if response.child_text("Status") == str(int(MoveStatus.SUCCESS)):
            src, dst = response.child_text("SrcMsgId"), response.child_text("DstMsgId")
            if src and dst:
                found[dst] = src
    return found


def with_statuses(body: bytes, statuses: Mapping[str, MoveStatus]) -> bytes:
    """The MoveItems answer *body* with each item of *statuses* (by SrcMsgId) failed: its
    Status replaced and its DstMsgId removed (there is no new item)."""
    root = decode(body)
    for response in root.findall("Response"):
        status = statuses.get(response.child_text("SrcMsgId") or "")
        if status is None:
            continue
        kept: list[Element] = []
        for child in response.children:
            if child.tag == "DstMsgId":
                continue
            if child.tag == "Status":
                child.value = str(int(status))
            kept.append(child)
        response.children[:] = kept
    return encode(root)


#: The FolderHierarchy code page's namespace (MS-ASWBXML code page 7).
FOLDERS = "FolderHierarchy"


def folder_status(command: str, code: str) -> FolderStatus:
    """The FolderCreate / FolderUpdate / FolderDelete status for a refused CREATE / RENAME /
    DELETE."""
    code = code.upper()
    if code == "ALREADYEXISTS":
        return FolderStatus.ALREADY_EXISTS
    if command == "FolderUpdate" and code == "TRYCREATE":
        return FolderStatus.PARENT_NOT_FOUND  # the new parent's mailbox is not there
    if code in ("NONEXISTENT", "TRYCREATE"):
        return (
            FolderStatus.PARENT_NOT_FOUND if command == "FolderCreate" else FolderStatus.NOT_FOUND
        )
    return FolderStatus.SERVER_ERROR  # NOPERM, OVERQUOTA, LIMIT ...: "an error on the server"


def folder_answer(command: str, status: FolderStatus) -> bytes:
    """A FolderCreate / FolderUpdate / FolderDelete answer that is only its Status."""
    return encode(E(FOLDERS, command, E(FOLDERS, "Status", str(int(status)))))


def created_folder(body: bytes) -> str:
    """The ServerId a successful FolderCreate answer hands out ("" if it is not one)."""
    if not body:
        return ""
    root = decode(body)
    if root.child_text("Status") != str(int(FolderStatus.SUCCESS)):
        return ""
    return root.child_text("ServerId") or ""


#: The AirSync code page's namespace (MS-ASWBXML code page 0).
AIRSYNC = "AirSync"
#: The response code the mirror gives a flag or keyword STORE that UNCHANGEDSINCE stopped.
MODIFIED = "MODIFIED"
#: The server is busy: the phone may try again (RFC 5530 §3).
TRANSIENT = frozenset({"INUSE", "UNAVAILABLE"})
#: The message's mailbox is gone.
GONE = frozenset({"NONEXISTENT", "TRYCREATE"})


def sync_status(kind: str, code: str) -> SyncStatus:
    """The Sync status of a refused client command *kind* (Add, Change, Delete): see the
    module docstring for the reasons."""
    code = code.upper()
    if kind == "Delete" or code in GONE:
        return SyncStatus.OBJECT_NOT_FOUND
    if code == MODIFIED:
        return SyncStatus.CONFLICT
    if code in TRANSIENT:
        return SyncStatus.SERVER_ERROR
    return SyncStatus.CONVERSION_ERROR


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    """A refused client command of a Sync: its collection, kind (Add, Change, Delete) and
    the id the phone knows it by (its ClientId for an Add, else its ServerId)."""

    collection: str
    kind: str
    ref: str
    status: SyncStatus


def sync_commands(body: Element) -> dict[str, list[tuple[str, str]]]:
    """CollectionId -> (kind, ServerId) of the Changes and Deletes a Sync request carries,
    and ("Add", ClientId) of its Adds."""
    found: dict[str, list[tuple[str, str]]] = {}
    for collection in body.iter():
        if collection.tag != "Collection":
            continue
        commands = collection.find("Commands")
        cid = collection.child_text("CollectionId") or ""
        if commands is None or not cid:
            continue
        for cmd in commands.children:
            if cmd.tag in ("Change", "Delete"):
                ref = cmd.child_text("ServerId") or ""
            elif cmd.tag == "Add":
                ref = cmd.child_text("ClientId") or ""
            else:
                continue
            if ref:
                found.setdefault(cid, []).append((cmd.tag, ref))
    return found


def added_items(body: bytes) -> dict[tuple[str, str], str]:
    """(CollectionId, ClientId) -> ServerId of the Adds a Sync answer reports made."""
    if not body:
        return {}
    found: dict[tuple[str, str], str] = {}
    for collection in decode(body).iter():
        responses = collection.find("Responses") if collection.tag == "Collection" else None
        if responses is None:
            continue
        cid = collection.child_text("CollectionId") or ""
        for add in responses.findall("Add"):
            client, server = add.child_text("ClientId"), add.child_text("ServerId")
            if client and server and add.child_text("Status") == str(int(SyncStatus.SUCCESS)):
                found[(cid, client)] = server
    return found


def sync_with_statuses(body: bytes, refusals: Sequence[ItemRefusal]) -> bytes:
    """The Sync answer *body* with each refused item answered with its status in its
    collection's Responses: a failed Add loses its ServerId (and data); a Change or Delete
    gets a response of its own (or its existing one its status)."""
    if not refusals:
        return body
    root = decode(body)
    by_collection: dict[str, list[ItemRefusal]] = {}
    for refusal in refusals:
        by_collection.setdefault(refusal.collection, []).append(refusal)
    for collection in root.iter():
        if collection.tag != "Collection":
            continue
        mine = by_collection.get(collection.child_text("CollectionId") or "")
        if not mine:
            continue
        responses = collection.find("Responses")
        if responses is None:
            responses = E(AIRSYNC, "Responses")
            collection.append(responses)
        for refusal in mine:
            key = "ClientId" if refusal.kind == "Add" else "ServerId"
            found = next(
                (
                    r
                    for r in responses.children
                    if r.tag == refusal.kind and r.child_text(key) == refusal.ref
                ),
                None,
            )
            if found is None:
                responses.append(
                    E(AIRSYNC, refusal.kind, E(AIRSYNC, key, refusal.ref),
                      E(AIRSYNC, "Status", str(int(refusal.status))))
                )  # fmt: skip
                continue
            kept: list[Element] = []
            for child in found.children:
                if refusal.kind == "Add" and child.tag in ("ServerId", "ApplicationData"):
                    continue
                if child.tag == "Status":
                    child.value = str(int(refusal.status))
                kept.append(child)
            found.children[:] = kept
    return encode(root)


def collection_answers(body: bytes, collections: Set[str]) -> dict[str, tuple[str, bytes]]:
    """CollectionId -> (its new SyncKey, its answer as a Sync document of its own) for
    *collections* of the Sync answer *body*: what natsync.eas.sync keeps with the key to
    answer a retransmission."""
    found: dict[str, tuple[str, bytes]] = {}
    for collection in decode(body).iter():
        if collection.tag != "Collection":
            continue
        cid, key = collection.child_text("CollectionId"), collection.child_text("SyncKey")
        if cid and key and cid in collections:
            found[cid] = (key, encode(E(AIRSYNC, "Sync", E(AIRSYNC, "Collections", collection))))
    return found


def server_adds(body: bytes, collections: Set[str]) -> list[tuple[str, str]]:
    """(CollectionId, ServerId) of the Adds in the Commands of *collections* of a Sync answer:
    items the server sends the phone (a changed draft's new version among them)."""
    found: list[tuple[str, str]] = []
    for collection in decode(body).iter() if body else ():
        cid = collection.child_text("CollectionId") if collection.tag == "Collection" else None
        commands = collection.find("Commands") if cid in collections else None
        if cid is None or commands is None:
            continue
        found += [(cid, a.child_text("ServerId") or "") for a in commands.findall("Add")]
    return [(cid, sid) for cid, sid in found if sid]


def without_adds(body: bytes, gone: Set[tuple[str, str]]) -> bytes:
    """The Sync answer *body* without the Commands Adds *gone* ((CollectionId, ServerId):
    items the server refused to take, e.g. a changed draft's new version, already removed
    from the store)."""
    if not gone:
        return body
    root = decode(body)
    for collection in root.iter():
        commands = collection.find("Commands") if collection.tag == "Collection" else None
        if commands is None:
            continue
        cid = collection.child_text("CollectionId") or ""
        commands.children[:] = [
            c
            for c in commands.children
            if not (c.tag == "Add" and (cid, c.child_text("ServerId") or "") in gone)
        ]
        if not commands.children:
            collection.children.remove(commands)
    return encode(root)
