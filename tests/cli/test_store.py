"""`natsync store migrate|copy`: a populated deployment goes SQLite → PostgreSQL → SQLite intact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from natsync.store import copy as store_copy
from natsync.store import migrations, open_store
from natsync.store.api import Flag, FolderType, MirrorFolder, MirrorMessage, Txn
from tests.conftest import ALICE_NAME, CREATED_AT
from tests.pg import PgServer
from tests.store.helpers import T0, later, new_message

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.acquire()
    yield url
    pg_server.release(url)


def populate(path: Path, password_hash: str) -> None:
    """A small deployment with a bit of everything the store holds."""
    store = open_store(path)

    def fill(txn: Txn) -> None:
        for name in (ALICE_NAME, "bob"):
            user = txn.add_user(
                name, f"{name}@example.test", name.title(), password_hash, CREATED_AT
            )
            txn.set_user_setting(user.id, "oof", f"away {name}")
            inbox = txn.folder_by_type(user.id, FolderType.INBOX)
            projects = txn.create_folder(user.id, "0", "Projects", FolderType.USER_MAIL)
            gone = txn.create_folder(user.id, "0", "Gone", FolderType.USER_MAIL)
            txn.delete_folder(user.id, gone.server_id)  # a used-up folder id must stay used
            for n in range(30):
                message = txn.add_message(
                    inbox.id if n % 2 else projects.id,
                    new_message(
                        f"{name} message {n}",
                        f"body {n} ünïcode",
                        received_at=later(n),
                        attachment=bytes(range(256)) * (n + 1) if n % 5 == 0 else None,
                    ),
                )
                if n % 3 == 0:
                    txn.set_flag(message.id, Flag(status=2, flag_type="Follow up", due_date=T0))
                    txn.set_categories(message.id, ["Red", "Blue"])
                if n % 2:  # the Inbox is mirrored from an IMAP mailbox (natsync.sources)
                    txn.put_mirror_message(
                        MirrorMessage(message.id, inbox.id, uid=n, seen=n % 4 == 1, flagged=False)
                    )
            txn.put_mirror_folder(MirrorFolder(inbox.id, user.id, "INBOX", 7, 4242, 0))
            # this process mirrors her IMAP account now (natsync.sources.lease)
            assert txn.take_source_lease(
                user.id, "imap", f"host-{name}:1", NOW, NOW + timedelta(seconds=30)
            )
            device = txn.touch_device(user.id, f"{name}-phone", "iPhone", "16.1", "Apple", NOW)
            txn.set_device_setting(device.id, "policy", "strict")
            for key in ("k1", "k2", "k3"):
                txn.put_sync_state(device.id, str(inbox.id), key, f"{name}{key}".encode())
            txn.enqueue_outbound(f"{name}@example.test", ["x@remote.test"], b"raw \x00 bytes", NOW)
            calendar = txn.folder_by_type(user.id, FolderType.CALENDAR)
            txn.add_item(calendar.id, {"subject": f"{name} ünïcode", "n": 1}, uid=f"{name}-1")

    store.run_sync(fill)
    store.close()


def run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["store", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    loaded: dict[str, object] = json.loads(result.output)
    return loaded


def test_store_copy_round_trips_sqlite_postgres_sqlite(
    tmp_path: Path, pg_url: str, alice_password_hash: str
) -> None:
    first = tmp_path / "first.db"
    populate(first, alice_password_hash)

    there = run("copy", str(first), pg_url)
    back = run("copy", pg_url, str(tmp_path / "back.db"))
    assert there["verified"] is True
    assert back["verified"] is True
    assert there["tables"] == back["tables"]
    rows = {t["table"]: t["rows"] for t in there["tables"]}  # type: ignore[attr-defined, index]
    assert rows["users"] == 2
    assert rows["messages"] == 60
    assert rows["attachments"] == 12
    assert rows["sync_state"] == 4  # current + previous per device
    assert rows["outbound"] == 2
    assert rows["items"] == 2
    assert all(rows[t.name] > 0 for t in store_copy.TABLES)

    # The copy is a working deployment: ids continue where the source left off.
    for name in (str(tmp_path / "back.db"), pg_url):
        store = open_store(name)
        try:
            user = store.run_sync(lambda txn: txn.get_user(ALICE_NAME))
            assert user is not None
            folder = store.run_sync(
                lambda txn, uid=user.id: txn.create_folder(uid, "0", "New", FolderType.USER_MAIL)
            )
            assert folder.server_id == "12"  # 1-9 standard, 10 Projects, 11 Gone (deleted)
            found = store.run_sync(
                lambda txn, uid=user.id: txn.search_messages(uid, "ünïcode", None, 100)
            )
            assert len(found) == 30
        finally:
            store.close()


def test_store_copy_refuses_a_non_empty_target_unless_forced(
    tmp_path: Path, pg_url: str, alice_password_hash: str
) -> None:
    source = tmp_path / "source.db"
    populate(source, alice_password_hash)
    run("copy", str(source), pg_url)
    result = CliRunner().invoke(main, ["store", "copy", str(source), pg_url])
    assert result.exit_code == 1
    assert "not empty" in result.output
    assert "--force" in result.output
    # --force replaces what the target held, in one transaction.
    other = tmp_path / "other.db"
    store = open_store(other)
    store.run_sync(
        lambda txn: txn.add_user("carol", "carol@example.test", "C", alice_password_hash, NOW)
    )
    store.close()
    forced = run("copy", str(other), pg_url, "--force")
    rows = {t["table"]: t["rows"] for t in forced["tables"]}  # type: ignore[attr-defined, index]
    assert rows["users"] == 1
    assert rows["messages"] == 0


def test_store_copy_refuses_copying_a_store_onto_itself(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["store", "copy", "a.db", "a.db"])
    assert result.exit_code == 1
    assert "same store" in result.output


def test_store_copy_shows_progress_and_a_table(tmp_path: Path, alice_password_hash: str) -> None:
    source = tmp_path / "source.db"
    populate(source, alice_password_hash)
    result = CliRunner().invoke(main, ["store", "copy", str(source), str(tmp_path / "t.db")])
    assert result.exit_code == 0, result.output
    assert "message_bodies" in result.output
    assert "verified" in result.output


def test_store_migrate_reports_the_schema_version(tmp_path: Path, pg_url: str) -> None:
    for name in (str(tmp_path / "new.db"), pg_url):
        answer = run("migrate", "--store", name)
        assert answer["schema_version"] == migrations.LATEST


def test_store_migrate_hides_the_password(pg_server: PgServer) -> None:
    url = f"postgresql://natsync:hunter2@127.0.0.1:{pg_server.port}/absent_db"
    result = CliRunner().invoke(main, ["store", "migrate", "--store", url])
    assert result.exit_code == 1
    assert "hunter2" not in result.output


def test_store_copy_refuses_a_missing_source_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(main, ["store", "copy", str(missing), str(tmp_path / "t.db")])
    assert result.exit_code == 1
    assert "no store at" in result.output
    assert not missing.exists()
    assert not (tmp_path / "t.db").exists()
