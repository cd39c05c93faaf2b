"""Sync (MS-ASCMD 2.2.1.21) for email and, through their class codecs, the other data classes.

State (natsync.eas.state) per (device, collection, SyncKey): ``items`` = {ServerId: modseq} of
what the device is known to hold, ``filter`` = the FilterType that state was made with, ``fm`` =
the folder modseq the device has seen (Ping compares against it), and ``answer`` = this
collection's answer, cached for replay. A Sync answer is the dict diff between ``items`` and
``Txn.message_versions`` (no MIME is read for that); only the items sent in this window are
moved into the new state, so MoreAvailable windows resume where the last one stopped.

Retransmission (the architecture's rule): when the state of ``next_key(K)`` exists and was
made from K, the request with K was already answered: the cached answer is sent again and no
client command is applied twice. A key neither current nor previous is Status 3 (the client
restarts at SyncKey 0 and re-downloads; it never gets duplicates, since "0" starts empty).

Client commands: Change (Read, Flag, Categories; a conflict is resolved per the Conflict option,
server wins by default), Delete (DeletesAsMoves default 1: to Deleted Items), Fetch. Add of
email items is accepted for drafts (16.0+, Drafts folder), refused elsewhere (Status 6).
The other classes (Calendar, Contacts, Tasks, Notes: MS-ASCAL, MS-ASCNTC, MS-ASTASK, MS-ASNOTE)
are store items (``Txn.item_versions``) behind the same state machinery: a collection whose
folder type has a codec (``natsync.eas.registry``) diffs its items instead of its messages, and
the codec turns records into ApplicationData and back. Client Add (ClientId -> ServerId), Change
(server wins a conflict by default, as for mail), Delete (for good: DeletesAsMoves is for mail;
with a 16.x InstanceId, one occurrence), Fetch; an item the codec cannot take is Status 6, an
unknown one Status 8. FilterType: Calendar 0 and 4-7 (items ending before the window, asked of
the codec's ``in_window(record, cutoff)``), Tasks 8 (incomplete, the same hook);
other values mean everything. After each client write the codec's ``after_client_write`` hook
runs in the same transaction (Calendar sends invitations from it).
An item that cannot be rendered or encoded is left out of the window (natsync.eas.isolation)
and kept in the state's ``skipped`` = {ServerId: modseq}: it is not pending while its modseq is
the same (neither sent, nor counted by GetItemEstimate, nor holding a Wait open), and is tried
again when it changes, or when the server was upgraded since (``skipped_by``: a newer natsync
may render it). Empty and Partial requests reuse the request cached
per device (MS-ASCMD 3.1.5.3). With Wait / HeartbeatInterval and nothing to send, the request is
held (the adapter waits on the folders outside any transaction, then runs it again, or answers
with an empty body when the time is up).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from natsync import __version__
from natsync.classes import email as eas_email
from natsync.classes.codec import ClassCodec, PimError
from natsync.eas import drafts, isolation, quarantine, registry
from natsync.eas import state as st
from natsync.eas.context import Context, HoldUntilChange, Response, kick_relay, new_uid
from natsync.eas.errors import EasError
from natsync.eas.status import SyncStatus
from natsync.eas.versions import V14_0, V16_0
from natsync.mail.errors import EmailChangeError, MailError
from natsync.store.api import AccessState, Conflict, Folder, FolderType, Item, Message
from natsync.wbxml import E, Element, decode, encode

NS = "AirSync"
#: Items per answer when the client names no WindowSize, and the most we send in one answer
#: whatever it asks (MS-ASCMD 2.2.3.199: 1..512).
DEFAULT_WINDOW = 100
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
#: Folder types whose items are email.
MAIL_TYPES = frozenset(
    {
        FolderType.INBOX,
        FolderType.DRAFTS,
        FolderType.DELETED_ITEMS,
        FolderType.SENT_ITEMS,
        FolderType.OUTBOX,
        FolderType.USER_MAIL,
        FolderType.USER_GENERIC,
    }
)


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


def _int(el: Element | None, tag: str, ns: str = NS) -> int | None:
    if el is None:
        return None
    text = el.child_text(tag, ns)
    if text is None:
        return None
    text = text.strip()
    if not text.lstrip("-").isdigit():
        raise EasError(f"{tag} is not a number", status=SyncStatus.PROTOCOL_ERROR)
    return int(text)


def _parse_collection(el: Element, global_window: int | None) -> CollectionRequest:
    key = el.child_text("SyncKey", NS)
    cid = el.child_text("CollectionId", NS)
    if key is None or not cid:
        raise EasError(
            "a Collection needs SyncKey and CollectionId", status=SyncStatus.PROTOCOL_ERROR
        )
    req = CollectionRequest(key=key, id=cid)
    dam = _int(el, "DeletesAsMoves")
    req.deletes_as_moves = dam is None or dam == 1
    gc = el.find("GetChanges", NS)
    if gc is not None:
        req.get_changes = gc.text().strip() in ("", "1")
    window = _int(el, "WindowSize") or global_window or DEFAULT_WINDOW
    req.window = max(1, min(window, MAX_WINDOW))
    for options in el.findall("Options", NS):
        cls = options.child_text("Class", NS)
        if cls is not None and cls not in SYNC_CLASSES:
            continue  # options for classes we do not sync (SMS ...)
        req.filter = _int(options, "FilterType") or 0
        conflict = _int(options, "Conflict")
        req.conflict = 1 if conflict is None else conflict
        req.mime_support = _int(options, "MIMESupport")
        req.mime_truncation = _int(options, "MIMETruncation")
        prefs = options.findall("BodyPreference", "AirSyncBase")
        req.prefs = [
            [p.type, p.truncation_size, p.all_or_none, p.preview]
            for p in (eas_email.BodyPreference.from_element(b) for b in prefs)
        ]
    if req.filter not in FILTER_TYPES:
        req.filter = 0
    return req


def syncable(folder: Folder) -> bool:
    """Whether Sync sends the folder's content: email, or a class with a codec."""
    return folder.type in MAIL_TYPES or registry.codec_for(folder.type) is not None


