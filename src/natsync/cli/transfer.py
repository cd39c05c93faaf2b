"""`natsync import KIND USER FILE` and `natsync export KIND USER [FILE|DIR]`: a user's data in
and out of the store as iCalendar (events and tasks), vCard (contacts), mbox or Maildir (mail).

Import reads and checks the whole file first, then stores it in **one transaction**: a bad file
stores nothing, a failure half-way stores nothing. It is idempotent: an item whose id is already
in the folder is left alone (events and tasks by iCalendar UID, contacts by vCard UID — a card
without one gets a UID made from its content —, mail by Message-ID, or by the message's bytes
when it has none), so importing a file twice adds nothing. Mail is stored the way SMTP delivery
stores it (``natsync.mime.parse_message``, then ``relay.deliver_to_inbox`` for the Inbox),
dated by its Date header, and read when the mbox/Maildir flags say so.

Export writes what the store holds: the Calendar folder's events and the Tasks folder's tasks
in one VCALENDAR, the Contacts folder as vCard 3.0 (``--vcard-version 4.0``), a mail folder
(Inbox unless ``--folder``) as an mbox file or a Maildir directory. FILE ``-`` or none writes
ics and vcf to standard output.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import mailbox
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from natsync.classes.codec import Record
from natsync.classes.vcard import Card
from natsync.classes.vtodo import Todo
from natsync.cli.admin import _print_json, _run, _store, data_dir_option, json_option
from natsync.errors import NatsyncError
from natsync.mime.errors import MailError
from natsync.store.api import Folder, FolderType, Txn, User

KINDS = ("ics", "vcf", "mbox", "maildir")
#: Largest file (or Maildir, all messages together) one import reads: the import is one
#: transaction held in memory; a bigger mailbox is split (by year, by folder) first.
MAX_IMPORT_BYTES = 256 * 1024 * 1024
#: Items (events + tasks, contacts, messages) one import stores, for the same reason.
MAX_IMPORT_ITEMS = 100_000

Progress = Callable[[int], None]


class TransferError(NatsyncError):
    """The import or export cannot be done as asked; the message says what to change."""

    http_status = 400


@dataclass(slots=True)
class Parsed:
    """What an import file holds, read and checked before the store is touched."""

    kind: str
    events: list[Record] = field(default_factory=list)
    todos: list[Todo] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    #: (raw message, read) in file order
    messages: list[tuple[bytes, bool]] = field(default_factory=list)

    def count(self) -> int:
        return len(self.events) + len(self.todos) + len(self.cards) + len(self.messages)


@dataclass(slots=True)
class Outcome:
    """What an import did, per kind of item: how many were added, how many were already there."""

    added: dict[str, int] = field(default_factory=dict)
    already_there: dict[str, int] = field(default_factory=dict)

    def note(self, what: str, added: bool) -> None:
        into = self.added if added else self.already_there
        into[what] = into.get(what, 0) + 1


# -- reading import files -----------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise TransferError(f"{path} is not a file")
    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise TransferError(
            f"{path} is larger than {MAX_IMPORT_BYTES // 2**20} MiB: split it and import the parts"
        )
    return path.read_bytes()


def _mail_messages(kind: str, path: Path) -> list[tuple[bytes, bool]]:
    box: mailbox.Mailbox[Any]
    if kind == "mbox":
        _read_file(path)  # the size and kind checks
        box, read_flag = mailbox.mbox(path, create=False), "R"
    else:
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise TransferError(f"{path} is not a Maildir (it has no cur/ and new/ directories)")
        box, read_flag = mailbox.Maildir(path, factory=None, create=False), "S"
    out: list[tuple[bytes, bool]] = []
    total = 0
    try:
        for key in sorted(box.keys()) if kind == "maildir" else box.keys():
            raw = box.get_bytes(key)
            total += len(raw)
            if total > MAX_IMPORT_BYTES or len(out) >= MAX_IMPORT_ITEMS:
                raise TransferError(
                    f"{path} holds more than {MAX_IMPORT_BYTES // 2**20} MiB or "
                    f"{MAX_IMPORT_ITEMS} messages: split it and import the parts"
                )
            message = box.get_message(key)
            flags = message.get_flags() if hasattr(message, "get_flags") else ""
            out.append((raw, read_flag in flags))
    except (OSError, mailbox.Error) as exc:
        raise TransferError(f"cannot read {path} as {kind}: {exc}") from exc
    finally:
        box.close()
    if not out:
        hint = "messages after 'From ' lines" if kind == "mbox" else "messages in cur/ or new/"
        raise TransferError(f"no messages in {path}: is it a {kind} ({hint})?")
    return out


def read_source(kind: str, path: Path) -> Parsed:
    """Read and check an import file; raises NatsyncError (TransferError, VCardError, IcsError,
    MailError) with a message naming what is wrong."""
    parsed = Parsed(kind)
    if kind == "ics":
        from natsync.classes.ical import records_from_ics
        from natsync.classes.vtodo import todos_from_ics

        data = _read_file(path)
        # A lone changed occurrence (an iMIP update) without its series is kept as an event.
        parsed.events = [
            {k: v for k, v in r.items() if k != "instance_of"} for r in records_from_ics(data)
        ]
        parsed.todos = todos_from_ics(data)
        if not parsed.events and not parsed.todos:
            raise TransferError(f"{path} holds no VEVENT and no VTODO")
    elif kind == "vcf":
        from natsync.classes.vcard import read_vcards

        parsed.cards = read_vcards(_read_file(path))
    else:
        from natsync.mime import looks_like_message, parse_tree

        parsed.messages = _mail_messages(kind, path)
        for number, (raw, _read) in enumerate(parsed.messages, 1):
            if not looks_like_message(raw, parse_tree(raw)):
                raise MailError(f"message {number} of {path} is not RFC 5322 mail (no headers)")
    if parsed.count() > MAX_IMPORT_ITEMS:
        raise TransferError(f"{path} holds more than {MAX_IMPORT_ITEMS} items: split it")
    return parsed


# -- storing ------------------------------------------------------------------------------------


def pick_folder(txn: Txn, user: User, name: str | None, default: FolderType) -> Folder:
    """The user's folder named *name* (of *default*'s class), else their default folder."""
    if name is None:
        return txn.folder_by_type(user.id, default)
    from natsync.classes.contacts import CODEC as CONTACTS
    from natsync.eas.sync_window import MAIL_TYPES

    contact_types = CONTACTS.folder_types
    allowed = contact_types if default in contact_types else MAIL_TYPES
    found = [
        f
        for f in txn.list_folders(user.id)
        if f.display_name.lower() == name.lower() and f.type in allowed
    ]
    if len(found) != 1:
        kinds = "contacts" if default in contact_types else "mail"
        what = "no" if not found else "more than one"
        raise TransferError(f"{user.name} has {what} {kinds} folder named {name!r}")
    return found[0]


def card_uid(card: Card) -> str:
    """A card's UID, or one made from its content (so a re-import finds it again)."""
    if card.uid:
        return card.uid
    canonical = json.dumps(card.record, sort_keys=True, separators=(",", ":"))
    return "vcard-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _mail_key(raw: bytes, message_id: str) -> str:
    return message_id.strip() or "sha256:" + hashlib.sha256(raw).hexdigest()


