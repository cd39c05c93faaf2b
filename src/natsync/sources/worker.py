"""The mirror of IMAP accounts into the store, and IMAP logins: the I/O side of natsync.sources.

One :class:`AccountMirror` per account runs in a thread of its own (blocking imaplib, see
:mod:`natsync.sources.imap`) from the user's first login on; the password it needs to reconnect
stays in its memory only. Its loop:

1. write back what the phone changed (a diff of the store against the mapping, see
   :mod:`natsync.sources.mirror`);
2. bring every mirrored folder up to date: ``SELECT ... (QRESYNC (uidvalidity modseq))``
   (RFC 7162 §3.2.5) returns the flag changes and VANISHED UIDs since the stored HIGHESTMODSEQ;
   new UIDs are fetched: whole up to :data:`~natsync.sources.structure.LAZY_ABOVE` bytes,
   larger ones lazily — header, BODYSTRUCTURE and text parts first, the whole message when a
   phone asks for it (:mod:`natsync.sources.bodies`); a changed UIDVALIDITY resyncs the
   folder, matching stored messages by Message-ID so the phone sees no duplicates; a new
   folder gets its newest :data:`FIRST_BATCH` messages first and the older ones in the
   background, newest first;
3. wait in IDLE (RFC 2177) — after NOTIFY (RFC 5465) for all personal mailboxes when the
   server offers it (Dovecot 2.3 does), so one connection hears of every folder — until the
   server reports a change or the store's change feed reports a phone's change.

Every store write goes through ``Store.run`` on the server's loop, so the change feed wakes
held Pings as for any delivery. A lost connection is retried with backoff
(:data:`BACKOFF`) and resumes from the stored HIGHESTMODSEQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from natsync.eas import state as sync_state
from natsync.mail.relay import build_bounce
from natsync.mime import parse_message
from natsync.mime.errors import MailError
from natsync.sources.config import SentCopy, SourcesConfig
from natsync.sources.imap import (
    IDLE_RESTART,
    ImapAccount,
    ImapAuthError,
    ImapError,
    ImapRefused,
    Selected,
    check_login,
)
from natsync.sources.keywords import categories_of, keywords_of
from natsync.sources.lease import Lease, owner_name
from natsync.sources.mirror import (
    Action,
    Append,
    Expunge,
    FolderPlan,
    Move,
    SetFlag,
    SetKeywords,
    plan_folders,
    plan_writeback,
)
from natsync.sources.refusals import (
    MODIFIED,
    ItemRefusal,
    added_items,
    collection_answers,
    created_folder,
    folder_answer,
    folder_status,
    move_status,
    moved,
    server_adds,
    sync_commands,
    sync_status,
    sync_with_statuses,
    with_statuses,
    without_adds,
)
from natsync.sources.structure import (
    LAZY_ABOVE,
    TEXT_LIMIT,
    Value,
    can_be_lazy,
    fetch_item,
    fetch_uid,
    parse_bodystructure,
    partial_message,
    partial_of,
    text_sections,
    trim_text,
    with_sizes,
)
from natsync.sources.submission import SubmitError, submit
from natsync.sources.wire import FetchItem, ImapWireError, decode_mutf7, encode_mutf7
from natsync.store.api import (
    Flag,
    Folder,
    FolderType,
    MirrorFolder,
    MirrorMessage,
    NewMessage,
    OutboundMail,
    Store,
    Subscription,
    Txn,
    User,
)
from natsync.wbxml.tree import Element

log = logging.getLogger("natsync.sources")
T = TypeVar("T")
#: A fetched message and the store's view of it (parsed before its transaction).
Parsed = tuple[FetchItem, NewMessage]

#: Messages fetched first in a folder never synced: the newest ones, so a phone can sync them
#: within seconds whatever the mailbox's size.
FIRST_BATCH = 100
#: Older messages fetched per round of the background backfill (between two looks for news).
BACKFILL_BATCH = 200
#: Seconds between reconnection attempts: doubled after each failure up to the last value.
BACKOFF = (0.5, 1.0, 2.0, 5.0, 15.0, 60.0)
#: A verified IMAP login is trusted this long without asking the IMAP server again.
LOGIN_TTL = 300.0
#: scrypt cost of the in-memory login cache (2**12, r=8: 4 MiB, a few ms): a memory dump must
#: not hand out the passwords cheaply, and phones send their password with every request, so
#: every request pays it (the IMAP check itself runs once per LOGIN_TTL).
CACHE_LOG2_N = 12
#: The flag a phone's "follow up" becomes on the server (RFC 3501 §2.3.2).
FLAGGED = "\\Flagged"
SEEN = "\\Seen"
#: A message in Drafts that is being composed (RFC 3501 §2.3.2), as IMAP clients mark drafts.
DRAFT = "\\Draft"
#: Queue entries sent per round, and how long a claim on one holds (a worker that dies leaves
#: it to be taken again after this).
SEND_BATCH = 10
SEND_LEASE = timedelta(minutes=5)
#: Longest wait before a failed submission is tried again (doubling from a minute).
MAX_SEND_RETRY = 3600.0
#: Seconds between looks at a user's folder hierarchy for the phone's folder changes.
HIERARCHY_POLL = 0.5
#: Seconds of the first IDLE after a round, before one more LIST: Dovecot 2.3 does not report
#: (NOTIFY MailboxName) a mailbox another session creates or deletes while this session runs
#: its round's commands, so one made then would wait for :data:`IDLE_RESTART` (seen in
#: tests/sources/test_imap_mirror.py, about one run in eight: the laptop's CREATE between the
#: round's LIST and its IDLE). One LIST per round is the price.
HIERARCHY_SETTLE = 1.0
#: The user setting naming the mailboxes mirrored at the end of the last round (JSON list).
KNOWN_MAILBOXES = "imap.mailboxes"
#: The user setting holding the secret that marks the user's partial copies
#: (natsync.sources.structure.partial_message).
PARTIAL_KEY = "imap.partial-key"
#: Refusals kept for the answers waiting for them (of messages, and of folders).
REFUSALS_KEPT = 1000
#: Seconds a MoveItems answer waits for the server's verdict on its moves (a slower server:
#: the phone is told Success, and a refused move is undone as for other commands).
WRITE_THROUGH_TIMEOUT = 10.0
#: Seconds natsync's Sent copy waits for the mail server's own (sent_copy = "server") before
#: it is removed: a relay hands the server its copy within seconds of the submission.
SENT_COPY_WAIT = 900.0
#: What a user row of an IMAP user holds as password hash: no password ever matches it.
NO_LOCAL_PASSWORD = "!imap"  # noqa: S105 - a marker, not a password


def _now() -> datetime:
    return datetime.now(UTC)


def _follow_up(flagged: bool) -> Flag:
    return Flag(status=2, flag_type="Follow up") if flagged else Flag()


class _LeaseLost(Exception):
    """Another process took this account's lease over (ours was not renewed in time)."""


