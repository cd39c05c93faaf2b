"""The server's side of one Sync collection: what differs between the device and the folder,
and the window of Add / Change / Delete / SoftDelete commands that carries it (MS-ASCMD 2.2.3.29.2).

The device's state holds ``items`` = {ServerId: modseq} of what it is known to have; the diff
against ``Txn.message_versions`` (email) or ``Txn.item_versions`` (the classes with a codec) is
what is pending, and no MIME is read for that. Only the items sent in a window are moved into the
new state, so MoreAvailable windows resume where the last one stopped. FilterType: email 0-5 (a
date cutoff), Calendar 0 and 4-7 (items ending before the window, asked of the codec's
``in_window(record, cutoff)``), Tasks 8 (incomplete, the same hook); other values mean
everything. An item that cannot be rendered or encoded is left out of the window
(natsync.eas.isolation) and kept in the state's ``skipped`` = {ServerId: modseq}: it is not
pending while its modseq is the same (neither sent, nor counted by GetItemEstimate, nor holding a
Wait open), and is tried again when it changes, or when the server was upgraded since
(``skipped_by``: a newer natsync may render it).

An initial sync of an email folder resumes rather than diffs: a window after which the device
holds exactly what it was sent (no Delete, Change or skipped item left, no client command)
records in its state ``resume`` = [the folder's modseq when the window began, how far along the
folder's newest-first order it got]. While the folder's modseq is still that one (nothing in the
folder changed: every change bumps it), the next window knows without looking that every item
the device holds is as it was sent, and takes its adds from that point on: no pass over every
item already sent, per window, of a 10,000-message sync. Anything else (a change, a client
command, a FilterType with a date cutoff, quarantine, a skipped item) diffs in full as before.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from natsync import __version__
from natsync.classes import email as eas_email
from natsync.classes.codec import ClassCodec
from natsync.eas import isolation, quarantine, registry
from natsync.eas.context import Context
from natsync.eas.sync_request import (
    CALENDAR_FILTERS,
    EMAIL_FILTERS,
    FILTER_DAYS,
    FILTER_INCOMPLETE,
    NS,
    CollectionRequest,
)
from natsync.store.api import AccessState, Folder, FolderType, Item, Message
from natsync.wbxml import E, Element

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
    #: Where the next window may resume (module docstring), or None: it diffs in full.
    resume: int | None = None

    def add(self, element: Element, sid: str, modseq: int) -> None:
        self.commands.append(element)
        self.sent.append((element, sid, modseq, self.known.get(sid)))
        self.known[sid] = modseq
        self.skipped.pop(sid, None)

    def skip(self, sid: str, modseq: int, before: int | None = None) -> None:
        """*sid* is not sent (the device keeps what it had: *before*, or nothing)."""
        self.resume = None  # the device lacks an item before the point reached
        if before is None:
            self.known.pop(sid, None)
        else:
            self.known[sid] = before
        self.skipped[sid] = modseq

    def state(self) -> dict[str, Any]:
        """What the new sync state keeps of the items left out (see ``skipped_of``)."""
        return {SKIPPED: self.skipped, SKIPPED_BY: BUILD} if self.skipped else {}


@dataclass(frozen=True, slots=True)
class Pending:
    deletes: list[str]
    soft: list[str]
    changes: list[str]
    adds: list[str]  # newest first; only the first window when a limit was given
    total: int  # all pending changes, adds included
    #: The skipped items that stay skipped (unchanged since they were left out).
    skipped: dict[str, int] = field(default_factory=dict)
    #: How many items of the newest-first order come before the last add a window of *limit*
    #: sends, it included (None: it sends none, or no *limit*).
    walked: int | None = None


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
    resume: int | None = None,
) -> Pending:
    """What differs between *known* and the folder now; with *limit*, only the first *limit*
    adds are listed (Sync needs one window, not the whole order). An item of *skipped* (it
    could not be sent, natsync.eas.isolation) is not pending while its modseq is the one it had
    then. *resume* (with *limit*, no *skipped*: the caller checked the module docstring's
    conditions) says every item of *known* is in the folder as it was sent, and the first
    *resume* items of the newest-first order are all in *known*: only adds are pending, and
    they are looked for from there on.

    Adds come newest first as far as cheaply known: ``message_versions`` lists a folder in the
    store's own order (delivery order for SQLite), walked backwards. Order is a courtesy to the
    user, not a correctness matter (every pending item is sent in some window), so no sort of
    the whole folder is paid on every window of a 10,000-message initial sync."""
    current, everything = _versions(ctx, folder, filter_type)
    if resume is not None and limit is not None and not skipped:
        return _resumed(current, known, limit, resume)
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
    # Where the adds a window of *limit* sends (after the deletes and changes: server_changes)
    # stop, for a next window that resumes (found in C, from the newest).
    walked = None
    if limit is not None:
        sent = adds[: max(0, limit - len(deletes) - len(soft) - len(changes))]
        walked = operator.indexOf(reversed(current), sent[-1]) + 1 if sent else None
    total = len(deletes) + len(soft) + len(changes) + add_count
    return Pending(deletes, soft, changes, adds, total, held, walked)


def _resumed(current: dict[str, int], known: dict[str, int], limit: int, start: int) -> Pending:
    """``pending_changes`` resumed at *start* (its docstring): the adds after that point."""
    adds: list[str] = []
    walked = start
    if limit > 0:
        for sid in itertools.islice(reversed(current), start, None):
            walked += 1
            if sid not in known:
                adds.append(sid)
                if len(adds) == limit:
                    break
    total = max(0, len(current) - len(known))  # exact while the folder is as it was
    return Pending([], [], [], adds, total, {}, walked if adds else None)


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


def resumable(ctx: Context, folder: Folder, filter_type: int) -> bool:
    """Whether a window of *folder* may resume where the last stopped, or leave a point to
    resume from (module docstring): email without a date cutoff, a device not quarantined."""
    return (
        registry.codec_for(folder.type) is None
        and cutoff(filter_type if filter_type in EMAIL_FILTERS else 0, ctx.now) is None
        and ctx.device.access_state != AccessState.QUARANTINED
    )


def server_changes(
    ctx: Context,
    folder: Folder,
    req: CollectionRequest,
    window: Window,
    version: str,
    resume: int | None = None,
) -> bool:
    """Add up to req.window commands to *window*; True when more remain. An item that cannot
    be rendered is left out (natsync.eas.isolation) and counts against the window. *resume*:
    see ``pending_changes`` (the caller checked ``resumable`` and the folder's modseq); where
    the next window may resume is left in ``window.resume``."""
    known = window.known
    out = window.commands
    pending = pending_changes(ctx, folder, req.filter, known, req.window, window.skipped, resume)
    window.skipped = pending.skipped
    # Resumable after this window when it sends every Delete and Change, and all its adds
    # reach the device (Window.skip clears it for one that does not).
    sends_all = len(pending.deletes) + len(pending.soft) + len(pending.changes) <= req.window
    if sends_all and not pending.skipped and resumable(ctx, folder, req.filter):
        window.resume = pending.walked
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
        changed = ctx.txn.get_messages(ctx.user.id, changes[:budget])
        if len(changed) != len(changes[:budget]):
            window.resume = None  # gone since the diff: the device keeps a stale one
        for msg in changed:
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
        if len(messages) != len(batch):
            window.resume = None  # gone since the diff: the device lacks one before the point
        # One read for the window: the raw MIME and the parts kept at delivery.
        bodies = ctx.txn.message_bodies([msg.id for msg in messages])
        for msg in messages:
            found = bodies.get(msg.id)
            # None: gone since (PostgreSQL reads per statement): raw_message raises NotFound.
            body = found if found is not None else (ctx.txn.raw_message(msg.id), None)
            add = isolation.build(skipped, msg.server_id, _add, msg, body, req, prefs, version)
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
    body: tuple[bytes, str | None],
    req: CollectionRequest,
    prefs: list[eas_email.BodyPreference],
    version: str,
) -> Element:
    raw, parts = body
    data = eas_email.email_application_data(
        msg,
        raw,
        version,
        prefs,
        mime_support=req.mime_support,
        mime_truncation=req.mime_truncation,
        parts=parts,
    )
    return E(NS, "Add", E(NS, "ServerId", msg.server_id), data)
