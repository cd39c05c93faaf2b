"""Find (MS-ASCMD 2.2.1.2, EAS 16.1): the mailbox search over the store's full-text index
(MailBoxSearchCriterion: FreeText, ``airsync:Class``, ``airsync:CollectionId``, DeepTraversal) and
the GAL search (GALSearchCriterion: local users by name or address, with their own card's
properties and, when asked, pictures), paged by Range.

Answer (MS-ASCMD 6.8, Find response schema): ``Find/Status``, then ``Response`` with
``itemoperations:Store`` (Mailbox), its own Status, one ``Result`` per hit (``airsync:Class``,
``airsync:ServerId``, ``airsync:CollectionId``, ``Properties``: Subject, DateReceived, DisplayTo,
DisplayCc, DisplayBcc, Importance, Read, IsDraft, Preview, HasAttachments, From), ``Range`` and
``Total`` (MS-ASCMD 2.2.3.143.1 / 2.2.3.184.1).

Status (MS-ASCMD 2.2.3.177.2): 1 success; 2 the request is invalid (no criterion, an empty or
too long query, a Range that is malformed, past 0..999 or wider than :data:`MAX_RESULTS`);
3 a CollectionId the user does not have (the phone's folder hierarchy is out of date: it runs
FolderSync).

One item never breaks the answer (issue 19, natsync.eas.isolation): a mailbox Result that
cannot be rendered or encoded is left out (reported once, its id in the access log and the
server's metrics); the others, ``Range`` (what was sent) and ``Total`` are answered as usual.
"""

from __future__ import annotations

import enum
import re

from natsync.classes import email as eas_email
from natsync.eas import isolation
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.search import PictureBudget, gal_matches, gal_properties
from natsync.eas.status import Common
from natsync.eas.sync_window import MAIL_TYPES
from natsync.eas.versions import V16_1
from natsync.store.api import Folder, FolderType, Message
from natsync.wbxml import E, Element

NS = "Find"
#: Most results one answer carries (MS-ASCMD 2.2.3.143.1: the default Range is 0-99).
MAX_RESULTS = 100
#: Highest index a Range may name (MS-ASCMD 2.2.3.143.1: 0 <= m <= n <= 999).
MAX_RANGE_INDEX = 999
#: Matches counted for Total; past it Total says "at least this many".
MAX_TOTAL = 1000
#: Longest query run (a KQL string on Exchange; here plain words).
MAX_QUERY = 256
#: Characters of the body preview in a mailbox Result (MS-ASCMD 2.2.3.136.1: at most 255).
PREVIEW_CHARS = 255
_RANGE = re.compile(r"(\d{1,4})-(\d{1,4})")


class FindStatus(enum.IntEnum):
    """MS-ASCMD 2.2.3.177.2 Status (Find)."""

    SUCCESS = 1
    INVALID_REQUEST = 2
    FOLDER_SYNC_REQUIRED = 3


def _range(options: Element | None) -> tuple[int, int] | None:
    text = (options.child_text("Range", NS) or "").strip() if options is not None else ""
    if not text:
        return 0, MAX_RESULTS - 1
    m = _RANGE.fullmatch(text)
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if first > last or last > MAX_RANGE_INDEX or last - first + 1 > MAX_RESULTS:
        return None
    return first, last


def _failed(status: FindStatus) -> Response:
    root = E(NS, "Find", E(NS, "Status", FindStatus.SUCCESS))
    root.append(E(NS, "Response", E("ItemOperations", "Store", "Mailbox"), E(NS, "Status", status)))
    return Response.of(root, status=status)


def _subtree(folders: list[Folder], top: Folder) -> list[int]:
    """*top* and every folder below it (DeepTraversal)."""
    children: dict[str, list[Folder]] = {}
    for f in folders:
        children.setdefault(f.parent_server_id, []).append(f)
    out: list[int] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        out.append(folder.id)
        stack.extend(children.get(folder.server_id, ()))
    return out


def _properties(msg: Message, raw: bytes, version: str, is_draft: bool) -> Element:
    """The Properties of one mailbox Result (MS-ASCMD 2.2.3.139.1)."""
    data = eas_email.email_application_data(msg, raw, version, [])
    props = E(NS, "Properties")
    for tag in ("Subject", "DateReceived", "DisplayTo"):
        value = data.child_text(tag, "Email")
        if value is not None:
            props.add("Email", tag, value)
    props.add(NS, "DisplayCc", msg.cc_addrs)
    props.add(NS, "DisplayBcc", "")
    props.add("Email", "Importance", msg.importance)
    props.add("Email", "Read", int(msg.read))
    props.add("Email2", "IsDraft", int(is_draft))
    props.add(NS, "Preview", msg.preview[:PREVIEW_CHARS])
    props.add(NS, "HasAttachments", int(bool(msg.attachments)))
    props.add("Email", "From", msg.from_addr)
    return props


