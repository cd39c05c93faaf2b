"""One user's CalDAV/CardDAV account mirrored into their natsync folders.

Why our own WebDAV code over aiohttp rather than the ``caldav`` library: the mirror needs
exactly four requests (PROPFIND, the sync-collection REPORT, GET, conditional PUT/DELETE), must
see the raw answers the library would hide (a 507 that truncates a sync-collection, the
valid-sync-token precondition, a 412 on If-Match), and runs in natsync's event loop beside
thousands of held Pings — ``caldav`` is synchronous (a thread per request) and adds a
dependency for what ~150 lines of :mod:`natsync.sources.dav.xml` do, fuzzed.

A round, per collection:

* **pull** (RFC 6578): REPORT sync-collection with the token saved after the last round; a
  truncated answer (507 on the collection, 3.6) is asked again with its new token until
  complete; a token the server no longer knows (403/409 valid-sync-token, 3.2) restarts from
  "" and the complete listing is compared with what the mirror holds: members gone are
  deleted, members with the ETag we hold are skipped, and the others are matched **by UID**
  to the items already in the folder, so a resync never duplicates an item on the phone.
  Changed members are fetched with GET and converted by the class codecs; the store writes
  and the new token are saved in one transaction, so a crash between rounds resumes from the
  last saved token and loses nothing.
* **push** (store → server, diff-based): every item of the mapped folders whose modseq differs
  from the one the mirror last wrote or read is PUT (``If-None-Match: *`` when new,
  ``If-Match: <etag>`` when changed); an item the mirror knows that is gone from the folder is
  DELETEd with ``If-Match``.
* **conflict**: the rule of today's store for a phone's Sync with the default
  ConflictResolution 1 (MS-ASCMD 2.2.3.34, natsync.eas.sync): the server's version wins. A pull
  overwrites an item the phone changed meanwhile; a 412 on PUT or DELETE refetches the
  server's version into the store, which the phone then gets as a change (or an add again).

State per collection — its path, kind, the folders it feeds, sync-token, and per member
(href → uid, ETag, kind, item server id, modseq) — is a JSON user setting ``dav:<path>``.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from natsync.errors import NatsyncError
from natsync.sources.dav.convert import (
    CARD,
    CONTENT_TYPES,
    EVENT,
    TODO,
    read_resource,
    resource_name,
    write_resource,
)
from natsync.sources.dav.http import DavHttp
from natsync.sources.dav.settings import DavSettings
from natsync.sources.dav.xml import (
    CALDAV,
    CARDDAV,
    COLLECTION_PROPS,
    DAV,
    PRINCIPAL_PROPS,
    DavError,
    is_invalid_token,
    parse_multistatus,
    propfind_body,
    sync_collection_body,
)
from natsync.store.api import Conflict, FolderType, Item, Store, Txn, User

log = logging.getLogger("natsync.sources.dav")

#: Where each kind goes: (default folder type, type of an extra collection's user folder).
FOLDER_TYPES = {
    EVENT: (FolderType.CALENDAR, FolderType.USER_CALENDAR),
    TODO: (FolderType.TASKS, FolderType.USER_TASKS),
    CARD: (FolderType.CONTACTS, FolderType.USER_CONTACTS),
}
#: Sync-collection requests one pull may chain for a truncated answer (RFC 6578 3.6) before it
#: saves what it has and goes on next round.
MAX_PAGES = 50
#: Full resyncs (invalid token) one pull may start: a server that refuses "" too is broken.
MAX_RESTARTS = 1
_SETTING = "dav:"
_INDEX = "dav:collections"


@dataclass
class Entry:
    uid: str
    etag: str
    kind: str
    item: str  # the store item's server id
    modseq: int  # the item's modseq when the mirror last wrote or read it


@dataclass
class Collection:
    path: str  # absolute path on the server, ending in "/"
    calendar: bool
    name: str
    folders: dict[str, str]  # kind -> store folder server id
    token: str = ""
    items: dict[str, Entry] = field(default_factory=dict)  # href -> entry

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def load(text: str) -> Collection:
        raw: dict[str, Any] = json.loads(text)
        items = {href: Entry(**e) for href, e in raw.pop("items").items()}
        return Collection(**raw, items=items)


@dataclass(frozen=True, slots=True)
class Found:
    """A collection as discovery found it."""

    path: str
    calendar: bool
    name: str
    kinds: tuple[str, ...]
    token: str


def _load(txn: Txn, user_id: int) -> dict[str, Collection]:
    index = json.loads(txn.get_user_setting(user_id, _INDEX) or "[]")
    out: dict[str, Collection] = {}
    for path in index:
        text = txn.get_user_setting(user_id, _SETTING + path)
        if text:
            out[path] = Collection.load(text)
    return out


def _save(txn: Txn, user_id: int, collection: Collection) -> None:
    txn.set_user_setting(user_id, _SETTING + collection.path, collection.dump())


class DavAccount:
    """The mirror of one user's account: discovery, then rounds of pull and push."""

    def __init__(self, store: Store, settings: DavSettings, user: User, http: DavHttp) -> None:
        self.store = store
        self.settings = settings
        self.user = user
        self.http = http
        self.collections: dict[str, Collection] = {}

    def _url(self, path: str) -> str:
        return urljoin(self.settings.url, quote(path, safe="/@:+,;=!$&'()*~"))

    # -- discovery (RFC 6764, RFC 5397, RFC 4791 6.2.1, RFC 6352 7.1.1) -------------------------

    async def _propfind(self, url: str, depth: str, names: list[tuple[str, str]]) -> Any:
        answer = await self.http.request(
            "PROPFIND",
            url,
            propfind_body(names),
            {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
        )
        if answer.status != 207:
            return None
        return answer, parse_multistatus(answer.body)

    async def _homes(self) -> set[str]:
        base = self.settings.url
        principal = ""
        for start in (
            base,
            urljoin(base, "/.well-known/caldav"),
            urljoin(base, "/.well-known/carddav"),
        ):
            found = await self._propfind(start, "0", PRINCIPAL_PROPS)
            if found is None:
                continue
            answer, status = found
            for response in status.responses:
                hrefs = response.hrefs(f"{{{DAV}}}current-user-principal")
                if hrefs:
                    principal = urljoin(answer.url, hrefs[0])
                    break
            if principal:
                break
        if not principal:
            raise DavError(
                f"{base} names no current-user-principal (RFC 5397): set sources.dav.url to the "
                "server's CalDAV/CardDAV URL"
            )
        found = await self._propfind(principal, "0", PRINCIPAL_PROPS)
        if found is None:
            raise DavError(f"PROPFIND of the principal {principal} failed")
        homes: set[str] = set()
        for response in found[1].responses:
            for name in (f"{{{CALDAV}}}calendar-home-set", f"{{{CARDDAV}}}addressbook-home-set"):
                homes.update(urlsplit(urljoin(principal, h)).path for h in response.hrefs(name))
        return homes or {urlsplit(principal).path}

    async def discover(self) -> list[Found]:
        found: dict[str, Found] = {}
        for home in sorted(await self._homes()):
            listing = await self._propfind(self._url(home), "1", COLLECTION_PROPS)
            if listing is None:
                continue
            for response in listing[1].responses:
                types = response.resource_types()
                path = response.href if response.href.endswith("/") else response.href + "/"
                name = response.text(f"{{{DAV}}}displayname") or path.rstrip("/").rpartition("/")[2]
                token = response.text(f"{{{DAV}}}sync-token")
                if f"{{{CALDAV}}}calendar" in types:
                    comps = response.components() or {EVENT, TODO}
                    kinds = tuple(k for k in (EVENT, TODO) if k in comps)
                    if kinds:
                        found[path] = Found(path, True, name, kinds, token)
                elif f"{{{CARDDAV}}}addressbook" in types:
                    found[path] = Found(path, False, name, (CARD,), token)
        return sorted(found.values(), key=lambda f: f.path)

    def _assign(self, txn: Txn, found: list[Found]) -> dict[str, Collection]:
        """Each collection's folders: the first of a kind feeds the standard folder (a
        collection holding only that kind preferred), the others a user folder of their name."""
        user_id = self.user.id
        known = _load(txn, user_id)
        taken = {
            kind
            for c in known.values()
            if c.path in {f.path for f in found}
            for kind, sid in c.folders.items()
            if (f := txn.get_folder(user_id, sid)) is not None and f.type == FOLDER_TYPES[kind][0]
        }
        out: dict[str, Collection] = {}
        ordered = sorted(found, key=lambda f: (len(f.kinds), f.path))
        for item in ordered:
            collection = known.get(item.path) or Collection(item.path, item.calendar, item.name, {})
            for kind in item.kinds:
                sid = collection.folders.get(kind)
                if sid is not None and txn.get_folder(user_id, sid) is not None:
                    continue
                standard, extra = FOLDER_TYPES[kind]
                if kind not in taken:
                    folder = txn.folder_by_type(user_id, standard)
                    taken.add(kind)
                else:
                    folder = self._user_folder(txn, item.name, extra)
                collection.folders[kind] = folder.server_id
            out[item.path] = collection
            _save(txn, user_id, collection)
        txn.set_user_setting(user_id, _INDEX, json.dumps(sorted(out)))
        return out

    def _user_folder(self, txn: Txn, name: str, folder_type: FolderType) -> Any:
        existing = [f for f in txn.list_folders(self.user.id) if f.type == folder_type]
        for candidate in [name, *(f"{name} ({n})" for n in range(2, 100))]:
            same = [f for f in existing if f.display_name == candidate]
            if same:
                return same[0]
            try:
                return txn.create_folder(self.user.id, "0", candidate, folder_type)
            except Conflict:
                continue
        raise DavError(f"no free folder name for the collection {name!r}")

    async def setup(self) -> None:
        found = await self.discover()
        self.collections = await self.store.run(lambda txn: self._assign(txn, found))
        log.info(
            "dav: %s mirrors %d collection(s): %s",
            self.user.name,
            len(self.collections),
            ", ".join(self.collections),
        )

    async def folder_ids(self) -> list[int]:
        sids = {sid for c in self.collections.values() for sid in c.folders.values()}

        def ids(txn: Txn) -> list[int]:
            return [f.id for f in txn.list_folders(self.user.id) if f.server_id in sids]

        return await self.store.run(ids)

    # -- pull ------------------------------------------------------------------------------

    async def _report(self, collection: Collection, token: str) -> tuple[int, bytes]:
        answer = await self.http.request(
            "REPORT",
            self._url(collection.path),
            sync_collection_body(token),
            {"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
        )
        return answer.status, answer.body

    async def pull(self, collection: Collection) -> int:
        """Bring the server's changes since the saved token into the store; how many items
        were written or deleted."""
        token = collection.token
        full = not token
        changed: dict[str, str] = {}  # href -> etag
        removed: set[str] = set()
        listed: set[str] = set()
        restarts = 0
        pages = 0
        while True:
            status, body = await self._report(collection, token)
            if token and is_invalid_token(status, body) and restarts < MAX_RESTARTS:
                log.info("dav: %s: sync-token no longer valid, full resync", collection.path)
                restarts += 1
                token, full = "", True
                changed.clear()
                removed.clear()
                listed.clear()
                continue
            if status != 207:
                raise DavError(
                    f"sync-collection REPORT on {collection.path} answered {status}: does the "
                    "server support RFC 6578?"
                )
            page = parse_multistatus(body, collection.path)
            for response in page.responses:
                if response.href.rstrip("/") == collection.path.rstrip("/"):
                    continue
                if response.status == 404:
                    removed.add(response.href)
                    changed.pop(response.href, None)
                elif response.status == 200:
                    changed[response.href] = response.etag
                    listed.add(response.href)
                    removed.discard(response.href)
            token = page.sync_token or token
            pages += 1
            if not page.truncated or pages >= MAX_PAGES:
                break
        if full:
            removed |= set(collection.items) - listed
        fetched: dict[str, tuple[str, bytes]] = {}
        for href, etag in changed.items():
            entry = collection.items.get(href)
            if entry is not None and etag and entry.etag == etag:
                continue  # our own PUT, or nothing new
            answer = await self.http.request("GET", self._url(href))
            if answer.status == 404:
                removed.add(href)
                continue
            if answer.status != 200:
                raise DavError(f"GET {href} answered {answer.status}")
            fetched[href] = (answer.etag or etag, answer.body)
        final_token = token

        def apply(txn: Txn) -> int:
            count = 0
            for href in removed:
                count += self._remove_local(txn, collection, href)
            for href, (etag, body) in fetched.items():
                count += self._write_local(txn, collection, href, etag, body)
            collection.token = final_token
            _save(txn, self.user.id, collection)
            return count

        return await self.store.run(apply)

    def _remove_local(self, txn: Txn, collection: Collection, href: str) -> int:
        entry = collection.items.pop(href, None)
        if entry is None:
            return 0
        item = txn.get_item(self.user.id, entry.item)
        if item is None:
            return 0
        txn.delete_item(item.id)
        return 1

    def _write_local(
        self, txn: Txn, collection: Collection, href: str, etag: str, body: bytes
    ) -> int:
        try:
            kind, uid, record = read_resource(body, collection.calendar)
        except DavError as exc:
            log.warning("dav: %s: %s skipped: %s", self.user.name, href, exc.message)
            return 0
        folder_sid = collection.folders.get(kind)
        if folder_sid is None:
            return 0  # a VTODO in a collection mapped for events only, or the reverse
        folder = txn.get_folder(self.user.id, folder_sid)
        if folder is None:
            return 0
        entry = collection.items.get(href)
        item: Item | None = None
        if entry is not None:
            item = txn.get_item(self.user.id, entry.item)
            if item is not None and item.folder_id != folder.id:
                item = None
        if item is None:
            item = txn.item_by_uid(folder.id, uid)  # a resync: the same event, not a copy
        if item is None:
            item = txn.add_item(folder.id, record, uid=uid)
        elif item.data != record:
            item = txn.update_item(item.id, record)
        collection.items[href] = Entry(uid, etag, kind, item.server_id, item.modseq)
        return 1

    # -- push ------------------------------------------------------------------------------

    async def push(self, collection: Collection) -> int:
        """Send the store's changes in the collection's folders to the server; how many."""
        user_id = self.user.id

        def plan(txn: Txn) -> tuple[list[tuple[str, Item]], list[str]]:
            by_item = {e.item: href for href, e in collection.items.items()}
            writes: list[tuple[str, Item]] = []
            present: set[str] = set()
            for kind, sid in collection.folders.items():
                folder = txn.get_folder(user_id, sid)
                if folder is None:
                    continue
                for item_sid, modseq in txn.item_versions(folder.id).items():
                    present.add(item_sid)
                    href = by_item.get(item_sid)
                    if href is not None and collection.items[href].modseq == modseq:
                        continue
                    item = txn.get_item(user_id, item_sid)
                    if item is not None:
                        writes.append((kind, item))
            gone = [href for href, e in collection.items.items() if e.item not in present]
            return writes, gone

        writes, gone = await self.store.run(plan)
        if not writes and not gone:
            return 0
        by_item = {e.item: href for href, e in collection.items.items()}
        done: dict[str, Entry | None] = {}  # href -> new entry (None: deleted)
        refetch: list[str] = []
        for kind, item in writes:
            href = by_item.get(item.server_id)
            entry = collection.items.get(href) if href else None
            headers = {"Content-Type": CONTENT_TYPES[kind]}
            if entry is None or not entry.etag:
                href = collection.path + resource_name(item.uid, kind)
                headers["If-None-Match"] = "*"
            else:
                headers["If-Match"] = entry.etag
            assert href is not None
            try:
                body = write_resource(kind, item.uid, item.data)
            except NatsyncError as exc:  # a record the codec cannot write: it stays local
                log.warning("dav: %s: %s not sent: %s", self.user.name, href, exc.message)
                continue
            answer = await self.http.request("PUT", self._url(href), body, headers)
            if answer.status in (200, 201, 204):
                done[href] = Entry(item.uid, answer.etag, kind, item.server_id, item.modseq)
            elif answer.status in (412, 404):
                refetch.append(href)  # changed or removed on the server meanwhile: it wins
            else:
                log.warning("dav: PUT %s answered %d; retried next round", href, answer.status)
        for href in gone:
            entry = collection.items[href]
            answer = await self.http.request(
                "DELETE", self._url(href), headers={"If-Match": entry.etag} if entry.etag else {}
            )
            if answer.status in (200, 204, 404):
                done[href] = None
            elif answer.status == 412:
                refetch.append(href)
            else:
                log.warning("dav: DELETE %s answered %d; retried next round", href, answer.status)
        fetched: dict[str, tuple[str, bytes] | None] = {}
        for href in refetch:
            answer = await self.http.request("GET", self._url(href))
            fetched[href] = (answer.etag, answer.body) if answer.status == 200 else None

        def record(txn: Txn) -> int:
            for href, new in done.items():
                if new is None:
                    collection.items.pop(href, None)
                else:
                    collection.items[href] = new
            for href, got in fetched.items():
                if got is None:
                    self._remove_local(txn, collection, href)
                else:
                    self._write_local(txn, collection, href, got[0], got[1])
            _save(txn, user_id, collection)
            return len(done) + len(fetched)

        return await self.store.run(record)

    def _reload(self, txn: Txn, path: str) -> Collection:
        text = txn.get_user_setting(self.user.id, _SETTING + path)
        return Collection.load(text) if text else self.collections[path]

    async def round(self, *, pull: bool = True) -> int:
        """One pull (unless *pull* is False) and push of every collection."""
        count = 0
        for path in list(self.collections):
            # The store holds the truth (saved with each write): read it again every round.
            collection = await self.store.run(functools.partial(self._reload, path=path))
            self.collections[path] = collection
            if pull:
                count += await self.pull(collection)
            count += await self.push(collection)
        return count
