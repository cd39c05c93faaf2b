"""What a phone is told when the IMAP server refuses its change, sans-I/O.

The write-back of a phone's change runs after the command committed (natsync.sources.worker).
For MoveItems, FolderCreate and FolderDelete the phone's answer waits for it
(natsync.sources.bodies): the mirror is woken at once, its write-back round runs, and what the
server refused is answered with the command's own status for the server's response code
(RFC 5530; RFC 3501 §7.1 TRYCREATE; RFC 9208 OVERQUOTA) in place of success:

* MoveItems (MS-ASCMD 2.2.3.177.10), per item; the store was already put back (the message
  returns to its source folder, as the phone keeps it);
* FolderCreate (MS-ASCMD 2.2.3.177.3) and FolderDelete (2.2.3.177.4): the answer is only the
  Status (no new ServerId, no new SyncKey: the phone keeps its hierarchy as it was); the store
  follows the server (a refused folder is removed; a mailbox the server kept comes back).

Other commands keep today's behaviour — the change is undone in the store, the phone's next Sync
shows the server's state — because EAS has no later status for them (a flag change rides on a
Sync whose answer does not wait for the server; a rename is FolderUpdate's, whose refusal the
store does not undo yet).
"""

from __future__ import annotations

from collections.abc import Mapping

from natsync.eas.status import FolderStatus, MoveStatus
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
    """The FolderCreate / FolderDelete status for a refused CREATE / DELETE."""
    code = code.upper()
    if code == "ALREADYEXISTS":
        return FolderStatus.ALREADY_EXISTS
    if code in ("NONEXISTENT", "TRYCREATE"):
        return (
            FolderStatus.PARENT_NOT_FOUND if command == "FolderCreate" else FolderStatus.NOT_FOUND
        )
    return FolderStatus.SERVER_ERROR  # NOPERM, OVERQUOTA, LIMIT ...: "an error on the server"


def folder_answer(command: str, status: FolderStatus) -> bytes:
    """A FolderCreate / FolderDelete answer that is only its Status."""
    return encode(E(FOLDERS, command, E(FOLDERS, "Status", str(int(status)))))


def created_folder(body: bytes) -> str:
    """The ServerId a successful FolderCreate answer hands out ("" if it is not one)."""
    if not body:
        return ""
    root = decode(body)
    if root.child_text("Status") != str(int(FolderStatus.SUCCESS)):
        return ""
    return root.child_text("ServerId") or ""
