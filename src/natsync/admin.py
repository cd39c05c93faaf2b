"""The administrator's operations on users and devices, over one store transaction.

Both faces of administration call these and nothing else: the command line
(:mod:`natsync.cli.admin`) and the web console (:mod:`natsync.console`). So "block a device" or
"wipe a device" is written once. Sans-I/O: each function takes an open :class:`Txn` (run it with
``store.run`` / ``store.run_sync``) and, where time matters, ``now``; password hashing happens
before (it is slow on purpose and must not hold a transaction).

A disabled user keeps their mail and devices; their stored password hash is prefixed with
:data:`DISABLED_MARK` (the ``/etc/shadow`` convention), which :func:`verify_password` cannot
parse, so every login fails until :func:`enable_user` strips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from natsync.errors import NatsyncError
from natsync.store.api import AccessState, Device, Txn, User, WipeState

if TYPE_CHECKING:
    from natsync.server.recent import RecentRequest

#: A password shorter than this is refused: phones store it once, so length costs nothing.
MIN_PASSWORD_LENGTH = 8
#: Prefix of a disabled user's password hash: no scrypt hash starts with it, so no login works.
DISABLED_MARK = "!"


class AdminError(NatsyncError):
    """The administrative change cannot be made as asked (the message says what to do)."""

    http_status = 400


class NoSuchUser(AdminError):
    """No user of that name."""

    http_status = 404


class NoSuchDevice(AdminError):
    """No device of that id."""

    http_status = 404


# -- users ----------------------------------------------------------------------------------------


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminError(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    return password


def check_email(email: str) -> str:
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise AdminError(f"{email!r} is not an email address")
    return email


def require_user(txn: Txn, name: str) -> User:
    user = txn.get_user(name)
    if user is None:
        raise NoSuchUser(f"no user named {name!r} (see natsync user list)")
    return user


def add_user(
    txn: Txn, name: str, email: str, display_name: str, password_hash: str, now: datetime
) -> User:
    """A new user with the standard folders (Conflict when the name or address is taken)."""
    if not name or any(c.isspace() for c in name) or ":" in name:
        raise AdminError(f"{name!r} cannot be a login name: no spaces, no colon, not empty")
    check_email(email)
    return txn.add_user(name, email, display_name or name, password_hash, now)


def is_disabled(txn: Txn, user: User) -> bool:
    return txn.password_hash(user.id).startswith(DISABLED_MARK)


def set_password(txn: Txn, name: str, password_hash: str) -> User:
    """A new password; a disabled user stays disabled (enable them to let them log in)."""
    user = require_user(txn, name)
    mark = DISABLED_MARK if is_disabled(txn, user) else ""
    txn.set_password_hash(user.id, mark + password_hash)
    return user


def disable_user(txn: Txn, name: str) -> User:
    """No login works for *name* any more; mail, folders and devices are kept."""
    user = require_user(txn, name)
    if not is_disabled(txn, user):
        txn.set_password_hash(user.id, DISABLED_MARK + txn.password_hash(user.id))
    return user


def enable_user(txn: Txn, name: str) -> User:
    user = require_user(txn, name)
    stored = txn.password_hash(user.id)
    if stored.startswith(DISABLED_MARK):
        txn.set_password_hash(user.id, stored[len(DISABLED_MARK) :])
    return user


def remove_user(txn: Txn, name: str) -> User:
    """Remove *name* with all their mail, folders and devices."""
    user = require_user(txn, name)
    txn.remove_user(user.id)
    return user


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """What a user's mailbox holds: per folder (name, messages, other items), and in total."""

    folders: tuple[tuple[str, int, int], ...]
    messages: int
    items: int
    #: Bytes of stored mail (the raw MIME of every message).
    size: int


def mailbox_stats(txn: Txn, user: User) -> MailboxStats:
    rows: list[tuple[str, int, int]] = []
    size = 0
    for folder in txn.list_folders(user.id):
        ids = list(txn.message_versions(folder.id))
        if ids:
            size += sum(m.size for m in txn.get_messages(user.id, ids))
        rows.append((folder.display_name, len(ids), len(txn.item_versions(folder.id))))
    return MailboxStats(
        folders=tuple(rows),
        messages=sum(r[1] for r in rows),
        items=sum(r[2] for r in rows),
        size=size,
    )


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    disabled: bool
    devices: int
    stats: MailboxStats


