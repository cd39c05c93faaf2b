"""`natsync store migrate|copy`: upgrade a store's schema, move a deployment between stores.

A store is named as everywhere else: a SQLite path (or ``sqlite:///path``) or a
``postgresql://`` URL. ``copy`` is how a site moves from the embedded SQLite file to a shared
PostgreSQL (and back): one transaction on the target, a progress bar per table, then a
verification that reads both stores again and compares per-table row counts and SHA-256
checksums (raw MIME included). Thin: the work is :mod:`natsync.store.copy`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from natsync.cli.admin import config_option, deployment_settings
from natsync.errors import NatsyncError
from natsync.store import backup as store_backup
from natsync.store import copy as store_copy
from natsync.store import open_store, sqlite_file
from natsync.store.api import Store

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable naming the store when --store is not given.
STORE_ENV = "NATSYNC_STORE"


def _open(name: str) -> Store:
    try:
        return open_store(name)
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


def _display(name: str) -> str:
    """*name* without a password (a store URL may carry one)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", name)


def _store_option(text: str) -> Callable[[F], F]:
    """``--store`` and ``-c/--config``: the function gets ``name`` — --store (or $NATSYNC_STORE),
    else the deployment file's store, else DATA_DIR/natsync.db ($NATSYNC_DATA_DIR ...)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, name: str | None, config: Path | None, **kwargs: Any) -> Any:
            chosen = name or deployment_settings(config, None).store
            return fn(*args, name=chosen, **kwargs)

        wrapped = click.option(
            "--store",
            "name",
            default=None,
            envvar=STORE_ENV,
            show_default=f"${STORE_ENV}, else -c's, else DATA_DIR/natsync.db",
            help=text,
        )(wrapper)
        return config_option(wrapped)  # type: ignore[return-value]

    return decorate


@click.group()
def store() -> None:
    """Upgrade, back up and restore a store, or copy it between SQLite and PostgreSQL."""


@store.command("migrate")
@_store_option("The store: a SQLite path or a postgresql:// URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def migrate_command(name: str, as_json: bool) -> None:
    """Apply every schema migration the store has not had yet (creating it if new)."""
    opened = _open(name)
    try:
        version = store_copy.schema_version(opened)
    finally:
        opened.close()
    if as_json:
        click.echo(json.dumps({"store": _display(name), "schema_version": version}))
    else:
        click.echo(f"{_display(name)}: schema version {version} (up to date)")


@store.command("copy")
@click.argument("source")
@click.argument("target")
@click.option(
    "--force", is_flag=True, help="Replace what the target holds (else it must be empty)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
def copy_command(source: str, target: str, force: bool, as_json: bool) -> None:
    """Copy every row of the store SOURCE into TARGET, then verify counts and checksums.

    SOURCE and TARGET are SQLite paths or postgresql:// URLs. Stop the servers using SOURCE
    first: mail delivered during the copy would not be in TARGET.
    """
    if source == target:
        raise click.ClickException("SOURCE and TARGET are the same store")
    source_file = sqlite_file(source)
    if source_file is not None and not source_file.exists():
        # Opening would create an empty store, and an empty copy would "verify".
        raise click.ClickException(f"no store at {source_file}")
    console = Console(stderr=True)
    from_store = _open(source)
    try:
        to_store = _open(target)
        try:
            totals = {t.name: store_copy.count(from_store, t) for t in store_copy.TABLES}
            with Progress(
                TextColumn("{task.description:<16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=as_json or not console.is_terminal,
            ) as progress:
                tasks = {
                    name: progress.add_task(f"copy {name}", total=total)
                    for name, total in totals.items()
                }
                checks = {
                    name: progress.add_task(f"verify {name}", total=2 * total)
                    for name, total in totals.items()
                }

                def copied(name: str, n: int) -> None:
                    progress.advance(tasks[name], n)

                def verified(name: str, n: int) -> None:
                    progress.advance(checks[name], n)

                _call(lambda: store_copy.copy(from_store, to_store, force=force, progress=copied))
                pairs = _call(lambda: store_copy.verify(from_store, to_store, progress=verified))
        finally:
            to_store.close()
    finally:
        from_store.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "source": _display(source),
                    "target": _display(target),
                    "tables": [
                        {"table": a.name, "rows": a.rows, "sha256": a.sha256} for a, _ in pairs
                    ],
                    "verified": True,
                }
            )
        )
        return
    table = Table(title=f"{_display(source)} → {_display(target)}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("sha256 (both)")
    for summary, _ in pairs:
        table.add_row(summary.name, str(summary.rows), summary.sha256[:16])
    out = Console()
    out.print(table)
    out.print("verified: every table has the same rows and checksum in both stores")


def _backup_report(result: store_backup.BackupResult, verb: str, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "kind": result.kind,
                    "file": str(result.path),
                    "bytes": result.size,
                    "schema_version": result.schema_version,
                    "rows": result.rows,
                }
            )
        )
        return
    counts = ", ".join(f"{n} {t}" for t, n in result.rows.items() if t in _SHOWN_TABLES)
    click.echo(
        f"{verb} {result.path} ({result.kind}, {result.size} bytes, "
        f"schema version {result.schema_version}): {counts}"
    )


#: The tables named in the one-line summary (the rest are in --json).
_SHOWN_TABLES = ("users", "devices", "folders", "messages", "outbound")


@store.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_store_option("The store: a SQLite path or a postgresql:// URL.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def backup_command(file: Path, name: str, force: bool, as_json: bool) -> None:
    """Write a consistent copy of the store to FILE while natsync keeps running.

    SQLite: the online backup API, checked with PRAGMA integrity_check. PostgreSQL: pg_dump
    (custom format), checked with pg_restore --list.
    """
    result = _call(lambda: store_backup.backup(name, file, force=force))
    _backup_report(result, "backed up to", as_json)


@store.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_store_option("The store to restore into (of the backup's kind).")
@click.option("--force", is_flag=True, help="Replace a store that holds data.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def restore_command(file: Path, name: str, force: bool, as_json: bool) -> None:
    """Put the backup FILE back into the store. Stop natsync first (systemctl stop natsync)."""
    result = _call(lambda: store_backup.restore(file, name, force=force))
    _backup_report(result, "restored from", as_json)


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
