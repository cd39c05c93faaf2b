"""Drafts between two phones over real TLS (issue 20, "Drafts (16.x) must not lose edits"): one
phone (the natsync client, EAS 16.1) writes a draft with an attachment, edits it (new subject,
body, recipients, a second attachment, the first one deleted); the other phone syncs and sees the
same draft, attachments and their bytes included; then the first sends it from Drafts: it goes
out through the relay to the smarthost, lands in Sent Items and leaves Drafts on both phones.
Every response is decoded by libwbxml too."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path

from natsync.client import EASClient
from natsync.client import protocol as p
from natsync.store.api import FolderType
from natsync.wbxml import E, Element
from tests.e2e.deployment import deployment
from tests.e2e.test_mail_roundtrip import RELAY_WAIT, Wire, phone

ASB = "AirSyncBase"
REMOTE = "bob@remote.test"


def _attachment(client_id: str, name: str, data: bytes) -> Element:
    return E(
        ASB, "Add", E(ASB, "ClientId", client_id), Element(ASB, "Content", [], data),
        E(ASB, "DisplayName", name), E(ASB, "Method", 1),
    )  # fmt: skip


def _body(text: str) -> Element:
    return E(ASB, "Body", E(ASB, "Type", 1), E(ASB, "Data", text))


async def _drafts(client: EASClient) -> str:
    await client.folder_sync()
    return client.folder(type=int(FolderType.DRAFTS)).server_id


async def test_a_draft_edited_on_one_phone_is_the_same_on_the_other_then_sent(
    tmp_path: Path,
) -> None:
    wire = Wire()
    async with (
        deployment(tmp_path) as dep,
        phone(dep, "DRAFTPHONEA", wire) as one,
        phone(dep, "DRAFTPHONEB", wire) as two,
    ):
        drafts = await _drafts(one)
        await _drafts(two)
        await two.sync(drafts)  # the second phone starts with an empty Drafts folder

        created = await one.sync_items(
            drafts,
            [
                p.ItemCommand.add(
                    E(
                        "AirSync", "ApplicationData", E("Email", "To", "carol@remote.test"),
                        E("Email", "Subject", "plan v1"), _body("first words"),
                        E(ASB, "Attachments", _attachment("att-1", "old.txt", b"old bytes")),
                    ),
                    "draft-1",
                )
            ],
        )  # fmt: skip
        sid = created.created["draft-1"]
        first = await two.sync(drafts)
        assert [(i.server_id, i.subject) for i in first.added] == [(sid, "plan v1")]
        old_ref = first.added[0].attachments[0].file_reference

        edited = await one.sync_items(
            drafts,
            [
                p.ItemCommand.change(
                    sid,
                    E(
                        "AirSync", "ApplicationData", E("Email", "To", REMOTE),
                        E("Email", "Subject", "plan v2"), E("Email", "Importance", 2),
                        _body("second, better words"),
                        E(
                            ASB, "Attachments", E(ASB, "Delete", E(ASB, "FileReference", old_ref)),
                            _attachment("att-2", "plan.bin", bytes(range(256)) * 4),
                        ),
                    ),
                )
            ],
        )  # fmt: skip
        assert edited.deleted == [sid]
        (new_sid,) = edited.items

        seen = await two.sync(drafts)
        assert seen.deleted == [sid]
        (draft,) = seen.added
        assert (draft.server_id, draft.subject) == (new_sid, "plan v2")
        assert draft.fields["Email:To"] == REMOTE
        assert draft.fields["Email:Importance"] == "2"
        assert "second, better words" in (draft.body.data if draft.body else "")
        assert [a.display_name for a in draft.attachments] == ["plan.bin"]
        fetched = await two.item_operations_fetch(
            file_reference=draft.attachments[0].file_reference
        )
        assert fetched.data == bytes(range(256)) * 4

        # Send from Drafts: out through the relay, into Sent Items, out of Drafts.
        send = E("AirSync", "ApplicationData", _body("final words"), Element("Email2", "Send"))
        sent = await one.sync_items(drafts, [p.ItemCommand.change(new_sid, send)])
        assert sent.deleted == [new_sid]
        assert sent.items == {}
        await asyncio.wait_for(dep.smarthost.arrived.wait(), RELAY_WAIT)
        ((sender, rcpts, raw),) = dep.smarthost.messages
        assert (sender, rcpts) == (dep.email, [REMOTE])
        out = message_from_bytes(raw, policy=policy.default)
        assert out["Subject"] == "plan v2"
        assert out["Importance"] == "High"
        assert "final words" in out.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert [part.get_filename() for part in out.iter_attachments()] == ["plan.bin"]
        assert (await two.sync(drafts)).deleted == [new_sid]
        sent_items = two.folder(type=int(FolderType.SENT_ITEMS)).server_id
        assert [i.subject for i in (await two.sync(sent_items)).added] == ["plan v2"]
    wire.check_with_libwbxml()