def class_name(folder: Folder) -> str:
    """The AirSync:Class of the folder's items (12.x names it in every Collection)."""
    codec = registry.codec_for(folder.type)
    return "Email" if codec is None else codec.eas_class


def item_filter(
    codec: ClassCodec, filter_type: int, now: datetime
) -> Callable[[Mapping[str, Any]], bool] | None:
    """Which records a FilterType keeps in a collection of *codec*'s class (None: all)."""
    in_window = codec.in_window
    if in_window is None:
        return None
    if codec.eas_class == "Calendar" and filter_type in CALENDAR_FILTERS:
        start = now - timedelta(days=FILTER_DAYS[filter_type] or 0)
        return lambda record: in_window(record, start)
    if codec.eas_class == "Tasks" and filter_type == FILTER_INCOMPLETE:
        return lambda record: in_window(record, None)
    return None


def _last(ctx: Context, cid: str) -> tuple[str, int] | None:
    text = ctx.txn.get_device_setting(ctx.device.id, LAST_PREFIX + cid)
    if not text:
        return None
    key, modseq = json.loads(text)
    return str(key), int(modseq)


def _set_last(ctx: Context, cid: str, key: str, modseq: int) -> None:
    ctx.txn.set_device_setting(ctx.device.id, LAST_PREFIX + cid, json.dumps([key, modseq]))


def _cached_requests(ctx: Context) -> dict[str, dict[str, Any]]:
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
    last = _last(ctx, cid)
    return None if last is None else last[1]


def handle(ctx: Context) -> Response:
    body = ctx.body
    cached = _cached_requests(ctx)
    commands: dict[str, Element] = {}
    if body is None:
        # MS-ASCMD 3.1.5.3: an empty Sync repeats the last one, with the current keys.
        if not cached:
            return _top_status(SyncStatus.INCOMPLETE_REQUEST)
        requests = []
        for cid, data in cached.items():
            last = _last(ctx, cid)
            if last is None:
                continue
            requests.append(CollectionRequest(**{**data, "key": last[0]}))
        if not requests:
            return _top_status(SyncStatus.INCOMPLETE_REQUEST)
    else:
        if body.tag != "Sync" or body.namespace != NS:
            return _top_status(SyncStatus.PROTOCOL_ERROR)
        wait = _int(body, "Wait")
        heartbeat = _int(body, "HeartbeatInterval")
        if wait is not None and not WAIT_RANGE[0] <= wait <= WAIT_RANGE[1]:
            return _limit(SyncStatus.INVALID_WAIT, WAIT_RANGE[1] if wait > 0 else WAIT_RANGE[0])
        if heartbeat is not None and not HEARTBEAT_RANGE[0] <= heartbeat <= HEARTBEAT_RANGE[1]:
            limit = HEARTBEAT_RANGE[1] if heartbeat > HEARTBEAT_RANGE[1] else HEARTBEAT_RANGE[0]
            return _limit(SyncStatus.INVALID_WAIT, limit)
        global_window = _int(body, "WindowSize")
        partial = body.find("Partial", NS) is not None
        colls_el = body.find("Collections", NS)
        coll_els = colls_el.findall("Collection", NS) if colls_el is not None else []
        if len(coll_els) > MAX_COLLECTIONS:
            return _limit(SyncStatus.TOO_MANY_COLLECTIONS, MAX_COLLECTIONS)
        requests = []
        for el in coll_els:
            req = _parse_collection(el, global_window)
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
                last = _last(ctx, cid)
                if cid not in named and last is not None:
                    requests.append(CollectionRequest(**{**data, "key": last[0]}))
        if not requests:
            return _top_status(SyncStatus.INCOMPLETE_REQUEST)
        cache = {r.id: {k: v for k, v in asdict(r).items() if k != "key"} for r in requests}
        ctx.txn.set_device_setting(ctx.device.id, CACHED_REQUEST, json.dumps(cache))

    hold = _hold_seconds(ctx, body)
    if hold and not commands:
        held = _quiet(ctx, requests, hold)
        if held is not None:
            return Response(status=None, effects=(held,))
    effects = Effects()
    answers = [_collection(ctx, req, commands.get(req.id), effects) for req in requests]
    queued, skipped = effects.outbound_queued, tuple(ctx.skipped)
    if len(answers) == 1:
        doc, status = answers[0][1], answers[0][2]
        return Response(body=doc, status=status, effects=kick_relay(queued), skipped=skipped)
    root = E(NS, "Sync", E(NS, "Collections", *(a[0] for a in answers)))
    worst = max((a[2] for a in answers), default=1)
    return Response.of(root, status=worst, effects=kick_relay(queued), skipped=skipped)


