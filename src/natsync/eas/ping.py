"""Ping (MS-ASCMD 2.2.1.13): validate, answer at once when a watched folder already changed
since the device last synced it, else tell the adapter to wait.

The wait happens OUTSIDE any transaction (natsync.server subscribes to the store's change feed,
re-checks with :func:`changed_since`, waits, then answers with :func:`finish`). An empty Ping
repeats the last one of this device (MS-ASCMD 3.1.5.2). Statuses (MS-ASCMD 2.2.3.177.11): 1
expired, 2 changes, 3 nothing to repeat, 4 malformed, 5 heartbeat out of range (with the limit),
6 too many folders (with MaxFolders), 7 hierarchy changed, 8 server error (:func:`server_error`).

The accepted heartbeat is ``config.heartbeat_cap``: heartbeat_max, lowered below the path's idle
timeout (``max_idle_path_seconds``) so that the NAT in front does not cut a held Ping silently.
"""

from __future__ import annotations

import json
import logging

from natsync.eas.context import Context, HoldUntilChange, Response, hold_on
from natsync.eas.foldersync import hierarchy_changed
from natsync.eas.status import PingStatus as S
from natsync.eas.sync_request import seen_modseq
from natsync.store.api import Txn
from natsync.wbxml import E, Element

log = logging.getLogger("natsync.eas.ping")

NS = "Ping"
#: Folders one Ping may watch; more get Status 6 with this limit (MS-ASCMD 2.2.3.100).
MAX_FOLDERS = 300
CACHED_PING = "ping.request"
#: Digits of a HeartbeatInterval read; any longer value is far past heartbeat_max anyway.
HEARTBEAT_DIGITS = 9


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
        elif (hb := hb_text.strip()).isascii() and hb.isdigit():
            # (str.isdigit alone admits "²", which int() refuses.) A longer number is cut to
            # its first HEARTBEAT_DIGITS digits: still out of range, and int() stays cheap.
            heartbeat = int((hb.lstrip("0") or "0")[:HEARTBEAT_DIGITS])
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
    cap = cfg.heartbeat_cap
    if heartbeat > cap:
        if heartbeat <= cfg.heartbeat_max:
            log.info(
                "Ping heartbeat %d s of device %s capped to %d s (server.max_idle_path_seconds "
                "= %d: the path in front cuts idle connections)",
                heartbeat,
                ctx.device.device_id,
                cap,
                cfg.max_idle_path_seconds,
            )
        return _answer(S.INVALID_HEARTBEAT, E(NS, "HeartbeatInterval", cap))
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
        effects=(hold_on(folders, heartbeat, ctx.user.id),),
    )


def changed_since(txn: Txn, wait: HoldUntilChange) -> set[int]:
    """Folders of *wait* whose modseq moved past the baseline (run after subscribing)."""
    changed = set()
    for folder in txn.list_folders(wait.user_id):
        if folder.id in wait.baseline and folder.modseq > wait.baseline[folder.id]:
            changed.add(folder.id)
    return changed


def finish_ids(server_ids: list[str]) -> Response:
    folders = E(NS, "Folders", *(E(NS, "Folder", sid) for sid in server_ids))
    return _answer(S.CHANGES, folders)


def server_error() -> Response:
    """Status 8: the server failed; the phone retries the Ping later (MS-ASCMD 2.2.3.177.11)."""
    return _answer(S.SERVER_ERROR)


def finish(
    wait: HoldUntilChange, changed: set[int], *, hierarchy_changed: bool = False
) -> Response:
    """The answer after waiting: Status 7 when the folder hierarchy changed meanwhile, else 2
    naming the changed folders, else 1 (heartbeat expired, or ended by a newer request)."""
    if hierarchy_changed:
        return _answer(S.FOLDER_SYNC_REQUIRED)
    names = [wait.server_ids[i] for i in wait.folder_ids if i in changed]
    if names:
        return finish_ids(names)
    return _answer(S.EXPIRED)