class AccountMirror:
    """The mirror worker of one account (a thread; see the module docstring).

    It mirrors only while it holds the account's lease in the store (natsync.sources.lease):
    another server process on the same store that has the user's mirror too waits, and takes
    over when this one stops or dies."""

    def __init__(
        self,
        account: ImapAccount,
        user: User,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        lease: Lease | None = None,
    ) -> None:
        self.account = account
        self.user = user
        self.store = store
        self.loop = loop
        self.lease = lease or Lease(user.id, "imap", owner_name())
        #: Whether this process mirrors the account now (holds the lease).
        self.holding = False
        self._lease_lost = threading.Event()
        #: Write-back rounds started, and the number of the last one finished (MoveItems
        #: answers wait for a round that started after their commit: natsync.sources.refusals).
        self._rounds = threading.Condition()
        self._started = 0
        self._finished = 0
        #: Whether an IMAP session runs (answers wait for write-back rounds only then).
        self.in_session = False
        self._refusal_count = 0
        #: message id -> (refusal number, IMAP response code) of the refused changes.
        self.refusals: dict[int, tuple[int, str]] = {}
        #: The same for folder changes: by store folder id (CREATE, RENAME) or, for a DELETE
        #: (the store folder is gone), by mailbox name.
        self.folder_refusals: dict[int | str, tuple[int, str]] = {}
        #: The secret in the marker of this user's partial copies ("" until read).
        self.partial_key = ""
        #: The connection that fetches whole messages for phones (fetch_whole), and its lock.
        self._fetcher: ImapAccount | None = None
        self._fetch_lock = threading.Lock()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"natsync-imap-{user.name}", daemon=True
        )
        #: Counters for tests, the bench and the log.
        self.connects = 0
        self.synced = threading.Event()
        self.last_error = ""
        #: The store's Drafts folder (its APPENDs carry \Draft).
        self._drafts = 0
        #: Write-backs the server refused (and the store undid).
        self.refused = 0
        self._selected = ""
        self._owner = f"natsync-imap:{user.name}:{self.lease.owner}"
        #: Seconds each phase of a folder's last full sync took (the log and the bench).
        self.full_syncs: dict[str, dict[str, float]] = {}
        #: When a submission that failed for now is due again (monotonic), or None.
        self._retry_at: float | None = None
        #: Every mailbox the round's LIST gave (compared after the first short IDLE).
        self._last_listed: frozenset[str] = frozenset()
        #: Messages STOREd by this write-back round (see _store).
        self._stored: set[int] = set()
        #: Message-ID -> store message id of natsync's Sent copies waiting for the server's
        #: (sent_copy = "server"), and how long they wait.
        self._awaited: dict[str, int] = {}
        self.sent_copy_wait = SENT_COPY_WAIT

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(10)
        with self._fetch_lock:
            if self._fetcher is not None:
                self._fetcher.close()
                self._fetcher = None
        if self.holding:
            self.holding = False
            self._db(self.lease.release)  # another process takes over at once

    def fetch_whole(self, message_ids: Sequence[int]) -> int:
        """Put the whole MIME of these partially stored messages in place (called from a
        worker thread for natsync.sources.bodies): on a connection of its own, in any process
        (the lease is about mirroring, this only reads); how many were put in place."""
        user_id = self.user.id

        def where(txn: Txn) -> dict[str, list[tuple[int, int]]]:
            mailbox_of = {f.folder_id: f.mailbox for f in txn.list_mirror_folders(user_id)}
            wanted = set(message_ids)
            found: dict[str, list[tuple[int, int]]] = {}
            for folder_id in {txn.message_folder(m) for m in wanted} - {None}:
                assert folder_id is not None
                for row in txn.mirror_messages(folder_id):
                    if row.message_id in wanted and folder_id in mailbox_of:
                        found.setdefault(mailbox_of[folder_id], []).append(
                            (row.uid, row.message_id)
                        )
            return found

        places = self._db(where)
        key = self._key()
        fetched: dict[int, bytes] = {}
        with self._fetch_lock:
            for attempt in (1, 2):  # a kept connection the server timed out: one new try
                if self._fetcher is None or self._fetcher.conn is None:
                    account = self.account
                    fetcher = ImapAccount(account.server, account.login, account.password)
                    fetcher.connect()
                    self._fetcher = fetcher
                try:
                    for mailbox, pairs in places.items():
                        ids = dict(pairs)
                        for uid, raw in self._fetcher.fetch_whole(mailbox, sorted(ids)).items():
                            if uid in ids:
                                fetched[ids[uid]] = raw
                    break
                except ImapRefused:
                    raise  # the connection is fine; the server said no (a mailbox gone ...)
                except (ImapError, ImapWireError):
                    self._fetcher.close()
                    self._fetcher = None
                    if attempt == 2:
                        raise

        def put(txn: Txn) -> int:
            done = 0
            for message_id, raw in fetched.items():
                if partial_of(txn.raw_message(message_id), key) is not None:
                    txn.replace_message_body(message_id, raw, len(raw))
                    done += 1
            return done

        done = self._db(put)
        missing = set(message_ids) - set(fetched)
        if missing:
            raise ImapError(
                f"the IMAP server no longer has messages {sorted(missing)} (deleted meanwhile?)"
            )
        log.info("IMAP mirror of %s: %d message(s) fetched whole for a phone", self.user.name, done)
        return done

    def _key(self) -> str:
        if not self.partial_key:
            user_id = self.user.id
            self.partial_key = self._db(lambda t: partial_key(t, user_id))
        return self.partial_key

    def renew(self, txn: Txn, now: datetime) -> None:
        """Renew the lease while mirroring (the manager calls it every ``renew_every`` s, in
        a store transaction); a lease lost meanwhile ends the session at once."""
        if self.holding and not self.lease.take(txn, now):
            self._lease_lost.set()
            self.wake.set()

    def _take_lease(self) -> bool:
        lease = self.lease
        if self._db(lambda t: lease.take(t, _now())):
            if not self.holding:
                log.info("IMAP mirror of %s: this process mirrors it now", self.user.name)
            self.holding = True
            self._lease_lost.clear()
            return True
        if self.holding or not self.last_error.startswith("mirrored by"):
            holder = self._db(lease.holder)
            self.last_error = f"mirrored by another natsync process ({holder})"
            log.info(
                "IMAP mirror of %s: %s; this one takes over if its lease (%g s) runs out",
                self.user.name,
                self.last_error,
                lease.seconds,
            )
        self.holding = False
        return False

    def _db(self, fn: Callable[[Txn], T]) -> T:
        return asyncio.run_coroutine_threadsafe(self.store.run(fn), self.loop).result()

    # -- the loop

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self._take_lease():
                    self._stop.wait(self.lease.renew_every)
                    continue
            except Exception as exc:  # the store is down: try again
                self.last_error = repr(exc)
                log.warning("IMAP mirror of %s: cannot take its lease: %r", self.user.name, exc)
                self._stop.wait(self.lease.renew_every)
                continue
            try:
                self.account.connect()
                self.connects += 1
                failures = 0
                with self._rounds:
                    self.in_session = True
                self._session()
            except _LeaseLost:
                self.holding = False
                log.warning("IMAP mirror of %s: another process took it over", self.user.name)
                continue
            except (ImapError, ImapWireError, OSError) as exc:
                self.last_error = str(exc)
                log.warning("IMAP mirror of %s: %s", self.user.name, exc)
            except Exception as exc:  # a bug must not end the mirror for good
                self.last_error = repr(exc)
                log.exception("IMAP mirror of %s failed", self.user.name)
            finally:
                with self._rounds:
                    self.in_session = False
                    self._rounds.notify_all()
                self.account.close()
                self._selected = ""
            if self._stop.is_set():
                break
            delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            self._stop.wait(delay)

    def _session(self) -> None:
        account = self.account
        account.require()
        notify = account.notify_all()
        while not self._stop.is_set():
            if self._lease_lost.is_set():
                raise _LeaseLost
            self.wake.clear()
            account.notified = False
            self._writeback()
            self._server_folders()
            self._send_outbound()
            for folder in self._db(lambda t: t.list_mirror_folders(self.user.id)):
                try:
                    self._sync_folder(folder)
                except ImapRefused as exc:
                    self._selected = ""
                    self._mailbox_refused(folder, exc)
            self.synced.set()
            if self._backfill():
                continue  # one batch done; look for news and the phone's changes again
            if account.notified:
                continue  # the server reported a change while this round ran
            if not notify and self._selected.upper() != "INBOX":
                account.select("INBOX")
                self._selected = "INBOX"
            limit = IDLE_RESTART
            if self._retry_at is not None:
                limit = max(0.0, min(limit, self._retry_at - time.monotonic()))
            if notify and limit > HIERARCHY_SETTLE:
                # a mailbox another session made or removed while this round ran is not
                # reported by Dovecot 2.3's NOTIFY: after a short IDLE, LIST once more
                if account.idle(self.wake, HIERARCHY_SETTLE) or self.wake.is_set():
                    continue
                if self._listed() != self._last_listed:
                    continue
                limit -= HIERARCHY_SETTLE
            account.idle(self.wake, limit)

    # -- folders

    def _folders(self) -> None:
        """The phone's folder changes, every round before the write-back (one LIST): folders
        the phone created, renamed or deleted (FolderCreate/FolderUpdate/FolderDelete) become
        CREATE + SUBSCRIBE, RENAME, DELETE. The mailboxes mirrored at the end of the last round
        (a user setting) tell a folder the phone deleted from a mailbox new on the server (see
        :meth:`_server_folders` for the server's changes)."""
        entries = self.account.list_mailboxes()
        listed = {e.raw_name for e in entries if e.selectable}
        delimiter = next((e.delimiter for e in entries if e.delimiter), "/")
        user_id = self.user.id

        def read(txn: Txn) -> tuple[list[MirrorFolder], list[Folder], list[str] | None]:
            known = txn.get_user_setting(user_id, KNOWN_MAILBOXES)
            return (
                txn.list_mirror_folders(user_id),
                txn.list_folders(user_id),
                None if known is None else list(json.loads(known)),
            )

        rows, folders, known = self._db(read)
        by_id = {f.id: f for f in folders}
        by_server_id = {f.server_id: f for f in folders}
        mailbox_of = {r.folder_id: r.mailbox for r in rows}
        mirrored = set(mailbox_of.values())

        def wanted(folder: Folder) -> str:
            name = encode_mutf7(folder.display_name)
            parent = by_server_id.get(folder.parent_server_id)
            if parent is None:
                return name
            return (mailbox_of.get(parent.id) or wanted(parent)) + delimiter + name

        # The phone deleted these (their rows went with the store folders): deepest first.
        if known is not None:
            for mailbox in sorted(set(known) - mirrored, key=len, reverse=True):
                if mailbox in listed:
                    delete = partial(self.account.delete, mailbox)
                    self._folder_op("DELETE", mailbox, delete, mailbox)
        # Renamed or moved on the phone: parents first; children follow their parent's RENAME.
        renamed: dict[str, str] = {}
        for row in sorted(rows, key=lambda r: r.mailbox.count(delimiter)):
            folder = by_id.get(row.folder_id)
            if folder is None or folder.type is not FolderType.USER_MAIL:
                continue
            target = wanted(folder)
            if target == row.mailbox:
                continue
            followed = any(row.mailbox.startswith(old + delimiter) for old in renamed)
            if not followed and not self._folder_op(
                "RENAME",
                row.mailbox,
                partial(self.account.rename, row.mailbox, target),
                row.folder_id,
            ):
                # The store follows the server: the folder takes back its name and place
                # (the phone's FolderUpdate was answered with the refusal, or its next
                # FolderSync shows the old name).
                self._db(partial(_unrename, row=row, rows=rows, delimiter=delimiter))
                continue
            renamed[row.mailbox] = target
            listed.add(target)
            mailbox_of[row.folder_id] = target
            moved = replace(row, mailbox=target)
            self._db(partial(_put_folder, mirror=moved))
        # Created on the phone.
        for folder in sorted(folders, key=lambda f: len(wanted(f))):
            if folder.type is not FolderType.USER_MAIL or folder.id in mailbox_of:
                continue
            target = wanted(folder)
            if target not in listed and not self._folder_op(
                "CREATE", target, partial(self.account.create, target), folder.id
            ):
                # The store follows the server: the folder goes (from the phone too, at its
                # next FolderSync, unless its FolderCreate was answered with the refusal).
                self._db(partial(_drop_created, user_id=user_id, server_id=folder.server_id))
                continue
            mailbox_of[folder.id] = target
            listed.add(target)
            row = MirrorFolder(folder.id, user_id, target, 0, 0, 0)
            self._db(partial(_put_folder, mirror=row))
        if renamed:
            self._selected = ""

    def _listed(self) -> frozenset[str]:
        """Every mailbox LIST gives now (the round's are :attr:`_last_listed`)."""
        return frozenset(e.raw_name for e in self.account.list_mailboxes())

    def _server_folders(self) -> None:
        """After the write-back (a phone's move into a mailbox deleted meanwhile is refused
        and undone first, not lost with the folder): mailboxes gone from LIST leave the
        phone, new ones (all of them on the first round) are mirrored."""
        user_id = self.user.id
        entries = self.account.list_mailboxes()
        self._last_listed = frozenset(e.raw_name for e in entries)
        listed = {e.raw_name for e in entries if e.selectable}
        for row in self._db(lambda t: t.list_mirror_folders(user_id)):
            if row.mailbox not in listed:
                self._drop_folder(row)
        self._map_folders(plan_folders(entries))
        names = sorted(m.mailbox for m in self._db(lambda t: t.list_mirror_folders(user_id)))
        self._db(lambda t: t.set_user_setting(user_id, KNOWN_MAILBOXES, json.dumps(names)))

    def _folder_op(self, what: str, mailbox: str, op: Callable[[], None], key: int | str) -> bool:
        """Run a folder change *op*; a refusal is logged and kept under *key* (the store
        folder's id or, deleted already, the mailbox) for the phone's answer."""
        if self._selected == mailbox or self._selected.startswith(mailbox + "/"):
            # Dovecot drops a connection whose selected mailbox is deleted or renamed.
            self.account.select("INBOX")
            self._selected = "INBOX"
        try:
            op()
        except ImapRefused as exc:
            # Not retried: the phone's folder change stays phone-side only, logged once.
            log.warning("IMAP mirror of %s: %s %s refused: %s", self.user.name, what, mailbox, exc)
            self.refused += 1
            self._refused(key, exc.code, folder=True)
            return False
        log.info("IMAP mirror of %s: %s %s (from the phone)", self.user.name, what, mailbox)
        return True

    def _drop_folder(self, row: MirrorFolder) -> None:
        user_id = self.user.id

        def drop(txn: Txn) -> None:
            for found in txn.list_folders(user_id):
                if found.id == row.folder_id and found.type is FolderType.USER_MAIL:
                    txn.delete_folder(user_id, found.server_id)

        self._db(drop)
        log.info("IMAP mirror of %s: mailbox %s is gone", self.user.name, row.mailbox)

    def _map_folders(self, plans: list[FolderPlan]) -> None:
        user_id = self.user.id

        def apply(txn: Txn) -> None:
            known = {m.mailbox: m for m in txn.list_mirror_folders(user_id)}
            by_mailbox: dict[str, Folder] = {}
            for m in known.values():
                for folder in txn.list_folders(user_id):
                    if folder.id == m.folder_id:
                        by_mailbox[m.mailbox] = folder
            for plan in plans:
                name = plan.entry.raw_name
                if name in by_mailbox:
                    continue
                if plan.type is not FolderType.USER_MAIL:
                    folder = txn.folder_by_type(user_id, plan.type)
                else:
                    parent = by_mailbox[plan.parent].server_id if plan.parent else "0"
                    existing = [
                        f
                        for f in txn.list_folders(user_id)
                        if f.parent_server_id == parent
                        and f.display_name.lower() == plan.display_name.lower()
                    ]
                    folder = (
                        existing[0]
                        if existing
                        else txn.create_folder(
                            user_id, parent, plan.display_name, FolderType.USER_MAIL
                        )
                    )
                by_mailbox[name] = folder
                txn.put_mirror_folder(MirrorFolder(folder.id, user_id, name, 0, 0, 0))

        self._db(apply)

    def _mailbox_refused(self, folder: MirrorFolder, exc: ImapRefused) -> None:
        """SELECT of a mirrored mailbox was refused: one an IMAP client deleted leaves the
        phone too (a user folder; its messages with it); any other refusal is logged and the
        folder skipped this round."""
        listed = {e.raw_name for e in self.account.list_mailboxes()}
        if folder.mailbox in listed:
            log.warning("IMAP mirror of %s: %s skipped: %s", self.user.name, folder.mailbox, exc)
            return
        self._drop_folder(folder)

    def _select_to_write(self, mailbox: str) -> None:
        """SELECT *mailbox* for a write-back; a refusal of a mailbox gone from LIST (a laptop
        deleted it; Dovecot's NO says so in words, without a response code) is raised as
        ``[NONEXISTENT]`` (RFC 5530), so the phone hears its message is no longer there."""
        try:
            self._select(mailbox)
        except ImapRefused as exc:
            if exc.code:
                raise
            self._selected = ""
            if any(e.raw_name == mailbox for e in self.account.list_mailboxes()):
                raise
            raise ImapRefused(str(exc), "NONEXISTENT") from exc

    def _select(self, mailbox: str) -> None:
        if self._selected != mailbox:
            self.account.select(mailbox)
            self._selected = mailbox

    # -- server -> store

    def _sync_folder(self, folder: MirrorFolder) -> None:
        known = (folder.uidvalidity, folder.highestmodseq) if folder.uidvalidity else None
        started = time.monotonic()
        selected = self.account.select(folder.mailbox, known)
        self._selected = folder.mailbox
        if known is None or selected.uidvalidity != folder.uidvalidity:
            phases = self.full_syncs.setdefault(folder.mailbox, {})
            phases["select"] = time.monotonic() - started
            self._full_sync(folder, selected)
            return
        if (
            selected.highestmodseq == folder.highestmodseq
            and not selected.changed
            and not selected.vanished
        ):
            return
        mapped = {m.uid: m for m in self._db(lambda t: t.mirror_messages(folder.folder_id))}
        below = folder.backfill_below
        new_uids = [
            i.uid for i in selected.changed if i.uid not in mapped and (not below or i.uid >= below)
        ]
        bodies = self._fetch_new(folder, new_uids)
        changed = [i for i in selected.changed if i.uid in mapped]
        vanished = [mapped[u] for u in selected.vanished if u in mapped]
        done = replace(folder, highestmodseq=selected.highestmodseq)

        def apply(txn: Txn) -> None:
            if _gone(txn, folder):
                return
            self._apply(txn, folder, bodies, changed, vanished)
            txn.put_mirror_folder(done)

        self._db(apply)

    def _apply(
        self,
        txn: Txn,
        folder: MirrorFolder,
        new: list[Parsed],
        changed: list[FetchItem],
        vanished: list[MirrorMessage],
    ) -> None:
        for row in vanished:
            if txn.message_folder(row.message_id) is not None:
                txn.delete_message(row.message_id)
        txn.drop_mirror_messages([row.message_id for row in vanished])
        mapped = {m.uid: m for m in txn.mirror_messages(folder.folder_id)}
        for item in changed:
            found = mapped.get(item.uid)
            if found is None or item.flags is None:
                continue
            row = found
            seen, flagged = SEEN in item.flags, FLAGGED in item.flags
            names = categories_of(item.flags)
            if (seen, flagged, set(names)) == (row.seen, row.flagged, set(row.keywords)):
                continue
            if txn.message_folder(row.message_id) is not None:
                txn.set_read(row.message_id, seen)
                txn.set_flag(row.message_id, _follow_up(flagged))
                txn.set_categories(row.message_id, names)
            txn.put_mirror_message(replace(row, seen=seen, flagged=flagged, keywords=names))
        for item, parsed in new:
            self._add(txn, folder, item, parsed)

    @staticmethod
    def _parse(folder: MirrorFolder, items: list[FetchItem]) -> list[Parsed]:
        """Fetched messages parsed here, in the mirror's thread: the store's one worker thread
        (which the phones' requests wait for) only inserts them."""
        out: list[Parsed] = []
        for item in items:
            if item.body is None:
                continue
            try:
                out.append((item, parse_message(item.body, item.internaldate or _now())))
            except MailError as exc:
                log.warning("IMAP %s UID %d is not a message: %s", folder.mailbox, item.uid, exc)
        return out

    def _fetch_new(self, folder: MirrorFolder, uids: list[int]) -> list[Parsed]:
        """Messages new to the mirror, parsed: whole when small, lazily when large."""
        return self._messages(folder, self.account.fetch_messages(uids)) if uids else []

    def _messages(self, folder: MirrorFolder, responses: list[dict[str, Value]]) -> list[Parsed]:
        """Fetched messages (ImapAccount.fetch_messages) parsed: a small one came whole, a
        large one is fetched lazily now (natsync.sources.structure)."""
        whole: list[FetchItem] = []
        large: list[int] = []
        for response in responses:
            size, body = response.get("RFC822.SIZE"), response.get("BODY[]<0>")
            if isinstance(body, bytes) and size == len(body) and len(body) <= LAZY_ABOVE:
                whole.append(replace(fetch_item(response), body=body))
            else:
                large.append(fetch_uid(response))
        parsed, more = self._fetch_lazily(folder, large)
        return self._parse(folder, whole + self.account.fetch_full(more)) + parsed

    def _fetch_lazily(
        self, folder: MirrorFolder, uids: list[int]
    ) -> tuple[list[Parsed], list[int]]:
        """Large messages as partial copies (natsync.sources.structure), and the UIDs of those
        that cannot be (an embedded message, a structure we cannot read): fetched whole."""
        parsed: list[Parsed] = []
        whole: list[int] = []
        key = self._key() if uids else ""
        for response in self.account.fetch_structures(uids):
            uid = fetch_uid(response)
            try:
                top = parse_bodystructure(response.get("BODYSTRUCTURE"))
                header = response.get("BODY[HEADER]")
                if not can_be_lazy(top) or not isinstance(header, bytes):
                    whole.append(uid)
                    continue
                texts: dict[str, bytes] = {}
                cut = False
                sections = text_sections(top)
                for section, data in self.account.fetch_sections(uid, sections, TEXT_LIMIT).items():
                    texts[section], trimmed = trim_text(data, TEXT_LIMIT)
                    cut = cut or trimmed
                item = fetch_item(response)
                size = response.get("RFC822.SIZE")
                size = size if isinstance(size, int) else 0
                raw = partial_message(header, top, texts, size, cut, key)
                message = parse_message(raw, item.internaldate or _now())
            except (ImapWireError, MailError) as exc:
                log.info("IMAP %s UID %d fetched whole: %s", folder.mailbox, uid, exc)
                whole.append(uid)
                continue
            parsed.append((replace(item, body=raw), with_sizes(message, top)))
        return parsed, whole

    def _add(self, txn: Txn, folder: MirrorFolder, item: FetchItem, parsed: NewMessage) -> None:
        flags = item.flags or frozenset()
        seen, flagged = SEEN in flags, FLAGGED in flags
        names = categories_of(flags)
        key = parsed.message_id_header.strip()
        awaited = self._awaited.get(key) if key else None
        if awaited is not None and txn.message_folder(awaited) == folder.folder_id:
            # (only in its own folder: the same message sent to oneself lands in INBOX too)
            del self._awaited[key]
            # The server's own Sent copy of a message natsync keeps a copy of: that copy is
            # it (sent_copy = "server", _await_sent_copies).
            txn.set_read(awaited, seen)
            txn.set_flag(awaited, _follow_up(flagged))
            txn.set_categories(awaited, names)
            txn.put_mirror_message(
                MirrorMessage(awaited, folder.folder_id, item.uid, seen, flagged, names)
            )
            return
        message = txn.add_message(folder.folder_id, replace(parsed, read=seen))
        partial = partial_of(parsed.raw, self.partial_key)
        if partial is not None:  # the whole message's size, not the partial copy's
            txn.replace_message_body(message.id, parsed.raw, partial.size)
        if flagged:
            txn.set_flag(message.id, _follow_up(True))
        if names:
            txn.set_categories(message.id, names)
        txn.put_mirror_message(
            MirrorMessage(message.id, folder.folder_id, item.uid, seen, flagged, names)
        )

    def _first_sync(self, folder: MirrorFolder, selected: Selected) -> None:
        """A folder seen for the first time: its newest FIRST_BATCH messages (by sequence
        number, one FETCH), the older ones left to the backfill."""
        phases = self.full_syncs.setdefault(folder.mailbox, {})
        started = time.monotonic()
        responses = self.account.fetch_newest(selected.exists, FIRST_BATCH)
        # Appended by the write-back before this first sync: mapped already.
        mapped = {m.uid for m in self._db(lambda t: t.mirror_messages(folder.folder_id))}
        uids = sorted(fetch_uid(r) for r in responses)
        bodies = self._messages(folder, [r for r in responses if fetch_uid(r) not in mapped])
        phases["fetch"] = time.monotonic() - started
        mark = time.monotonic()
        below = uids[0] if uids and selected.exists > len(uids) else 0
        state = MirrorFolder(
            folder.folder_id,
            folder.user_id,
            folder.mailbox,
            selected.uidvalidity,
            selected.highestmodseq,
            below,
        )
        self._store_first(folder, state, bodies)
        phases["store"] = time.monotonic() - mark
        log.info(
            "IMAP mirror of %s: %s (UIDVALIDITY %d): newest %d of %d messages in %.2f s "
            "(SELECT %.2f s, FETCH and parse %.2f s, store %.2f s)",
            self.user.name,
            folder.mailbox,
            selected.uidvalidity,
            len(bodies),
            selected.exists,
            time.monotonic() - started + phases.get("select", 0.0),
            phases.get("select", 0.0),
            phases["fetch"],
            phases["store"],
        )

    def _store_first(self, folder: MirrorFolder, state: MirrorFolder, bodies: list[Parsed]) -> None:
        """The first messages of a folder and its new state, in one transaction."""

        def store(txn: Txn) -> None:
            if _gone(txn, folder):
                return
            for item, parsed in sorted(bodies, key=lambda b: b[0].uid):
                self._add(txn, state, item, parsed)
            txn.put_mirror_folder(state)

        self._db(store)

    def _full_sync(self, folder: MirrorFolder, selected: Selected) -> None:
        """A folder seen for the first time (:meth:`_first_sync`), or whose UIDVALIDITY
        changed (RFC 3501 §2.3.1.1: every UID is void): stored messages are matched again by
        Message-ID, the rest fetched."""
        if not folder.uidvalidity:
            self._first_sync(folder, selected)
            return
        uidvalidity, modseq = selected.uidvalidity, selected.highestmodseq
        phases = self.full_syncs.setdefault(folder.mailbox, {})
        started = time.monotonic()
        uids = self.account.uids()
        phases["search"] = time.monotonic() - started
        matched: dict[int, int] = {}  # uid -> message id
        if folder.uidvalidity:
            stored = self._db(lambda t: _message_ids(t, self.user.id, folder.folder_id))
            headers = self.account.fetch_message_ids(uids)
            for item in headers:
                key = _message_id_of(item.body or b"")
                if key and stored.get(key):
                    matched[item.uid] = stored[key].pop()
            kept = set(matched.values())
            doomed = [mid for mids in stored.values() for mid in mids if mid not in kept]
            flags = {i.uid: i.flags or frozenset() for i in self.account.fetch_flags(list(matched))}

            def rematch(txn: Txn) -> None:
                if _gone(txn, folder):
                    return
                old = [m.message_id for m in txn.mirror_messages(folder.folder_id)]
                txn.drop_mirror_messages(old)
                for mid in doomed:
                    txn.delete_message(mid)
                for uid, mid in matched.items():
                    seen, flagged = SEEN in flags.get(uid, ()), FLAGGED in flags.get(uid, ())
                    names = categories_of(flags.get(uid, ()))
                    txn.set_read(mid, seen)
                    txn.set_flag(mid, _follow_up(flagged))
                    txn.set_categories(mid, names)
                    txn.put_mirror_message(
                        MirrorMessage(mid, folder.folder_id, uid, seen, flagged, names)
                    )

            self._db(rematch)
        fresh = [u for u in uids if u not in matched]
        first = fresh[-FIRST_BATCH:]
        mark = time.monotonic()
        bodies = self._fetch_new(folder, first)
        phases["fetch"] = time.monotonic() - mark
        mark = time.monotonic()
        below = first[0] if len(fresh) > len(first) else 0
        state = MirrorFolder(
            folder.folder_id, folder.user_id, folder.mailbox, uidvalidity, modseq, below
        )
        self._store_first(folder, state, bodies)
        phases["store"] = time.monotonic() - mark
        log.info(
            "IMAP mirror of %s: %s (UIDVALIDITY %d): newest %d of %d messages in %.2f s "
            "(SELECT %.2f s, UID SEARCH %.2f s, FETCH and parse %.2f s, store %.2f s)",
            self.user.name,
            folder.mailbox,
            uidvalidity,
            len(bodies),
            len(uids),
            time.monotonic() - started + phases.get("select", 0.0),
            phases.get("select", 0.0),
            phases["search"],
            phases["fetch"],
            phases["store"],
        )

    def _backfill(self) -> bool:
        """Fetch one batch of older messages of one folder; False when none is left."""
        for folder in self._db(lambda t: t.list_mirror_folders(self.user.id)):
            if not folder.backfill_below or self.wake.is_set():
                continue
            self._select(folder.mailbox)
            older = self.account.uids_below(folder.backfill_below, BACKFILL_BATCH + 1)
            batch = older[-BACKFILL_BATCH:]
            bodies = self._fetch_new(folder, batch)
            below = batch[0] if len(older) > len(batch) else 0

            def store(
                txn: Txn,
                folder: MirrorFolder = folder,
                below: int = below,
                bodies: list[Parsed] = bodies,
            ) -> None:
                current = {m.folder_id: m for m in txn.list_mirror_folders(self.user.id)}
                if folder.folder_id not in current:
                    return  # the phone deleted the folder meanwhile
                state = replace(current[folder.folder_id], backfill_below=below)
                mapped = {m.uid for m in txn.mirror_messages(folder.folder_id)}
                for item, parsed in sorted(bodies, key=lambda b: b[0].uid, reverse=True):
                    if item.uid not in mapped:
                        self._add(txn, state, item, parsed)
                txn.put_mirror_folder(state)

            self._db(store)
            return True
        return False

    # -- mail from the phone -> the submission service

    def _send_outbound(self) -> None:
        """Send this user's queued mail (SendMail, SmartReply, SmartForward) through their
        submission service with their credentials; a 5xx answer bounces to their Inbox."""
        now = _now()
        sender, owner = self.user.email, self._owner
        entries = self._db(
            lambda t: t.claim_outbound_from(sender, now, SEND_BATCH, owner, now + SEND_LEASE)
        )
        self._retry_at = None
        for entry in entries:
            self._send_one(entry)
        if entries and self.account.server.sent_copy is SentCopy.SERVER:
            # The server may file its copy of what was just sent before this round's look
            # at Sent: copies stored since the write-back above are awaited too.
            _sent, copies = self._db(partial(_unmapped_sent, user_id=self.user.id))
            self._awaited.update({mid: m for m, (mid, _at) in copies.items() if mid})

    def _send_one(self, entry: OutboundMail) -> None:
        owner = self._owner
        try:
            submit(
                self.account.server,
                self.account.login,
                self.account.password,
                entry.sender,
                entry.recipients,
                entry.raw,
            )
        except SubmitError as exc:
            log.warning("sending mail of %s: %s", self.user.name, exc)
            error = exc.message
            if exc.permanent:
                self._db(lambda t: self._bounce(t, entry, error))
                return
            delay = min(MAX_SEND_RETRY, 60.0 * 2**entry.attempts)
            due = _now() + timedelta(seconds=delay)
            self._db(lambda t: t.outbound_retry(entry.id, due, error, owner))
            self._retry_at = time.monotonic() + delay
            return
        self._db(lambda t: t.outbound_sent(entry.id, owner))

    def _bounce(self, txn: Txn, entry: OutboundMail, error: str) -> None:
        txn.outbound_sent(entry.id, self._owner)
        report = build_bounce(entry.sender, {r: error for r in entry.recipients}, entry.raw, _now())
        inbox = txn.folder_by_type(self.user.id, FolderType.INBOX)
        txn.add_message(inbox.id, parse_message(report, _now()))

    # -- store -> server

    def mark(self) -> int:
        """Where the refusals stand before a command runs (refusals later than this may be
        its own: a round woken by its commit can run before the command's answer waits)."""
        with self._rounds:
            return self._refusal_count

    def ticket(self) -> int:
        """After a command committed: a write-back round later than this one saw its change."""
        with self._rounds:
            return self._started

    def _wait_round(self, ticket: int, timeout: float) -> bool:
        """Wait for a round later than *ticket*; not while the mirror has no IMAP session (a
        server that is down or being reconnected to: the phone is not kept waiting for it)."""
        self._rounds.wait_for(lambda: self._finished > ticket or not self.in_session, timeout)
        return self._finished > ticket

    def folder_refused_after(
        self, mark: int, ticket: int, key: int | str, timeout: float
    ) -> str | None:
        """Wait for a write-back round later than *ticket*; the IMAP response code of a
        refusal since *mark* of the folder change under *key* (None: none, or no round)."""
        with self._rounds:
            if not self._wait_round(ticket, timeout):
                return None
            found = self.folder_refusals.get(key)
            return found[1] if found is not None and found[0] > mark else None

    def refused_after(
        self, mark: int, ticket: int, message_ids: frozenset[int], timeout: float
    ) -> dict[int, str] | None:
        """Wait for a write-back round later than *ticket*; message id -> IMAP response code
        of those of *message_ids* refused since *mark* (None: no round within *timeout*)."""
        with self._rounds:
            if not self._wait_round(ticket, timeout):
                return None
            return {m: c for m, (n, c) in self.refusals.items() if n > mark and m in message_ids}

    def _refused(self, key: int | str, code: str, folder: bool = False) -> None:
        """Keep a refusal for the answer waiting for it (the latest REFUSALS_KEPT of them)."""
        with self._rounds:
            self._refusal_count += 1
            table: dict[Any, tuple[int, str]] = self.folder_refusals if folder else self.refusals
            table[key] = (self._refusal_count, code)
            if len(table) > REFUSALS_KEPT:
                del table[min(table, key=lambda k: table[k][0])]

    def _writeback(self) -> None:
        """The phone's changes to the server: folders first, then messages (one round)."""
        with self._rounds:
            self._started += 1
            number = self._started
        try:
            self._folders()
            self._writeback_round()
        finally:
            with self._rounds:
                self._finished = number
                self._rounds.notify_all()

    def _writeback_round(self) -> None:
        user_id = self.user.id

        def gather(txn: Txn) -> tuple[list[MirrorFolder], list[Action]]:
            folders = txn.list_mirror_folders(user_id)
            mirrored = frozenset(f.folder_id for f in folders)
            rows = {f.folder_id: txn.mirror_messages(f.folder_id) for f in folders}
            mapped_ids = frozenset(m.message_id for r in rows.values() for m in r)
            actions: list[Action] = []
            for folder in folders:
                flags = txn.message_flags(folder.folder_id)
                location = {
                    m.message_id: txn.message_folder(m.message_id)
                    for m in rows[folder.folder_id]
                    if m.message_id not in flags
                }
                actions += plan_writeback(
                    folder,
                    rows[folder.folder_id],
                    flags,
                    location,
                    mirrored,
                    mapped_ids,
                    txn.message_categories(folder.folder_id),
                )
            return folders, actions

        folders, actions = self._db(gather)
        if self.account.server.sent_copy is SentCopy.SERVER and any(
            isinstance(a, Append) for a in actions
        ):
            actions = self._await_sent_copies(actions)
        if not actions:
            return
        self._drafts = self._db(lambda t: t.folder_by_type(user_id, FolderType.DRAFTS).id)
        mailbox = {f.folder_id: f for f in folders}
        # APPEND before EXPUNGE: a draft changed on the phone is a new message and the old one
        # deleted; the new copy is on the server before the old one goes (a refused APPEND
        # leaves the old draft in place on the server, and the phone gets it back).
        order = {Move: 0, SetFlag: 1, SetKeywords: 1, Append: 2, Expunge: 3}
        refused_appends: set[int] = set()
        self._stored = set()
        for action in sorted(actions, key=lambda a: order[type(a)]):
            try:
                if isinstance(action, Expunge) and action.mapping.folder_id in refused_appends:
                    # A changed draft whose new copy the server refused: keep the old one.
                    raise ImapRefused("kept: the APPEND of its replacement was refused")
                self._write(action, mailbox)
            except ImapRefused as exc:
                if isinstance(action, Append):
                    refused_appends.add(action.folder_id)
                    self._refused(action.message_id, exc.code)
                else:
                    self._refused(action.mapping.message_id, exc.code)
                # The server said NO (over quota, a mailbox gone, ...): asking again would get
                # the same answer. The store goes back to the server's state, so the phone's
                # next Sync shows what the server has (the phone's command was answered when
                # it committed: EAS has no later status for it).
                log.warning(
                    "IMAP mirror of %s: %s refused, the phone's change is undone: %s",
                    self.user.name,
                    type(action).__name__,
                    exc,
                )
                self._db(lambda t, a=action: _revert(t, user_id, a))  # type: ignore[misc]
                self._selected = ""  # a refused SELECT leaves no mailbox selected
                self.refused += 1

    def _await_sent_copies(self, actions: list[Action]) -> list[Action]:
        """``sent_copy = "server"``: the mail server files its own Sent copy, so natsync's
        copy in Sent Items (SendMail, SmartReply, SmartForward, a draft sent) is not
        APPENDed: it waits for the server's, which takes its place when the mirror fetches it
        (matched by Message-ID in :meth:`_add`: the phone keeps the one item it has). A copy
        the server has not filed within :attr:`sent_copy_wait` seconds leaves the store (the
        store shows what the server has) with a warning; *actions* without the waiting ones."""
        sent, unmapped = self._db(partial(_unmapped_sent, user_id=self.user.id))
        # (a message the phone moved into Sent is unmapped there too, until its MOVE)
        appends = {a.message_id for a in actions if isinstance(a, Append) and a.folder_id == sent}
        copies = {m: found for m, found in unmapped.items() if m in appends}
        if not copies:
            return actions
        cutoff = _now() - timedelta(seconds=self.sent_copy_wait)
        stale = [m for m, (_mid, at) in copies.items() if at < cutoff]
        self._awaited = {mid: m for m, (mid, at) in copies.items() if mid and at >= cutoff}
        if stale:
            log.warning(
                "IMAP mirror of %s: the mail server filed no Sent copy of %d sent message(s) "
                'within %g s (sent_copy = "server"): natsync\'s copy is removed; set '
                'sent_copy = "append" if the server does not file one',
                self.user.name,
                len(stale),
                self.sent_copy_wait,
            )
            self._db(partial(_delete_messages, message_ids=stale))
        return [
            a
            for a in actions
            if not (isinstance(a, Append) and a.folder_id == sent and a.message_id in copies)
        ]

    def _store(self, row: MirrorMessage, flag: str, on: bool, folder: MirrorFolder) -> bool:
        """STORE with ``UNCHANGEDSINCE`` the folder's HIGHESTMODSEQ. MODIFIED (RFC 7162
        §3.1.3: a laptop changed the message since the mirror last looked) on the message's
        first STORE of the round is a conflict the server wins: raised as a refusal (the
        phone's change is undone and answered Status 7). A later STORE of the same message in
        the round meets the modseq the mirror's own first STORE made: False, and the next
        round writes it with the new HIGHESTMODSEQ."""
        if self.account.store_flag(row.uid, flag, on, folder.highestmodseq):
            self._stored.add(row.message_id)
            return True
        if row.message_id in self._stored:
            return False
        raise ImapRefused(
            f"the message changed on the IMAP server meanwhile ({MODIFIED}): its state wins",
            MODIFIED,
        )

    def _write(self, action: Action, folders: dict[int, MirrorFolder]) -> None:
        account = self.account
        if isinstance(action, SetFlag):
            row = action.mapping
            folder = folders[row.folder_id]
            self._select_to_write(folder.mailbox)
            if self._store(row, action.flag, action.on, folder):
                flag, on = action.flag, action.on
                self._db(
                    lambda t: _patch_row(t, row, **{"seen" if flag == SEEN else "flagged": on})
                )
        elif isinstance(action, SetKeywords):
            row = action.mapping
            folder = folders[row.folder_id]
            self._select_to_write(folder.mailbox)
            agreed = True
            for names, on in ((action.add, True), (action.remove, False)):
                words = keywords_of(names)
                if words and agreed:
                    agreed = self._store(row, " ".join(words), on, folder)
            if agreed:
                now = action.now
                self._db(lambda t: _patch_row(t, row, keywords=now))
        elif isinstance(action, Move):
            row = action.mapping
            self._select_to_write(folders[row.folder_id].mailbox)
            new_uid = account.move(row.uid, folders[action.to_folder].mailbox)
            if new_uid is None:
                self._db(lambda t: t.drop_mirror_messages([row.message_id]))
            else:
                moved = replace(row, folder_id=action.to_folder, uid=new_uid)
                self._db(lambda t: t.put_mirror_message(moved))
        elif isinstance(action, Expunge):
            row = action.mapping
            self._select_to_write(folders[row.folder_id].mailbox)
            account.expunge(row.uid)
            self._db(lambda t: t.drop_mirror_messages([row.message_id]))
        else:
            raw = self._db(lambda t: t.raw_message(action.message_id))
            marks = [f for f, on in ((SEEN, action.seen), (FLAGGED, action.flagged)) if on]
            if action.folder_id == self._drafts:
                marks.append(DRAFT)
            flags = " ".join(marks + keywords_of(action.categories))
            target = folders[action.folder_id]
            uid = account.append(target.mailbox, f"({flags})", raw)
            if uid is not None:
                row = MirrorMessage(
                    action.message_id,
                    action.folder_id,
                    uid,
                    action.seen,
                    action.flagged,
                    action.categories,
                )
                self._db(lambda t: t.put_mirror_message(row))