@dataclass(slots=True)
class Effects:
    """What the client's commands of one Sync did beyond the store (for the adapter)."""

    #: A class hook queued outbound mail (an invitation): the relay is kicked after commit.
    outbound_queued: bool = False


def _hold_seconds(ctx: Context, body: Element | None) -> int:
    """Seconds a Sync with Wait (minutes) / HeartbeatInterval (seconds) may be held (0: none)."""
    if body is None or not ctx.may_hold:
        return 0
    wait = _int(body, "Wait")
    heartbeat = _int(body, "HeartbeatInterval")
    seconds = wait * 60 if wait else heartbeat or 0
    return min(seconds, ctx.config.heartbeat_max)


def _quiet(ctx: Context, requests: list[CollectionRequest], hold: int) -> HoldUntilChange | None:
    """A wait on the collections when none of them has anything to send now, else None.

    Nothing is written when the request is held: the answer comes from running it again once a
    folder changed, or is empty when the time is up."""
    folders: list[Folder] = []
    for req in requests:
        nxt = st.next_key(req.key)
        if nxt is None or not req.get_changes:
            return None
        if ctx.txn.get_sync_state(ctx.device.id, req.id, nxt) is not None:
            return None  # a retransmission: answer it now
        saved = st.load(ctx.txn.get_sync_state(ctx.device.id, req.id, req.key))
        folder = ctx.txn.get_folder(ctx.user.id, req.id)
        if saved is None or folder is None or not syncable(folder):
            return None
        known: dict[str, int] = saved.get("items", {})
        if pending_changes(ctx, folder, req.filter, known, 1, skipped_of(saved)).total:
            return None
        folders.append(folder)
    return HoldUntilChange(
        folder_ids=tuple(f.id for f in folders),
        server_ids={f.id: f.server_id for f in folders},
        heartbeat=hold,
        user_id=ctx.user.id,
        baseline={f.id: f.modseq for f in folders},
        rerun=True,
    )


def _top_status(status: SyncStatus) -> Response:
    return Response.of(E(NS, "Sync", E(NS, "Status", status)), status=status)


def _limit(status: SyncStatus, limit: int) -> Response:
    root = E(NS, "Sync", E(NS, "Status", status), E(NS, "Limit", limit))
    return Response.of(root, status=status)


def _wrap(coll: Element) -> Element:
    return E(NS, "Sync", E(NS, "Collections", coll))


def _document(coll: Element) -> bytes:
    return encode(_wrap(coll))


def _simple(key: str, cid: str, status: int) -> tuple[Element, bytes, int]:
    coll = E(NS, "Collection", E(NS, "SyncKey", key), E(NS, "CollectionId", cid))
    coll.add(NS, "Status", status)
    return coll, _document(coll), status


