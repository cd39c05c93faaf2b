"""File modes of the data directory and the store (issue 19), on the real file system with a
permissive umask: new files are private, an old deployment's wide modes are tightened with a
log line."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natsync.store import open_store
from natsync.store.modes import private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems start services with
    yield
    os.umask(old)


async def _write_something(database: Path, name: str = "alice") -> None:
    store = open_store(str(database))
    try:
        await store.run(
            lambda txn: txn.add_user(
                name, f"{name}@example.test", name, "x", datetime(2026, 1, 1, tzinfo=UTC)
            )
        )
        # -wal and -shm exist while the store is open
        for side in ("-wal", "-shm"):
            assert mode(Path(f"{database}{side}")) == 0o600
    finally:
        await store.aclose()


async def test_a_new_data_directory_and_store_are_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "natsync-data"
    private_dir(data)
    assert mode(data) == 0o700
    database = data / "natsync.db"
    await _write_something(database)
    assert mode(database) == 0o600


async def test_a_new_store_directory_is_private_too(tmp_path: Path, open_umask: None) -> None:
    database = tmp_path / "elsewhere" / "mail.db"
    await _write_something(database)
    assert mode(database.parent) == 0o700
    assert mode(database) == 0o600


async def test_an_old_deployment_is_tightened_at_start(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "natsync-data"
    database = data / "natsync.db"
    private_dir(data)
    await _write_something(database)
    os.chmod(data, 0o755)
    os.chmod(database, 0o644)
    os.close(os.open(f"{database}-wal", os.O_CREAT | os.O_WRONLY, 0o664))  # as a crash leaves it
    os.chmod(f"{database}-wal", 0o664)
    with caplog.at_level(logging.WARNING, "natsync.store.modes"):
        private_dir(data)
        await _write_something(database, "bob")
    assert mode(data) == 0o700
    assert mode(database) == 0o600
    assert caplog.text.count("tightened") == 3
    assert f"{database} was readable by others (mode 644)" in caplog.text
