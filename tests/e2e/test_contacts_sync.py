"""Contacts (and a task and a note) end to end: two phones (the EAS client) over real TLS on
loopback, the real server and SQLite store, ``natsync export`` on the same store.

A contact with a picture created on phone 1 appears on phone 2 and in ``natsync export vcf``;
a Change from phone 2 that sends only the first name keeps the rest (ghosting); changes and
deletes travel both ways (phone → server → phone, and a change / delete made in the store
reaching both phones); a task and a note cross the same way and the task is in ``natsync
export ics``; GAL Search and ResolveRecipients find the deployment's users, with the picture of
a user's own card. libwbxml decodes every response the server sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from natsync.classes import contacts, notes, tasks
from natsync.classes.codec import Record
from natsync.classes.vcard import read_vcards
from natsync.classes.vtodo import todos_from_ics
from natsync.cli import main
from natsync.client import Command, EASClient, ItemCommand
from natsync.eas.versions import V16_1
from natsync.store.api import FolderType, Txn
from natsync.wbxml import E, Element
from tests.e2e.deployment import Deployment, deployment
from tests.e2e.test_mail_roundtrip import Wire, phone

PHOTO = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(200)) * 3).decode()
JANE: Record = {
    "first_name": "Jane",
    "last_name": "Doe",
    "company_name": "ACME",
    "email1_address": "jane@remote.test",
    "mobile_phone_number": "+1 555 0100",
    "home_address_city": "Springfield",
    "birthday": "1980-05-04T00:00:00.000Z",
    "categories": ["Friends"],
    "children": ["Ann"],
    "nick_name": "JD",
    "picture": PHOTO,
    "body": "Met at the conference",
    "body_type": 1,
}
TASK: Record = {
    "subject": "Renew passport",
    "complete": False,
    "importance": 2,
    "utc_due_date": "2026-06-01T16:00:00.000Z",
    "due_date": "2026-06-01T18:00:00.000Z",
}
NOTE: Record = {
    "subject": "Ideas",
    "body": "one\ntwo",
    "body_type": 1,
    "message_class": "IPM.StickyNote",
}


def appdata(encode: Callable[..., list[Element]], record: Record) -> Element:
    """The item as a phone would send it, built by the class codec's encode."""
    return E("AirSync", "ApplicationData", *encode(record, V16_1, []))


async def ready(dep: Deployment, device_id: str, wire: Wire) -> EASClient:
    client = phone(dep, device_id, wire)  # closed by the caller
    await client.folder_sync()
    return client


def export(dep: Deployment, kind: str, path: Path) -> bytes:
    store_file = dep.extra["store_file"]
    result = CliRunner().invoke(main, ["export", kind, dep.user, str(path), "--store", store_file])
    assert result.exit_code == 0, result.output
    return path.read_bytes()