def partial_key(txn: Txn, user_id: int) -> str:
    """The user's partial key (made at first use): 128 random bits, so a message that arrives
    with a forged marker line is never taken for a partial copy."""
    key = txn.get_user_setting(user_id, PARTIAL_KEY)
    if key is None:
        key = secrets.token_hex(16)
        txn.set_user_setting(user_id, PARTIAL_KEY, key)
    return key


def _drop_created(txn: Txn, user_id: int, server_id: str) -> None:
    if txn.get_folder(user_id, server_id) is not None:
        txn.delete_folder(user_id, server_id)


def _unmapped_sent(txn: Txn, user_id: int) -> tuple[int, dict[int, tuple[str, datetime]]]:
    """The Sent Items folder, and its messages the server has no UID for: message id ->
    (Message-ID, when stored)."""
    sent = txn.folder_by_type(user_id, FolderType.SENT_ITEMS).id
    unmapped = set(txn.message_flags(sent)) - {m.message_id for m in txn.mirror_messages(sent)}
    if not unmapped:
        return sent, {}
    messages = txn.get_messages(user_id, list(txn.message_versions(sent)))
    return sent, {
        m.id: (m.message_id_header.strip(), m.received_at) for m in messages if m.id in unmapped
    }


def _keep_answers(
    txn: Txn, user_id: int, device: str, answers: dict[str, tuple[str, bytes]], gone: set[str]
) -> None:
    """Keep the Sync answers with their refusals' statuses as the ones a retransmission gets
    (natsync.eas.state), and drop the ServerIds of failed Adds from the items the device is
    known to have (nothing to delete on it at its next Sync)."""
    found = txn.get_device(user_id, device) if device else None
    if found is None:
        return
    for cid, (key, doc) in answers.items():
        state = sync_state.load(txn.get_sync_state(found.id, cid, key))
        if state is None:
            continue
        state.pop(sync_state.ANSWER, None)
        items = state.get("items", {})
        for sid in gone:
            items.pop(sid, None)
        txn.put_sync_state(found.id, cid, key, sync_state.pack(state, doc))


