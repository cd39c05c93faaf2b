"""Search (MS-ASCMD 2.2.1.16) in the Mailbox store (FreeText under And / Or, CollectionId,
Range, BodyPreference) and in the GAL store (our local users, by name or address).

A result's LongId is the message's ServerId, so ItemOperations can fetch it by LongId. A message
that cannot be rendered or encoded is left out of the results (issue 19, natsync.eas.isolation).

GAL results carry the user's display name, alias and address, and what the user's own contact
card says (:func:`own_card`: phone numbers, office, title, company, names), and with 14.1+
their picture when the client asks (Options/Picture with MaxSize and MaxPictures): a user's
GAL picture is the Picture of their own card, so they set it from the phone.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from natsync.classes import email as eas_email
from natsync.eas import isolation
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import SearchStatus as S
from natsync.eas.versions import V14_1
from natsync.store.api import FolderType, Message, NotFound, Txn, User
from natsync.wbxml import E, Element

NS = "Search"
#: Most results one answer carries (MS-ASCMD 2.2.3.143.3: Range defaults to 0-99).
MAX_RESULTS = 100
#: Most matches we count for Total (a bigger mailbox answers "at least this many").
MAX_TOTAL = 1000
#: Longest free-text query we run.
MAX_QUERY = 256
#: "first-last" results; 9 digits reach past any mailbox, and keep int() cheap.
_RANGE = re.compile(r"([0-9]{1,9})-([0-9]{1,9})")


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


def _range(options: Element | None) -> tuple[int, int] | None:
    """(first, last) result of Options/Range (at most MAX_RESULTS); None when it is invalid."""
    range_text = options.child_text("Range", NS) if options is not None else None
    if not range_text:
        return 0, MAX_RESULTS - 1
    m = _RANGE.fullmatch(range_text.strip())
    if m is None or int(m.group(1)) > int(m.group(2)):
        return None
    return int(m.group(1)), min(int(m.group(2)), int(m.group(1)) + MAX_RESULTS - 1)


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
    window = _range(options)
    if window is None:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    first, last = window
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
    sent = 0
    for msg in page:
        raw = ctx.txn.raw_message(msg.id)
        result = isolation.build(ctx.skipped, msg.server_id, _result, ctx, msg, raw, prefs, folders)
        if result is not None:
            out.append(result)
            sent += 1
    if sent:
        out.add(NS, "Range", f"{first}-{first + sent - 1}")
    out.add(NS, "Total", len(ordered))
    return out


def _result(
    ctx: Context,
    msg: Message,
    raw: bytes,
    prefs: list[eas_email.BodyPreference],
    folders: dict[int, str],
) -> Element:
    props = eas_email.email_application_data(
        msg, raw, str(ctx.version), prefs, container=(NS, "Properties")
    )
    return E(
        NS,
        "Result",
        E("AirSync", "Class", "Email"),
        E(NS, "LongId", msg.server_id),
        E("AirSync", "CollectionId", folders.get(msg.folder_id, "")),
        props,
    )


class PictureStatus(enum.IntEnum):
    """MS-ASCMD 2.2.3.177.13/.12 Status of a Picture (GAL and ResolveRecipients)."""

    SUCCESS = 1
    NO_PICTURE = 173
    TOO_LARGE = 174
    TOO_MANY = 175


#: GAL properties taken from the user's own contact card (MS-ASCMD 2.2.3.x, GAL page 16).
_CARD_PROPERTIES = (
    ("Phone", "business_phone_number"),
    ("Office", "office_location"),
    ("Title", "job_title"),
    ("Company", "company_name"),
    ("FirstName", "first_name"),
    ("LastName", "last_name"),
    ("HomePhone", "home_phone_number"),
    ("MobilePhone", "mobile_phone_number"),
)


def own_card(txn: Txn, user: User) -> Mapping[str, Any]:
    """The user's own contact card: the contact in their default Contacts folder that carries
    their own address (Email1-3). It is where a user's GAL picture, phone and title come from,
    so a user sets them from the phone. Empty when there is none."""
    try:
        folder = txn.folder_by_type(user.id, FolderType.CONTACTS)
    except NotFound:
        return {}
    address = user.email.lower()
    for item in txn.list_items(folder.id):
        emails = (item.data.get(k) for k in ("email1_address", "email2_address", "email3_address"))
        if any(address in str(e).lower() for e in emails if e):
            return item.data
    return {}


@dataclass(slots=True)
class PictureBudget:
    """A request's Picture options (MaxSize bytes, MaxPictures) and what is spent of them."""

    max_size: int | None
    max_pictures: int | None
    sent: int = 0

    @classmethod
    def from_options(cls, options: Element | None, namespace: str) -> PictureBudget | None:
        """The budget of an Options element's Picture child; None when no pictures are asked."""
        picture = options.find("Picture", namespace) if options is not None else None
        if picture is None:
            return None

        def number(tag: str) -> int | None:
            text = (picture.child_text(tag, namespace) or "").strip()
            return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None

        return cls(number("MaxSize"), number("MaxPictures"))

    def element(self, namespace: str, data_ns: str, card: Mapping[str, Any]) -> Element:
        """The Picture element of one result: Status, and Data when it is sent."""
        out = E(namespace, "Picture")
        try:
            data = base64.b64decode(str(card.get("picture") or ""))
        except ValueError:  # a damaged card (binascii.Error): the entry without its picture
            data = b""
        if not data:
            out.add(namespace, "Status", PictureStatus.NO_PICTURE)
            return out
        if self.max_size is not None and len(data) > self.max_size:
            out.add(namespace, "Status", PictureStatus.TOO_LARGE)
        elif self.max_pictures is not None and self.sent >= self.max_pictures:
            out.add(namespace, "Status", PictureStatus.TOO_MANY)
        else:
            self.sent += 1
            out.add(namespace, "Status", PictureStatus.SUCCESS)
            out.add(data_ns, "Data", data)
        return out


