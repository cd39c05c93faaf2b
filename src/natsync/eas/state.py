"""SyncKeys and the sync state blobs behind them (MS-ASCMD 2.2.3.176 SyncKey).

A SyncKey is ``{<generation>}<counter>``: the generation is random per resync (SyncKey "0"),
the counter counts answers. The successor of a key is therefore known without a lookup, which
is what makes retransmission safe: when the state of ``next_key(K)`` already exists, the
client is re-sending a request it already sent with K, and gets the answer cached with that
successor, byte for byte, instead of a second (duplicating) answer. The store keeps the current
and the previous key of each collection, so exactly one step back can be replayed; anything
older is an unknown key (Sync Status 3 / FolderSync Status 9) and a clean resync.

The blob is rewritten on every Sync window and read at least once per window, and during an
initial sync its ``items`` map grows to one entry per message (10,000 and more): its encoding
is on the hot path. Format 3 is the state as ``marshal`` (format version 4)
behind a CRC-32, then the cached answer as raw bytes. For a 10,000-entry map that is ~0.8 ms to
write and ~1.5 ms to read, against ~4 ms and ~4.5 ms for format 2 (zlib-compressed JSON, still
read, so devices keep their keys across an upgrade); the price is size (~130 KB uncompressed
against ~45 KB), cheap next to the rows of the answer itself.

The ``items`` map is not marshalled whole on every window either: format 4 (written now; the
layout of format 3 under its own magic) holds it as a base (``BASE``: the map as ``marshal``
bytes, written when it was last rewritten) and, under
``items``, only the entries changed since (a modseq, or None for an entry removed). Loaded, the
map is a :class:`KnownItems`, a dict that notes what changes in it; packing it writes the base's
bytes as they are and marshals only the changes, until those exceed ``1/REBASE_SHARE`` of the
map and a new base is written. An initial sync of 10,000 messages in windows of 100 marshals
about a tenth of the entries it did when every window rewrote the whole map.

A Sync window's state is read back by the device's next Sync, usually on the same process a
moment later. ``pack(..., keep=True)`` keeps the state it packed, decoded, by its head's length
and CRC (at most ``KEPT_STATES``); ``unpack`` of a blob whose head is byte for byte that head
hands the kept state out instead of decoding it again (and forgets it: the caller owns it and
may change it). Keeping is memoization of a pure function: the state is what ``marshal.loads``
would return for those bytes, whoever wrote them and whenever; a blob that differs (rewritten,
another process's, damaged) is decoded as before. For a 10,000-entry map it saves the ~1.5 ms
decode for a CRC and a comparison of the head (~0.05 ms).

Why marshal is acceptable here, although it is not meant for untrusted data: the blob is only
ever produced by ``pack`` and only read back from our own store, never from the network. Its
CRC-32 is checked before ``marshal.loads`` sees a byte, so a truncated or damaged blob is
rejected as corrupt (and the key is unknown: a clean resync), and marshal only ever parses
exactly what ``marshal.dumps`` wrote. The decoded value must still be a dict (and ``items``,
when present, a dict), or it is corrupt too. A state marshal cannot write (a str or int
subclass, say) falls back to format 2, so ``pack`` never fails where it used to succeed.
"""

from __future__ import annotations

import json
import marshal
import random
import re
import struct
import threading
import zlib
from collections import OrderedDict
from typing import Any

from natsync.eas.errors import EasError

