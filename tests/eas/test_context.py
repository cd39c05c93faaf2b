"""natsync.eas.context: the compact folder mapping a held request keeps for its heartbeat."""

from __future__ import annotations

import sys

import pytest

from natsync.eas.context import FolderValues, hold_on
from natsync.store.api import Folder, FolderType


def folder(fid: int, server_id: str, modseq: int) -> Folder:
    return Folder(fid, 1, server_id, "0", server_id, FolderType.INBOX, modseq)


def test_folder_values_reads_as_the_dict_it_replaces() -> None:
    values = FolderValues((7, 3), ("inbox", "sent"))
    assert dict(values) == {7: "inbox", 3: "sent"}
    assert values == FolderValues((7, 3), ("inbox", "sent"))
    assert (values[3], 7 in values, 9 in values, len(values)) == ("sent", True, False, 2)
    assert list(values) == [7, 3]
    assert values.get(9) is None
    with pytest.raises(KeyError):
        values[9]


def test_a_hold_keeps_its_folders_in_less_than_dicts_would() -> None:
    folders = [folder(7, "inbox", 41)]
    wait = hold_on(folders, 900, user_id=1)
    assert (wait.folder_ids, wait.heartbeat, wait.user_id, wait.rerun) == ((7,), 900, 1, False)
    assert dict(wait.server_ids) == {7: "inbox"}
    baseline = wait.baseline
    assert isinstance(baseline, FolderValues)
    assert dict(baseline) == {7: 41}
    compact = sys.getsizeof(baseline) + sys.getsizeof(baseline._values)
    assert compact * 2 < sys.getsizeof({7: 41})
    assert hold_on(folders, 30, 1, rerun=True).rerun
