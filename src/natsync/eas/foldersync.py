"""FolderSync, FolderCreate, FolderUpdate, FolderDelete (MS-ASCMD 2.2.1.5, .3, .6, .4).

The hierarchy state behind a FolderSync key is a snapshot of the folder list the device knows
(``{server_id: [parent_id, name, type]}``); an answer is the diff between that snapshot and the
folders now. FolderCreate/Update/Delete change the folders *and* the snapshot, in the same
transaction, and hand out a new key, so the device never gets its own change back as news.
A FolderSync re-sent with the previous key gets the answer cached with the key that followed it.
"""

from __future__ import annotations

from typing import Any

from natsync.eas import state as st
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import FolderStatus, FolderSyncStatus
from natsync.store.api import STANDARD_FOLDERS, Conflict, FolderType, NotFound
from natsync.wbxml import E, Element

NS = "FolderHierarchy"
#: The sync-state "collection" name of the folder hierarchy (never a folder ServerId).
HIERARCHY = "#hierarchy"
#: Folder types a client may create (MS-ASCMD 2.2.3.186.2: user-created folder types only).
CREATABLE = frozenset(
    {
        FolderType.USER_GENERIC,
        FolderType.USER_MAIL,
        FolderType.USER_CALENDAR,
        FolderType.USER_CONTACTS,
        FolderType.USER_TASKS,
        FolderType.USER_JOURNAL,
        FolderType.USER_NOTES,
    }
)
_SPECIAL_TYPES = frozenset(t for _, t in STANDARD_FOLDERS)
#: Device setting holding the hierarchy key last handed out (Ping compares against it).
LAST_KEY_SETTING = "folders.last"
#: Longest folder name we accept (Exchange's limit is 256 characters).
MAX_FOLDER_NAME = 256

Snapshot = dict[str, list[Any]]


def current_snapshot(ctx: Context) -> Snapshot:
    return {
        f.server_id: [f.parent_server_id, f.display_name, int(f.type)]
        for f in ctx.txn.list_folders(ctx.user.id)
    }


def hierarchy_changed(ctx: Context) -> bool:
    """True when the folder list differs from what the device last got (Ping Status 7).
    A device that never ran FolderSync is not judged here."""
    key = ctx.txn.get_device_setting(ctx.device.id, LAST_KEY_SETTING)
    if key is None:
        return False
    known = _load(ctx, key)
    return known is not None and known != current_snapshot(ctx)


def _load(ctx: Context, key: str | None) -> Snapshot | None:
    """The snapshot behind *key* (None: unknown key). Key "0" is the empty snapshot."""
    if key == st.INITIAL_KEY:
        return {}
    if not key or len(key) > st.MAX_SYNC_KEY:
        return None
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, HIERARCHY, key))
    if saved is None:
        return None
    snap = saved.get("folders")
    return snap if isinstance(snap, dict) else None


def _replay(ctx: Context, key: str, cmd: str) -> Response | None:
    """The cached answer when this is a retransmission of the request made with *key*."""
    nxt = st.next_key(key)
    if nxt is None:
        return None
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, HIERARCHY, nxt))
    if saved is None:
        return None
    if saved.get("cmd") != cmd or saved.get("for") != key:
        return None
    answer = saved.get(st.ANSWER)
    return Response(body=answer, status=1) if isinstance(answer, bytes) else None


def _sync_key(ctx: Context, cmd: str) -> str:
    body = ctx.body
    if body is None or body.tag != cmd or body.namespace != NS:
        raise EasError(f"{cmd} needs a {cmd} body", status=FolderSyncStatus.BAD_REQUEST)
    key = body.child_text("SyncKey", NS)
    if key is None:
        raise EasError(f"{cmd} without SyncKey", status=FolderSyncStatus.BAD_REQUEST)
    return key


