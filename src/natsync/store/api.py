"""The store's one interface: what the protocol, mail and CLI code may ask of a mailbox store.

Two drivers stand behind it: ``sqlite.py`` (the embedded default) and later ``postgres.py``.
The shape is deliberate:

* ``Store.run(fn)`` runs ``fn(txn)`` as **one database transaction** in the store's own worker
  thread and returns its result. Command logic is plain synchronous code written against
  :class:`Txn`; it never sees asyncio, sockets or a clock (``now`` is passed in). A crash at any
  point leaves the old state or the new one, never half.
* Every change to a folder's content or to a user's folder hierarchy bumps a counter *in the same
  transaction* (``Folder.modseq`` / ``Txn.hierarchy_modseq``). After the transaction commits, the
  store publishes which folders changed on its :class:`ChangeFeed`; waiting Pings subscribe to it.
* Sync state (what a device knows of a collection, named by its SyncKey) is an opaque blob the
  protocol layer owns; the store keeps the current and the previous key per (device, collection)
  so a retransmitted request can be answered again.

Times are timezone-aware UTC ``datetime`` values. Identifiers: ``User.id``/``Device.id`` are
integers private to the store; ``Folder.server_id`` and ``Message.server_id`` are the strings
sent to devices (a message's is ``"<folder server id>:<number>"``).

Mail is stored as :class:`Message` rows (the raw MIME is the truth); every other data class
(calendar, contacts, tasks, notes) as generic :class:`Item` rows whose ``data`` is the class's
record, a JSON object the store keeps but never looks inside (``natsync.classes`` owns its keys).
Items and messages of a folder share one number sequence, so their server ids never collide.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from natsync.errors import NatsyncError

if TYPE_CHECKING:
    import asyncio  # the notify loop's type only: the store API does no I/O of its own

T = TypeVar("T")


class StoreError(NatsyncError):
    """The store could not complete the operation."""

    http_status = 500


class NotFound(StoreError):
    """The named user, device, folder or item does not exist."""

    http_status = 404


class Conflict(StoreError):
    """The change conflicts with what is stored (a name already taken, a folder not empty ...)."""

    http_status = 409


class FolderType(enum.IntEnum):
    """EAS folder types (MS-ASCMD 2.2.3.186.3 Type of FolderSync Add)."""

    USER_GENERIC = 1
    INBOX = 2
    DRAFTS = 3
    DELETED_ITEMS = 4
    SENT_ITEMS = 5
    OUTBOX = 6
    TASKS = 7
    CALENDAR = 8
    CONTACTS = 9
    NOTES = 10
    JOURNAL = 11
    USER_MAIL = 12
    USER_CALENDAR = 13
    USER_CONTACTS = 14
    USER_TASKS = 15
    USER_JOURNAL = 16
    USER_NOTES = 17
    UNKNOWN = 18
    RECIPIENT_INFO_CACHE = 19


#: The folders every user has, created with the user (name, type). Server ids are assigned.
STANDARD_FOLDERS: tuple[tuple[str, FolderType], ...] = (
    ("Inbox", FolderType.INBOX),
    ("Drafts", FolderType.DRAFTS),
    ("Deleted Items", FolderType.DELETED_ITEMS),
    ("Sent Items", FolderType.SENT_ITEMS),
    ("Outbox", FolderType.OUTBOX),
    ("Calendar", FolderType.CALENDAR),
    ("Contacts", FolderType.CONTACTS),
    ("Tasks", FolderType.TASKS),
    ("Notes", FolderType.NOTES),
)


class AccessState(enum.StrEnum):
    """Device access state (allow / block / quarantine), set by an administrator."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    QUARANTINED = "quarantined"


