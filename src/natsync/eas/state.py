"""SyncKeys and the sync state blobs behind them (MS-ASCMD 2.2.3.176 SyncKey).

A SyncKey is ``{<generation>}<counter>``: the generation is random per resync (SyncKey "0"),
the counter counts answers. The successor of a key is therefore known without a lookup, which
is what makes retransmission safe: when the state of ``next_key(K)`` already exists, the
client is re-sending a request it already sent with K, and gets the answer cached with that
successor, byte for byte, instead of a second (duplicating) answer. The store keeps the current
and the previous key of each collection, so exactly one step back can be replayed; anything
older is an unknown key (Sync Status 3 / FolderSync Status 9) and a clean resync.

The blob is zlib-compressed JSON (a 10,000-item map is ~40 KB) followed by the cached answer
as raw bytes: cheap to rewrite on every window.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
import zlib
from typing import Any

from natsync.eas.errors import EasError

INITIAL_KEY = "0"
#: SyncKey is at most 64 characters (MS-ASCMD 2.2.3.176.4); ours are far shorter.
MAX_SYNC_KEY = 64
#: zlib level 1: the blob is rewritten on every Sync, so speed beats the last few percent.
_ZLIB_LEVEL = 1
#: First bytes of a state blob (format 2: JSON head + raw cached answer).
_MAGIC = b"NS2"
#: Key under which unpack() returns the cached answer bytes.
ANSWER = "answer"
_KEY = re.compile(r"\{([0-9a-f]{8})\}([0-9]{1,12})")


def new_key() -> str:
    """The first key of a fresh generation (answer to SyncKey 0)."""
    return f"{{{secrets.token_hex(4)}}}1"


def next_key(key: str) -> str | None:
    """The key that follows *key*, or None when *key* is not one of ours."""
    m = _KEY.fullmatch(key)
    if m is None:
        return None
    return f"{{{m.group(1)}}}{int(m.group(2)) + 1}"


def pack(state: dict[str, Any], answer: bytes = b"") -> bytes:
    """The blob: ``MAGIC``, the compressed JSON's length, the compressed JSON, then the cached
    *answer* as it was sent (already compact WBXML: neither base64 nor compressed again)."""
    head = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), _ZLIB_LEVEL)
    return _MAGIC + struct.pack(">I", len(head)) + head + answer


def unpack(blob: bytes) -> dict[str, Any]:
    """The state; its cached answer, if any, is under the key ``ANSWER`` (bytes)."""
    try:
        if not blob.startswith(_MAGIC):
            raise ValueError("unknown sync state format")
        start = len(_MAGIC) + 4
        (size,) = struct.unpack(">I", blob[len(_MAGIC) : start])
        state = json.loads(zlib.decompress(blob[start : start + size]))
        answer = blob[start + size :]
    except (zlib.error, ValueError, struct.error) as exc:
        raise EasError("a stored sync state is corrupt; the device must resync") from exc
    if not isinstance(state, dict):
        raise EasError("a stored sync state is corrupt; the device must resync")
    if answer:
        state[ANSWER] = answer
    return state


def load(blob: bytes | None) -> dict[str, Any] | None:
    """The state in *blob*, or None when there is none or it is corrupt: either way the key
    behind it is unknown, and the device resyncs cleanly instead of failing forever."""
    if blob is None:
        return None
    try:
        return unpack(blob)
    except EasError:
        return None
