"""`store copy` covers the whole schema: a migration cannot add a table or a column it skips.

``natsync.store.copy.TABLES`` is written by hand. These tests read the schema a fully migrated
store really has (SQLite's ``PRAGMA table_list`` / ``table_info``, PostgreSQL's
``information_schema``) and compare: every table is in the list, with every column it stores,
and parents come before the tables that reference them (the copy inserts in that order with
foreign keys on).
"""

from __future__ import annotations

from typing import Any

from natsync.store import copy
from natsync.store.api import Store, Txn

#: Tables that are the schema's own bookkeeping, not a deployment's data: the target of a copy
#: is migrated first and writes its own (SQLite keeps the version in PRAGMA user_version).
BOOKKEEPING = {"natsync_schema"}


def _schema(txn: Txn) -> dict[str, set[str]]:
    """Every table the store holds data in, with the columns a copy must carry."""
    conn = copy._conn(txn)
    if copy._is_postgres(txn):
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        ]
        found: dict[str, set[str]] = {}
        for name in tables:
            # A generated column (the search table's tsvector) is computed, never copied.
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? "
                "AND is_generated = 'NEVER'",
                (name,),
            )
            found[name] = {column for (column,) in rows}
        return found
    found = {}
    # "shadow" tables hold an FTS5 table's index (copied through the virtual table itself);
    # sqlite_* are SQLite's own (sqlite_schema, sqlite_sequence, sqlite_stat1).
    for _, name, kind, *_ in conn.execute("PRAGMA main.table_list"):
        if kind in ("table", "virtual") and not name.startswith("sqlite_"):
            columns = {row[1] for row in conn.execute(f"PRAGMA main.table_info({name})")}
            if kind == "virtual":  # an FTS5 table: its key is the implicit rowid
                columns.add("rowid")
            found[name] = columns
    return found


def _references(txn: Txn) -> dict[str, set[str]]:
    """Each table's parents (the tables its foreign keys name), from the store itself."""
    conn = copy._conn(txn)
    if copy._is_postgres(txn):
        parents: dict[str, set[str]] = {}
        for child, parent in conn.execute(
            "SELECT tc.table_name, ccu.table_name "
            "FROM information_schema.table_constraints tc "
            "JOIN information_schema.constraint_column_usage ccu "
            "ON ccu.constraint_name = tc.constraint_name "
            "AND ccu.constraint_schema = tc.constraint_schema "
            "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()"
        ):
            parents.setdefault(child, set()).add(parent)
        return parents
    return {
        table.name: {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({table.name})")}
        for table in copy.TABLES
    }


def test_copy_lists_every_table_of_the_migrated_schema(store: Store) -> None:
    """A table a migration adds must be added to copy.TABLES, or `store copy` would leave it
    behind while its verification (which reads the same list) still passes."""
    schema = store.run_sync(_schema)
    listed = {table.name for table in copy.TABLES}
    assert set(schema) - BOOKKEEPING == listed
    assert len(listed) == len(copy.TABLES), "a table is listed twice"


def test_copy_carries_every_column_of_every_table(store: Store) -> None:
    """A column a migration adds (as claimed_by / lease_until were) must be copied too."""
    schema = store.run_sync(_schema)
    missing: dict[str, Any] = {}
    for table in copy.TABLES:
        if set(table.columns) != schema[table.name]:
            missing[table.name] = {
                "not copied": sorted(schema[table.name] - set(table.columns)),
                "not in the schema": sorted(set(table.columns) - schema[table.name]),
            }
    assert missing == {}


def test_copy_writes_parents_before_the_tables_that_reference_them(store: Store) -> None:
    parents = store.run_sync(_references)
    order = [table.name for table in copy.TABLES]
    for child, names in parents.items():
        for parent in names - {child}:
            assert order.index(parent) < order.index(child), f"{parent} must precede {child}"
