"""Sync (MS-ASCMD 2.2.1.21) for email and, through their class codecs, the other data classes.

One Sync is read (natsync.eas.sync_request: parsing, and the cached request Empty and Partial
requests reuse), then each collection is answered here: the client's commands are applied
(natsync.eas.sync_client), then the server's changes go out up to the window
(natsync.eas.sync_window), and the answer is kept with the new state.

State (natsync.eas.state) per (device, collection, SyncKey): ``items`` = {ServerId: modseq} of
what the device is known to hold, ``filter`` = the FilterType that state was made with, ``fm`` =
the folder modseq the device has seen (Ping compares against it), and ``answer`` = this
collection's answer, cached for replay.

Retransmission (the architecture's rule): when the state of ``next_key(K)`` exists and was
made from K, the request with K was already answered: the cached answer is sent again and no
client command is applied twice. A key neither current nor previous is Status 3 (the client
restarts at SyncKey 0 and re-downloads; it never gets duplicates, since "0" starts empty).

With Wait / HeartbeatInterval and nothing to send, the request is held (the adapter waits on the
folders outside any transaction, then runs it again, or answers with an empty body when the time
is up).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from natsync.eas import isolation
from natsync.eas import state as st
from natsync.eas.context import Context, Effect, HoldUntilChange, Response, hold_on
from natsync.eas.errors import EasError
from natsync.eas.status import SyncStatus
from natsync.eas.sync_client import client_command, reply
from natsync.eas.sync_request import (
    NS,
    CollectionRequest,
    Refused,
    child_int,
    read_request,
    set_last,
)
from natsync.eas.sync_window import (
    Window,
    class_name,
    pending_changes,
    resumable,
    server_changes,
    skipped_of,
    syncable,
)
from natsync.eas.versions import V14_0
from natsync.store.api import Folder
from natsync.wbxml import E, Element, decode, encode


def handle(ctx: Context) -> Response:
    request = read_request(ctx)
    if isinstance(request, Refused):
        if request.limit is None:
            return _top_status(request.status)
        return _limit(request.status, request.limit)
    requests, commands = request.collections, request.commands
    hold = _hold_seconds(ctx, ctx.body)
    if hold and not commands:
        held = _quiet(ctx, requests, hold)
        if held is not None:
            return Response(status=None, effects=(held,))
    answers = [_collection(ctx, req, commands.get(req.id)) for req in requests]
    # The client commands' effects, each named once (KickRelay: one kick however many queued).
    effects = tuple(dict.fromkeys(e for a in answers for e in a.effects))
    skipped = tuple(ctx.skipped)
    if len(answers) == 1:
        doc, status = answers[0].document, answers[0].status
        return Response(body=doc, status=status, effects=effects, skipped=skipped)
    root = E(NS, "Sync", E(NS, "Collections", *(a.element for a in answers)))
    worst = max((a.status for a in answers), default=1)
    return Response.of(root, status=worst, effects=effects, skipped=skipped)


def _hold_seconds(ctx: Context, body: Element | None) -> int:
    """Seconds a Sync with Wait (minutes) / HeartbeatInterval (seconds) may be held (0: none)."""
    if body is None or not ctx.may_hold:
        return 0
    wait = child_int(body, "Wait")
    heartbeat = child_int(body, "HeartbeatInterval")
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
    return hold_on(folders, hold, ctx.user.id, rerun=True)


def _top_status(status: SyncStatus) -> Response:
    return Response.of(E(NS, "Sync", E(NS, "Status", status)), status=status)


def _limit(status: SyncStatus, limit: int) -> Response:
    root = E(NS, "Sync", E(NS, "Status", status), E(NS, "Limit", limit))
    return Response.of(root, status=status)


def _wrap(coll: Element) -> Element:
    return E(NS, "Sync", E(NS, "Collections", coll))


def _document(coll: Element) -> bytes:
    return encode(_wrap(coll))


@dataclass(frozen=True, slots=True)
class _Answer:
    """One collection's answer: its element, the answer as a whole document, its status, and
    what its client commands ask of the adapter."""

    element: Element
    document: bytes
    status: int
    effects: tuple[Effect, ...] = ()


def _simple(key: str, cid: str, status: int) -> _Answer:
    coll = E(NS, "Collection", E(NS, "SyncKey", key), E(NS, "CollectionId", cid))
    coll.add(NS, "Status", status)
    return _Answer(coll, _document(coll), status)


def _collection(ctx: Context, req: CollectionRequest, commands: Element | None) -> _Answer:
    """One collection's answer (see :class:`_Answer`)."""
    txn = ctx.txn
    if len(req.key) > st.MAX_SYNC_KEY:
        return _simple(st.INITIAL_KEY, req.id, SyncStatus.INVALID_SYNC_KEY)
    # 1. A retransmission gets the answer it already got.
    nxt = st.next_key(req.key)
    if nxt is not None:
        replay = st.load(txn.get_sync_state(ctx.device.id, req.id, nxt))
        if replay is not None and replay.get("for") == req.key and st.ANSWER in replay:
            doc = replay[st.ANSWER]
            return _Answer(_first_collection(doc), doc, SyncStatus.SUCCESS)
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
        set_last(ctx, req.id, new, 0)
        return _Answer(coll, doc, SyncStatus.SUCCESS)
    current = st.load(txn.get_sync_state(ctx.device.id, req.id, req.key)) if nxt else None
    if current is None:
        return _simple(st.INITIAL_KEY, req.id, SyncStatus.INVALID_SYNC_KEY)
    assert nxt is not None
    known: dict[str, int] = current.get("items", {})
    window = Window(known, skipped_of(current))
    version = str(ctx.version)

    # 3. The client's commands.
    client = commands.children if commands is not None else []
    outcomes = [client_command(ctx, folder, req, cmd, known) for cmd in client]
    responses = [o.reply for o in outcomes if o.reply is not None]

    # 4. The server's changes, up to the window (resumed where the last one stopped when the
    # folder is as it was then: natsync.eas.sync_window).
    out = window.commands
    more = False
    resume = None
    if req.get_changes and syncable(folder):
        resume = _resume_point(ctx, folder, req, current) if not client else None
        more = server_changes(ctx, folder, req, window, version, resume)

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
    if resume is not None and seen > folder.modseq:
        # Changed while the window was made (PostgreSQL reads each statement's own snapshot):
        # the resumed window may not have seen it, so a Ping is woken for it.
        seen = folder.modseq
    saved = {
        "items": known,
        "filter": req.filter,
        "fm": seen,
        "for": req.key,
    }
    saved.update(window.state())
    if window.resume is not None and not client:
        saved[st.RESUME] = [folder.modseq, window.resume, req.filter]
    txn.put_sync_state(ctx.device.id, req.id, nxt, st.pack(saved, doc, keep=True))
    set_last(ctx, req.id, nxt, seen)
    return _Answer(coll, doc, SyncStatus.SUCCESS, tuple(e for o in outcomes for e in o.effects))


def _resume_point(
    ctx: Context, folder: Folder, req: CollectionRequest, saved: dict[str, Any]
) -> int | None:
    """The point the last window left to resume from, while the folder is as it was then."""
    point = saved.get(st.RESUME)
    if not isinstance(point, list) or len(point) != 3:
        return None
    modseq, walked, filter_type = point
    if modseq != folder.modseq or filter_type != req.filter or not isinstance(walked, int):
        return None
    return walked if resumable(ctx, folder, req.filter) else None


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
                    stand_in = reply("Fetch", sid, SyncStatus.CONVERSION_ERROR)
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
