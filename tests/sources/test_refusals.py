"""The answers of refused changes (natsync.sources.refusals), sans-I/O: the IMAP response code
gives the MoveItems (MS-ASCMD 2.2.3.177.10) or FolderCreate/FolderDelete (2.2.3.177.3/.4)
status; only the refused items change."""

from __future__ import annotations

from natsync.eas.status import FolderStatus, MoveStatus
from natsync.sources.refusals import (
    created_folder,
    folder_answer,
    folder_status,
    move_status,
    moved,
    with_statuses,
)
from natsync.wbxml import E, decode, encode


def _answer(*items: tuple[str, int, str]) -> bytes:
    return encode(
        E(
            "Move",
            "MoveItems",
            *(
                E(
                    "Move",
                    "Response",
                    E("Move", "SrcMsgId", src),
                    E("Move", "Status", str(status)),
                    *([E("Move", "DstMsgId", dst)] if dst else []),
                )
                for src, status, dst in items
            ),
        )
    )


def test_codes_to_statuses() -> None:
    assert move_status("TRYCREATE") is MoveStatus.INVALID_DESTINATION
    assert move_status("nonexistent") is MoveStatus.INVALID_DESTINATION
    assert move_status("INUSE") is MoveStatus.LOCKED
    assert move_status("NOPERM") is MoveStatus.FAILURE
    assert move_status("OVERQUOTA") is MoveStatus.FAILURE
    assert move_status("") is MoveStatus.FAILURE


def test_only_the_refused_items_fail() -> None:
    body = _answer(("2:1", 3, "7:1"), ("2:2", 3, "7:2"), ("2:3", 1, ""))
    assert moved(body) == {"7:1": "2:1", "7:2": "2:2"}
    changed = decode(with_statuses(body, {"2:2": MoveStatus.FAILURE}))
    rows = [
        (r.child_text("SrcMsgId"), r.child_text("Status"), r.child_text("DstMsgId"))
        for r in changed.findall("Response")
    ]
    assert rows == [("2:1", "3", "7:1"), ("2:2", "5", None), ("2:3", "1", None)]


def test_folder_refusals() -> None:
    assert folder_status("FolderCreate", "ALREADYEXISTS") is FolderStatus.ALREADY_EXISTS
    assert folder_status("FolderCreate", "NONEXISTENT") is FolderStatus.PARENT_NOT_FOUND
    assert folder_status("FolderDelete", "NONEXISTENT") is FolderStatus.NOT_FOUND
    assert folder_status("FolderDelete", "NOPERM") is FolderStatus.SERVER_ERROR
    answer = decode(folder_answer("FolderCreate", FolderStatus.SERVER_ERROR))
    assert (answer.tag, [c.tag for c in answer.children]) == ("FolderCreate", ["Status"])
    assert answer.child_text("Status") == "6"
    ok = encode(
        E(
            "FolderHierarchy",
            "FolderCreate",
            E("FolderHierarchy", "Status", "1"),
            E("FolderHierarchy", "SyncKey", "3"),
            E("FolderHierarchy", "ServerId", "17"),
        )
    )
    assert created_folder(ok) == "17"
    assert created_folder(folder_answer("FolderCreate", FolderStatus.SERVER_ERROR)) == ""
