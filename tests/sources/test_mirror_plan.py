"""The mirror's decisions without sockets: folder roles (RFC 6154) and the write-back diff."""

from __future__ import annotations

from natsync.sources.mirror import (
    Append,
    Expunge,
    Move,
    SetFlag,
    SetKeywords,
    plan_folders,
    plan_writeback,
)
from natsync.sources.wire import parse_list
from natsync.store.api import FolderType, MirrorFolder, MirrorMessage


def test_special_use_roles_and_user_folders() -> None:
    entries = [
        parse_list(line)
        for line in (
            b'(\\HasChildren) "/" Projects',
            b'(\\HasNoChildren) "/" Projects/2026',
            b'(\\HasNoChildren \\Sent) "/" "Sent Messages"',
            b'(\\HasNoChildren \\Trash) "/" Trash',
            b'(\\HasNoChildren \\Drafts) "/" Drafts',
            b'(\\HasNoChildren \\Junk) "/" Junk',
            b'(\\HasNoChildren \\All) "/" "All Mail"',
            b'(\\Noselect \\HasChildren) "/" Shared',
            b'(\\HasNoChildren) "/" INBOX',
        )
    ]
    plans = {p.entry.raw_name: p for p in plan_folders(entries)}
    assert plans["INBOX"].type is FolderType.INBOX
    assert plans["Sent Messages"].type is FolderType.SENT_ITEMS
    assert plans["Trash"].type is FolderType.DELETED_ITEMS
    assert plans["Drafts"].type is FolderType.DRAFTS
    assert plans["Junk"].type is FolderType.USER_MAIL
    assert (plans["Projects/2026"].display_name, plans["Projects/2026"].parent) == (
        "2026",
        "Projects",
    )
    assert "All Mail" not in plans  # a virtual view: every message would show twice
    assert "Shared" not in plans
    order = [p.entry.raw_name for p in plan_folders(entries)]
    assert order.index("Projects") < order.index("Projects/2026")


INBOX = MirrorFolder(10, 1, "INBOX", 5, 100, 0)


def row(message_id: int, uid: int, seen: bool = False, flagged: bool = False) -> MirrorMessage:
    return MirrorMessage(message_id, INBOX.folder_id, uid, seen, flagged)


def test_writeback_diff() -> None:
    rows = [row(1, 11), row(2, 12, seen=True), row(3, 13), row(4, 14), row(5, 15)]
    flags = {1: (True, False), 2: (True, True), 7: (False, False), 9: (True, False)}
    location = {3: 20, 4: None, 5: 99}  # moved to Trash (mirrored), deleted, moved to Outbox
    actions = plan_writeback(
        INBOX, rows, flags, location, frozenset({10, 20}), frozenset({1, 2, 3, 4, 5, 9})
    )
    assert SetFlag(rows[0], "\\Seen", True) in actions
    assert SetFlag(rows[1], "\\Flagged", True) in actions
    assert Move(rows[2], 20) in actions
    assert Expunge(rows[3]) in actions
    # 7 is new here (a Sent copy, a draft): appended; 9 is mapped elsewhere (moved in).
    assert Append(10, 7, False, False) in actions
    assert len(actions) == 5


def test_no_difference_no_action() -> None:
    rows = [row(1, 11, seen=True)]
    assert (
        plan_writeback(INBOX, rows, {1: (True, False)}, {}, frozenset({10}), frozenset({1})) == []
    )


def test_writeback_of_categories() -> None:
    tagged = MirrorMessage(1, INBOX.folder_id, 11, False, False, ("Family", "Work"))
    rows = [tagged, row(2, 12)]
    flags = {1: (False, False), 2: (False, False), 7: (True, False)}
    categories = {1: ("Work", "Travel"), 7: ("Sent by phone",)}
    actions = plan_writeback(INBOX, rows, flags, {}, frozenset({10}), frozenset({1, 2}), categories)
    assert actions == [
        SetKeywords(tagged, ("Travel",), ("Family",), ("Travel", "Work")),
        Append(10, 7, True, False, ("Sent by phone",)),
    ]
    # The same categories in another order are no change.
    same = {1: ("Work", "Family")}
    assert (
        plan_writeback(INBOX, [tagged], {1: (False, False)}, {}, frozenset(), frozenset(), same)
        == []
    )
