"""Back up a store while the server runs, and restore it: one file per backup.

* SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) copies the database as of
  one read transaction. In WAL mode a reader blocks no writer, so the server keeps delivering
  mail and answering phones during the copy; the copy is made in one step (``pages=-1``)
  because a copy made in steps restarts whenever another connection writes, and under steady
  mail it might never finish. The result is checked (``PRAGMA integrity_check``) before it is
  called a backup.
* PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, REPEATABLE READ, while the
  servers run), checked with ``pg_restore --list``. Restored with ``pg_restore --clean
  --if-exists --single-transaction --no-owner``: all or nothing.

What a backup file is, is read from its first bytes (SQLite's "SQLite format 3", pg_dump's
"PGDMP"); restoring one kind into the other is ``natsync store copy``'s work (restore the backup
into a scratch store of its kind, then copy). The DKIM keys, certificates and CA live beside
the store in the data directory and are backed up as files (docs/deploy.md).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from natsync.store import copy as store_copy
from natsync.store import open_store, sqlite_file
from natsync.store.api import StoreError

#: First bytes of a SQLite database file (sqlite.org/fileformat.html 1.3.1).
SQLITE_MAGIC = b"SQLite format 3\x00"
#: First bytes of a pg_dump archive in the custom format (pg_backup_archiver.c "PGDMP").
PG_DUMP_MAGIC = b"PGDMP"
#: Seconds pg_dump / pg_restore may take; a mailbox store of a household dumps in seconds.
PG_TOOL_TIMEOUT = 3600


@dataclass(frozen=True, slots=True)
class BackupResult:
    kind: str  # "sqlite" or "postgresql"
    path: Path
    size: int
    schema_version: int
    #: Rows per table in the backup (SQLite: read back from the copy; PostgreSQL: from the source).
    rows: dict[str, int]


def kind_of(path: Path) -> str:
    """ "sqlite" or "postgresql" from the backup file's first bytes; StoreError otherwise."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read the backup {path}: {exc.strerror}") from exc
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise StoreError(
        f"{path} is not a natsync backup (neither a SQLite file nor a pg_dump archive)"
    )


def _rows(name: str) -> tuple[int, dict[str, int]]:
    store = open_store(name)
    try:
        rows = {t.name: store_copy.count(store, t) for t in store_copy.TABLES}
        return store_copy.schema_version(store), rows
    finally:
        store.close()


def _refuse_existing(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise StoreError(f"{target} exists: choose another file, or pass --force to replace it")


def _sqlite_copy(source: Path, target: Path) -> None:
    """One consistent copy of the database file *source* into *target* (replaced)."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                checked = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        if checked != "ok":
            raise StoreError(f"the copy of {source} failed SQLite's integrity check: {checked}")
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        partial.replace(target)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot copy {source} to {target}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _pg_tool(name: str) -> str:
    """pg_dump / pg_restore: the newest Debian version (it must not be older than the server)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return str(found[-1])
    which = shutil.which(name)
    if which is None:
        raise StoreError(f"{name} is not installed: apt-get install postgresql-client")
    return which


def _run_pg(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - PostgreSQL's own tools, argument list, no shell
            argv, capture_output=True, text=True, timeout=PG_TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise StoreError(f"{what} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def backup(store: str, target: Path, *, force: bool = False) -> BackupResult:
    """Write a consistent backup of the store named *store* to the file *target*."""
    _refuse_existing(target, force)
    source_file = sqlite_file(store)
    if source_file is not None:
        if not source_file.exists():
            raise StoreError(f"no store at {source_file}: nothing to back up")
        _sqlite_copy(source_file, target)
        version, rows = _rows(str(target))
        return BackupResult("sqlite", target, target.stat().st_size, version, rows)
    partial = target.with_name(target.name + ".partial")
    try:
        version, rows = _pg_dump(store, partial)
        _run_pg([_pg_tool("pg_restore"), "--list", str(partial)], "pg_restore --list")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult("postgresql", target, target.stat().st_size, version, rows)


def _pg_dump(url: str, target: Path) -> tuple[int, dict[str, int]]:
    """pg_dump of *url* into *target*, and the schema version and row counts of exactly what it
    dumped: counted in a transaction whose snapshot pg_dump is told to use (--snapshot)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(url) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert snapshot is not None
            rows: dict[str, int] = {}
            for table in store_copy.TABLES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table.name))
                counted = conn.execute(query).fetchone()
                rows[table.name] = int(counted[0]) if counted else 0
            found = conn.execute("SELECT max(version) FROM natsync_schema").fetchone()
            version = int(found[0] or 0) if found else 0
            # The snapshot lives as long as this transaction: pg_dump runs inside it.
            _run_pg(
                [
                    _pg_tool("pg_dump"),
                    "--format=custom",
                    f"--snapshot={snapshot[0]}",
                    f"--file={target}",
                    url,
                ],
                "pg_dump",
            )
            conn.rollback()
    except psycopg.Error as exc:
        raise StoreError(f"cannot back up the PostgreSQL store: {exc}") from exc
    return version, rows


def restore(backup_file: Path, store: str, *, force: bool = False) -> BackupResult:
    """Put the backup *backup_file* into the store named *store* (stop the servers first).

    A store that holds users or queued mail is replaced only with *force*.
    """
    kind = kind_of(backup_file)
    target_file = sqlite_file(store)
    if (kind == "sqlite") != (target_file is not None):
        raise StoreError(
            f"{backup_file} is a {kind} backup and the store is not: restore it into a store of "
            "its kind, then natsync store copy SOURCE TARGET"
        )
    if not force and (target_file is None or target_file.exists()):
        opened = open_store(store)
        try:
            empty = store_copy.is_empty(opened)
        finally:
            opened.close()
        if not empty:
            raise StoreError("the store holds data: pass --force to replace it with the backup")
    if target_file is not None:
        target_file.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):  # the old WAL must not be replayed over the backup
            Path(f"{target_file}{suffix}").unlink(missing_ok=True)
        _sqlite_copy(backup_file, target_file)
    else:
        _run_pg(
            [
                _pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--no-owner",
                "--exit-on-error",
                f"--dbname={store}",
                str(backup_file),
            ],
            "pg_restore",
        )
    version, rows = _rows(store)
    return BackupResult(kind, backup_file, backup_file.stat().st_size, version, rows)