class WipeState(enum.StrEnum):
    """Remote wipe lifecycle of a device (MS-ASPROV 3.2.5.1.2)."""

    NONE = "none"
    PENDING = "pending"  # full device wipe requested, not yet sent
    ACCOUNT_ONLY_PENDING = "account-only-pending"  # EAS 16.1 AccountOnlyRemoteWipe requested
    SENT = "sent"  # wipe directive sent, acknowledgement awaited
    ACKNOWLEDGED = "acknowledged"  # device confirmed the wipe


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str  # the login name (what phones send as User / Basic auth user)
    email: str  # primary SMTP address
    display_name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: int
    device_id: str  # the DeviceId the phone sends
    device_type: str
    model: str
    os: str
    user_agent: str
    protocol_version: str
    first_seen: datetime
    last_seen: datetime
    access_state: AccessState
    policy_key: int  # 0 until provisioned; the key the device must send as X-MS-PolicyKey
    pending_policy_key: int  # key handed out in phase 1 of Provision, awaiting acknowledgement
    wipe_state: WipeState
    wipe_requested_at: datetime | None
    wipe_acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class Folder:
    id: int
    user_id: int
    server_id: str
    parent_server_id: str  # "0" for the top level
    display_name: str
    type: FolderType
    modseq: int  # bumped in the transaction of every content change


@dataclass(frozen=True, slots=True)
class Flag:
    """Follow-up flag of a message (MS-ASEMAIL Flag): status 0 clear, 1 complete, 2 active."""

    status: int = 0
    flag_type: str = ""
    start_date: datetime | None = None
    due_date: datetime | None = None
    complete_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    id: int
    message_id: int
    file_reference: str  # what ItemOperations/Fetch asks for; unique per user
    filename: str
    content_type: str
    content_id: str  # "" unless inline
    is_inline: bool
    size: int


