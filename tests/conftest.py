"""Fixtures shared by every part's tests: a real SQLite store with a demo user.

``store`` is a fresh store file in ``tmp_path`` holding the user "alice"
(alice@example.test, password "alice-password") with the standard folders;
``store_factory`` opens more (each in its own file, or again on a given path), all closed at
teardown. The password hash is computed once per session: scrypt is slow on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natsync.auth.passwords import hash_password
from natsync.store.api import Store, User
from natsync.store.sqlite import SqliteStore

ALICE_NAME = "alice"
ALICE_EMAIL = "alice@example.test"
ALICE_DISPLAY_NAME = "Alice Example"
ALICE_PASSWORD = "alice-password"
#: A fixed creation time, so tests do not depend on the clock.
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)

StoreFactory = Callable[..., SqliteStore]


@pytest.fixture(scope="session")
def alice_password_hash() -> str:
    return hash_password(ALICE_PASSWORD)


@pytest.fixture
def store_factory(tmp_path: Path, alice_password_hash: str) -> Iterator[StoreFactory]:
    """``store_factory(path=None, *, with_alice=True)``: open a store (new file by default)."""
    opened: list[SqliteStore] = []
    counter = 0

    def make(path: Path | str | None = None, *, with_alice: bool = True) -> SqliteStore:
        nonlocal counter
        if path is None:
            counter += 1
            path = tmp_path / f"store-{counter}" / "natsync.db"
        store = SqliteStore(path)
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


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """A fresh SQLite store with alice in it (a real file in tmp_path)."""
    return store_factory()


@pytest.fixture
def alice(store: Store) -> User:
    """alice's User record in ``store``."""
    user = store.run_sync(lambda txn: txn.get_user(ALICE_NAME))
    assert user is not None
    return user
