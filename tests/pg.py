"""A real PostgreSQL server for the tests: Debian's binaries, loopback, a free port, a temp dir.

Started once per session, on first use (only tests that take the ``store``/``store_factory``
fixture in their postgres variant pay for it), and stopped by PID at the end. PostgreSQL
refuses to run as root: when the tests run as root (CI), the server runs as the ``postgres``
system user the Debian package creates (or ``nobody``), with the data directory handed to it.
Each test gets a fresh database: copied from a migrated template (CREATE DATABASE ... TEMPLATE
is much faster than a migration) the first time, and afterwards emptied with one TRUNCATE
(faster again) and handed to the next test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

#: How long the server may take to accept connections after start.
START_TIMEOUT_SECONDS = 30
#: The database every test database is copied from (migrated once per session).
TEMPLATE = "natsync_template"
SUPERUSER = "natsync"


def binaries() -> Path:
    """The directory of Debian's PostgreSQL server binaries (newest version installed)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("postgres")
    if which is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(which).parent


def _run_as() -> str | None:
    """The user to run the server as, when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user exists")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgServer:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Migrated databases emptied after use, ready for the next test.
    _free: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self, *, migrated: bool = True) -> str:
        """A fresh empty database (with natsync's schema unless not *migrated*); its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        template = TEMPLATE if migrated else "template0"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        return self.url(name)

    def acquire(self) -> str:
        """An empty migrated database (a reused one when there is one): its URL."""
        return self._free.pop() if self._free else self.create_database()

    def release(self, url: str) -> None:
        """Empty the database and keep it for the next test (drop it if that fails)."""
        from natsync.store.copy import TABLES

        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '2s'")
                names = ", ".join(t.name for t in TABLES)
                conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        except psycopg.Error:
            self.drop_database(url)  # someone still holds it: start over next time
            return
        self._free.append(url)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID, then remove the data directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> PgServer:
    bin_dir = binaries()
    user = _run_as()
    directory = Path(tempfile.mkdtemp(prefix="natsync-pg-"))
    data = directory / "data"
    # As root: the server's processes get the user's own group and no supplementary groups
    # (root's would otherwise be inherited).
    as_user: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        cwd=directory,
        **as_user,  # type: ignore[arg-type]
    )
    port = _free_port()
    log = open(directory / "server.log", "wb")  # noqa: SIM115 (kept open for the server)
    process = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-k",
            str(directory),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            # A test server: durability is not what is tested here, speed is welcome.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
        **as_user,  # type: ignore[arg-type]
    )
    log.close()
    server = PgServer(process, port, directory)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with server.admin() as conn:
                conn.execute(f"CREATE DATABASE {TEMPLATE}")
            break
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    "PostgreSQL did not start: " + (directory / "server.log").read_text()
                ) from None
            time.sleep(0.05)
    from natsync.store.postgres import PostgresStore

    PostgresStore(server.url(TEMPLATE)).close()
    return server
