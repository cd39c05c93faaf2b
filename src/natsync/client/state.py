"""What a phone remembers between requests: policy key, folder hierarchy, SyncKeys, item ids.

A real phone keeps this on flash and survives restarts; the emulator keeps it in memory and,
when given a path, in a JSON file written atomically (write then rename), so a test can stop a
client and continue later with the same keys — the situation the crash test needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from natsync.client.protocol import FolderInfo

#: Bumped when the JSON layout changes; an unknown version starts fresh rather than guessing.
STATE_FORMAT = 1


@dataclass(slots=True)
class CollectionState:
    """A synced folder: its SyncKey and the server ids the device holds."""

    sync_key: str = "0"
    server_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class DeviceState:
    protocol_version: str = ""
    policy_key: int = 0
    folder_sync_key: str = "0"
    folders: dict[str, FolderInfo] = field(default_factory=dict)
    collections: dict[str, CollectionState] = field(default_factory=dict)
    wiped: bool = False

    def collection(self, collection_id: str) -> CollectionState:
        return self.collections.setdefault(collection_id, CollectionState())

    def reset_items(self) -> None:
        """Forget folders and items (after a wipe or a hierarchy reset), keep nothing stale."""
        self.folder_sync_key = "0"
        self.folders.clear()
        self.collections.clear()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "protocol_version": self.protocol_version,
                "policy_key": self.policy_key,
                "folder_sync_key": self.folder_sync_key,
                "folders": [asdict(f) for f in self.folders.values()],
                "collections": {
                    cid: {"sync_key": c.sync_key, "server_ids": sorted(c.server_ids)}
                    for cid, c in self.collections.items()
                },
                "wiped": self.wiped,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> DeviceState:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            return cls()
        state = cls(
            protocol_version=str(raw.get("protocol_version", "")),
            policy_key=int(raw.get("policy_key", 0)),
            folder_sync_key=str(raw.get("folder_sync_key", "0")),
            wiped=bool(raw.get("wiped", False)),
        )
        for f in raw.get("folders", []):
            info = FolderInfo(
                server_id=str(f["server_id"]),
                parent_id=str(f["parent_id"]),
                display_name=str(f["display_name"]),
                type=int(f["type"]),
            )
            state.folders[info.server_id] = info
        for cid, c in raw.get("collections", {}).items():
            state.collections[str(cid)] = CollectionState(
                sync_key=str(c["sync_key"]), server_ids={str(s) for s in c["server_ids"]}
            )
        return state

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> DeviceState:
        if not path.exists():
            return cls()
        return cls.from_json(path.read_text(encoding="utf-8"))