def _collection(
    ctx: Context, req: CollectionRequest, commands: Element | None, effects: Effects
) -> tuple[Element, bytes, int]:
    """(Collection answer element, the answer as a whole document, status) for one collection."""
    txn = ctx.txn
    if len(req.key) > st.MAX_SYNC_KEY:
        return _simple(st.INITIAL_KEY, req.id, SyncStatus.INVALID_SYNC_KEY)
    # 1. A retransmission gets the answer it already got.
    nxt = st.next_key(req.key)
    if nxt is not None:
        replay = st.load(txn.get_sync_state(ctx.device.id, req.id, nxt))
        if replay is not None and replay.get("for") == req.key and st.ANSWER in replay:
            doc = replay[st.ANSWER]
            return _first_collection(doc), doc, SyncStatus.SUCCESS
    folder = txn.get_folder(ctx.user.id, req.id)
    if folder is None:
        return _simple(req.key, req.id, SyncStatus.FOLDER_HIERARCHY_CHANGED)
    # 2. SyncKey 0: a fresh, empty state; items come with the next request.
    if req.key == st.INITIAL_KEY:
        txn.drop_sync_state(ctx.device.id, req.id)
        new = st.new_key(ctx.rng)
        coll = E(NS, "Collection")
        if ctx.version < V14_0:
            coll.add(NS, "Class", class_name(folder))
        coll.add(NS, "SyncKey", new)
        coll.add(NS, "CollectionId", req.id)
        coll.add(NS, "Status", SyncStatus.SUCCESS)
        doc = _document(coll)
        saved = {"items": {}, "filter": req.filter, "fm": 0, "for": req.key}
        txn.put_sync_state(ctx.device.id, req.id, new, st.pack(saved))
        _set_last(ctx, req.id, new, 0)
        return coll, doc, SyncStatus.SUCCESS
    current = st.load(txn.get_sync_state(ctx.device.id, req.id, req.key)) if nxt else None
    if current is None:
        return _simple(st.INITIAL_KEY, req.id, SyncStatus.INVALID_SYNC_KEY)
    assert nxt is not None
    known: dict[str, int] = current.get("items", {})
    window = Window(known, skipped_of(current))
    version = str(ctx.version)

    # 3. The client's commands.
    responses: list[Element] = []
    if commands is not None:
        for cmd in commands.children:
            reply = _client_command(ctx, folder, req, cmd, known, effects)
            if reply is not None:
                responses.append(reply)

    # 4. The server's changes, up to the window.
    out = window.commands
    more = False
    if req.get_changes and syncable(folder):
        more = _server_changes(ctx, folder, req, window, version)

    # MS-ASCMD 2.2.3.29.2: [Class (12.1)], SyncKey, CollectionId, Status, MoreAvailable,
    # Commands, Responses.
    coll = E(NS, "Collection")
    if ctx.version < V14_0:
        coll.add(NS, "Class", class_name(folder))
    coll.add(NS, "SyncKey", nxt)
    coll.add(NS, "CollectionId", req.id)
    coll.add(NS, "Status", SyncStatus.SUCCESS)
    if more:
        coll.append(Element(NS, "MoreAvailable"))
    if out:
        coll.append(E(NS, "Commands", *out))
    if responses:
        coll.append(E(NS, "Responses", *responses))
    doc = _checked_document(ctx, coll, window)
    folder_now = txn.get_folder(ctx.user.id, req.id)
    seen = -1 if more or folder_now is None else folder_now.modseq
    saved = {
        "items": known,
        "filter": req.filter,
        "fm": seen,
        "for": req.key,
    }
    if window.skipped:
        saved[SKIPPED], saved[SKIPPED_BY] = window.skipped, BUILD
    txn.put_sync_state(ctx.device.id, req.id, nxt, st.pack(saved, doc))
    _set_last(ctx, req.id, nxt, seen)
    return coll, doc, SyncStatus.SUCCESS


#: The state key of the items that could not be sent ({ServerId: modseq}, natsync.eas.isolation).
SKIPPED = "skipped"
#: The state key of the natsync version that could not send them: another one tries again.
SKIPPED_BY = "skipped_by"
BUILD = __version__


def skipped_of(state: Mapping[str, Any]) -> dict[str, int]:
    """The items a sync state holds as not sendable (none when this build did not find them)."""
    if state.get(SKIPPED_BY) != BUILD:
        return {}
    return dict(state.get(SKIPPED, {}))


@dataclass(slots=True)
class Window:
    """What one answer of a collection sends, kept so that an item that cannot be sent is taken
    back out of it (natsync.eas.isolation)."""

    #: The device's items (ServerId -> modseq), updated as commands are added.
    known: dict[str, int]
    #: Items that could not be sent, at the modseq they had then.
    skipped: dict[str, int]
    #: The server's commands (Add, Change, Delete, SoftDelete).
    commands: list[Element] = field(default_factory=list)
    #: Per Add / Change: (its element, ServerId, the modseq sent, the device's modseq before).
    sent: list[tuple[Element, str, int, int | None]] = field(default_factory=list)

    def add(self, element: Element, sid: str, modseq: int) -> None:
        self.commands.append(element)
        self.sent.append((element, sid, modseq, self.known.get(sid)))
        self.known[sid] = modseq
        self.skipped.pop(sid, None)

    def skip(self, sid: str, modseq: int, before: int | None = None) -> None:
        """*sid* is not sent (the device keeps what it had: *before*, or nothing)."""
        if before is None:
            self.known.pop(sid, None)
        else:
            self.known[sid] = before
        self.skipped[sid] = modseq


def _checked_document(ctx: Context, coll: Element, window: Window) -> bytes:
    """The collection's answer as a document; an Add or Change that does not encode is left
    out (and a client's Fetch answered Status 6) rather than failing the folder."""
    commands = coll.find("Commands", NS)
    responses = coll.find("Responses", NS)

    def items() -> Iterator[isolation.Isolated]:  # only looked at when encoding fails
        if commands is not None:
            for element, sid, modseq, before in window.sent:
                skip = functools.partial(window.skip, sid, modseq, before)
                yield isolation.Isolated(sid, element, commands, on_skip=skip)
        if responses is not None:
            for element in list(responses.children):
                if element.tag == "Fetch" and element.find("ApplicationData", NS) is not None:
                    sid = element.child_text("ServerId", NS) or ""
                    stand_in = _reply("Fetch", sid, SyncStatus.CONVERSION_ERROR)
                    yield isolation.Isolated(sid, element, responses, stand_in)

    doc = isolation.encode_isolated(_wrap(coll), items(), ctx.skipped)
    if commands is not None and not commands.children:
        coll.children.remove(commands)  # every item of the window was left out
        doc = _document(coll)
    return doc


