"""The CalDAV/CardDAV source end to end against a REAL Radicale (tests/sources/dav/radicale.py):
a phone (natsync.client.EASClient) over TLS against a real natsync server on loopback, whose
DavSource mirrors the user's Radicale account (TLS with the tests' CA).

For an event, a contact and a task: made on the phone → appears in Radicale; made in Radicale
(PUT of an .ics / .vcf) → appears on the phone after a sync-collection round; an update and a
delete each way. Then: a sync-token Radicale no longer knows is recovered by a full resync
without a duplicate on the phone, and a restarted source resumes from its saved token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from natsync.auth.passwords import hash_password
from natsync.cert import init_ca
from natsync.classes import calendar, contacts, tasks
from natsync.classes.codec import ClassCodec
from natsync.classes.ical import records_from_ics
from natsync.classes.vcard import read_vcards
from natsync.classes.vtodo import todos_from_ics
from natsync.client import EASClient, ItemCommand
from natsync.config import ServerConfig
from natsync.eas.versions import V16_1
from natsync.server import start_server
from natsync.sources.dav import DavSettings, DavSource
from natsync.store import open_store
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element
from tests.sources.dav.conftest import PASSWORD, USER
from tests.sources.dav.radicale import DavSide, Radicale, until

#: Seconds between sync-collection rounds in these tests (the push latency DAV → phone).
INTERVAL = 0.3
#: Seconds any one change may take to cross (a few rounds, on a loaded 2-core machine).
CROSS = 15.0


@dataclass(frozen=True)
class Kind:
    name: str
    folder_type: FolderType
    collection: str
    codec: ClassCodec
    ns: str
    element: str
    resource: Callable[[str, str], bytes]  # (uid, text) -> .ics / .vcf
    record: Callable[[bytes], dict[str, Any]]
    ext: str


def event_ics(uid: str, text: str) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261201T090000Z\r\nDTSTART:20261224T180000Z\r\n"
        f"DTEND:20261224T200000Z\r\nSUMMARY:{text}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def todo_ics(uid: str, text: str) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VTODO\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261201T090000Z\r\nDUE:20261224T180000Z\r\n"
        f"SUMMARY:{text}\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    ).encode()


def vcard(uid: str, text: str) -> bytes:
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{text} Doe\r\nN:Doe;{text};;;\r\n"
        "EMAIL;TYPE=internet:jane@example.org\r\nEND:VCARD\r\n"
    ).encode()


def _event_record(data: bytes) -> dict[str, Any]:
    return records_from_ics(data)[0]


KINDS = [
    Kind(
        "event", FolderType.CALENDAR, "calendar", calendar.CODEC, "Calendar", "Subject",
        event_ics, _event_record, ".ics",
    ),
    Kind(
        "contact", FolderType.CONTACTS, "contacts", contacts.CODEC, "Contacts", "FirstName",
        vcard, lambda data: read_vcards(data)[0].record, ".vcf",
    ),
    Kind(
        "task", FolderType.TASKS, "tasks", tasks.CODEC, "Tasks", "Subject",
        todo_ics, lambda data: todos_from_ics(data)[0].record, ".ics",
    ),
]  # fmt: skip


def appdata(kind: Kind, uid: str, text: str) -> Element:
    """What a phone sends for the item: the class codec's own encoding of it."""
    record = kind.record(kind.resource(uid, text))
    return E("AirSync", "ApplicationData", *kind.codec.encode(record, V16_1, []))


@dataclass
class Env:
    url: str
    ca_file: Path
    store: Store
    source: DavSource
    side: DavSide