def _delete_messages(txn: Txn, message_ids: Sequence[int]) -> None:
    for message_id in message_ids:
        txn.delete_message(message_id)


def _unrename(txn: Txn, row: MirrorFolder, rows: list[MirrorFolder], delimiter: str) -> None:
    """Give the store folder of *row* back the name and parent of its mailbox (a refused
    RENAME)."""
    head, _, leaf = row.mailbox.rpartition(delimiter)
    by_id = {f.id: f for f in txn.list_folders(row.user_id)}
    folder = by_id.get(row.folder_id)
    if folder is None:
        return
    parent = "0"
    for other in rows:
        if head and other.mailbox == head and other.folder_id in by_id:
            parent = by_id[other.folder_id].server_id
    name = decode_mutf7(leaf)
    if (folder.parent_server_id, folder.display_name) != (parent, name):
        txn.update_folder(row.user_id, folder.server_id, parent, name)


def _gone(txn: Txn, folder: MirrorFolder) -> bool:
    """Whether *folder* left the mirror while it was being fetched (the phone deleted it: its
    mapping row went with the store folder), so what was fetched for it is dropped."""
    return all(f.folder_id != folder.folder_id for f in txn.list_mirror_folders(folder.user_id))


def _put_folder(txn: Txn, mirror: MirrorFolder) -> None:
    if any(f.id == mirror.folder_id for f in txn.list_folders(mirror.user_id)):
        txn.put_mirror_folder(mirror)  # (unless the phone deleted the folder meanwhile)