@dataclass(frozen=True, slots=True)
class Message:
    """A mail item: the raw MIME is the truth; the rest is parsed and indexed from it."""

    id: int
    folder_id: int
    server_id: str
    modseq: int  # folder modseq of the last change to this message
    received_at: datetime
    subject: str
    from_addr: str
    to_addrs: str
    cc_addrs: str
    reply_to: str
    message_id_header: str
    size: int
    read: bool
    flag: Flag
    categories: tuple[str, ...]
    importance: int  # 0 low, 1 normal, 2 high
    message_class: str  # "IPM.Note" ...
    has_attachments: bool
    preview: str  # first characters of the plain body, for EAS 14+ Preview
    attachments: tuple[Attachment, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What delivery (SMTP in, SendMail copy, Drafts) hands the store; parsed by natsync.mail."""

    raw: bytes
    received_at: datetime
    subject: str
    from_addr: str
    to_addrs: str
    cc_addrs: str
    reply_to: str
    message_id_header: str
    importance: int
    message_class: str
    preview: str
    read: bool = False
    attachments: tuple[NewAttachment, ...] = ()
    #: The readable text of the body, for the search index, when the caller has it already
    #: (natsync.mail parses every message once); None: the store extracts it from ``raw``.
    body_text: str | None = None
    #: What the Email class reads from the MIME at every Sync (the text and HTML bodies, the
    #: thread headers), kept with the raw message so a Sync window never parses it; opaque to
    #: the store (natsync.mime.kept_parts / natsync.mime.sync_parts). None: read from ``raw``.
    parts: str | None = None


@dataclass(frozen=True, slots=True)
class NewAttachment:
    filename: str
    content_type: str
    content_id: str
    is_inline: bool
    size: int
    #: Position of the part in the MIME tree (``email`` walk order), to fetch its bytes later.
    part_index: int


@dataclass(frozen=True, slots=True)
class Item:
    """A non-email item (calendar event, contact, task, note): one class record as JSON."""

    id: int
    folder_id: int
    server_id: str  # "<folder server id>:<number>", like a message's
    uid: str  # the class's stable id (iCalendar UID, vCard UID); unique within a folder
    data: dict[str, Any]  # the class record (JSON in the store)
    modseq: int  # folder modseq of the last change to this item


@dataclass(frozen=True, slots=True)
class OutboundMail:
    """A message queued for the smarthost; removed only once the smarthost accepted it."""

    id: int
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    next_attempt_at: datetime
    last_error: str
    #: The relay worker holding the entry ('' when none does) and until when its claim holds.
    claimed_by: str = ""
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class MirrorFolder:
    """A store folder mirrored from an IMAP mailbox (natsync.sources): RFC 7162 state."""

    folder_id: int
    user_id: int
    mailbox: str
    uidvalidity: int
    highestmodseq: int
    #: UIDs below this one are not fetched yet (newest first); 0: the folder is complete.
    backfill_below: int


@dataclass(frozen=True, slots=True)
class MirrorMessage:
    """A stored message's IMAP UID and the flags both sides last agreed on."""

    message_id: int
    folder_id: int
    uid: int
    seen: bool
    flagged: bool
    #: The categories its IMAP keywords carry (natsync.sources.keywords), as last agreed.
    keywords: tuple[str, ...] = ()


class Txn(Protocol):
    """One open transaction. Methods raise NotFound / Conflict as documented on the classes."""

    #: The change-feed ids this transaction publishes after COMMIT (folders whose content or
    #: existence changed, ``hierarchy_key``/``hold_key`` values); a rollback drops them. The
    #: server adds a device's hold key here to end its hold in other processes.
    changed: set[int]

    # -- users
    def add_user(
        self, name: str, email: str, display_name: str, password_hash: str, now: datetime
    ) -> User: ...
    def get_user(self, name: str) -> User | None: ...
    def get_user_by_email(self, email: str) -> User | None: ...
    def list_users(self) -> list[User]: ...
    def password_hash(self, user_id: int) -> str: ...
    def login(self, name: str) -> tuple[User, str] | None:
        """The user *name* signs in as (by name, or by email when it holds an "@") and their
        password hash, read in one statement (every request authenticates)."""
        ...

    def set_password_hash(self, user_id: int, password_hash: str) -> None: ...
    def remove_user(self, user_id: int) -> None: ...
    def get_user_setting(self, user_id: int, key: str) -> str | None: ...
    def set_user_setting(self, user_id: int, key: str, value: str) -> None: ...

    # -- devices
    def touch_device(
        self,
        user_id: int,
        device_id: str,
        device_type: str,
        protocol_version: str,
        user_agent: str,
        now: datetime,
    ) -> Device: ...
    def get_device(self, user_id: int, device_id: str) -> Device | None: ...
    def hold_starts(self, device: int) -> None:
        """The device's request is held now (a Ping, a held Sync): its next Ping or Sync, in
        whichever process, must end that hold (:meth:`hold_ends`)."""
        ...

    def hold_ends(self, device: int) -> bool:
        """A request that ends the device's hold arrived: True when a hold was recorded (now
        forgotten; the caller announces the device's hold key), False when none was."""
        ...

    def list_devices(self, user_id: int | None = None) -> list[Device]: ...
    def update_device_info(
        self, device: int, *, model: str | None = None, os: str | None = None
    ) -> None: ...
    def set_access_state(self, device: int, state: AccessState) -> None: ...
    def set_policy_keys(self, device: int, *, policy_key: int, pending_policy_key: int) -> None: ...
    def set_wipe_state(self, device: int, state: WipeState, now: datetime) -> None: ...
    def remove_device(self, device: int) -> None:
        """Forget the device, its settings and its sync state (it starts afresh if it returns)."""
        ...

    def get_device_setting(self, device: int, key: str) -> str | None: ...
    def set_device_setting(self, device: int, key: str, value: str) -> None: ...

    # -- folders (hierarchy changes bump the user's hierarchy modseq)
    def list_folders(self, user_id: int) -> list[Folder]: ...
    def get_folder(self, user_id: int, server_id: str) -> Folder | None: ...
    def folder_by_type(self, user_id: int, folder_type: FolderType) -> Folder: ...
    def create_folder(
        self, user_id: int, parent_server_id: str, name: str, folder_type: FolderType
    ) -> Folder: ...
    def update_folder(
        self, user_id: int, server_id: str, parent_server_id: str, name: str
    ) -> Folder: ...
    def delete_folder(self, user_id: int, server_id: str) -> None: ...
    def hierarchy_modseq(self, user_id: int) -> int: ...

    # -- messages (every change bumps the folder's modseq and records the folder as changed)
    def add_message(self, folder_id: int, message: NewMessage) -> Message: ...
    def get_message(self, user_id: int, server_id: str) -> Message | None: ...
    def message_versions(
        self, folder_id: int, received_since: datetime | None = None
    ) -> dict[str, int]: ...
    def get_messages(self, user_id: int, server_ids: Sequence[str]) -> list[Message]: ...
    def raw_message(self, message_id: int) -> bytes: ...
    def raw_messages(self, message_ids: Sequence[int]) -> dict[int, bytes]: ...
    def message_bodies(self, message_ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]: ...
    def set_read(self, message_id: int, read: bool) -> Message: ...
    def set_flag(self, message_id: int, flag: Flag) -> Message: ...
    def set_categories(self, message_id: int, categories: Iterable[str]) -> Message: ...
    def move_message(self, message_id: int, to_folder_id: int) -> Message: ...
    def delete_message(self, message_id: int) -> None: ...
    def empty_folder(self, folder_id: int) -> int: ...
    def get_attachment(
        self, user_id: int, file_reference: str
    ) -> tuple[Attachment, bytes] | None: ...
    def search_messages(
        self, user_id: int, query: str, folder_ids: Sequence[int] | None, limit: int
    ) -> list[Message]: ...

    # -- items of the other data classes (every change bumps the folder's modseq, like mail)
    def add_item(self, folder_id: int, data: Mapping[str, Any], *, uid: str | None = None) -> Item:
        """A new item; *uid* None gets a new random one. Conflict when *uid* is taken there."""
        ...

    def get_item(self, user_id: int, server_id: str) -> Item | None: ...
    def item_by_uid(self, folder_id: int, uid: str) -> Item | None: ...
    def list_items(self, folder_id: int) -> list[Item]: ...
    def item_versions(self, folder_id: int) -> dict[str, int]:
        """server id -> modseq of every item of the folder (the Sync diff)."""
        ...

    def update_item(self, item_id: int, data: Mapping[str, Any]) -> Item: ...
    def move_item(self, item_id: int, to_folder_id: int) -> Item:
        """The item in another folder of the same user, under a new server id (uid kept)."""
        ...

    def delete_item(self, item_id: int) -> None: ...

    # -- sync state, owned by natsync.eas (the store keeps current + previous per collection)
    def get_sync_state(self, device: int, collection: str, sync_key: str) -> bytes | None: ...
    def put_sync_state(self, device: int, collection: str, sync_key: str, state: bytes) -> None: ...
    def drop_sync_state(self, device: int, collection: str | None = None) -> None: ...

    # -- outbound mail queue (natsync.mail relay)
    def enqueue_outbound(
        self, sender: str, recipients: Sequence[str], raw: bytes, now: datetime
    ) -> OutboundMail: ...
    def due_outbound(self, now: datetime, limit: int) -> list[OutboundMail]:
        """Entries due at *now*, claimed or not (a listing: the relay claims instead)."""
        ...

    def claim_outbound(
        self, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        """Up to *limit* due entries no live claim holds, now claimed by *owner* until
        *lease_until*; no two workers get the same entry while its lease runs, whatever the
        number of processes. Oldest due first."""
        ...

    def renew_outbound(self, outbound_id: int, owner: str, lease_until: datetime) -> bool:
        """Extend *owner*'s claim; False when it no longer holds the entry (or it is gone)."""
        ...

    def release_outbound(self, owner: str) -> int:
        """Hand back every claim *owner* holds (a worker closing); how many there were."""
        ...

    def outbound_sent(self, outbound_id: int, owner: str | None = None) -> None:
        """Remove a sent entry. With *owner*, only while *owner* claims it (else Conflict):
        a worker whose lease ran out and was taken over does not mark the entry done."""
        ...

    def outbound_retry(
        self, outbound_id: int, next_attempt_at: datetime, error: str, owner: str | None = None
    ) -> None:
        """Count a failed attempt, schedule the next one and release the claim (with
        *owner*: only while *owner* claims it, else Conflict)."""
        ...

    # -- the IMAP mirror's mapping (natsync.sources)
    def claim_outbound_from(
        self, sender: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[OutboundMail]:
        """:meth:`claim_outbound`, only of entries from *sender* (an IMAP user's mail goes out
        through their own submission service, sent by their mirror worker)."""
        ...

    def list_mirror_folders(self, user_id: int) -> list[MirrorFolder]: ...
    def put_mirror_folder(self, mirror: MirrorFolder) -> None: ...
    def mirror_messages(self, folder_id: int) -> list[MirrorMessage]: ...
    def put_mirror_message(self, mirror: MirrorMessage) -> None:
        """Insert or replace the row of ``mirror.message_id`` (and any row of its UID)."""
        ...

    def drop_mirror_messages(self, message_ids: Sequence[int]) -> None: ...
    def replace_message_body(self, message_id: int, raw: bytes, size: int) -> None:
        """Put *raw* in place of the stored MIME of a message and *size* as its size, without
        a change for the phones (the IMAP mirror stores large messages' text first and their
        whole MIME when a phone asks for it: the message itself is the same)."""
        ...

    def take_source_lease(
        self, user_id: int, source: str, owner: str, now: datetime, until: datetime
    ) -> bool:
        """Hold the lease on mirroring *source* ("imap", "dav") of the user until *until*:
        True when it was free, ran out before *now*, or is *owner*'s already (a renewal); False
        while another owner holds it. Atomic across processes on both drivers."""
        ...

    def release_source_lease(self, user_id: int, source: str, owner: str) -> None:
        """Give the lease up at once (a clean stop), when *owner* holds it."""
        ...

    def source_lease(self, user_id: int, source: str) -> tuple[str, datetime] | None:
        """(owner, until) of the lease as stored (it may have run out), or None."""
        ...

    def message_flags(self, folder_id: int) -> dict[int, tuple[bool, bool]]:
        """message id -> (read, flagged) of every message of the folder."""
        ...

    def message_categories(self, folder_id: int) -> dict[int, tuple[str, ...]]:
        """message id -> categories of every message of the folder that has any."""
        ...

    def message_folder(self, message_id: int) -> int | None:
        """The folder a message is in, or None when it is gone."""
        ...


class ChangeFeed(Protocol):
    """Folder change events, published after the transaction that made them commits."""

    def subscribe(self, folder_ids: Iterable[int]) -> Subscription: ...


class Subscription(Protocol):
    """Waits for any of a set of folders to change; release it when done (or use ``with``).

    Two ways to wait: ``await wait(timeout)`` (a task that waits), or, without a task (the
    server's held Pings), ``notify(loop, callback)`` then ``take()`` when called back."""

    #: ``time.monotonic()`` when a watched id last changed, as the feed saw its commit (None:
    #: none yet); a held Ping ended by it records its push latency from there, unless a mail
    #: made the change:
    changed_at: float | None
    #: ``time.monotonic()`` at the end of SMTP DATA of the earliest mail among the changes
    #: since the last take (None: none was a mail): push latency runs from here then.
    data_ended_at: float | None

    @property
    def closed(self) -> bool:
        """Closed: no more changes will come (a newer hold of the same device closed it)."""
        ...

    def notify(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        """Have *loop* call *callback* once: when an id changed (now, if one already did) or
        the subscription is closed."""
        ...

    def cancel_notify(self) -> None:
        """Forget the callback registered by :meth:`notify` (it is not called)."""
        ...

    def take(self) -> set[int]:
        """The ids changed since the last take (and forget them)."""
        ...

    async def wait(self, timeout: float) -> set[int]:
        """The ids of the folders that changed, or an empty set when *timeout* seconds passed."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> Subscription: ...
    def __exit__(self, *exc: object) -> None: ...


class Store(Protocol):
    """A mailbox store. Open it with ``natsync.store.open_store(url_or_path)``."""

    changes: ChangeFeed

    async def run(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn(txn)`` in one transaction: committed on return, rolled back on raise."""
        ...

    def run_sync(self, fn: Callable[[Txn], T]) -> T:
        """The same, from synchronous code (CLI, tests) with no event loop running."""
        ...

    async def aclose(self) -> None: ...
    def close(self) -> None: ...