@asynccontextmanager
async def natsync_with_dav(tmp_path: Path, server: Radicale) -> AsyncIterator[Env]:
    """A natsync server (TLS, SQLite) whose DavSource mirrors ann's freshly reset account."""
    side = DavSide(server, USER, PASSWORD)
    await side.reset()
    ca = init_ca(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], tmp_path / "tls")
    store = open_store(tmp_path / "natsync.sqlite3")
    hashed = hash_password(PASSWORD)
    await store.run(lambda txn: txn.add_user(USER, "ann@natsync.test", "Ann", hashed, _now()))
    config = ServerConfig(host="127.0.0.1", port=0, tls_cert=cert, tls_key=key)
    running = await start_server(config, store)
    settings = DavSettings(url=server.url, ca_file=server.ca_file, interval=INTERVAL, timeout=10)
    source = DavSource(store, settings)
    source.attach(running)
    try:
        yield Env(f"https://localhost:{running.port}", ca.cert_path, store, source, side)
    finally:
        await source.aclose()
        await running.close()
        await store.aclose()
        await side.aclose()


def _now() -> datetime:
    return datetime.now(UTC)


class Phone:
    """An EASClient and what it shows of one folder."""

    def __init__(self, env: Env, kind: Kind, device_id: str) -> None:
        self.kind = kind
        self.client = EASClient(
            env.url, USER, PASSWORD, ca_file=env.ca_file, device_id=device_id, device_type="iPhone"
        )
        self.folder = ""
        self.shown: dict[str, str] = {}  # server id -> the kind's text element
        self.adds = 0

    async def start(self) -> None:
        await self.client.folder_sync()
        self.folder = self.client.folder(type=self.kind.folder_type).server_id
        await self.sync()

    async def sync(self, *commands: ItemCommand) -> dict[str, str]:
        result = await self.client.sync_items(self.folder, commands)
        for sid, data in result.items.items():
            if sid not in self.shown:
                self.adds += 1
            self.shown[sid] = data.child_text(self.kind.element, self.kind.ns) or ""
        for sid in result.deleted:
            self.shown.pop(sid, None)
        return result.created

    async def showing(self, text: str) -> str | None:
        await self.sync()
        return next((sid for sid, shown in self.shown.items() if shown == text), None)


async def member_with(side: DavSide, collection: str, text: str) -> str | None:
    """The href of the collection member whose body mentions *text*."""
    for href in await side.listing(collection):
        status, _, body = await side.request("GET", href)
        if status == 200 and text.encode() in body:
            return href
    return None


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
async def test_items_cross_both_ways(kind: Kind, tmp_path: Path, dav_server: Radicale) -> None:
    async with natsync_with_dav(tmp_path, dav_server) as env:
        phone = Phone(env, kind, f"DAVPHONE{kind.name.upper()}")
        side = env.side
        try:
            await phone.start()

            # Made on the phone → appears in Radicale.
            client_id = phone.client.new_client_id()
            command = ItemCommand.add(appdata(kind, f"phone-{kind.name}", "Phonemade"), client_id)
            created = await phone.sync(command)
            sid = created[client_id]
            found = await until(
                lambda: member_with(side, kind.collection, "Phonemade"), CROSS, "phone add"
            )
            assert isinstance(found, str)
            assert found.endswith(kind.ext)

            # Made in Radicale → appears on the phone.
            theirs = f"/{USER}/{kind.collection}/laptop-{kind.name}{kind.ext}"
            status, _, _ = await side.request(
                "PUT", theirs, kind.resource(f"laptop-{kind.name}", "Laptopmade")
            )
            assert status == 201
            other = await until(lambda: phone.showing("Laptopmade"), CROSS, "Radicale add")
            assert isinstance(other, str)

            # Updated on the phone → Radicale has the new text (same resource).
            change = ItemCommand.change(sid, appdata(kind, f"phone-{kind.name}", "Phonechanged"))
            await phone.sync(change)
            changed = await until(
                lambda: member_with(side, kind.collection, "Phonechanged"), CROSS, "phone change"
            )
            assert changed == found

            # Updated in Radicale → the phone shows it, under the same server id.
            status, _, _ = await side.request(
                "PUT", theirs, kind.resource(f"laptop-{kind.name}", "Laptopchanged")
            )
            assert status in (200, 201, 204)  # Radicale 3.1 answers 201 for a replaced one
            assert await until(lambda: phone.showing("Laptopchanged"), CROSS, "DAV change") == other

            # Deleted on the phone → gone from Radicale; deleted in Radicale → gone from phone.
            await phone.sync(ItemCommand.remove(sid))

            async def gone_there() -> bool:
                return found not in await side.listing(kind.collection)

            await until(gone_there, CROSS, "phone delete")
            status, _, _ = await side.request("DELETE", theirs)
            assert status in (200, 204)

            async def gone_here() -> bool:
                await phone.sync()
                return other not in phone.shown

            await until(gone_here, CROSS, "Radicale delete")
            assert phone.shown == {}
            assert phone.adds == 1  # the one Radicale-made item, never a copy
            assert await side.listing(kind.collection) == {}
        finally:
            await phone.client.close()


