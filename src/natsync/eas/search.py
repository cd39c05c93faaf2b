"""Search (MS-ASCMD 2.2.1.16) in the Mailbox store (FreeText under And / Or, CollectionId,
Range, BodyPreference) and in the GAL store (our local users, by name or address).

A result's LongId is the message's ServerId, so ItemOperations can fetch it by LongId.
"""

from __future__ import annotations

import re

from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import SearchStatus as S
from natsync.mail import eas_email
from natsync.store.api import Message
from natsync.wbxml import E, Element

NS = "Search"
#: Most results one answer carries (MS-ASCMD 2.2.3.143.3: Range defaults to 0-99).
MAX_RESULTS = 100
#: Most matches we count for Total (a bigger mailbox answers "at least this many").
MAX_TOTAL = 1000
#: Longest free-text query we run.
MAX_QUERY = 256
_RANGE = re.compile(r"(\d+)-(\d+)")


def _terms(query: Element) -> tuple[list[str], list[str], str]:
    """(terms that must all match, alternatives, CollectionId) of a Query element."""
    all_terms: list[str] = []
    any_terms: list[str] = []
    collection = ""
    for el in query.iter():
        if el.tag == "FreeText" and el.namespace == NS:
            (any_terms if _under_or(query, el) else all_terms).append(el.text().strip())
        elif el.tag == "CollectionId" and el.namespace == "AirSync":
            collection = el.text()
    return [t for t in all_terms if t], [t for t in any_terms if t], collection


def _under_or(root: Element, target: Element) -> bool:
    stack: list[tuple[Element, bool]] = [(root, False)]
    while stack:
        node, in_or = stack.pop()
        if node is target:
            return in_or
        for child in node.children:
            stack.append((child, in_or or node.tag == "Or"))
    return False


def _mailbox(ctx: Context, store: Element) -> Element:
    query = store.find("Query", NS)
    options = store.find("Options", NS)
    out = E(NS, "Store")
    if query is None:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    must, alternatives, collection = _terms(query)
    if (not must and not alternatives) or sum(len(t) for t in must + alternatives) > MAX_QUERY:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    first, last = 0, MAX_RESULTS - 1
    range_text = options.child_text("Range", NS) if options is not None else None
    if range_text:
        m = _RANGE.fullmatch(range_text.strip())
        if m is None or int(m.group(1)) > int(m.group(2)):
            out.add(NS, "Status", S.INVALID_REQUEST)
            return out
        first, last = int(m.group(1)), min(int(m.group(2)), int(m.group(1)) + MAX_RESULTS - 1)
    folder_ids = None
    if collection:
        folder = ctx.txn.get_folder(ctx.user.id, collection)
        if folder is None:
            out.add(NS, "Status", S.FOLDER_SYNC_REQUIRED)
            return out
        folder_ids = [folder.id]
    found: dict[str, Message] = {}
    queries = [" ".join([*must, alt]) for alt in alternatives] if alternatives else [" ".join(must)]
    for q in queries:
        for msg in ctx.txn.search_messages(ctx.user.id, q, folder_ids, MAX_TOTAL):
            found.setdefault(msg.server_id, msg)
    ordered = sorted(found.values(), key=lambda m: m.received_at, reverse=True)
    page = ordered[first : last + 1]
    prefs = []
    if options is not None:
        prefs = [
            eas_email.BodyPreference.from_element(b)
            for b in options.findall("BodyPreference", "AirSyncBase")
        ]
    folders = {f.id: f.server_id for f in ctx.txn.list_folders(ctx.user.id)}
    out.add(NS, "Status", S.SUCCESS)
    for msg in page:
        raw = ctx.txn.raw_message(msg.id)
        props = eas_email.email_application_data(
            msg, raw, str(ctx.version), prefs, container=(NS, "Properties")
        )
        out.append(
            E(
                NS,
                "Result",
                E("AirSync", "Class", "Email"),
                E(NS, "LongId", msg.server_id),
                E("AirSync", "CollectionId", folders.get(msg.folder_id, "")),
                props,
            )
        )
    if page:
        out.add(NS, "Range", f"{first}-{first + len(page) - 1}")
    out.add(NS, "Total", len(ordered))
    return out


def _gal(ctx: Context, store: Element) -> Element:
    text = (store.child_text("Query", NS) or "").strip().lower()
    out = E(NS, "Store")
    if not text:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    users = [
        u
        for u in ctx.txn.list_users()
        if text in u.name.lower() or text in u.email.lower() or text in u.display_name.lower()
    ][:MAX_RESULTS]
    out.add(NS, "Status", S.SUCCESS)
    for u in users:
        out.append(
            E(
                NS,
                "Result",
                E(
                    NS,
                    "Properties",
                    E("GAL", "DisplayName", u.display_name or u.name),
                    E("GAL", "EmailAddress", u.email),
                    E("GAL", "Alias", u.name),
                ),
            )
        )
    if users:
        out.add(NS, "Range", f"0-{len(users) - 1}")
    out.add(NS, "Total", len(users))
    return out


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "Search" or body.namespace != NS:
        raise EasError("Search needs a Search body", status=S.INVALID_REQUEST)
    store = body.find("Store", NS)
    if store is None:
        raise EasError("Search without Store", status=S.INVALID_REQUEST)
    name = (store.child_text("Name", NS) or "").lower()
    if name == "mailbox":
        result = _mailbox(ctx, store)
    elif name == "gal":
        result = _gal(ctx, store)
    else:
        raise EasError(f"Search store {name!r} is not served", status=S.BAD_LINK)
    root = E(NS, "Search", E(NS, "Status", S.SUCCESS), E(NS, "Response", result))
    return Response.of(root, status=S.SUCCESS)