def gal_matches(txn: Txn, text: str) -> list[User]:
    """The local users whose login, address or display name holds *text* (lower case), by
    display name (Search and Find share it)."""
    return sorted(
        (
            u
            for u in txn.list_users()
            if text in u.name.lower() or text in u.email.lower() or text in u.display_name.lower()
        ),
        key=lambda u: (u.display_name or u.name).lower(),
    )


def gal_properties(txn: Txn, user: User, ns: str, budget: PictureBudget | None) -> Element:
    """The ``Properties`` (in namespace *ns*) of one GAL result: names, the user's own card's
    properties and, with a *budget*, the picture."""
    card = own_card(txn, user)
    props = E(ns, "Properties", E("GAL", "DisplayName", user.display_name or user.name))
    for tag, key in _CARD_PROPERTIES:
        if card.get(key):
            props.add("GAL", tag, str(card[key]))
    props.add("GAL", "Alias", user.name)
    props.add("GAL", "EmailAddress", user.email)
    if budget is not None:
        props.append(budget.element("GAL", "GAL", card))
    return props


def _gal(ctx: Context, store: Element) -> Element:
    text = (store.child_text("Query", NS) or "").strip().lower()
    options = store.find("Options", NS)
    out = E(NS, "Store")
    if not text or len(text) > MAX_QUERY:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    window = _range(options)
    if window is None:
        out.add(NS, "Status", S.INVALID_REQUEST)
        return out
    first, last = window
    matched = gal_matches(ctx.txn, text)
    page = matched[first : last + 1]
    # GAL pictures came with 14.1 (MS-ASCMD 2.2.3.135.1).
    budget = PictureBudget.from_options(options, NS) if ctx.version >= V14_1 else None
    out.add(NS, "Status", S.SUCCESS)
    for u in page:
        out.append(E(NS, "Result", gal_properties(ctx.txn, u, NS, budget)))
    if page:
        out.add(NS, "Range", f"{first}-{first + len(page) - 1}")
    out.add(NS, "Total", len(matched))
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
    items = [
        isolation.Isolated(r.child_text("LongId", NS) or "", r, result)
        for r in result.findall("Result", NS)
    ]
    wbxml = isolation.encode_isolated(root, items, ctx.skipped)
    return Response(body=wbxml, status=S.SUCCESS, skipped=tuple(ctx.skipped))