def _first_collection(doc: bytes) -> Element:
    root = decode(doc)
    colls = root.find("Collections", NS)
    coll = colls.find("Collection", NS) if colls is not None else None
    if coll is None:
        raise EasError("a cached Sync answer is corrupt", status=SyncStatus.SERVER_ERROR)
    return coll


def _reply(tag: str, sid: str, status: int) -> Element:
    return E(NS, tag, E(NS, "ServerId", sid), E(NS, "Status", status))


def _fetched(sid: str, data: Element) -> Element:
    return E(NS, "Fetch", E(NS, "ServerId", sid), E(NS, "Status", SyncStatus.SUCCESS), data)


def _fetch(ctx: Context, sid: str, render: Callable[[], Element]) -> Element:
    """A client's Fetch answered, or Status 6 when the item cannot be rendered (issue 19)."""
    fetched = isolation.build(ctx.skipped, sid, render)
    return _reply("Fetch", sid, SyncStatus.CONVERSION_ERROR) if fetched is None else fetched


def _client_command(
    ctx: Context,
    folder: Folder,
    req: CollectionRequest,
    cmd: Element,
    known: dict[str, int],
    effects: Effects,
) -> Element | None:
    txn = ctx.txn
    if ctx.device.access_state == AccessState.QUARANTINED:
        # A quarantined device touches nothing real (natsync.eas.quarantine).
        if cmd.tag == "Add":
            client_id = cmd.child_text("ClientId", NS) or ""
            status = E(NS, "Status", SyncStatus.CONVERSION_ERROR)
            return E(NS, "Add", E(NS, "ClientId", client_id), status)
        return _reply(cmd.tag, cmd.child_text("ServerId", NS) or "", SyncStatus.OBJECT_NOT_FOUND)
    codec = registry.codec_for(folder.type)
    if codec is not None:
        return _item_command(ctx, codec, folder, req, cmd, known, effects)
    if cmd.tag == "Add":
        return _client_add(ctx, folder, cmd, known, effects)
    sid = cmd.child_text("ServerId", NS) or ""
    msg = txn.get_message(ctx.user.id, sid) if sid else None
    if msg is None or msg.folder_id != folder.id:
        known.pop(sid, None)
        return _reply(cmd.tag, sid, SyncStatus.OBJECT_NOT_FOUND)
    if drafts.is_draft_edit(cmd, folder.type == FolderType.DRAFTS, ctx.version >= V16_0):
        return _draft_change(ctx, folder, msg, cmd, known, effects)
    if cmd.tag == "Change":
        appdata = cmd.find("ApplicationData", NS)
        if appdata is None:
            return _reply("Change", sid, SyncStatus.PROTOCOL_ERROR)
        if req.conflict == 1 and sid in known and known[sid] != msg.modseq:
            return None  # server wins (MS-ASCMD 2.2.3.34): its version goes to the client
        try:
            change = eas_email.apply_email_change(appdata)
        except EmailChangeError:
            return _reply("Change", sid, SyncStatus.CONVERSION_ERROR)
        if change.read is not None and change.read != msg.read:
            msg = txn.set_read(msg.id, change.read)
        if change.flag is not None:
            msg = txn.set_flag(msg.id, change.flag)
        if change.categories is not None:
            msg = txn.set_categories(msg.id, change.categories)
        known[sid] = msg.modseq  # the client has this version: don't echo it back
        return None
    if cmd.tag == "Delete":
        if req.deletes_as_moves and folder.type != FolderType.DELETED_ITEMS:
            trash = txn.folder_by_type(ctx.user.id, FolderType.DELETED_ITEMS)
            txn.move_message(msg.id, trash.id)
        else:
            txn.delete_message(msg.id)
        known.pop(sid, None)
        return None
    if cmd.tag == "Fetch":
        raw = txn.raw_message(msg.id)

        def render() -> Element:
            data = eas_email.email_application_data(
                msg,
                raw,
                str(ctx.version),
                req.preferences(),
                mime_support=req.mime_support,
                mime_truncation=req.mime_truncation,
            )
            return _fetched(sid, data)

        return _fetch(ctx, sid, render)
    return _reply(cmd.tag, sid, SyncStatus.PROTOCOL_ERROR)


