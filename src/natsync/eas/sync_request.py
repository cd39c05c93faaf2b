"""A Sync request read (MS-ASCMD 2.2.1.21), and what the device's earlier requests left behind.

A request names its collections with their SyncKeys and options; ``read_request`` turns it into
one ``CollectionRequest`` each (and the client's Commands beside them), or the top-level Status
(and Limit) that refuses it. Two device settings carry what a later request may leave out: the
last full request's collections (``CACHED_REQUEST``: Empty and Partial requests reuse it, MS-ASCMD
3.1.5.3; Options persist until the client sends new ones) and, per collection, [current SyncKey,
folder modseq seen] (``LAST_PREFIX``: Ping compares against the modseq; MoveItems and
EmptyFolderContents tell the current state about what the device did itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from natsync.classes import email as eas_email
from natsync.eas import state as st
from natsync.eas.context import Context
from natsync.eas.errors import EasError
from natsync.eas.status import SyncStatus
from natsync.wbxml import Element

NS = "AirSync"
#: Items per answer when the client names no WindowSize, and the most we send in one answer
#: whatever it asks (MS-ASCMD 2.2.3.199: 1..512).
DEFAULT_WINDOW = 100
#: Digits a number in a Sync request may have (WindowSize, FilterType, MIMETruncation...: all
#: far below); more is a protocol error, not a costly int().
MAX_NUMBER_DIGITS = 18
MAX_WINDOW = 512
#: Collections one Sync may name; more are refused with Status 15 (one per folder is plenty).
MAX_COLLECTIONS = 100
#: Wait is in minutes 1..59, HeartbeatInterval in seconds 60..3540 (MS-ASCMD 2.2.3.195, .84.2).
WAIT_RANGE = (1, 59)
HEARTBEAT_RANGE = (60, 3540)
#: The device setting holding the last full Sync request (for empty and Partial requests).
CACHED_REQUEST = "sync.request"
#: Prefix of the device setting holding [current key, folder modseq seen] per collection.
LAST_PREFIX = "sync.last:"

#: MS-ASCMD 2.2.3.69.2 FilterType: how far back a collection reaches. 0 all, 1 day, 3 days,
#: 1 week, 2 weeks, 1 month, 3 months, 6 months; email takes 0-5, Calendar 0 and 4-7.
FILTER_DAYS = {0: None, 1: 1, 2: 3, 3: 7, 4: 14, 5: 31, 6: 92, 7: 183}
EMAIL_FILTERS = frozenset({0, 1, 2, 3, 4, 5})
CALENDAR_FILTERS = frozenset({4, 5, 6, 7})
#: FilterType 8: incomplete tasks only (Tasks collections).
FILTER_INCOMPLETE = 8
#: Every FilterType a request may carry; anything else means 0 (everything).
FILTER_TYPES = frozenset({*FILTER_DAYS, FILTER_INCOMPLETE})
#: The Options/Class values whose options apply to a collection we sync (SMS ... do not).
SYNC_CLASSES = frozenset({"Email", "Calendar", "Contacts", "Tasks", "Notes"})


@dataclass(slots=True)
class CollectionRequest:
    """One Collection of a Sync request, without its Commands (what the cache keeps)."""

    key: str
    id: str
    deletes_as_moves: bool = True
    get_changes: bool = True
    window: int = DEFAULT_WINDOW
    filter: int = 0
    prefs: list[list[Any]] = field(default_factory=list)
    mime_support: int | None = None
    mime_truncation: int | None = None
    conflict: int = 1

    def preferences(self) -> list[eas_email.BodyPreference]:
        return [eas_email.BodyPreference(int(t), tr, bool(a), int(p)) for t, tr, a, p in self.prefs]


def child_int(el: Element | None, tag: str, ns: str = NS) -> int | None:
    if el is None:
        return None
    text = el.child_text(tag, ns)
    if text is None:
        return None
    text = text.strip()
    digits = text.removeprefix("-")
    # str.isdigit alone admits "²", which int() refuses; MAX_NUMBER_DIGITS keeps int() cheap.
    if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_NUMBER_DIGITS):
        raise EasError(f"{tag} is not a number", status=SyncStatus.PROTOCOL_ERROR)
    return int(text)


def parse_collection(el: Element, global_window: int | None) -> CollectionRequest:
    key = el.child_text("SyncKey", NS)
    cid = el.child_text("CollectionId", NS)
    if key is None or not cid:
        raise EasError(
            "a Collection needs SyncKey and CollectionId", status=SyncStatus.PROTOCOL_ERROR
        )
    req = CollectionRequest(key=key, id=cid)
    dam = child_int(el, "DeletesAsMoves")
    req.deletes_as_moves = dam is None or dam == 1
    gc = el.find("GetChanges", NS)
    if gc is not None:
        req.get_changes = gc.text().strip() in ("", "1")
    window = child_int(el, "WindowSize") or global_window or DEFAULT_WINDOW
    req.window = max(1, min(window, MAX_WINDOW))
    for options in el.findall("Options", NS):
        cls = options.child_text("Class", NS)
        if cls is not None and cls not in SYNC_CLASSES:
            continue  # options for classes we do not sync (SMS ...)
        req.filter = child_int(options, "FilterType") or 0
        conflict = child_int(options, "Conflict")
        req.conflict = 1 if conflict is None else conflict
        req.mime_support = child_int(options, "MIMESupport")
        req.mime_truncation = child_int(options, "MIMETruncation")
        prefs = options.findall("BodyPreference", "AirSyncBase")
        req.prefs = [
            [p.type, p.truncation_size, p.all_or_none, p.preview]
            for p in (eas_email.BodyPreference.from_element(b) for b in prefs)
        ]
    if req.filter not in FILTER_TYPES:
        req.filter = 0
    return req


def last_of(ctx: Context, cid: str) -> tuple[str, int] | None:
    """[current SyncKey, folder modseq seen] of the device's *cid* (None: never synced)."""
    text = ctx.txn.get_device_setting(ctx.device.id, LAST_PREFIX + cid)
    if not text:
        return None
    key, modseq = json.loads(text)
    return str(key), int(modseq)


