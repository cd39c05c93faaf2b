"""Mailbox stores behind one interface (:mod:`natsync.store.api`); ``open_store`` picks one.

A store is named by a path (or ``sqlite:///path``) for the embedded SQLite driver, or by a
``postgresql://`` URL for the shared PostgreSQL driver (several server processes on one
database; needs the ``postgres`` extra: psycopg).
"""

from __future__ import annotations

from pathlib import Path

from natsync.store.api import Store, StoreError

__all__ = ["STORE_FILE", "open_store", "sqlite_file", "store_path"]

#: The store's file name inside a data directory: every command given ``--data-dir DIR``
#: (``natsync up``, ``natsync server``, ``natsync user`` ...) must open the same file.
STORE_FILE = "natsync.db"

_SQLITE_PREFIX = "sqlite://"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def store_path(data_dir: Path) -> Path:
    """Where the embedded store of the data directory *data_dir* lives."""
    return data_dir / STORE_FILE


def sqlite_file(path_or_url: str) -> Path | None:
    """The file an embedded-store name points at; ``None`` for a database server's URL."""
    if path_or_url.startswith(_SQLITE_PREFIX):
        return Path("/" + path_or_url[len(_SQLITE_PREFIX) :].lstrip("/"))
    if "://" in path_or_url:
        return None
    return Path(path_or_url)


def open_store(path_or_url: str | Path) -> Store:
    """Open (creating and upgrading as needed) the store named by *path_or_url*."""
    from natsync.store.sqlite import SqliteStore

    if isinstance(path_or_url, Path):
        return SqliteStore(path_or_url)
    if path_or_url.startswith(_POSTGRES_PREFIXES):
        try:
            from natsync.store.postgres import PostgresStore
        except ImportError as exc:  # psycopg missing
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'natsync[postgres]'"
            ) from exc
        return PostgresStore(path_or_url)
    if path_or_url.startswith(_SQLITE_PREFIX):
        # sqlite:///var/lib/natsync/natsync.db names /var/lib/natsync/natsync.db; the
        # four-slash form some tools write (sqlite:////var/...) means the same.
        rest = path_or_url[len(_SQLITE_PREFIX) :]
        if not rest.startswith("/") or not rest.strip("/"):
            raise StoreError(f"{path_or_url!r}: write sqlite:///path/to/file.db")
        return SqliteStore(Path("/" + rest.lstrip("/")))
    if "://" in path_or_url:
        scheme = path_or_url.split("://", 1)[0]
        raise StoreError(
            f"unknown store kind {scheme!r}: use a file path, sqlite:///path "
            "or postgresql://user@host/database"
        )
    return SqliteStore(Path(path_or_url))