def _store_items(
    txn: Txn,
    folder: Folder,
    items: list[tuple[str, Record]],
    what: str,
    outcome: Outcome,
    progress: Progress,
) -> None:
    for uid, record in items:
        fresh = txn.item_by_uid(folder.id, uid) is None
        if fresh:
            txn.add_item(folder.id, record, uid=uid)
        outcome.note(what, fresh)
        progress(1)


def _store_mail(
    txn: Txn,
    user: User,
    folder: Folder,
    parsed: Parsed,
    now: datetime,
    outcome: Outcome,
    progress: Progress,
) -> None:
    from natsync.mail.relay import deliver_to_inbox
    from natsync.mime import parse_message

    known: set[str] = set()
    stored = txn.get_messages(user.id, list(txn.message_versions(folder.id)))
    for m in stored:
        raw = b"" if m.message_id_header.strip() else txn.raw_message(m.id)
        known.add(_mail_key(raw, m.message_id_header))
    for raw, read in parsed.messages:
        message = parse_message(raw, now)
        key = _mail_key(raw, message.message_id_header)
        fresh = key not in known
        if fresh:
            known.add(key)
            message = dataclasses.replace(message, received_at=_dated(message.raw, now), read=read)
            if folder.type == FolderType.INBOX:
                deliver_to_inbox(txn, user, message)
            else:
                txn.add_message(folder.id, message)
        outcome.note("messages", fresh)
        progress(1)