def set_last(ctx: Context, cid: str, key: str, modseq: int) -> None:
    ctx.txn.set_device_setting(ctx.device.id, LAST_PREFIX + cid, json.dumps([key, modseq]))


def cached_requests(ctx: Context) -> dict[str, dict[str, Any]]:
    """The last full request's collections (without keys); {} when none or unreadable."""
    text = ctx.txn.get_device_setting(ctx.device.id, CACHED_REQUEST)
    try:
        cached = json.loads(text) if text else {}
        for data in cached.values():
            CollectionRequest(**{**data, "key": ""})  # shape check: same fields as now
    except (ValueError, TypeError, AttributeError):
        return {}
    return cached if isinstance(cached, dict) else {}


def seen_modseq(ctx: Context, cid: str) -> int | None:
    """The folder modseq the device has seen for *cid* (None: never synced). Ping uses it."""
    last = last_of(ctx, cid)
    return None if last is None else last[1]


@dataclass(frozen=True, slots=True)
class Refused:
    """A request answered with a top-level Status (and the Limit it broke, if any)."""

    status: SyncStatus
    limit: int | None = None


@dataclass(slots=True)
class SyncRequest:
    """The collections one Sync asks for, with the client's Commands per CollectionId."""

    collections: list[CollectionRequest]
    commands: dict[str, Element]