INITIAL_KEY = "0"
#: SyncKey is at most 64 characters (MS-ASCMD 2.2.3.176.4); ours are far shorter.
MAX_SYNC_KEY = 64
#: zlib level 1 for format 2: the blob is rewritten on every Sync, so speed beats size.
_ZLIB_LEVEL = 1
#: First bytes of a format 2 blob: MAGIC, length (>I), zlib JSON head, raw cached answer.
_MAGIC_JSON = b"NS2"
#: First bytes of a format 3 blob: MAGIC, length and CRC-32 (>II), marshal head, raw answer.
_MAGIC_MARSHAL = b"NS3"
#: First bytes of a format 4 blob (written now): format 3 whose ``items`` are a base and the
#: changes since it (``BASE``). Its own magic, so that a natsync from before reads it as a
#: format it does not know (the device resyncs cleanly) rather than as a map of the changes
#: alone (the items of the base sent to the device again).
_MAGIC_BASE = b"NS4"
_HEAD3 = struct.Struct(">II")
#: marshal format version 4 (Python 3.4+): stable, and readable by every later Python. Pinned
#: rather than ``marshal.version`` so a future default cannot change what we write unnoticed.
_MARSHAL_VERSION = 4
#: Key under which unpack() returns the cached answer bytes.
ANSWER = "answer"
_KEY = re.compile(r"\{([0-9a-f]{8})\}([0-9]{1,12})")
#: The state key of where a Sync's next window may resume: [the folder's modseq when the window
#: began, the point reached, the FilterType] (natsync.eas.sync_window). Whatever changes the
#: items outside a window drops it.
RESUME = "resume"
#: The state key of the items map's base (module docstring): marshal bytes of a dict.
BASE = "base"
#: A new base is written once the entries changed since the last one are more than this part
#: of the map: the changes are marshalled on every window, the base only when it is rewritten,
#: so with windows of ``w`` a map of ``n`` costs about ``n / REBASE_SHARE`` entries per window
#: for the changes and ``n`` every ``n / (REBASE_SHARE * w)`` windows for the base.
REBASE_SHARE = 8
#: States kept decoded for the next ``unpack`` (see the module docstring). A window's state is
#: read by the next window of the same initial sync, so one entry per initial sync running on
#: this process at once; a kept 10,000-item map is about 1 MB, so eight bound it to ~8 MB, and
#: a state pushed out is only decoded again, never lost.
KEPT_STATES = 8
_kept: OrderedDict[tuple[int, int], tuple[bytes, dict[str, Any]]] = OrderedDict()
_kept_lock = threading.Lock()  # the stores run transactions on worker threads


class CorruptState(EasError):
    """A stored sync state is corrupt; the device must resync."""


class KnownItems(dict[str, int]):
    """A state's ``items`` ({ServerId: modseq}) that notes what changed in it since its base
    (``base``: the marshal bytes it was loaded from, None for none): ``changed`` maps each
    ServerId set since to its modseq, and each one removed to None. Every way of changing a
    dict goes through the methods below, so ``changed`` is exact."""

    __slots__ = ("base", "changed")

    def __init__(
        self,
        items: dict[str, int] | None = None,
        base: bytes | None = None,
        changed: dict[str, int | None] | None = None,
    ) -> None:
        super().__init__(items or {})
        self.base = base
        self.changed: dict[str, int | None] = {} if changed is None else changed

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self.changed[key] = value

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed[key] = None

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.changed[key] = None
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, int]:
        key, value = super().popitem()
        self.changed[key] = None
        return key, value

    def setdefault(self, key: str, default: int) -> int:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: int) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> KnownItems:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self.base, self.changed = None, {}

    def stored(self) -> tuple[bytes, dict[str, int | None]]:
        """(base, changes since it) as a blob keeps them; writes a new base first when the
        changes have grown past ``1/REBASE_SHARE`` of the map (or there is none)."""
        if self.base is None or len(self.changed) * REBASE_SHARE > len(self):
            self.base = marshal.dumps(dict(self), _MARSHAL_VERSION)
            self.changed = {}
        return self.base, self.changed


def _stored_form(state: dict[str, Any]) -> dict[str, Any]:
    """*state* as marshal writes it: its ``items`` as a base and the changes since."""
    items = state.get("items")
    if not isinstance(items, dict):
        return state
    base, changed = (items if isinstance(items, KnownItems) else KnownItems(items)).stored()
    return {**state, "items": changed, BASE: base}


def _loaded_form(state: dict[str, Any]) -> dict[str, Any]:
    """*state* as read from marshal, its ``items`` a KnownItems (the base and changes applied).
    Raises CorruptState for a base that is not a map."""
    items = state.get("items")
    if not isinstance(items, dict):
        raise CorruptState()
    base = state.pop(BASE, None)
    if base is None:
        state["items"] = KnownItems(items)
        return state
    if not isinstance(base, bytes):
        raise CorruptState()
    # The base is inside the head the CRC covered: bytes pack() wrote (see below).
    full = marshal.loads(base)  # noqa: S302
    if not isinstance(full, dict):
        raise CorruptState()
    for key, value in items.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    state["items"] = KnownItems(full, base, dict(items))
    return state