def _result(msg: Message, raw: bytes, version: str, folder: Folder | None) -> Element:
    return E(
        NS,
        "Result",
        E("AirSync", "Class", "Email"),
        E("AirSync", "ServerId", msg.server_id),
        E("AirSync", "CollectionId", folder.server_id if folder else ""),
        _properties(msg, raw, version, folder is not None and folder.type == FolderType.DRAFTS),
    )


def _mailbox(ctx: Context, criterion: Element) -> Response:
    query = criterion.find("Query", NS)
    options = criterion.find("Options", NS)
    text = " ".join((query.child_text("FreeText", NS) or "").split()) if query is not None else ""
    window = _range(options)
    if not text or len(text) > MAX_QUERY or window is None:
        return _failed(FindStatus.INVALID_REQUEST)
    wanted_class = (query.child_text("Class", "AirSync") or "Email") if query is not None else ""
    if wanted_class != "Email":  # only mail is indexed for full-text search
        return _failed(FindStatus.INVALID_REQUEST)
    folders = ctx.txn.list_folders(ctx.user.id)
    by_id = {f.id: f for f in folders}
    collection = (query.child_text("CollectionId", "AirSync") or "").strip() if query else ""
    if collection:
        top = next((f for f in folders if f.server_id == collection), None)
        if top is None:
            return _failed(FindStatus.FOLDER_SYNC_REQUIRED)
        deep = options is not None and options.find("DeepTraversal", NS) is not None
        folder_ids = _subtree(folders, top) if deep else [top.id]
    else:
        folder_ids = [f.id for f in folders if f.type in MAIL_TYPES]
    found = ctx.txn.search_messages(ctx.user.id, text, folder_ids, MAX_TOTAL)
    ordered = sorted(found, key=lambda m: m.received_at, reverse=True)
    first, last = window
    response = E(
        NS, "Response", E("ItemOperations", "Store", "Mailbox"), E(NS, "Status", FindStatus.SUCCESS)
    )
    results: list[tuple[str, Element]] = []
    for msg in ordered[first : last + 1]:
        raw = ctx.txn.raw_message(msg.id)  # read first: a store failure is not the item's
        folder = by_id.get(msg.folder_id)
        result = isolation.build(
            ctx.skipped, msg.server_id, _result, msg, raw, str(ctx.version), folder
        )
        if result is not None:
            response.append(result)
            results.append((msg.server_id, result))
    return _answer(ctx, response, first, results, len(ordered))


def _answer(
    ctx: Context, response: Element, first: int, results: list[tuple[str, Element]], total: int
) -> Response:
    """The Find answer: *results* (id, Result), then Range and Total; a Result that does not
    encode is left out and Range says what was sent (natsync.eas.isolation)."""
    sent = len(results)
    range_el = response.add(NS, "Range", f"{first}-{first + sent - 1}") if sent else None
    response.add(NS, "Total", total)

    def left_out() -> None:
        nonlocal sent
        sent -= 1
        if range_el is not None and sent:
            range_el.value = f"{first}-{first + sent - 1}"
        elif range_el is not None:
            response.children[:] = [c for c in response.children if c is not range_el]

    root = E(NS, "Find", E(NS, "Status", FindStatus.SUCCESS), response)
    items = [isolation.Isolated(sid, r, response, on_skip=left_out) for sid, r in results]
    wbxml = isolation.encode_isolated(root, items, ctx.skipped)
    return Response(body=wbxml, status=FindStatus.SUCCESS, skipped=tuple(ctx.skipped))


def _gal(ctx: Context, criterion: Element) -> Response:
    query = criterion.find("Query", NS)
    options = criterion.find("Options", NS)
    text = ""
    if query is not None:
        text = (query.child_text("FreeText", NS) or query.text() or "").strip().lower()
    window = _range(options)
    if not text or len(text) > MAX_QUERY or window is None:
        return _failed(FindStatus.INVALID_REQUEST)
    matched = gal_matches(ctx.txn, text)
    first, last = window
    page = matched[first : last + 1]
    budget = PictureBudget.from_options(options, NS)
    response = E(
        NS, "Response", E("ItemOperations", "Store", "GAL"), E(NS, "Status", FindStatus.SUCCESS)
    )
    results = [
        (u.email, response.append(E(NS, "Result", gal_properties(ctx.txn, u, NS, budget))))
        for u in page
    ]
    return _answer(ctx, response, first, results, len(matched))


def handle(ctx: Context) -> Response:
    if ctx.version < V16_1:
        raise EasError("Find is an EAS 16.1 command", status=Common.VERSION_NOT_SUPPORTED)
    body = ctx.body
    if body is None or body.tag != "Find" or body.namespace != NS:
        raise EasError("Find needs a Find body", status=FindStatus.INVALID_REQUEST)
    execute = body.find("ExecuteSearch", NS)
    mailbox = execute.find("MailBoxSearchCriterion", NS) if execute is not None else None
    # MS-ASCMD spells it GALSearchCriterion; the code page table names the token so.
    gal = execute.find("GalSearchCriterion", NS) if execute is not None else None
    if mailbox is not None:
        return _mailbox(ctx, mailbox)
    if gal is not None:
        return _gal(ctx, gal)
    return _failed(FindStatus.INVALID_REQUEST)