def _patch_row(txn: Txn, row: MirrorMessage, **changes: Any) -> None:
    """Change the agreed state of *row* as it is now (an earlier action of the same round may
    have changed another field of it)."""
    current = {m.message_id: m for m in txn.mirror_messages(row.folder_id)}
    txn.put_mirror_message(replace(current.get(row.message_id, row), **changes))


def _revert(txn: Txn, user_id: int, action: Action) -> None:
    """Undo in the store a phone's change the IMAP server refused: the message gets back the
    state both sides last agreed on (its mapping row), so the phone's next Sync shows it."""
    if isinstance(action, Append):
        # Made here and never accepted by the server (e.g. a Sent copy over quota): the
        # server has no such message.
        if txn.message_folder(action.message_id) is not None:
            txn.delete_message(action.message_id)
        return
    row = action.mapping
    where = txn.message_folder(row.message_id)
    if where is None:
        # Deleted on the phone, refused on the server: forget the mapping; the message comes
        # back with the folder's next pass: a folder without UIDVALIDITY is matched again
        # against its mapping rows and fetches the UIDs no row has (see _first_sync).
        txn.drop_mirror_messages([row.message_id])
        for folder in txn.list_mirror_folders(user_id):
            if folder.folder_id == row.folder_id:
                txn.put_mirror_folder(replace(folder, uidvalidity=0, highestmodseq=0))
        return
    if where != row.folder_id:
        txn.move_message(row.message_id, row.folder_id)
    txn.set_read(row.message_id, row.seen)
    txn.set_flag(row.message_id, _follow_up(row.flagged))
    txn.set_categories(row.message_id, row.keywords)