def new_key(rng: random.Random) -> str:
    """The first key of a fresh generation (answer to SyncKey 0), its tag drawn from *rng*."""
    return f"{{{rng.randbytes(4).hex()}}}1"


def next_key(key: str) -> str | None:
    """The key that follows *key*, or None when *key* is not one of ours."""
    m = _KEY.fullmatch(key)
    if m is None:
        return None
    return f"{{{m.group(1)}}}{int(m.group(2)) + 1}"


def pack(state: dict[str, Any], answer: bytes = b"", *, keep: bool = False) -> bytes:
    """The blob (format 4, or 3 without items): ``MAGIC``, the head's length and CRC-32, the
    head (the state,
    marshalled), then the cached *answer* as it was sent (already compact WBXML: neither
    base64 nor compressed again). Falls back to format 2 for a state marshal cannot write.

    With *keep*, *state* itself is kept for the ``unpack`` of this blob (module docstring): the
    caller must not change it afterwards."""
    stored = _stored_form(state)
    try:
        head = marshal.dumps(stored, _MARSHAL_VERSION)
    except ValueError:
        return pack_json(state, answer)
    crc = zlib.crc32(head)
    if keep:
        with _kept_lock:
            _kept[len(head), crc] = (head, state)
            _kept.move_to_end((len(head), crc))
            while len(_kept) > KEPT_STATES:
                _kept.popitem(last=False)
    magic = _MAGIC_BASE if BASE in stored else _MAGIC_MARSHAL
    return magic + _HEAD3.pack(len(head), crc) + head + answer


def pack_json(state: dict[str, Any], answer: bytes = b"") -> bytes:
    """The blob in format 2 (zlib-compressed JSON): the fallback of ``pack``, and what blobs
    written before format 3 look like."""
    head = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), _ZLIB_LEVEL)
    return _MAGIC_JSON + struct.pack(">I", len(head)) + head + answer


def _unpack_marshal(blob: bytes) -> tuple[object, bytes]:
    start = len(_MAGIC_MARSHAL) + _HEAD3.size
    size, crc = _HEAD3.unpack(blob[len(_MAGIC_MARSHAL) : start])
    head = blob[start : start + size]
    if len(head) != size or zlib.crc32(head) != crc:
        raise CorruptState(
            "a stored sync state's head is truncated or damaged; the device must resync"
        )
    with _kept_lock:
        kept = _kept.pop((size, crc), None)
    if kept is not None and kept[0] == head:
        return kept[1], blob[start + size :]  # what marshal.loads(head) would give
    # Checked above: exactly the bytes pack() wrote (module docstring: why marshal is safe here).
    return marshal.loads(head), blob[start + size :]  # noqa: S302


def _unpack_json(blob: bytes) -> tuple[object, bytes]:
    start = len(_MAGIC_JSON) + 4
    (size,) = struct.unpack(">I", blob[len(_MAGIC_JSON) : start])
    return json.loads(zlib.decompress(blob[start : start + size])), blob[start + size :]


def unpack(blob: bytes) -> dict[str, Any]:
    """The state; its cached answer, if any, is under the key ``ANSWER`` (bytes)."""
    try:
        if blob.startswith((_MAGIC_MARSHAL, _MAGIC_BASE)):  # the same layout
            state, answer = _unpack_marshal(blob)
        elif blob.startswith(_MAGIC_JSON):
            state, answer = _unpack_json(blob)
        else:
            raise CorruptState("a stored sync state has an unknown format; the device must resync")
        if not isinstance(state, dict):
            raise CorruptState()
        if "items" in state and not isinstance(state["items"], KnownItems):
            state = _loaded_form(state)  # not the kept state: decoded just now
    except (zlib.error, ValueError, struct.error, EOFError, TypeError) as exc:
        raise CorruptState() from exc
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