def _dated(raw: bytes, now: datetime) -> datetime:
    """When a message was sent (its Date header), else *now*."""
    from natsync.mime import header_text, parse_tree

    try:
        when = email.utils.parsedate_to_datetime(header_text(parse_tree(raw), "Date"))
    except (TypeError, ValueError, IndexError):
        return now
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def import_into(
    txn: Txn,
    user_name: str,
    parsed: Parsed,
    folder_name: str | None,
    now: datetime,
    progress: Progress = lambda _n: None,
) -> Outcome:
    """Store *parsed* for the user (inside the caller's one transaction)."""
    user = _user(txn, user_name)
    outcome = Outcome()
    if parsed.kind == "ics":
        if folder_name is not None:
            raise TransferError("ics goes to the Calendar and Tasks folders; drop --folder")
        calendar = txn.folder_by_type(user.id, FolderType.CALENDAR)
        events = [(str(r["uid"]), r) for r in parsed.events]
        _store_items(txn, calendar, events, "events", outcome, progress)
        todo_folder = txn.folder_by_type(user.id, FolderType.TASKS)
        todos = [(t.uid, t.record) for t in parsed.todos]
        _store_items(txn, todo_folder, todos, "tasks", outcome, progress)
    elif parsed.kind == "vcf":
        folder = pick_folder(txn, user, folder_name, FolderType.CONTACTS)
        cards = [(card_uid(c), c.record) for c in parsed.cards]
        _store_items(txn, folder, cards, "contacts", outcome, progress)
    else:
        folder = pick_folder(txn, user, folder_name, FolderType.INBOX)
        _store_mail(txn, user, folder, parsed, now, outcome, progress)
    return outcome


def _user(txn: Txn, name: str) -> User:
    user = txn.get_user(name)
    if user is None:
        raise TransferError(f"no user named {name!r} (see natsync user list)")
    return user


# -- exporting ----------------------------------------------------------------------------------


def export_ics(txn: Txn, user_name: str) -> bytes:
    """The user's Calendar events and Tasks as one VCALENDAR."""
    import icalendar

    from natsync.classes.ical import records_to_ics
    from natsync.classes.vtodo import todo_component

    user = _user(txn, user_name)
    events = txn.list_items(txn.folder_by_type(user.id, FolderType.CALENDAR).id)
    todos = txn.list_items(txn.folder_by_type(user.id, FolderType.TASKS).id)
    document = icalendar.Calendar.from_ical(records_to_ics(i.data for i in events))
    for item in todos:
        document.add_component(todo_component(item.uid, item.data))
    data: bytes = document.to_ical()
    return data


def export_vcf(txn: Txn, user_name: str, folder_name: str | None, version: str) -> bytes:
    from natsync.classes.vcard import write_vcards

    user = _user(txn, user_name)
    folder = pick_folder(txn, user, folder_name, FolderType.CONTACTS)
    return write_vcards((Card(i.uid, i.data) for i in txn.list_items(folder.id)), version)


def export_mail(txn: Txn, user_name: str, folder_name: str | None) -> list[tuple[bytes, bool]]:
    """(raw, read) of every message of the folder, oldest first."""
    user = _user(txn, user_name)
    folder = pick_folder(txn, user, folder_name, FolderType.INBOX)
    messages = txn.get_messages(user.id, list(txn.message_versions(folder.id)))
    messages.sort(key=lambda m: (m.received_at, m.id))
    return [(txn.raw_message(m.id), m.read) for m in messages]


def write_mail(kind: str, messages: list[tuple[bytes, bool]], target: Path) -> None:
    """Write messages as a new mbox file or Maildir directory (never into an existing one)."""
    if target.exists() and (target.is_file() or any(target.iterdir())):
        raise TransferError(f"{target} exists: export into a new file or an empty directory")
    box: mailbox.Mailbox[Any] = (
        mailbox.mbox(target, create=True)
        if kind == "mbox"
        else mailbox.Maildir(target, factory=None, create=True)
    )
    try:
        box.lock()
        for raw, read in messages:
            if isinstance(box, mailbox.mbox):
                in_mbox = mailbox.mboxMessage(raw)
                in_mbox.set_flags("RO" if read else "O")
                box.add(in_mbox)
            else:
                in_maildir = mailbox.MaildirMessage(raw)
                in_maildir.set_subdir("cur")
                in_maildir.set_flags("S" if read else "")
                box.add(in_maildir)
        box.flush()
    finally:
        box.unlock()
        box.close()


