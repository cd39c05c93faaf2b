"""Property: after any sequence of changes (some rolled back), message_versions tells the truth.

Checked on both drivers (a fresh SQLite file or PostgreSQL database per example).

EAS Sync finds what changed by comparing the versions it sent before with the versions now;
so every committed change must show as a new version, a rolled-back one must leave no trace,
and the cached answers must never go stale. Checked against a plain model.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsync.store.api import FolderType, Txn
from natsync.store.postgres import PostgresStore
from natsync.store.sqlite import SqliteStore
from tests.store.helpers import new_message

ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "move", "delete", "read", "unread", "fail", "look"]),
        st.integers(0, 1),  # folder
        st.integers(0, 50),  # which message (modulo those present)
    ),
    max_size=25,
)


class Boom(Exception):
    pass


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_versions_follow_every_committed_change(
    tmp_path_factory: pytest.TempPathFactory,
    store_kind: str,
    request: pytest.FixtureRequest,
    steps: list[tuple[str, int, int]],
) -> None:
    store: SqliteStore | PostgresStore
    url = None
    if store_kind == "postgres":
        server = request.getfixturevalue("pg_server")
        url = server.create_database()
        store = PostgresStore(url)
    else:
        store = SqliteStore(tmp_path_factory.mktemp("prop") / "natsync.db")
    try:
        user = store.run_sync(
            lambda txn: txn.add_user("p", "p@example.test", "P", "h", new_message().received_at)
        )
        folders = store.run_sync(
            lambda txn: [
                txn.folder_by_type(user.id, FolderType.INBOX).id,
                txn.create_folder(user.id, "0", "Archive", FolderType.USER_MAIL).id,
            ]
        )
        model: dict[int, tuple[int, bool]] = {}  # message id -> (folder index, read)
        seen: dict[str, int] = {}  # server id -> last version seen by "a device"

        def check() -> None:
            for index, folder_id in enumerate(folders):
                versions = store.run_sync(lambda txn, f=folder_id: txn.message_versions(f))
                messages = store.run_sync(
                    lambda txn, v=list(versions): txn.get_messages(user.id, v)
                )
                assert sorted(m.id for m in messages) == sorted(
                    mid for mid, (f, _) in model.items() if f == index
                )
                for message in messages:
                    assert model[message.id][1] == message.read
                    assert versions[message.server_id] == message.modseq

        for op, folder_index, pick in steps:
            ids = sorted(model)
            target = ids[pick % len(ids)] if ids else None
            if op == "add":
                added = store.run_sync(
                    lambda txn, f=folders[folder_index]: txn.add_message(f, new_message())
                )
                model[added.id] = (folder_index, False)
            elif op == "fail":

                def fail(txn: Txn, f: int = folders[folder_index]) -> None:
                    txn.add_message(f, new_message())
                    txn.message_versions(f)
                    raise Boom

                with pytest.raises(Boom):
                    store.run_sync(fail)
            elif op == "look":
                before = dict(seen)
                for folder_id in folders:
                    seen.update(store.run_sync(lambda txn, f=folder_id: txn.message_versions(f)))
                for server_id, version in before.items():
                    if server_id in seen:
                        assert seen[server_id] >= version
            elif target is not None and op == "move":
                store.run_sync(
                    lambda txn, m=target, f=folders[folder_index]: txn.move_message(m, f)
                )
                model[target] = (folder_index, model[target][1])
            elif target is not None and op == "delete":
                store.run_sync(lambda txn, m=target: txn.delete_message(m))
                del model[target]
            elif target is not None and op in ("read", "unread"):
                old = store.run_sync(lambda txn, m=target: txn.get_message_by_id(m))  # type: ignore[attr-defined]
                new = store.run_sync(lambda txn, m=target, r=op == "read": txn.set_read(m, r))
                if old.read != new.read:
                    assert new.modseq > old.modseq
                    assert seen.get(new.server_id) != new.modseq
                model[target] = (model[target][0], op == "read")
            check()
    finally:
        store.close()
        if url is not None:
            server.drop_database(url)
