"""The answers of refused changes (natsync.sources.refusals), sans-I/O: the IMAP response code
gives the Sync (MS-ASCMD 2.2.3.177.17), MoveItems (2.2.3.177.10) or FolderCreate/FolderUpdate/
FolderDelete (2.2.3.177.3/.6/.4) status; only the refused items change."""

from __future__ import annotations

from natsync.eas.status import FolderStatus, MoveStatus, SyncStatus
from natsync.sources.refusals import (
    ItemRefusal,
    added_items,
    collection_answers,
    created_folder,
    folder_answer,
    folder_status,
    move_status,
    moved,
    server_adds,
    sync_commands,
    sync_status,
    sync_with_statuses,
    with_statuses,
    without_adds,
)
from natsync.wbxml import E, decode, encode
from natsync.wbxml.tree import Element


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
    assert folder_status("FolderUpdate", "ALREADYEXISTS") is FolderStatus.ALREADY_EXISTS
    assert folder_status("FolderUpdate", "NONEXISTENT") is FolderStatus.NOT_FOUND
    assert folder_status("FolderUpdate", "TRYCREATE") is FolderStatus.PARENT_NOT_FOUND
    assert folder_status("FolderUpdate", "NOPERM") is FolderStatus.SERVER_ERROR
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


def test_sync_codes_to_statuses() -> None:
    assert sync_status("Change", "MODIFIED") is SyncStatus.CONFLICT
    assert sync_status("Change", "NONEXISTENT") is SyncStatus.OBJECT_NOT_FOUND
    assert sync_status("Change", "trycreate") is SyncStatus.OBJECT_NOT_FOUND
    assert sync_status("Delete", "NOPERM") is SyncStatus.OBJECT_NOT_FOUND
    assert sync_status("Add", "INUSE") is SyncStatus.SERVER_ERROR
    assert sync_status("Change", "UNAVAILABLE") is SyncStatus.SERVER_ERROR
    assert sync_status("Add", "OVERQUOTA") is SyncStatus.CONVERSION_ERROR
    assert sync_status("Change", "") is SyncStatus.CONVERSION_ERROR


def _a(tag: str, *children: Element | str) -> Element:
    return E("AirSync", tag, *children)


def _sync_answer() -> bytes:
    def collection(cid: str, *rest: Element) -> Element:
        return _a(
            "Collection", _a("SyncKey", "k2"), _a("CollectionId", cid), _a("Status", "1"), *rest
        )

    return encode(
        _a(
            "Sync",
            _a(
                "Collections",
                collection(
                    "3",
                    _a("Commands", _a("Add", _a("ServerId", "3:9"))),
                    _a(
                        "Responses",
                        _a("Add", _a("ClientId", "c1"), _a("ServerId", "3:5"), _a("Status", "1")),
                        _a("Add", _a("ClientId", "c2"), _a("ServerId", "3:6"), _a("Status", "1")),
                    ),
                ),
                collection("2"),
            ),
        )
    )


def test_refused_items_of_a_sync_get_their_status() -> None:
    body = _sync_answer()
    assert added_items(body) == {("3", "c1"): "3:5", ("3", "c2"): "3:6"}
    refusals = [
        ItemRefusal("3", "Add", "c2", SyncStatus.CONVERSION_ERROR),
        ItemRefusal("2", "Change", "2:1", SyncStatus.CONFLICT),
        ItemRefusal("2", "Delete", "2:4", SyncStatus.OBJECT_NOT_FOUND),
    ]
    root = decode(sync_with_statuses(body, refusals))
    drafts, inbox = root.find("Collections").findall("Collection")  # type: ignore[union-attr]
    adds = [
        (a.child_text("ClientId"), a.child_text("ServerId"), a.child_text("Status"))
        for a in drafts.find("Responses").findall("Add")  # type: ignore[union-attr]
    ]
    assert adds == [("c1", "3:5", "1"), ("c2", None, "6")]
    # The server's own commands are left alone.
    assert drafts.find("Commands") is not None
    answers = [
        (r.tag, r.child_text("ServerId"), r.child_text("Status"))
        for r in inbox.find("Responses").children  # type: ignore[union-attr]
    ]
    assert answers == [("Change", "2:1", "7"), ("Delete", "2:4", "8")]
    assert sync_with_statuses(body, []) == body
    # Each collection's answer as the document kept for a retransmission, under its new key.
    kept = collection_answers(sync_with_statuses(body, refusals), {"2"})
    assert list(kept) == ["2"]
    key, doc = kept["2"]
    assert key == "k2"
    [alone] = decode(doc).find("Collections").findall("Collection")  # type: ignore[union-attr]
    assert alone.child_text("CollectionId") == "2"
    assert alone.find("Responses") is not None


def test_the_client_commands_of_a_sync_request() -> None:
    request = _a(
        "Sync",
        _a(
            "Collections",
            _a(
                "Collection",
                _a("SyncKey", "k1"),
                _a("CollectionId", "2"),
                _a(
                    "Commands",
                    _a("Change", _a("ServerId", "2:1")),
                    _a("Delete", _a("ServerId", "2:4")),
                    _a("Fetch", _a("ServerId", "2:5")),
                    _a("Add", _a("ClientId", "c1")),
                ),
            ),
            _a("Collection", _a("SyncKey", "k1"), _a("CollectionId", "3")),
        ),
    )
    assert sync_commands(request) == {"2": [("Change", "2:1"), ("Delete", "2:4"), ("Add", "c1")]}


def test_a_refused_new_version_leaves_the_answer() -> None:
    body = _sync_answer()
    assert server_adds(body, {"3", "2"}) == [("3", "3:9")]
    assert server_adds(body, {"2"}) == []
    assert without_adds(body, set()) == body
    root = decode(without_adds(body, {("3", "3:9")}))
    drafts = root.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert drafts.find("Commands") is None  # type: ignore[union-attr]
    assert drafts.find("Responses") is not None  # type: ignore[union-attr]