def _item_command(
    ctx: Context,
    codec: ClassCodec,
    folder: Folder,
    req: CollectionRequest,
    cmd: Element,
    known: dict[str, int],
    effects: Effects,
) -> Element | None:
    """A client command on an item of a non-email class (see the module docstring)."""
    txn = ctx.txn
    if cmd.tag == "Add":
        return _item_add(ctx, codec, folder, cmd, known, effects)
    sid = cmd.child_text("ServerId", NS) or ""
    item = txn.get_item(ctx.user.id, sid) if sid else None
    if item is None or item.folder_id != folder.id:
        known.pop(sid, None)
        return _reply(cmd.tag, sid, SyncStatus.OBJECT_NOT_FOUND)
    if cmd.tag == "Fetch":

        def render() -> Element:
            encoded = codec.encode(item.data, ctx.version, req.preferences())
            return _fetched(sid, E(NS, "ApplicationData", *encoded))

        return _fetch(ctx, sid, render)
    if cmd.tag not in ("Change", "Delete"):
        return _reply(cmd.tag, sid, SyncStatus.PROTOCOL_ERROR)
    if req.conflict == 1 and sid in known and known[sid] != item.modseq:
        return None  # server wins (MS-ASCMD 2.2.3.34): its version goes to the client
    instance = cmd.child_text("InstanceId", "AirSyncBase")
    try:
        if cmd.tag == "Change":
            appdata = cmd.find("ApplicationData", NS)
            if appdata is None:
                return _reply("Change", sid, SyncStatus.PROTOCOL_ERROR)
            if instance is not None:  # 16.x: one occurrence; the codec reads it in the data
                tag = Element("AirSyncBase", "InstanceId", [], instance)
                appdata = Element(NS, "ApplicationData", [tag, *appdata.children])
            record = codec.apply_change(item.data, appdata, ctx.version)
        elif instance is not None:
            # 16.x: the Delete of one occurrence is a change of the series.
            delete_occurrence = codec.delete_occurrence
            if delete_occurrence is None:
                return _reply("Delete", sid, SyncStatus.CONVERSION_ERROR)
            record = delete_occurrence(item.data, instance)
        else:
            txn.delete_item(item.id)
            known.pop(sid, None)
            _after_write(ctx, codec, item, None, effects)
            return None
    except PimError as exc:
        return _reply(cmd.tag, sid, exc.eas_status)
    new = txn.update_item(item.id, record)
    known[sid] = new.modseq  # the client has this version: don't echo it back
    _after_write(ctx, codec, item, new, effects)
    rewritten = txn.get_item(ctx.user.id, sid)
    if rewritten is not None and rewritten.data != new.data:
        # The hook changed the item in this transaction (same modseq): send it back.
        known[sid] = -1
    return None


def _item_add(
    ctx: Context,
    codec: ClassCodec,
    folder: Folder,
    cmd: Element,
    known: dict[str, int],
    effects: Effects,
) -> Element:
    """A new item from the phone: its ClientId gets a ServerId (MS-ASCMD 2.2.3.24.2)."""
    client_id = cmd.child_text("ClientId", NS) or ""
    out = E(NS, "Add", E(NS, "ClientId", client_id))
    appdata = cmd.find("ApplicationData", NS)
    if appdata is None:
        out.add(NS, "Status", SyncStatus.PROTOCOL_ERROR)
        return out
    try:
        record = codec.decode(appdata, ctx.version)
    except PimError as exc:
        out.add(NS, "Status", exc.eas_status)
        return out
    if "uid" in record and not record["uid"]:  # a class with UIDs (Calendar) gets one: ctx.rng's
        record["uid"] = new_uid(ctx.rng)
    uid = record.get("uid")
    if not isinstance(uid, str) or not uid:
        uid = None
    try:
        item = ctx.txn.add_item(folder.id, record, uid=uid)
    except Conflict:
        # The folder holds that uid already (a second copy of one event): keep both, as a
        # phone that shows both expects; the copy's record keeps the uid the phone sent.
        item = ctx.txn.add_item(folder.id, record)
    known[item.server_id] = item.modseq  # the phone has it: never send it back as an Add
    _after_write(ctx, codec, None, item, effects)
    out.add(NS, "ServerId", item.server_id)
    out.add(NS, "Status", SyncStatus.SUCCESS)
    return out


def _after_write(
    ctx: Context, codec: ClassCodec, old: Item | None, new: Item | None, effects: Effects
) -> None:
    if codec.after_client_write is not None and codec.after_client_write(
        ctx.txn, ctx.user, old, new, ctx.now
    ):
        effects.outbound_queued = True


@dataclass(frozen=True, slots=True)
class Pending:
    deletes: list[str]
    soft: list[str]
    changes: list[str]
    adds: list[str]  # newest first; only the first window when a limit was given
    total: int  # all pending changes, adds included
    #: The skipped items that stay skipped (unchanged since they were left out).
    skipped: dict[str, int] = field(default_factory=dict)


def _client_add(
    ctx: Context, folder: Folder, cmd: Element, known: dict[str, int], effects: Effects
) -> Element:
    """A draft written on the phone (16.0+, Drafts only; natsync.eas.drafts); other email Adds
    are refused with Status 6 (email arrives by SMTP and SendMail, not by Sync)."""
    client_id = cmd.child_text("ClientId", NS) or ""
    out = E(NS, "Add", E(NS, "ClientId", client_id))
    appdata = cmd.find("ApplicationData", NS)
    if folder.type != FolderType.DRAFTS or ctx.version < V16_0 or appdata is None:
        out.add(NS, "Status", SyncStatus.CONVERSION_ERROR)
        return out
    try:
        result = drafts.add_draft(ctx, folder, appdata)
    except (drafts.DraftError, MailError, EasError):
        out.add(NS, "Status", SyncStatus.CONVERSION_ERROR)
        return out
    effects.outbound_queued |= result.outbound_queued
    if result.message is not None:
        known[result.message.server_id] = result.message.modseq  # never sent back as an Add
        out.add(NS, "ServerId", result.message.server_id)
    out.add(NS, "Status", SyncStatus.SUCCESS)
    data = result.response_data()
    if data is not None:
        out.append(data)
    return out