def read_request(ctx: Context) -> SyncRequest | Refused:
    """The request's collections, filled in from the cache where it leaves them out; a full
    request becomes the new cache."""
    body = ctx.body
    cached = cached_requests(ctx)
    commands: dict[str, Element] = {}
    if body is None:
        # MS-ASCMD 3.1.5.3: an empty Sync repeats the last one, with the current keys.
        if not cached:
            return Refused(SyncStatus.INCOMPLETE_REQUEST)
        requests = []
        for cid, data in cached.items():
            last = last_of(ctx, cid)
            if last is None:
                continue
            requests.append(CollectionRequest(**{**data, "key": last[0]}))
        if not requests:
            return Refused(SyncStatus.INCOMPLETE_REQUEST)
        return SyncRequest(requests, commands)
    if body.tag != "Sync" or body.namespace != NS:
        return Refused(SyncStatus.PROTOCOL_ERROR)
    wait = child_int(body, "Wait")
    heartbeat = child_int(body, "HeartbeatInterval")
    if wait is not None and not WAIT_RANGE[0] <= wait <= WAIT_RANGE[1]:
        return Refused(SyncStatus.INVALID_WAIT, WAIT_RANGE[1] if wait > 0 else WAIT_RANGE[0])
    if heartbeat is not None and not HEARTBEAT_RANGE[0] <= heartbeat <= HEARTBEAT_RANGE[1]:
        limit = HEARTBEAT_RANGE[1] if heartbeat > HEARTBEAT_RANGE[1] else HEARTBEAT_RANGE[0]
        return Refused(SyncStatus.INVALID_WAIT, limit)
    global_window = child_int(body, "WindowSize")
    partial = body.find("Partial", NS) is not None
    colls_el = body.find("Collections", NS)
    coll_els = colls_el.findall("Collection", NS) if colls_el is not None else []
    if len(coll_els) > MAX_COLLECTIONS:
        return Refused(SyncStatus.TOO_MANY_COLLECTIONS, MAX_COLLECTIONS)
    requests = []
    for el in coll_els:
        req = parse_collection(el, global_window)
        if req.id in cached and el.find("Options", NS) is None:
            # Options persist per collection until the client sends new ones.
            old = cached[req.id]
            req.filter, req.prefs = old["filter"], old["prefs"]
            req.mime_support, req.mime_truncation = old["mime_support"], old["mime_truncation"]
        requests.append(req)
        cmds = el.find("Commands", NS)
        if cmds is not None:
            commands[req.id] = cmds
    if partial:
        named = {r.id for r in requests}
        for cid, data in cached.items():
            last = last_of(ctx, cid)
            if cid not in named and last is not None:
                requests.append(CollectionRequest(**{**data, "key": last[0]}))
    if not requests:
        return Refused(SyncStatus.INCOMPLETE_REQUEST)
    cache = {r.id: {k: v for k, v in asdict(r).items() if k != "key"} for r in requests}
    ctx.txn.set_device_setting(ctx.device.id, CACHED_REQUEST, json.dumps(cache))
    return SyncRequest(requests, commands)


def adjust_known(
    ctx: Context, cid: str, *, remove: tuple[str, ...] = (), add: dict[str, int] | None = None
) -> None:
    """Tell the device's current state of *cid* about a change the device made itself (a
    MoveItems, an EmptyFolderContents), so the next Sync does not send it back as news."""

    def edit(items: dict[str, int]) -> dict[str, int]:
        for sid in remove:
            items.pop(sid, None)
        items.update(add or {})
        return items

    _edit_known(ctx, cid, edit)


def forget_all(ctx: Context, cid: str) -> None:
    """The device emptied *cid* itself: its current state holds nothing."""
    _edit_known(ctx, cid, lambda _items: {})


def _edit_known(ctx: Context, cid: str, edit: Callable[[dict[str, int]], dict[str, int]]) -> None:
    """Rewrite the items of the device's current state of *cid* (none: nothing to do)."""
    last = last_of(ctx, cid)
    if last is None:
        return
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, cid, last[0]))
    if saved is None:
        return
    saved["items"] = edit(saved.get("items", {}))
    saved.pop(st.RESUME, None)  # the next window diffs in full (natsync.eas.sync_window)
    answer = saved.pop(st.ANSWER, b"")
    ctx.txn.put_sync_state(ctx.device.id, cid, last[0], st.pack(saved, answer))