def _message_id_of(header: bytes) -> str:
    text = header.decode("utf-8", "replace")
    _, _, value = text.partition(":")
    return " ".join(value.split()).strip()


def _message_ids(txn: Txn, user_id: int, folder_id: int) -> dict[str, list[int]]:
    sids = list(txn.message_versions(folder_id))
    found: dict[str, list[int]] = {}
    for message in txn.get_messages(user_id, sids):
        found.setdefault(message.message_id_header.strip(), []).append(message.id)
    return found


@dataclass
class SyncTargets:
    """What a Sync's client commands touch in mirrored folders (MirrorManager.sync_targets)."""

    #: message id -> (CollectionId, Change or Delete, ServerId).
    items: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    #: (CollectionId, ClientId) of its Adds (their messages are known after the command).
    adds: list[tuple[str, str]] = field(default_factory=list)


class MirrorManager:
    """IMAP logins and the mirror workers of a server process.

    ``handles``/``check`` are what :class:`natsync.server.auth.Authenticator` asks of its
    delegate: users of an IMAP domain are checked against their IMAP server (no password is
    stored: their user row's hash matches nothing), a success is remembered in memory only, as
    a salted scrypt digest, for :data:`LOGIN_TTL` seconds, and starts the user's mirror."""

    def __init__(self, config: SourcesConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.mirrors: dict[str, AccountMirror] = {}
        #: This process's name on the leases it holds (natsync.sources.lease).
        self.owner = owner_name()
        self._cache: dict[str, tuple[float, bytes, bytes]] = {}
        self._watchers: dict[str, asyncio.Task[Any]] = {}
        self._lock = asyncio.Lock()

    def handles(self, name: str) -> bool:
        return self.config.server_for(name) is not None

    @staticmethod
    def _digest(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(
            password.encode(), salt=salt, n=1 << CACHE_LOG2_N, r=8, p=1, maxmem=64 << 20
        )

    async def check(self, name: str, password: str) -> tuple[User | None, int]:
        """(the user, 200) when the IMAP server accepts *password*; (None, 401) when it
        refuses; (None, 503) when it cannot be asked."""
        server = self.config.server_for(name)
        if server is None:
            return None, 401
        key = name.strip().lower()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            digest = await asyncio.to_thread(self._digest, password, cached[1])
            if hmac.compare_digest(digest, cached[2]):
                user = await self.store.run(lambda t: t.get_user(key))
                if user is not None:
                    return user, 200
        try:
            await asyncio.to_thread(check_login, server, name, password)
        except ImapAuthError:
            return None, 401
        except ImapError as exc:
            log.warning("cannot check %s against the IMAP server: %s", name, exc)
            return None, 503
        salt = secrets.token_bytes(16)
        digest = await asyncio.to_thread(self._digest, password, salt)
        self._cache[key] = (now + LOGIN_TTL, salt, digest)
        user = await self.store.run(lambda t: _ensure_user(t, key))
        await self.start(user, name, password)
        return user, 200

    async def start(self, user: User, login: str, password: str) -> AccountMirror:
        """The user's mirror, started if it was not (a new password replaces the kept one)."""
        async with self._lock:
            mirror = self.mirrors.get(user.name)
            if mirror is not None:
                mirror.account.password = password
                return mirror
            server = self.config.server_for(login)
            assert server is not None
            mirror = AccountMirror(
                ImapAccount(server, login, password),
                user,
                self.store,
                asyncio.get_running_loop(),
                Lease(user.id, "imap", self.owner, self.config.lease),
            )
            self.mirrors[user.name] = mirror
            mirror.start()
            task = asyncio.get_running_loop().create_task(
                self._watch(mirror), name=f"natsync-imap-watch-{user.name}"
            )
            self._watchers[user.name] = task
            return mirror

    async def _watch(self, mirror: AccountMirror) -> None:
        """Wake the mirror when the store changes one of its folders (a phone's change), or
        the user's folder hierarchy (FolderCreate/FolderUpdate/FolderDelete, looked at every
        :data:`HIERARCHY_POLL` seconds: the change feed reports folders' contents); renew
        the mirror's lease while it holds it."""
        user_id = mirror.user.id
        renew_at = 0.0

        def look(txn: Txn) -> tuple[list[MirrorFolder], int]:
            return txn.list_mirror_folders(user_id), txn.hierarchy_modseq(user_id)

        seen: int | None = None
        # One subscription kept while the folder set stays the same: changes committed while
        # the loop reads the store are buffered in it, not lost between two subscriptions.
        sub: Subscription | None = None
        watched: list[int] = []
        try:
            while True:
                if mirror.holding and time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + mirror.lease.renew_every
                    await self.store.run(lambda t: mirror.renew(t, _now()))
                folders, hierarchy = await self.store.run(look)
                if seen is not None and hierarchy != seen:
                    mirror.wake.set()
                seen = hierarchy
                ids = sorted(f.folder_id for f in folders)
                if not ids:
                    await asyncio.sleep(0.2)
                    continue
                if sub is None or ids != watched:
                    if sub is not None:
                        sub.close()
                        mirror.wake.set()  # a change may have come before the new one
                    sub, watched = self.store.changes.subscribe(ids), ids
                if await sub.wait(HIERARCHY_POLL):
                    mirror.wake.set()
        finally:
            if sub is not None:
                sub.close()

    async def fetch_whole(self, login: str, message_ids: Sequence[int]) -> None:
        """Fetch these partially stored messages of *login* whole (natsync.sources.bodies)."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        if mirror is None:
            raise ImapError(f"no IMAP mirror for {login!r} in this process: try again")
        await asyncio.to_thread(mirror.fetch_whole, message_ids)

    def refusal_mark(self, login: str) -> int:
        """:meth:`AccountMirror.mark` of *login*'s mirror (0 without one), before a command."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        return mirror.mark() if mirror is not None else 0

    async def write_through_moves(self, login: str, response: Any, mark: int = 0) -> Any:
        """A MoveItems *response* of *login*, with the moves the IMAP server refused failed
        (natsync.sources.refusals); as it is when this process does not mirror the account."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        pairs = moved(response.body) if mirror is not None and mirror.holding else {}
        if mirror is None or not pairs:
            return response
        user_id = mirror.user.id

        def ids(txn: Txn) -> dict[int, str]:
            found = txn.get_messages(user_id, list(pairs))
            return {m.id: pairs[m.server_id] for m in found}

        sources = await self.store.run(ids)
        ticket = mirror.ticket()
        mirror.wake.set()
        refused = await asyncio.to_thread(
            mirror.refused_after, mark, ticket, frozenset(sources), WRITE_THROUGH_TIMEOUT
        )
        if not refused:
            return response
        statuses = {sources[m]: move_status(code) for m, code in refused.items()}
        return replace(response, body=with_statuses(response.body, statuses))

    async def sync_targets(self, login: str, body: Element) -> SyncTargets | None:
        """Before a Sync runs: the messages of mirrored folders its Changes and Deletes name
        (looked up now: a delete moves or removes them), and its Adds; None when it carries
        none, or when this process does not mirror the account (natsync's own store: no wait)."""
        mirror = self._mirror(login)
        commands = sync_commands(body) if mirror is not None and mirror.holding else {}
        if mirror is None or not commands:
            return None
        user_id = mirror.user.id

        def find(txn: Txn) -> SyncTargets:
            mirrored = {f.folder_id for f in txn.list_mirror_folders(user_id)}
            targets = SyncTargets()
            for cid, items in commands.items():
                folder = txn.get_folder(user_id, cid)
                if folder is None or folder.id not in mirrored:
                    continue
                for kind, ref in items:
                    if kind == "Add":
                        targets.adds.append((cid, ref))
                        continue
                    message = txn.get_message(user_id, ref)
                    if message is not None and message.folder_id == folder.id:
                        targets.items[message.id] = (cid, kind, ref)
            return targets

        targets: SyncTargets = await self.store.run(find)
        return targets if targets.items or targets.adds else None

    async def write_through_sync(
        self, login: str, targets: SyncTargets, response: Any, mark: int = 0, device: str = ""
    ) -> Any:
        """A Sync *response* of *login* with the items the IMAP server refused answered with
        their status (natsync.sources.refusals); as it is when no write-back round came
        within :data:`WRITE_THROUGH_TIMEOUT`."""
        mirror = self._mirror(login)
        if mirror is None or not response.body:
            return response
        user_id = mirror.user.id
        items = dict(targets.items)
        made = added_items(response.body) if targets.adds else {}
        if made:

            def ids(txn: Txn) -> dict[int, tuple[str, str, str]]:
                found = {}
                for cid, client in targets.adds:
                    sid = made.get((cid, client))
                    message = txn.get_message(user_id, sid) if sid else None
                    if message is not None:
                        found[message.id] = (cid, "Add", client)
                return found

            items.update(await self.store.run(ids))
        if not items:
            return response
        # What the answer sends of changed collections (a changed draft's new version): a
        # refused APPEND of one takes it out of the answer. (Looked up now: an undo deletes it.)
        changed = {cid for cid, kind, _ref in items.values() if kind == "Change"}
        sent = server_adds(response.body, changed)

        def sent_ids(txn: Txn) -> dict[int, tuple[str, str]]:
            found = {}
            for cid, sid in sent:
                message = txn.get_message(user_id, sid)
                if message is not None:
                    found[message.id] = (cid, sid)
            return found

        new_versions = await self.store.run(sent_ids) if sent else {}
        ticket = mirror.ticket()
        mirror.wake.set()
        refused = await asyncio.to_thread(
            mirror.refused_after,
            mark,
            ticket,
            frozenset(items) | frozenset(new_versions),
            WRITE_THROUGH_TIMEOUT,
        )
        if refused is None:
            log.info(
                "IMAP mirror of %s: no write-back round within %g s (or no IMAP session): "
                "the Sync is answered without the server's verdict (a refusal is undone at "
                "its next Sync)",
                mirror.user.name,
                WRITE_THROUGH_TIMEOUT,
            )
            return response
        if not refused:
            return response
        refusals = [
            ItemRefusal(cid, kind, ref, sync_status(kind, refused[m]))
            for m, (cid, kind, ref) in items.items()
            if m in refused
        ]
        dropped = {new_versions[m] for m in refused if m in new_versions}
        body = without_adds(sync_with_statuses(response.body, refusals), dropped)
        failed_adds = {
            made[(r.collection, r.ref)] for r in refusals if (r.collection, r.ref) in made
        } | {sid for _cid, sid in dropped}
        answers = collection_answers(
            body, {r.collection for r in refusals} | {cid for cid, _sid in dropped}
        )
        await self.store.run(
            partial(
                _keep_answers, user_id=user_id, device=device, answers=answers, gone=failed_adds
            )
        )
        return replace(response, body=body)

    def _mirror(self, login: str) -> AccountMirror | None:
        return self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)

    async def partial_key(self, login: str) -> str:
        """The secret marking *login*'s partial copies; "" when this process has no mirror of
        the user (a user of natsync's own store: nothing of theirs is partial)."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        if mirror is None:
            return ""
        if not mirror.partial_key:
            user_id = mirror.user.id
            mirror.partial_key = await self.store.run(lambda t: partial_key(t, user_id))
        return mirror.partial_key

    async def mailbox_for(self, login: str, server_id: str) -> str:
        """The mailbox a store folder of *login* mirrors ("" when none)."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        if mirror is None or not server_id:
            return ""
        user_id = mirror.user.id

        def find(txn: Txn) -> str:
            folder = txn.get_folder(user_id, server_id)
            rows = {r.folder_id: r.mailbox for r in txn.list_mirror_folders(user_id)}
            return rows.get(folder.id, "") if folder is not None else ""

        found: str = await self.store.run(find)
        return found

    async def write_through_folder(
        self,
        login: str,
        command: str,
        response: Any,
        deleted_mailbox: str = "",
        mark: int = 0,
        updated: str = "",
    ) -> Any:
        """A FolderCreate / FolderUpdate / FolderDelete *response* of *login*, as a refusal
        when the IMAP server refused the CREATE / RENAME / DELETE (natsync.sources.refusals);
        *updated*: the ServerId a FolderUpdate renames."""
        mirror = self.mirrors.get(login.strip().lower()) or self.mirrors.get(login)
        if mirror is None or not mirror.holding or response.status not in (None, 1):
            return response
        key: int | str = deleted_mailbox
        if command in ("FolderCreate", "FolderUpdate"):
            server_id = created_folder(response.body) if command == "FolderCreate" else updated
            user_id = mirror.user.id
            folder = await self.store.run(lambda t: t.get_folder(user_id, server_id))
            if folder is None:
                return response
            key = folder.id
        if not key:
            return response
        ticket = mirror.ticket()
        mirror.wake.set()
        code = await asyncio.to_thread(
            mirror.folder_refused_after, mark, ticket, key, WRITE_THROUGH_TIMEOUT
        )
        if code is None:
            return response
        status = folder_status(command, code)
        return replace(response, body=folder_answer(command, status), status=int(status))

    async def aclose(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        for task in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(asyncio.to_thread(m.stop) for m in self.mirrors.values()))
        self.mirrors.clear()
        self._watchers.clear()


def _ensure_user(txn: Txn, login: str) -> User:
    user = txn.get_user(login)
    if user is not None:
        return user
    email = login if "@" in login else f"{login}@localhost"
    return txn.add_user(login, email, login.partition("@")[0], NO_LOCAL_PASSWORD, _now())