def list_users(txn: Txn, *, stats: bool = True) -> list[UserRow]:
    empty = MailboxStats((), 0, 0, 0)
    return [
        UserRow(
            user=u,
            disabled=is_disabled(txn, u),
            devices=len(txn.list_devices(u.id)),
            stats=mailbox_stats(txn, u) if stats else empty,
        )
        for u in txn.list_users()
    ]


# -- devices --------------------------------------------------------------------------------------


def find_device(txn: Txn, device_id: str, user_name: str | None = None) -> Device:
    """The device *device_id* (of *user_name*, needed only when two users have one that id)."""
    if user_name is not None:
        found = txn.get_device(require_user(txn, user_name).id, device_id)
        if found is None:
            raise NoSuchDevice(f"{user_name} has no device {device_id!r}")
        return found
    matches = [d for d in txn.list_devices() if d.device_id.casefold() == device_id.casefold()]
    if not matches:
        raise NoSuchDevice(f"no device {device_id!r} (see natsync device list)")
    if len(matches) > 1:
        raise AdminError(f"{len(matches)} users have a device {device_id!r}: say which with --user")
    return matches[0]


def set_access(txn: Txn, device_id: str, user_name: str | None, state: AccessState) -> Device:
    """Allow, block or quarantine a device (approving from quarantine is allowing)."""
    found = find_device(txn, device_id, user_name)
    txn.set_access_state(found.id, state)
    return found


def wipe(
    txn: Txn, device_id: str, user_name: str | None, now: datetime, *, account_only: bool = False
) -> Device:
    """Ask the device to wipe itself (or, EAS 16.1, to remove only this account) at its next
    connection."""
    found = find_device(txn, device_id, user_name)
    state = WipeState.ACCOUNT_ONLY_PENDING if account_only else WipeState.PENDING
    txn.set_wipe_state(found.id, state, now)
    return found


def cancel_wipe(txn: Txn, device_id: str, user_name: str | None, now: datetime) -> Device:
    """Withdraw a wipe that was not yet sent."""
    found = find_device(txn, device_id, user_name)
    if found.wipe_state not in (WipeState.PENDING, WipeState.ACCOUNT_ONLY_PENDING):
        raise AdminError(
            f"no wipe to cancel: the wipe state of {found.device_id} is {found.wipe_state.value}"
        )
    txn.set_wipe_state(found.id, WipeState.NONE, now)
    return found


def remove_device(txn: Txn, device_id: str, user_name: str | None) -> Device:
    """Forget the device: its record, policy key, wipe state and sync state."""
    found = find_device(txn, device_id, user_name)
    txn.remove_device(found.id)
    return found


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: Device
    owner: str
    #: The device's last requests, newest first (what the server recorded: natsync.server.recent).
    recent: tuple[RecentRequest, ...]
    #: A Ping of the device is held now (by the record; exact when the server says so).
    holding: bool
    #: The device's push latencies in ms, newest first: from the end of SMTP DATA of a mail
    #: (or the commit of a change no mail made) to the answer of the Ping that waited for it
    #: (natsync.server.recent).
    pushes: tuple[float, ...] = ()

    def push_quantile(self, q: float) -> float | None:
        """The q-quantile of the recent push latencies, ms (None: no push recorded)."""
        from natsync.server.recent import percentile

        return percentile(self.pushes, q)


def list_devices(txn: Txn, now: datetime, user_name: str | None = None) -> list[DeviceRow]:
    # Imported here: natsync.server pulls in the whole server, which `natsync user` does not need.
    from natsync.server.recent import holds_ping, push_latencies, recent_requests

    names = {u.id: u.name for u in txn.list_users()}
    user_id = None if user_name is None else require_user(txn, user_name).id
    rows = []
    for d in txn.list_devices(user_id):
        recent = tuple(recent_requests(txn, d.id))
        pushes = tuple(ms for _, ms in push_latencies(txn, d.id))
        owner = names.get(d.user_id, "?")
        rows.append(DeviceRow(d, owner, recent, holds_ping(recent, now), pushes))
    return rows
