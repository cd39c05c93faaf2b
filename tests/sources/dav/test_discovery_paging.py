"""Discovery through /.well-known (RFC 6764 §5) against the real Radicale, sync-collection
paging (RFC 6578 §3.6: a truncated answer, continued from the token it returns) against a small
local server written from that section — Radicale 3.1 never truncates a sync-collection answer
(it has no 507 and ignores DAV:limit), so it cannot exercise the paging — and the lease that
lets one of several sources on a store mirror a user."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from natsync.sources.dav import DavSource
from natsync.sources.dav.http import DavHttp, HttpAnswer
from natsync.sources.dav.mirror import DavAccount
from natsync.sources.dav.settings import DavSettings
from natsync.store import open_store
from natsync.store.api import FolderType, Store, Txn, User
from tests.sources.dav.conftest import PASSWORD, USER
from tests.sources.dav.radicale import DavSide, Radicale
from tests.sources.dav.test_radicale import event_ics


class Recording(DavHttp):
    """DavHttp that keeps (method, asked URL, answered URL after redirects, status)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, str, str, int]] = []

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        answer = await super().request(method, url, body, headers)
        self.seen.append((method, url, answer.url, answer.status))
        return answer


@asynccontextmanager
async def account_of(
    tmp_path: Path, url: str, ca_file: Path | None
) -> AsyncIterator[tuple[DavAccount, Recording, Store, User]]:
    store = open_store(tmp_path / "natsync.db")
    user = await store.run(
        lambda t: t.add_user(USER, "ann@natsync.test", "Ann", "!", datetime.now(UTC))
    )
    settings = DavSettings(url=url, ca_file=ca_file, interval=1, timeout=10)
    http = Recording(USER, PASSWORD, ca_file=ca_file, timeout=10)
    try:
        yield DavAccount(store, settings, user, http), http, store, user
    finally:
        await http.aclose()
        await store.aclose()


async def test_discovery_through_well_known(tmp_path: Path, dav_server: Radicale) -> None:
    """sources.dav.url names a path that is no DAV resource (say the server's web page): the
    user's collections are found from /.well-known/caldav, which Radicale redirects to its
    root, whose current-user-principal leads to the homes."""
    side = DavSide(dav_server, USER, PASSWORD)
    await side.reset()
    await side.aclose()
    url = dav_server.url + "not/a/collection/"
    async with account_of(tmp_path, url, dav_server.ca_file) as (account, http, _store, _user):
        found = await account.discover()
        assert {f.path for f in found} == {
            f"/{USER}/calendar/",
            f"/{USER}/tasks/",
            f"/{USER}/contacts/",
        }
        propfinds = [(asked, answered, s) for m, asked, answered, s in http.seen if m == "PROPFIND"]
        assert propfinds[0][0] == url
        assert propfinds[0][2] != 207  # the configured URL itself answered no principal
        well_known = [p for p in propfinds if p[0].endswith("/.well-known/caldav")]
        assert well_known, propfinds
        _asked, answered, status = well_known[0]
        assert status == 207
        assert answered == dav_server.url  # followed the redirect, PROPFIND kept


# -- a sync-collection server that pages (RFC 6578 §3.6) --------------------------------------

PAGE = 2
MULTISTATUS = '<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:" ' \
    'xmlns:c="urn:ietf:params:xml:ns:caldav">{}</d:multistatus>'  # fmt: skip


def _response(href: str, props: str, status: str = "HTTP/1.1 200 OK") -> str:
    return (
        f"<d:response><d:href>{escape(href)}</d:href><d:propstat><d:prop>{props}</d:prop>"
        f"<d:status>{status}</d:status></d:propstat></d:response>"
    )


