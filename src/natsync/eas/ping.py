"""Ping (MS-ASCMD 2.2.1.13), the minimal form: validate, answer at once when a watched folder
already changed since the device last synced it, else tell the adapter to wait.

The wait happens OUTSIDE any transaction (natsync.server subscribes to the store's change feed,
re-checks with :func:`changed_since`, waits, then answers with :func:`finish`). An empty Ping
repeats the last one of this device (MS-ASCMD 3.1.5.2).
"""

from __future__ import annotations

import json

from natsync.eas.context import Context, PingWait, Response
from natsync.eas.foldersync import hierarchy_changed
from natsync.eas.status import PingStatus as S
from natsync.eas.sync import seen_modseq
from natsync.store.api import Txn
from natsync.wbxml import E, Element

NS = "Ping"
#: Folders one Ping may watch; more get Status 6 with this limit (MS-ASCMD 2.2.3.100).
MAX_FOLDERS = 300
CACHED_PING = "ping.request"


def _answer(status: S, *extra: Element) -> Response:
    return Response.of(E(NS, "Ping", E(NS, "Status", status), *extra), status=status)


def handle(ctx: Context) -> Response:
    body = ctx.body
    cached = ctx.txn.get_device_setting(ctx.device.id, CACHED_PING)
    if body is None:
        if not cached:
            return _answer(S.MISSING_PARAMETERS)
        saved = json.loads(cached)
        heartbeat, ids = int(saved["heartbeat"]), list(saved["folders"])
    else:
        if body.tag != "Ping" or body.namespace != NS:
            return _answer(S.SYNTAX_ERROR)
        saved = json.loads(cached) if cached else {}
        hb_text = body.child_text("HeartbeatInterval", NS)
        if hb_text is None:
            heartbeat = int(saved.get("heartbeat", 0))
        elif hb_text.strip().isdigit():
            heartbeat = int(hb_text)
        else:
            return _answer(S.SYNTAX_ERROR)
        folders_el = body.find("Folders", NS)
        if folders_el is None:
            ids = list(saved.get("folders", []))
        else:
            ids = [f.child_text("Id", NS) or "" for f in folders_el.findall("Folder", NS)]
        if not heartbeat or not ids:
            return _answer(S.MISSING_PARAMETERS)
    cfg = ctx.config
    if heartbeat < cfg.heartbeat_min:
        return _answer(S.INVALID_HEARTBEAT, E(NS, "HeartbeatInterval", cfg.heartbeat_min))
    if heartbeat > cfg.heartbeat_max:
        return _answer(S.INVALID_HEARTBEAT, E(NS, "HeartbeatInterval", cfg.heartbeat_max))
    if len(ids) > MAX_FOLDERS:
        return _answer(S.TOO_MANY_FOLDERS, E(NS, "MaxFolders", MAX_FOLDERS))
    if hierarchy_changed(ctx):
        return _answer(S.FOLDER_SYNC_REQUIRED)
    folders = []
    for sid in ids:
        folder = ctx.txn.get_folder(ctx.user.id, sid)
        if folder is None:
            return _answer(S.FOLDER_SYNC_REQUIRED)
        folders.append(folder)
    ctx.txn.set_device_setting(
        ctx.device.id, CACHED_PING, json.dumps({"heartbeat": heartbeat, "folders": ids})
    )
    changed = []
    for folder in folders:
        seen = seen_modseq(ctx, folder.server_id)
        if seen is None or seen < 0 or folder.modseq > seen:
            changed.append(folder.server_id)
    if changed:
        return finish_ids(changed)
    return Response(
        status=None,
        wait=PingWait(
            folder_ids=tuple(f.id for f in folders),
            server_ids={f.id: f.server_id for f in folders},
            heartbeat=heartbeat,
            user_id=ctx.user.id,
            baseline={f.id: f.modseq for f in folders},
        ),
    )


def changed_since(txn: Txn, wait: PingWait) -> set[int]:
    """Folders of *wait* whose modseq moved past the baseline (run after subscribing)."""
    changed = set()
    for folder in txn.list_folders(wait.user_id):
        if folder.id in wait.baseline and folder.modseq > wait.baseline[folder.id]:
            changed.add(folder.id)
    return changed


def finish_ids(server_ids: list[str]) -> Response:
    folders = E(NS, "Folders", *(E(NS, "Folder", sid) for sid in server_ids))
    return _answer(S.CHANGES, folders)


def finish(wait: PingWait, changed: set[int]) -> Response:
    """The answer after waiting: Status 2 naming the changed folders, or 1 (heartbeat expired)."""
    names = [wait.server_ids[i] for i in wait.folder_ids if i in changed]
    if names:
        return finish_ids(names)
    return _answer(S.EXPIRED)
