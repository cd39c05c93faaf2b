"""Fixtures shared by every part's tests: a real store (SQLite and PostgreSQL) with a demo user.

``store`` is a fresh store holding the user "alice" (alice@example.test, password
"alice-password") with the standard folders; ``store_factory`` opens more (each new by default,
or again on a given path), all closed at teardown. Both are parametrised over the two drivers:
every test that takes them runs once on a SQLite file in ``tmp_path`` and once on a fresh
database of a real PostgreSQL server (tests/pg.py, started on first use). A test about SQLite
itself stays on it with ``@SQLITE_ONLY``. The password hash is computed once per session:
scrypt is slow on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from natsync.auth.passwords import hash_password
from natsync.store.api import Store, User
from natsync.store.postgres import PostgresStore
from natsync.store.sqlite import SqliteStore
from tests import pg

ALICE_NAME = "alice"
ALICE_EMAIL = "alice@example.test"
ALICE_DISPLAY_NAME = "Alice Example"
ALICE_PASSWORD = "alice-password"
#: A fixed creation time, so tests do not depend on the clock.
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)

StoreFactory = Callable[..., Any]

#: The drivers every store test runs on.
STORE_KINDS = ("sqlite", "postgres")

#: Keeps a test on the SQLite driver (it is about SQLite itself: its file, its pragmas ...).
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    """A real PostgreSQL server on loopback for the whole session (stopped by PID)."""
    server = pg.start()
    yield server
    server.stop()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which driver ``store`` / ``store_factory`` open: "sqlite" or "postgres"."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def alice_password_hash() -> str:
    return hash_password(ALICE_PASSWORD)


@pytest.fixture
def store_factory(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path, alice_password_hash: str
) -> Iterator[StoreFactory]:
    """``store_factory(path=None, *, with_alice=True)``: open a store (new one by default).

    On PostgreSQL a *path* names a database (the same path opens the same database again).
    """
    opened: list[Any] = []
    databases: dict[str, str] = {}
    server: pg.PgServer | None = (
        request.getfixturevalue("pg_server") if store_kind == "postgres" else None
    )
    counter = 0

    def make(path: Path | str | None = None, *, with_alice: bool = True) -> Any:
        nonlocal counter
        if path is None:
            counter += 1
            path = tmp_path / f"store-{counter}" / "natsync.db"
        store: Any
        if server is None:
            store = SqliteStore(path)
        else:
            if str(path) not in databases:
                databases[str(path)] = server.acquire()
            store = PostgresStore(databases[str(path)])
            store.path = Path(path)  # type: ignore[attr-defined]
        opened.append(store)
        if with_alice and store.run_sync(lambda txn: txn.get_user(ALICE_NAME)) is None:
            store.run_sync(
                lambda txn: txn.add_user(
                    ALICE_NAME, ALICE_EMAIL, ALICE_DISPLAY_NAME, alice_password_hash, CREATED_AT
                )
            )
        return store

    yield make
    for store in opened:
        store.close()
    if server is not None:
        for url in databases.values():
            server.release(url)


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """A fresh store with alice in it (a SQLite file in tmp_path, or a PostgreSQL database)."""
    return store_factory()


@pytest.fixture
def alice(store: Store) -> User:
    """alice's User record in ``store``."""
    user = store.run_sync(lambda txn: txn.get_user(ALICE_NAME))
    assert user is not None
    return user