class PagingServer:
    """A CalDAV server of one calendar, ``/cal/work/``, whose sync-collection REPORT answers at
    most :data:`PAGE` members: RFC 6578 §3.6 — when "the server truncates the results", the
    multistatus carries a DAV:response for the request-URI with status 507 (Insufficient
    Storage) and a DAV:sync-token that "the client can use to get the next set of results".
    Tokens here are the number of changes the client has seen (``urn:x-page:N``); every PUT is
    one change."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}  # href -> .ics
        self.changes: list[str] = []  # href per change, in order
        self.reports: list[str] = []  # the token of each REPORT, as sent

    def put(self, name: str, ics: bytes) -> None:
        href = f"/cal/work/{name}"
        self.members[href] = ics
        self.changes.append(href)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("PROPFIND", "/{path:.*}", self.propfind)
        app.router.add_route("REPORT", "/cal/work/", self.report)
        app.router.add_get("/cal/work/{name}", self.get)
        return app

    async def propfind(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        if path in ("/", "/p/"):
            props = (
                "<d:current-user-principal><d:href>/p/</d:href></d:current-user-principal>"
                "<c:calendar-home-set><d:href>/cal/</d:href></c:calendar-home-set>"
            )
            rows = _response(path, props)
        elif path == "/cal/" and request.headers.get("Depth") == "1":
            rows = _response("/cal/", "<d:resourcetype><d:collection/></d:resourcetype>")
            rows += _response(
                "/cal/work/",
                "<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
                "<d:displayname>Work</d:displayname>"
                f"<d:sync-token>urn:x-page:{len(self.changes)}</d:sync-token>"
                '<c:supported-calendar-component-set><c:comp name="VEVENT"/>'
                "</c:supported-calendar-component-set>",
            )
        else:
            return web.Response(status=404)
        return web.Response(status=207, text=MULTISTATUS.format(rows), content_type="text/xml")

    async def report(self, request: web.Request) -> web.Response:
        body = await request.text()
        match = re.search(r"<d:sync-token>([^<]*)</d:sync-token>", body)
        token = match.group(1) if match else ""
        self.reports.append(token)
        seen = int(token.rpartition(":")[2]) if token else 0
        pending = self.changes[seen:]
        page, truncated = pending[:PAGE], len(pending) > PAGE
        rows = "".join(
            _response(href, f'<d:getetag>"{len(self.changes)}-{href}"</d:getetag>')
            for href in dict.fromkeys(page)
        )
        if truncated:  # §3.6: the request-URI with 507, and a token to go on from
            rows += (
                "<d:response><d:href>/cal/work/</d:href>"
                "<d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>"
            )
        rows += f"<d:sync-token>urn:x-page:{seen + len(page)}</d:sync-token>"
        return web.Response(status=207, text=MULTISTATUS.format(rows), content_type="text/xml")

    async def get(self, request: web.Request) -> web.Response:
        href = f"/cal/work/{request.match_info['name']}"
        if href not in self.members:
            return web.Response(status=404)
        return web.Response(
            body=self.members[href],
            content_type="text/calendar",
            headers={"ETag": f'"{len(self.changes)}-{href}"'},
        )


@asynccontextmanager
async def paging_server(server: PagingServer) -> AsyncIterator[str]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_truncated_sync_collection_is_continued_from_its_token(tmp_path: Path) -> None:
    server = PagingServer()
    for n in range(5):
        server.put(f"e{n}.ics", event_ics(f"e{n}", f"Event{n}"))
    async with (
        paging_server(server) as url,
        account_of(tmp_path, url, None) as (account, _http, store, user),
    ):
        await account.setup()
        [collection] = account.collections.values()

        def subjects(txn: Txn) -> list[str]:
            folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
            return sorted(str(i.data.get("subject")) for i in txn.list_items(folder.id))

        assert await account.pull(collection) == 5
        # Three pages of at most two: from no token, then from each returned token.
        assert server.reports == ["", "urn:x-page:2", "urn:x-page:4"]
        assert await store.run(subjects) == [f"Event{n}" for n in range(5)]

        # The next round goes on from the last token: only the change made since.
        server.put("e5.ics", event_ics("e5", "Event5"))
        assert await account.pull(collection) == 1
        assert server.reports[3:] == ["urn:x-page:5"]
        assert await store.run(subjects) == [f"Event{n}" for n in range(6)]


async def test_two_sources_on_one_store_mirror_a_user_once(
    tmp_path: Path, dav_server: Radicale
) -> None:
    """Two DAV sources (two server processes' worth) on one store, the user logged in to both:
    one holds the user's "dav" lease and mirrors; the other waits, and takes over when the
    first stops (natsync.sources.lease; the two-process test is in test_imap_mirror.py)."""
    side = DavSide(dav_server, USER, PASSWORD)
    await side.reset()
    await side.aclose()
    store = open_store(tmp_path / "natsync.db")
    user = await store.run(
        lambda t: t.add_user(USER, "ann@natsync.test", "Ann", "!", datetime.now(UTC))
    )
    settings = DavSettings(dav_server.url, dav_server.ca_file, interval=1, timeout=10)
    first, second = DavSource(store, settings, lease=1.0), DavSource(store, settings, lease=1.0)
    try:
        first.login(user, PASSWORD)
        await asyncio.wait_for(first.round_done.wait(), 15)
        second.login(user, PASSWORD)
        await asyncio.sleep(1.5)  # more than a lease: the holder renewed it meanwhile
        assert first.workers[user.id].holding
        assert not second.workers[user.id].holding
        assert second.workers[user.id].rounds == 0
        await first.aclose()  # gives the lease up
        await asyncio.wait_for(second.round_done.wait(), 15)
        assert second.workers[user.id].holding
    finally:
        await first.aclose()
        await second.aclose()
        await store.aclose()