async def _state(store: Store, path: str) -> dict[str, Any]:
    def read(txn: Txn) -> str | None:
        user = txn.get_user(USER)
        assert user is not None
        return txn.get_user_setting(user.id, f"dav:{path}")

    text = await store.run(read)
    assert text is not None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


async def _set_token(store: Store, path: str, token: str) -> None:
    state = await _state(store, path)
    state["token"] = token

    def write(txn: Txn) -> None:
        user = txn.get_user(USER)
        assert user is not None
        txn.set_user_setting(user.id, f"dav:{path}", json.dumps(state))

    await store.run(write)


async def test_lost_token_resyncs_without_duplicates_and_restart_resumes(
    tmp_path: Path, dav_server: Radicale, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "natsync.sources.dav")
    kind = KINDS[0]
    path = f"/{USER}/calendar/"
    async with natsync_with_dav(tmp_path, dav_server) as env:
        side = env.side
        phone = Phone(env, kind, "DAVPHONETOKEN")
        try:
            await phone.start()
            for n in range(3):
                href = f"{path}seed-{n}.ics"
                status, _, _ = await side.request("PUT", href, event_ics(f"seed-{n}", f"Seed{n}"))
                assert status == 201
            await until(lambda: phone.showing("Seed2"), CROSS, "seeds")
            await until(lambda: phone.showing("Seed0"), CROSS, "seeds")
            assert len(phone.shown) == 3

            # The worker stops; Radicale changes meanwhile; a new source resumes from the token.
            saved = (await _state(env.store, path))["token"]
            assert saved
            await env.source.aclose()
            await side.request("PUT", f"{path}seed-0.ics", event_ics("seed-0", "Seed0moved"))
            user = await env.store.run(lambda txn: txn.get_user(USER))
            assert user is not None
            env.source.login(user, PASSWORD)  # as the phone's next request does
            await until(lambda: phone.showing("Seed0moved"), CROSS, "resume after restart")
            assert (await _state(env.store, path))["token"] != saved

            # A token Radicale never issued: 403 valid-sync-token → full resync, no copies.
            await _set_token(env.store, path, "http://radicale.org/ns/sync/" + "0" * 64)
            await side.request("PUT", f"{path}seed-1.ics", event_ics("seed-1", "Seed1moved"))
            await until(lambda: phone.showing("Seed1moved"), CROSS, "resync after a lost token")
            assert "sync-token no longer valid, full resync" in caplog.text
            state = await _state(env.store, path)
            assert state["token"].startswith("http://radicale.org/ns/sync/")
            assert not state["token"].endswith("0" * 64)
            await asyncio.sleep(INTERVAL * 3)  # a few more rounds: still nothing doubled
            await phone.sync()
            assert sorted(phone.shown.values()) == ["Seed0moved", "Seed1moved", "Seed2"]
            assert phone.adds == 3

            def count(txn: Txn) -> int:
                user = txn.get_user(USER)
                assert user is not None
                return len(txn.list_items(txn.folder_by_type(user.id, FolderType.CALENDAR).id))

            assert await env.store.run(count) == 3
            assert len(await side.listing("calendar")) == 3
        finally:
            await phone.client.close()


