"""An ActiveSync client that behaves like a phone (the device emulator).

Used by the tests, doctor, lab and the benchmarks. ``protocol`` builds and reads the wire forms
without I/O; ``client`` moves the bytes with aiohttp; ``state`` is what the phone remembers.
"""

from natsync.client.client import EASClient, ItemSyncResult, Response, ServerOptions, SyncResult
from natsync.client.protocol import (
    AttachmentInfo,
    Body,
    BodyPreference,
    BodyType,
    ClientChange,
    ClientError,
    Command,
    DeviceInfo,
    EmailItem,
    FetchResult,
    FilterType,
    FolderInfo,
    ItemCommand,
    RemoteWipeError,
)
from natsync.client.state import DeviceState

__all__ = [
    "AttachmentInfo",
    "Body",
    "BodyPreference",
    "BodyType",
    "ClientChange",
    "ClientError",
    "Command",
    "DeviceInfo",
    "DeviceState",
    "EASClient",
    "EmailItem",
    "FetchResult",
    "FilterType",
    "FolderInfo",
    "ItemCommand",
    "ItemSyncResult",
    "RemoteWipeError",
    "Response",
    "ServerOptions",
    "SyncResult",
]
