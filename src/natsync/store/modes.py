"""File modes of what natsync keeps on disk (issue 19): the data directory is 0700 and the store
files (SQLite's database and its -wal / -shm / -journal, which hold every mail, the outbound
queue and the password hashes) are 0600, whatever the umask. A deployment made before this
rule, with wider modes, is tightened when it starts, with one log line per path."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The files SQLite keeps beside a database (WAL mode, and a rollback journal while migrating).
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        os.chmod(path, current & mode)
        log.warning(
            "%s was readable by others (mode %o): tightened to %o", path, current, current & mode
        )


def private_dir(path: Path) -> None:
    """Create *path* (and missing parents) 0700, or tighten it to 0700 when it exists."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
        return
    _tighten(path, DIR_MODE)


def private_store_files(database: Path) -> None:
    """Create the SQLite file *database* 0600 if it is new (SQLite gives its -wal and -shm
    the database's mode), and tighten it and its side files when they exist."""
    if not database.parent.exists():
        private_dir(database.parent)
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for path in (database, *(Path(f"{database}{side}") for side in SQLITE_SIDE_FILES)):
        if path.exists():
            _tighten(path, FILE_MODE)
