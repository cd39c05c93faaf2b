"""GetItemEstimate (MS-ASCMD 2.2.1.9): how many changes a Sync with this key would bring.

Computed exactly from the same diff Sync uses (natsync.eas.sync_window.pending_changes), without
touching any state, for email and for every class Sync carries (its FilterType included); an
item Sync left out because it cannot be sent (natsync.eas.isolation) is not counted.
"""

from __future__ import annotations

from natsync.eas import state as st
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import EstimateStatus as S
from natsync.eas.sync_request import FILTER_TYPES
from natsync.eas.sync_window import pending_changes, skipped_of, syncable
from natsync.wbxml import E, Element

NS = "GetItemEstimate"
#: Collections per request (one per synced folder).
MAX_COLLECTIONS = 100


def _estimate(ctx: Context, coll: Element) -> Element:
    cid = coll.child_text("CollectionId", NS) or ""
    key = coll.child_text("SyncKey", "AirSync")
    filter_text = coll.child_text("FilterType", NS)
    options = coll.find("Options", "AirSync")
    if options is not None:
        filter_text = options.child_text("FilterType", "AirSync") or filter_text
    digits = filter_text or ""
    filter_type = int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 3 else 0
    if filter_type not in FILTER_TYPES:
        filter_type = 0
    response = E(NS, "Response")
    folder = ctx.txn.get_folder(ctx.user.id, cid)
    if folder is None:
        response.add(NS, "Status", S.INVALID_COLLECTION)
        response.append(E(NS, "Collection", E(NS, "CollectionId", cid)))
        return response
    if key == st.INITIAL_KEY:
        response.add(NS, "Status", S.NOT_PRIMED)
        response.append(E(NS, "Collection", E(NS, "CollectionId", cid)))
        return response
    saved = st.load(ctx.txn.get_sync_state(ctx.device.id, cid, key)) if key else None
    if saved is None:
        response.add(NS, "Status", S.INVALID_SYNC_KEY)
        response.append(E(NS, "Collection", E(NS, "CollectionId", cid)))
        return response
    known = saved.get("items", {})
    count = 0
    if syncable(folder):
        count = pending_changes(ctx, folder, filter_type, known, None, skipped_of(saved)).total
    response.add(NS, "Status", S.SUCCESS)
    response.append(E(NS, "Collection", E(NS, "CollectionId", cid), E(NS, "Estimate", count)))
    return response


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "GetItemEstimate" or body.namespace != NS:
        raise EasError("GetItemEstimate needs a GetItemEstimate body", status=S.INVALID_COLLECTION)
    colls_el = body.find("Collections", NS)
    colls = colls_el.findall("Collection", NS) if colls_el is not None else []
    if not colls or len(colls) > MAX_COLLECTIONS:
        raise EasError("GetItemEstimate needs 1..100 collections", status=S.INVALID_COLLECTION)
    root = E(NS, "GetItemEstimate", *(_estimate(ctx, c) for c in colls))
    return Response.of(root, status=S.SUCCESS)