# -- the commands -------------------------------------------------------------------------------


def _progress(total: int, description: str, quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )
    return bar, bar.add_task(description, total=total)


def _fail(exc: NatsyncError) -> click.ClickException:
    return click.ClickException(exc.message)


_kind = click.argument("kind", type=click.Choice(KINDS, case_sensitive=False))
_folder = click.option(
    "--folder", default=None, help="The mail or contacts folder (default: Inbox / Contacts)."
)


@click.command("import")
@_kind
@click.argument("user_name", metavar="USER")
@click.argument("source", metavar="FILE", type=click.Path(exists=True, path_type=Path))
@_folder
@data_dir_option
@json_option
def import_command(
    kind: str, user_name: str, source: Path, folder: str | None, store_name: str, as_json: bool
) -> None:
    """Import FILE into USER's folders: ics (events → Calendar, tasks → Tasks), vcf (→ Contacts),
    mbox or maildir (→ Inbox, or --folder). Importing the same file again adds nothing."""
    kind = kind.lower()
    try:
        parsed = read_source(kind, source)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    now = datetime.now(UTC)
    bar, task = _progress(parsed.count(), f"import {source.name}", as_json)
    with _store(store_name) as store, bar:
        outcome = _run(
            store,
            lambda txn: import_into(
                txn, user_name, parsed, folder, now, lambda n: bar.advance(task, n)
            ),
        )
    if as_json:
        _print_json(
            {
                "user": user_name,
                "kind": kind,
                "added": outcome.added,
                "already_there": outcome.already_there,
            }
        )
        return
    parts = [f"{n} {what}" for what, n in outcome.added.items()] or ["nothing"]
    line = f"imported {', '.join(parts)} for {user_name}"
    if outcome.already_there:
        there = ", ".join(f"{n} {what}" for what, n in outcome.already_there.items())
        line += f" ({there} already there)"
    click.echo(line)


@click.command("export")
@_kind
@click.argument("user_name", metavar="USER")
@click.argument("target", metavar="[FILE|DIR]", required=False, type=click.Path(path_type=Path))
@_folder
@click.option(
    "--vcard-version", type=click.Choice(["3.0", "4.0"]), default="3.0", show_default=True
)
@data_dir_option
def export_command(
    kind: str,
    user_name: str,
    target: Path | None,
    folder: str | None,
    vcard_version: str,
    store_name: str,
) -> None:
    """Export USER's events and tasks (ics), contacts (vcf) or a mail folder (mbox: a FILE,
    maildir: a DIR). ics and vcf go to standard output without FILE (or with -)."""
    kind = kind.lower()
    to_stdout = target is None or str(target) == "-"
    if to_stdout and kind in ("mbox", "maildir"):
        raise click.UsageError(f"export {kind} needs a {'FILE' if kind == 'mbox' else 'DIR'}")
    if kind == "ics" and folder is not None:
        raise click.UsageError("ics comes from the Calendar and Tasks folders; drop --folder")
    with _store(store_name) as store:
        if kind == "ics":
            data: bytes | None = _run(store, lambda txn: export_ics(txn, user_name))
        elif kind == "vcf":
            data = _run(store, lambda txn: export_vcf(txn, user_name, folder, vcard_version))
        else:
            data = None
            messages = _run(store, lambda txn: export_mail(txn, user_name, folder))
    try:
        if data is not None:
            if to_stdout:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            else:
                assert target is not None
                target.write_bytes(data)
            return
        assert target is not None
        bar, task = _progress(len(messages), f"export {target.name}", False)
        with bar:
            write_mail(kind, messages, target)
            bar.advance(task, len(messages))
    except (NatsyncError, OSError) as exc:
        message = exc.message if isinstance(exc, NatsyncError) else str(exc)
        raise click.ClickException(message) from exc
    click.echo(f"exported {len(messages)} messages of {user_name} to {target}", err=True)