def _draft_change(
    ctx: Context,
    folder: Folder,
    msg: Message,
    cmd: Element,
    known: dict[str, int],
    effects: Effects,
) -> Element | None:
    """A Change (or Send) of a draft (natsync.eas.drafts): the old ServerId is deleted and the
    new draft added, both sent to this phone in the same answer."""
    appdata = cmd.find("ApplicationData", NS)
    if appdata is None:
        return _reply("Change", msg.server_id, SyncStatus.PROTOCOL_ERROR)
    try:
        change = eas_email.apply_email_change(appdata)
        result = drafts.change_draft(ctx, folder, msg, appdata)
    except (drafts.DraftError, MailError, EasError):
        return _reply("Change", msg.server_id, SyncStatus.CONVERSION_ERROR)
    effects.outbound_queued |= result.outbound_queued
    new = result.message
    if new is not None and change.flag is not None:
        new = ctx.txn.set_flag(new.id, change.flag)
    if new is not None and change.categories is not None:
        ctx.txn.set_categories(new.id, change.categories)
    data = result.response_data()
    if data is None:
        return None
    return E(NS, "Change", E(NS, "ServerId", msg.server_id), E(NS, "Status", 1), data)


def cutoff(filter_type: int, now: datetime) -> datetime | None:
    days = FILTER_DAYS.get(filter_type)
    return None if days is None else now - timedelta(days=days)


def pending_changes(
    ctx: Context,
    folder: Folder,
    filter_type: int,
    known: dict[str, int],
    limit: int | None = None,
    skipped: Mapping[str, int] | None = None,
) -> Pending:
    """What differs between *known* and the folder now; with *limit*, only the first *limit*
    adds are listed (Sync needs one window, not the whole order). An item of *skipped* (it
    could not be sent, natsync.eas.isolation) is not pending while its modseq is the one it had
    then.

    Adds come newest first as far as cheaply known: ``message_versions`` lists a folder in the
    store's own order (delivery order for SQLite), walked backwards. Order is a courtesy to the
    user, not a correctness matter (every pending item is sent in some window), so no sort of
    the whole folder is paid on every window of a 10,000-message initial sync."""
    current, everything = _versions(ctx, folder, filter_type)
    deletes: list[str] = []
    soft: list[str] = []
    changes: list[str] = []
    present = 0
    # The common case (an initial sync, or nothing changed): every known item is there as it
    # was. The comparison runs in C; the loop below finds the same nothing item by item.
    unchanged = known.items() <= current.items()
    if unchanged:
        present = len(known)
    for sid, modseq in () if unchanged else known.items():
        now_modseq = current.get(sid)
        if now_modseq is None:
            (soft if sid in everything else deletes).append(sid)
        else:
            present += 1
            if now_modseq != modseq and (not skipped or skipped.get(sid) != now_modseq):
                changes.append(sid)
    # The skipped items still as they were when they were left out: not pending.
    held = {s: m for s, m in skipped.items() if current.get(s) == m} if skipped else {}
    add_count = len(current) - present - sum(1 for s in held if s not in known)
    # filterfalse with the dicts' own __contains__ walks in C (a window of an initial sync
    # passes over every item already sent before it finds the next ones).
    missing = itertools.filterfalse(known.__contains__, reversed(current))
    if held:
        missing = itertools.filterfalse(held.__contains__, missing)
    adds = list(itertools.islice(missing, limit if limit is not None else add_count))
    return Pending(
        deletes, soft, changes, adds, len(deletes) + len(soft) + len(changes) + add_count, held
    )


def _versions(
    ctx: Context, folder: Folder, filter_type: int
) -> tuple[dict[str, int], dict[str, int]]:
    """(server id -> modseq) of what the filter keeps, and of everything in the folder (the
    difference is what the client holds but the filter drops: a SoftDelete)."""
    codec = registry.codec_for(folder.type)
    if ctx.device.access_state == AccessState.QUARANTINED:
        # Only the notice, in the Inbox (natsync.eas.quarantine).
        notice = {quarantine.notice_id(folder): quarantine.NOTICE_MODSEQ}
        current = notice if folder.type == FolderType.INBOX else {}
        return current, current
    if codec is not None:
        keep = item_filter(codec, filter_type, ctx.now)
        if keep is None:
            current = ctx.txn.item_versions(folder.id)
            return current, current
        # One read gives both maps, so they agree even while other processes write.
        items = ctx.txn.list_items(folder.id)
        everything = {item.server_id: item.modseq for item in items}
        return {i.server_id: i.modseq for i in items if keep(i.data)}, everything
    since = cutoff(filter_type if filter_type in EMAIL_FILTERS else 0, ctx.now)
    current = ctx.txn.message_versions(folder.id, since)
    everything = ctx.txn.message_versions(folder.id) if since is not None else current
    return current, everything


