"""The phone's memory: survives a JSON round trip, is written atomically, refuses unknown
layouts by starting fresh rather than guessing."""

from __future__ import annotations

import json
from pathlib import Path

from natsync.client.protocol import FolderInfo
from natsync.client.state import DeviceState


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = DeviceState(protocol_version="16.1", policy_key=4242, folder_sync_key="3")
    state.folders["5"] = FolderInfo("5", "0", "Inbox", 2)
    coll = state.collection("5")
    coll.sync_key = "k9"
    coll.server_ids.update({"5:1", "5:2"})
    path = tmp_path / "phone.json"
    state.save(path)
    assert not (tmp_path / "phone.json.tmp").exists()
    loaded = DeviceState.load(path)
    assert loaded == state


def test_a_missing_file_or_an_unknown_layout_starts_fresh(tmp_path: Path) -> None:
    assert DeviceState.load(tmp_path / "none.json") == DeviceState()
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": 999, "policy_key": 7}))
    assert DeviceState.load(path).policy_key == 0


def test_reset_items_forgets_hierarchy_and_items_but_not_the_policy() -> None:
    state = DeviceState(policy_key=5, folder_sync_key="2")
    state.collection("5").server_ids.add("5:1")
    state.reset_items()
    assert state.folder_sync_key == "0"
    assert not state.collections
    assert state.policy_key == 5