def handle_foldersync(ctx: Context) -> Response:
    key = _sync_key(ctx, "FolderSync")
    replay = _replay(ctx, key, "FolderSync")
    if replay is not None:
        return replay
    known = _load(ctx, key)
    if known is None:
        root = E(NS, "FolderSync", E(NS, "Status", FolderSyncStatus.INVALID_SYNC_KEY))
        return Response.of(root, status=FolderSyncStatus.INVALID_SYNC_KEY)
    now = current_snapshot(ctx)
    changes: list[Element] = []
    for sid in known:
        if sid not in now:
            changes.append(E(NS, "Delete", E(NS, "ServerId", sid)))
    for sid, (parent, name, ftype) in now.items():
        if sid not in known:
            tag = "Add"
        elif known[sid] != [parent, name, ftype]:
            tag = "Update"
        else:
            continue
        changes.append(
            E(
                NS,
                tag,
                E(NS, "ServerId", sid),
                E(NS, "ParentId", parent),
                E(NS, "DisplayName", name),
                E(NS, "Type", ftype),
            )
        )
    # The key goes in the answer, and the answer in the state of the key: make the key first.
    new = st.new_key(ctx.rng) if key == st.INITIAL_KEY else st.next_key(key)
    assert new is not None
    root = E(
        NS,
        "FolderSync",
        E(NS, "Status", FolderSyncStatus.SUCCESS),
        E(NS, "SyncKey", new),
        E(NS, "Changes", E(NS, "Count", len(changes)), *changes),
    )
    response = Response.of(root, status=FolderSyncStatus.SUCCESS)
    if key == st.INITIAL_KEY:
        ctx.txn.drop_sync_state(ctx.device.id, HIERARCHY)
    blob = {"folders": now, "cmd": "FolderSync", "for": key}
    ctx.txn.put_sync_state(ctx.device.id, HIERARCHY, new, st.pack(blob, response.body))
    ctx.txn.set_device_setting(ctx.device.id, LAST_KEY_SETTING, new)
    return response


def _folder_op_key(ctx: Context, cmd: str) -> tuple[str, Snapshot] | Response:
    key = _sync_key(ctx, cmd)
    replay = _replay(ctx, key, cmd)
    if replay is not None:
        return replay
    known = _load(ctx, key) if key != st.INITIAL_KEY else None
    if known is None:
        root = E(NS, cmd, E(NS, "Status", FolderStatus.INVALID_SYNC_KEY))
        return Response.of(root, status=FolderStatus.INVALID_SYNC_KEY)
    return key, known


def _fail(cmd: str, status: FolderStatus) -> Response:
    return Response.of(E(NS, cmd, E(NS, "Status", status)), status=status)


def _finish(ctx: Context, cmd: str, key: str, known: Snapshot, extra: list[Element]) -> Response:
    new = st.next_key(key)
    assert new is not None
    root = E(NS, cmd, E(NS, "Status", FolderStatus.SUCCESS), E(NS, "SyncKey", new), *extra)
    response = Response.of(root, status=FolderStatus.SUCCESS)
    blob = {"folders": known, "cmd": cmd, "for": key}
    ctx.txn.put_sync_state(ctx.device.id, HIERARCHY, new, st.pack(blob, response.body))
    ctx.txn.set_device_setting(ctx.device.id, LAST_KEY_SETTING, new)
    return response


def _name(body: Element) -> str | None:
    name = (body.child_text("DisplayName", NS) or "").strip()
    return name if 0 < len(name) <= MAX_FOLDER_NAME else None


def handle_foldercreate(ctx: Context) -> Response:
    cmd = "FolderCreate"
    got = _folder_op_key(ctx, cmd)
    if isinstance(got, Response):
        return got
    key, known = got
    body = ctx.body
    assert body is not None
    name = _name(body)
    parent = body.child_text("ParentId", NS) or "0"
    try:
        ftype = FolderType(int(body.child_text("Type", NS) or "0"))
    except ValueError:
        return _fail(cmd, FolderStatus.BAD_REQUEST)
    if name is None or ftype not in CREATABLE:
        return _fail(cmd, FolderStatus.BAD_REQUEST)
    problem = _placement_problem(ctx, parent, name)
    if problem is not None:
        return _fail(cmd, problem)
    try:
        folder = ctx.txn.create_folder(ctx.user.id, parent, name, ftype)
    except Conflict:
        return _fail(cmd, FolderStatus.ALREADY_EXISTS)
    except NotFound:
        return _fail(cmd, FolderStatus.PARENT_NOT_FOUND)
    known = dict(known)
    known[folder.server_id] = [folder.parent_server_id, folder.display_name, int(folder.type)]
    return _finish(ctx, cmd, key, known, [E(NS, "ServerId", folder.server_id)])


