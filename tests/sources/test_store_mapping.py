"""The mirror's mapping tables and queue claim, on both store drivers (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from natsync.mime import parse_message
from natsync.store.api import FolderType, MirrorFolder, MirrorMessage, Store, Txn, User

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
RAW = b"From: a@example.org\r\nSubject: s\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"


def test_mapping_round_trip(store: Store, alice: User) -> None:
    def work(txn: Txn) -> None:
        inbox = txn.folder_by_type(alice.id, FolderType.INBOX)
        trash = txn.folder_by_type(alice.id, FolderType.DELETED_ITEMS)
        txn.put_mirror_folder(MirrorFolder(inbox.id, alice.id, "INBOX", 7, 0, 0))
        txn.put_mirror_folder(MirrorFolder(inbox.id, alice.id, "INBOX", 7, 2**40, 55))
        assert txn.list_mirror_folders(alice.id) == [
            MirrorFolder(inbox.id, alice.id, "INBOX", 7, 2**40, 55)
        ]
        message = txn.add_message(inbox.id, parse_message(RAW, NOW))
        txn.put_mirror_message(MirrorMessage(message.id, inbox.id, 4_000_000_000, True, False))
        assert txn.message_flags(inbox.id) == {message.id: (False, False)}
        assert txn.mirror_messages(inbox.id)[0].uid == 4_000_000_000
        # The categories both sides agreed on (keywords), and the store's own.
        tagged = MirrorMessage(message.id, inbox.id, 4_000_000_000, True, False, ("Très", "Work"))
        txn.put_mirror_message(tagged)
        assert txn.mirror_messages(inbox.id) == [tagged]
        assert txn.message_categories(inbox.id) == {}
        txn.set_categories(message.id, ["Work"])
        assert txn.message_categories(inbox.id) == {message.id: ("Work",)}
        # The same UID handed to another message replaces the old row (a UIDVALIDITY resync).
        other = txn.add_message(inbox.id, parse_message(RAW, NOW))
        txn.put_mirror_message(MirrorMessage(other.id, inbox.id, 4_000_000_000, False, True))
        assert [m.message_id for m in txn.mirror_messages(inbox.id)] == [other.id]
        txn.move_message(other.id, trash.id)
        assert txn.message_folder(other.id) == trash.id
        txn.delete_message(other.id)
        assert txn.message_folder(other.id) is None
        # The row outlives the message until the mirror has written the deletion back.
        assert txn.mirror_messages(inbox.id)
        txn.drop_mirror_messages([other.id])
        assert txn.mirror_messages(inbox.id) == []

    store.run_sync(work)


def test_claim_outbound_from_takes_only_that_senders_mail(store: Store, alice: User) -> None:
    def work(txn: Txn) -> None:
        mine = txn.enqueue_outbound(alice.email, ["x@example.org"], b"m", NOW)
        txn.enqueue_outbound("someone@example.net", ["y@example.org"], b"n", NOW)
        later = NOW + timedelta(seconds=1)
        claimed = txn.claim_outbound_from(alice.email, later, 10, "me", later + timedelta(1))
        assert [m.id for m in claimed] == [mine.id]
        assert txn.claim_outbound_from(alice.email, later, 10, "other", later) == []

    store.run_sync(work)