async def test_contacts_tasks_notes_and_gal_between_two_phones(tmp_path: Path) -> None:
    wire = Wire()
    async with deployment(tmp_path) as dep:
        dep.extra["store_file"] = str(tmp_path / "natsync.sqlite3")

        def more_users(txn: Txn) -> None:
            now = datetime.now(UTC)
            txn.add_user("bob", "bob@natsync.test", "Bob Builder", "x", now)
            txn.add_user("bea", "bea@natsync.test", "Beatrice Bold", "x", now)

        await dep.store.run(more_users)
        one = await ready(dep, "E2ECNTONE", wire)
        two = await ready(dep, "E2ECNTTWO", wire)
        try:
            folder = one.folder(type=FolderType.CONTACTS).server_id
            assert two.folder(type=FolderType.CONTACTS).server_id == folder
            await one.sync_items(folder, body_preference=[1])
            await two.sync_items(folder, body_preference=[1])

            # Created on phone 1 → on phone 2, with every field and the picture.
            cid = one.new_client_id()
            made = await one.sync_items(
                folder, [ItemCommand.add(appdata(contacts.encode, JANE), cid)]
            )
            sid = made.created[cid]
            seen = await two.sync_items(folder, body_preference=[1])
            assert list(seen.items) == [sid]
            assert contacts.decode(seen.items[sid], V16_1) == JANE

            # ... and in natsync export vcf.
            (card,) = read_vcards(export(dep, "vcf", tmp_path / "one.vcf"))
            assert card.record == JANE

            # Phone 2 changes the first name only: the rest stays (ghosting); phone 1 sees it.
            change = E("AirSync", "ApplicationData", E("Contacts", "FirstName", "Janet"))
            await two.sync_items(folder, [ItemCommand.change(sid, change)])
            back = await one.sync_items(folder, body_preference=[1])
            assert contacts.decode(back.items[sid], V16_1) == {**JANE, "first_name": "Janet"}

            # The other way: a change made in the store (an import, an admin) reaches both.
            def server_change(txn: Txn) -> None:
                user = txn.get_user(dep.user)
                assert user is not None
                item = txn.get_item(user.id, sid)
                assert item is not None
                txn.update_item(item.id, {**item.data, "job_title": "CTO"})

            await dep.store.run(server_change)
            for device in (one, two):
                got = await device.sync_items(folder, body_preference=[1])
                assert contacts.decode(got.items[sid], V16_1)["job_title"] == "CTO"

            # Phone 1 deletes → gone on phone 2 and from the export.
            await one.sync_items(folder, [ItemCommand.remove(sid)])
            gone = await two.sync_items(folder)
            assert gone.deleted == [sid]
            assert b"BEGIN:VCARD" not in export(dep, "vcf", tmp_path / "two.vcf")

            # A contact deleted in the store disappears from both phones.
            cid2 = two.new_client_id()
            made2 = await two.sync_items(
                folder, [ItemCommand.add(appdata(contacts.encode, {"first_name": "Tmp"}), cid2)]
            )
            sid2 = made2.created[cid2]
            assert list((await one.sync_items(folder)).items) == [sid2]

            def server_delete(txn: Txn) -> None:
                user = txn.get_user(dep.user)
                assert user is not None
                item = txn.get_item(user.id, sid2)
                assert item is not None
                txn.delete_item(item.id)

            await dep.store.run(server_delete)
            for device in (one, two):
                assert (await device.sync_items(folder)).deleted == [sid2]

            # A task and a note cross between the phones; the task is in natsync export ics.
            for ftype, codec_encode, decode, record in (
                (FolderType.TASKS, tasks.encode, tasks.decode, TASK),
                (FolderType.NOTES, notes.encode, notes.decode, NOTE),
            ):
                coll = one.folder(type=ftype).server_id
                await one.sync_items(coll)
                await two.sync_items(coll)
                cid3 = one.new_client_id()
                made3 = await one.sync_items(
                    coll, [ItemCommand.add(appdata(codec_encode, record), cid3)]
                )
                got3 = await two.sync_items(coll, body_preference=[1])
                assert decode(got3.items[made3.created[cid3]], V16_1) == record
            (todo,) = todos_from_ics(export(dep, "ics", tmp_path / "out.ics"))
            assert todo.record == TASK

            # Phone 1 completes a weekly task: phone 2 gets the completed occurrence and the
            # task moved on to next week (phone 1 both, in the answer to its Change).
            coll = one.folder(type=FolderType.TASKS).server_id
            weekly = {
                **TASK,
                "subject": "Water plants",
                "recurrence": {
                    "type": 1,
                    "interval": 1,
                    "day_of_week": 2,
                    "start": "2026-06-01T00:00:00.000Z",
                },
            }
            cid5 = one.new_client_id()
            sid5 = (
                await one.sync_items(coll, [ItemCommand.add(appdata(tasks.encode, weekly), cid5)])
            ).created[cid5]
            await two.sync_items(coll)
            done = {**weekly, "complete": True, "date_completed": "2026-06-01T19:00:00.000Z"}
            mover = await one.sync_items(
                coll, [ItemCommand.change(sid5, appdata(tasks.encode, done))], body_preference=[1]
            )
            after = await two.sync_items(coll, body_preference=[1])
            records = sorted(
                (tasks.decode(data, V16_1) for data in after.items.values()),
                key=lambda r: r["due_date"],
            )
            assert [(r["complete"], r["due_date"], "recurrence" in r) for r in records] == [
                (True, "2026-06-01T18:00:00.000Z", False),
                (False, "2026-06-08T18:00:00.000Z", True),
            ]
            # phone 1 had both in the answer to its own Change
            assert tasks.decode(mover.items[sid5], V16_1)["due_date"] == "2026-06-08T18:00:00.000Z"
            assert len(mover.items) == 2

            # Ann's own card (her address, her picture) makes her GAL picture.
            own = {"first_name": "Ann", "email1_address": dep.email, "picture": PHOTO}
            cid4 = one.new_client_id()
            await one.sync_items(folder, [ItemCommand.add(appdata(contacts.encode, own), cid4)])
            se = "Search"
            search = E(
                se,
                se,
                E(
                    se,
                    "Store",
                    E(se, "Name", "GAL"),
                    E(se, "Query", "b"),
                    E(se, "Options", E(se, "Range", "0-9")),
                ),
            )
            found = (await two.request(Command.Search, search)).tree
            assert found is not None
            addresses = [el.text() for el in found.iter() if el.tag == "EmailAddress"]
            assert addresses == ["bea@natsync.test", "bob@natsync.test"]
            rr = "ResolveRecipients"
            resolve = E(
                rr,
                rr,
                E(rr, "To", "bob@natsync.test"),
                E(rr, "To", dep.email),
                E(
                    rr,
                    "Options",
                    E(
                        rr,
                        "Availability",
                        E(rr, "StartTime", "2026-06-01T08:00:00.000Z"),
                        E(rr, "EndTime", "2026-06-01T10:00:00.000Z"),
                    ),
                    E(rr, "Picture", E(rr, "MaxSize", 100_000)),
                ),
            )
            resolved = (await two.request(Command.ResolveRecipients, resolve)).tree
            assert resolved is not None
            bob, ann = resolved.findall("Response", rr)
            assert bob.find("Recipient", rr).child_text("DisplayName", rr) == "Bob Builder"  # type: ignore[union-attr]
            ann_recipient = ann.find("Recipient", rr)
            assert ann_recipient is not None
            assert ann_recipient.find("Availability", rr).child_text("MergedFreeBusy", rr) == "0000"  # type: ignore[union-attr]
            picture = ann_recipient.find("Picture", rr)
            assert picture is not None
            assert picture.child_text("Status", rr) == "1"
            assert picture.find("Data", rr).value == base64.b64decode(PHOTO)  # type: ignore[union-attr]
        finally:
            await one.close()
            await two.close()
    wire.check_with_libwbxml()