def _server_changes(
    ctx: Context,
    folder: Folder,
    req: CollectionRequest,
    window: Window,
    version: str,
) -> bool:
    """Add up to req.window commands to *window*; True when more remain. An item that cannot
    be rendered is left out (natsync.eas.isolation) and counts against the window."""
    known = window.known
    out = window.commands
    pending = pending_changes(ctx, folder, req.filter, known, req.window, window.skipped)
    window.skipped = pending.skipped
    deletes, soft, changes, adds = pending.deletes, pending.soft, pending.changes, pending.adds
    budget = req.window
    total = pending.total
    for sid in deletes[:budget]:
        out.append(E(NS, "Delete", E(NS, "ServerId", sid)))
        del known[sid]
    budget -= min(budget, len(deletes))
    for sid in soft[:budget]:
        out.append(E(NS, "SoftDelete", E(NS, "ServerId", sid)))
        del known[sid]
    budget -= min(budget, len(soft))
    skipped = ctx.skipped
    codec = registry.codec_for(folder.type)
    if codec is not None:
        prefs = req.preferences()
        batches = (("Change", changes[:budget]), ("Add", adds[: max(0, budget - len(changes))]))
        for tag, batch in batches:
            for sid in batch:
                item = ctx.txn.get_item(ctx.user.id, sid)
                if item is None:
                    # Deleted by another process since the diff (PostgreSQL reads each
                    # statement's own snapshot): a Change becomes a Delete next time.
                    continue
                cmd = isolation.build(skipped, sid, _item, ctx, codec, tag, item, prefs)
                if cmd is None:
                    window.skip(sid, item.modseq, known.get(sid))
                else:
                    window.add(cmd, sid, item.modseq)
        return total > req.window
    if budget and changes:
        for msg in ctx.txn.get_messages(ctx.user.id, changes[:budget]):
            change = isolation.build(skipped, msg.server_id, _change, msg, version)
            if change is None:
                window.skip(msg.server_id, msg.modseq, known.get(msg.server_id))
            else:
                window.add(change, msg.server_id, msg.modseq)
        budget -= min(budget, len(changes))
    if budget and adds:
        prefs = req.preferences()
        batch = adds[:budget]
        notice = quarantine.notice_id(folder)
        if notice in batch:
            note = quarantine.notice_message(folder, ctx.user, ctx.device, ctx.now)
            raw = quarantine.notice_raw(ctx.user, ctx.device)
            data = eas_email.email_application_data(note, raw, version, prefs)
            out.append(E(NS, "Add", E(NS, "ServerId", notice), data))
            known[notice] = note.modseq
        messages = ctx.txn.get_messages(ctx.user.id, batch)
        raws = ctx.txn.raw_messages([msg.id for msg in messages])  # one read for the window
        for msg in messages:
            found = raws.get(msg.id)
            # None: gone since (PostgreSQL reads per statement): raw_message raises NotFound.
            raw = found if found is not None else ctx.txn.raw_message(msg.id)
            add = isolation.build(skipped, msg.server_id, _add, msg, raw, req, prefs, version)
            if add is None:
                window.skip(msg.server_id, msg.modseq)
            else:
                window.add(add, msg.server_id, msg.modseq)
    return total > req.window


def _item(
    ctx: Context, codec: ClassCodec, tag: str, item: Item, prefs: list[eas_email.BodyPreference]
) -> Element:
    appdata = E(NS, "ApplicationData", *codec.encode(item.data, ctx.version, prefs))
    return E(NS, tag, E(NS, "ServerId", item.server_id), appdata)


def _change(msg: Message, version: str) -> Element:
    data = eas_email.email_change_data(msg, version)
    return E(NS, "Change", E(NS, "ServerId", msg.server_id), data)


def _add(
    msg: Message,
    raw: bytes,
    req: CollectionRequest,
    prefs: list[eas_email.BodyPreference],
    version: str,
) -> Element:
    data = eas_email.email_application_data(
        msg, raw, version, prefs, mime_support=req.mime_support, mime_truncation=req.mime_truncation
    )
    return E(NS, "Add", E(NS, "ServerId", msg.server_id), data)


def adjust_known(
    ctx: Context, cid: str, *, remove: tuple[str, ...] = (), add: dict[str, int] | None = None
) -> None:
    """Tell the device's current state of *cid* about a change the device made itself (a
    MoveItems, an EmptyFolderContents), so the next Sync does not send it back as news."""
    last = _last(ctx, cid)
    if last is None:
        return
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, cid, last[0]))
    if saved is None:
        return
    items: dict[str, int] = saved.get("items", {})
    for sid in remove:
        items.pop(sid, None)
    items.update(add or {})
    saved["items"] = items
    answer = saved.pop(st.ANSWER, b"")
    ctx.txn.put_sync_state(ctx.device.id, cid, last[0], st.pack(saved, answer))


def forget_all(ctx: Context, cid: str) -> None:
    """The device emptied *cid* itself: its current state holds nothing."""
    last = _last(ctx, cid)
    if last is None:
        return
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, cid, last[0]))
    if saved is None:
        return
    saved["items"] = {}
    answer = saved.pop(st.ANSWER, b"")
    ctx.txn.put_sync_state(ctx.device.id, cid, last[0], st.pack(saved, answer))