def _placement_problem(
    ctx: Context, parent: str, name: str, moving: int | None = None
) -> FolderStatus | None:
    """Why *name* cannot stand under *parent* (a missing parent, a sibling of that name), if so.

    *moving* is the store id of the folder being renamed or moved, which may keep its own name.
    """
    if parent != "0" and ctx.txn.get_folder(ctx.user.id, parent) is None:
        return FolderStatus.PARENT_NOT_FOUND
    if any(
        f.parent_server_id == parent and f.display_name.lower() == name.lower() and f.id != moving
        for f in ctx.txn.list_folders(ctx.user.id)
    ):
        return FolderStatus.ALREADY_EXISTS
    return None


def handle_folderupdate(ctx: Context) -> Response:
    cmd = "FolderUpdate"
    got = _folder_op_key(ctx, cmd)
    if isinstance(got, Response):
        return got
    key, known = got
    body = ctx.body
    assert body is not None
    sid = body.child_text("ServerId", NS) or ""
    parent = body.child_text("ParentId", NS) or "0"
    name = _name(body)
    if name is None:
        return _fail(cmd, FolderStatus.BAD_REQUEST)
    folder = ctx.txn.get_folder(ctx.user.id, sid)
    if folder is None:
        return _fail(cmd, FolderStatus.NOT_FOUND)
    if folder.type in _SPECIAL_TYPES:
        return _fail(cmd, FolderStatus.SPECIAL_FOLDER)
    problem = _placement_problem(ctx, parent, name, moving=folder.id)
    if problem is not None:
        return _fail(cmd, problem)
    try:
        updated = ctx.txn.update_folder(ctx.user.id, sid, parent, name)
    except Conflict:
        return _fail(cmd, FolderStatus.ALREADY_EXISTS)
    except NotFound:
        return _fail(cmd, FolderStatus.NOT_FOUND)
    known = dict(known)
    known[sid] = [updated.parent_server_id, updated.display_name, int(updated.type)]
    return _finish(ctx, cmd, key, known, [])


def handle_folderdelete(ctx: Context) -> Response:
    cmd = "FolderDelete"
    got = _folder_op_key(ctx, cmd)
    if isinstance(got, Response):
        return got
    key, known = got
    body = ctx.body
    assert body is not None
    sid = body.child_text("ServerId", NS) or ""
    folder = ctx.txn.get_folder(ctx.user.id, sid)
    if folder is None:
        return _fail(cmd, FolderStatus.NOT_FOUND)
    if folder.type in _SPECIAL_TYPES:
        return _fail(cmd, FolderStatus.SPECIAL_FOLDER)
    gone = _subtree(ctx, sid)
    try:
        ctx.txn.delete_folder(ctx.user.id, sid)
    except NotFound:
        return _fail(cmd, FolderStatus.NOT_FOUND)
    except Conflict:
        return _fail(cmd, FolderStatus.SERVER_ERROR)
    known = {k: v for k, v in known.items() if k not in gone}
    for collection in gone:
        ctx.txn.drop_sync_state(ctx.device.id, collection)
    return _finish(ctx, cmd, key, known, [])


def _subtree(ctx: Context, sid: str) -> set[str]:
    """*sid* and every folder below it (deleting a folder deletes its subfolders)."""
    children: dict[str, list[str]] = {}
    for f in ctx.txn.list_folders(ctx.user.id):
        children.setdefault(f.parent_server_id, []).append(f.server_id)
    out, todo = set(), [sid]
    while todo:
        cur = todo.pop()
        out.add(cur)
        todo.extend(children.get(cur, []))
    return out
