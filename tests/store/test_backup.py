"""natsync.store.backup and `natsync store backup|restore`: on a real SQLite file and a real
PostgreSQL server, a backup taken while mail keeps arriving is consistent, and restoring it
gives back exactly the store it was taken from (per-table row counts and SHA-256)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from natsync.store import backup, open_store
from natsync.store import copy as store_copy
from natsync.store.api import FolderType, StoreError, Txn
from tests.cli.test_store import populate
from tests.conftest import ALICE_NAME
from tests.pg import PgServer
from tests.store.helpers import later, new_message

#: Messages the writer thread delivers while the backup runs (bounded: the test stops it).
MAX_WRITES = 2000


@pytest.fixture(params=["sqlite", "postgres"])
def store_name(
    request: pytest.FixtureRequest, tmp_path: Path, alice_password_hash: str
) -> Iterator[str]:
    """A populated store: a SQLite file, or a database on the test PostgreSQL server."""
    if request.param == "sqlite":
        name = str(tmp_path / "live" / "natsync.db")
        Path(name).parent.mkdir()
        populate(Path(name), alice_password_hash)
        yield name
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.acquire()
    populate(url, alice_password_hash)  # type: ignore[arg-type]  # open_store takes a URL too
    yield url
    server.release(url)


def summary(name: str) -> list[store_copy.TableSummary]:
    store = open_store(name)
    try:
        return store_copy.summarize(store)
    finally:
        store.close()


def invoke(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["store", *args, "--json"])
    assert result.exit_code == 0, result.output
    loaded: dict[str, object] = json.loads(result.output)
    return loaded


class Writer(threading.Thread):
    """Delivers mail into the store, one transaction each, as the server would meanwhile."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.store_name = name
        self.stop = threading.Event()
        self.started_writing = threading.Event()
        self.written = 0

    def run(self) -> None:
        store = open_store(self.store_name)
        try:
            while not self.stop.is_set() and self.written < MAX_WRITES:

                def deliver(txn: Txn, n: int = self.written) -> None:
                    user = txn.get_user(ALICE_NAME)
                    assert user is not None
                    inbox = txn.folder_by_type(user.id, FolderType.INBOX)
                    txn.add_message(inbox.id, new_message(f"live {n}", received_at=later(n)))

                store.run_sync(deliver)
                self.written += 1
                self.started_writing.set()
        finally:
            store.close()


def messages(name: str) -> int:
    store = open_store(name)
    try:
        return next(store_copy.count(store, t) for t in store_copy.TABLES if t.name == "messages")
    finally:
        store.close()


def test_backup_while_mail_arrives_is_consistent(store_name: str, tmp_path: Path) -> None:
    before = messages(store_name)
    writer = Writer(store_name)
    writer.start()
    try:
        assert writer.started_writing.wait(10)
        taken = invoke("backup", str(tmp_path / "b.backup"), "--store", store_name)
        during = writer.written
    finally:
        writer.stop.set()
        writer.join(30)
    rows = taken["rows"]
    assert isinstance(rows, dict)
    assert before < rows["messages"] <= before + during + 1
    # Every message in the backup has its body (one transaction each: none half-copied).
    assert rows["message_bodies"] == rows["messages"]
    kind = "sqlite" if "://" not in store_name else "postgresql"
    assert taken["kind"] == kind
    assert backup.kind_of(tmp_path / "b.backup") == kind


def test_restore_gives_back_the_store_the_backup_was_taken_from(
    store_name: str, tmp_path: Path
) -> None:
    original = summary(store_name)
    file = tmp_path / "b.backup"
    invoke("backup", str(file), "--store", store_name)
    store = open_store(store_name)
    try:  # the disaster: a user removed, new mail that the backup does not have
        store.run_sync(lambda txn: txn.remove_user(txn.get_user("bob").id))  # type: ignore[union-attr]
    finally:
        store.close()
    assert summary(store_name) != original
    refused = CliRunner().invoke(main, ["store", "restore", str(file), "--store", store_name])
    assert refused.exit_code == 1
    assert "pass --force" in refused.output
    restored = invoke("restore", str(file), "--store", store_name, "--force")
    assert restored["rows"] == {s.name: s.rows for s in original}
    assert summary(store_name) == original


def test_restore_into_a_new_sqlite_store_and_mistakes_are_one_line(
    tmp_path: Path, alice_password_hash: str
) -> None:
    live = tmp_path / "natsync.db"
    populate(live, alice_password_hash)
    file = tmp_path / "b.db"
    invoke("backup", str(file), "--store", str(live))
    again = CliRunner().invoke(main, ["store", "backup", str(file), "--store", str(live)])
    assert again.exit_code == 1
    assert "--force" in again.output
    fresh = tmp_path / "new" / "natsync.db"
    invoke("restore", str(file), "--store", str(fresh))
    assert summary(str(fresh)) == summary(str(live))
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    with pytest.raises(StoreError, match="not a natsync backup"):
        backup.restore(not_a_backup, str(fresh))
    with pytest.raises(StoreError, match="natsync store copy"):
        backup.restore(file, "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="nothing to back up"):
        backup.backup(str(tmp_path / "absent.db"), tmp_path / "x.db")


def test_backup_finds_the_store_in_the_deployment_file(
    tmp_path: Path, alice_password_hash: str
) -> None:
    data = tmp_path / "var-lib-natsync"
    data.mkdir()
    populate(data / "natsync.db", alice_password_hash)
    config = tmp_path / "natsync.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    taken = invoke("backup", str(tmp_path / "b.db"), "-c", str(config))
    assert taken["rows"] == {s.name: s.rows for s in summary(str(data / "natsync.db"))}