async def test_conflicts_the_server_wins(tmp_path: Path, dav_server: Radicale) -> None:
    """Changed on both sides: the DAV server's version wins (natsync's rule for a Sync with the
    default ConflictResolution 1), whether the pull sees it first or the PUT gets 412."""
    from natsync.sources.dav.http import DavHttp
    from natsync.sources.dav.mirror import DavAccount

    async with natsync_with_dav(tmp_path, dav_server) as env:
        user = await env.store.run(lambda txn: txn.get_user(USER))
        assert user is not None
        http = DavHttp(USER, PASSWORD, ca_file=dav_server.ca_file, timeout=10)
        account = DavAccount(env.store, env.source.settings, user, http)
        side = env.side
        href = f"/{USER}/calendar/both.ics"
        try:
            await account.setup()
            await side.request("PUT", href, event_ics("both", "Original"))
            assert await account.round() == 1

            def edit(subject: str) -> Callable[[Txn], None]:
                def write(txn: Txn) -> None:
                    folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
                    item = txn.item_by_uid(folder.id, "both")
                    assert item is not None
                    txn.update_item(item.id, {**item.data, "subject": subject})

                return write

            def subject(txn: Txn) -> str:
                item = txn.item_by_uid(txn.folder_by_type(user.id, FolderType.CALENDAR).id, "both")
                assert item is not None
                return str(item.data["subject"])

            # The PUT carries If-Match of the ETag the mirror knows: Radicale answers 412, and
            # the server's version is fetched into the store.
            await env.store.run(edit("Phone side"))
            await side.request("PUT", href, event_ics("both", "Laptop side"))
            await account.push(account.collections[f"/{USER}/calendar/"])
            assert await env.store.run(subject) == "Laptop side"
            assert b"Laptop side" in (await side.request("GET", href))[2]
            assert await account.round() == 0  # settled: nothing goes either way

            # Both change again; this time the pull sees the server's change first.
            await env.store.run(edit("Phone again"))
            await side.request("PUT", href, event_ics("both", "Laptop again"))
            await account.round()
            assert await env.store.run(subject) == "Laptop again"
            assert b"Laptop again" in (await side.request("GET", href))[2]
            assert len(await side.listing("calendar")) == 1
        finally:
            await http.aclose()


async def test_a_refused_password_parks_the_mirror_until_a_new_one(
    tmp_path: Path, dav_server: Radicale, caplog: pytest.LogCaptureFixture
) -> None:
    """The phone's login works at natsync but not at Radicale: the mirror logs it once and
    waits; the same password again does not retry; a new one (the user fixed their natsync
    password) resumes it."""
    caplog.set_level(logging.INFO, "natsync.sources.dav")
    async with natsync_with_dav(tmp_path, dav_server) as env:
        user = await env.store.run(lambda txn: txn.get_user(USER))
        assert user is not None
        await env.side.request("PUT", f"/{USER}/calendar/w.ics", event_ics("w", "Waiting"))
        env.source.login(user, "not the radicale password")
        worker = env.source.workers[user.id]
        await until(lambda: _parked(worker), CROSS, "the 401 from Radicale")
        assert f"refused the login '{USER}' (401)" in caplog.text
        env.source.login(user, "not the radicale password")
        await asyncio.sleep(INTERVAL * 2)
        assert worker.rounds == 0  # the same refused password was not tried again

        def subjects(txn: Txn) -> list[str]:
            folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
            return [str(i.data["subject"]) for i in txn.list_items(folder.id)]

        assert await env.store.run(subjects) == []
        env.source.login(user, PASSWORD)

        async def mirrored() -> bool:
            return await env.store.run(subjects) == ["Waiting"]

        await until(mirrored, CROSS, "the mirror with the new password")

        async def cleared() -> bool:
            return worker.last_error == ""

        await until(cleared, CROSS, "the error cleared after a round")


async def _parked(worker: Any) -> bool:
    return bool(worker.last_error) and not worker.fresh_credentials.is_set()
