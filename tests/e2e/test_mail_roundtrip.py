"""Issue 3's "done when", end to end over real TLS on loopback.

A message with plain and HTML bodies and a PDF attachment arrives by SMTP (smtplib to the real
SMTP in); phones (the EAS client) provision, FolderSync, Sync it with plain, HTML and MIME body
preferences, fetch the attachment by ItemOperations, mark it read, move it to a new folder and
reply with SmartReply; the reply reaches the smarthost (a second real aiosmtpd). A second device
of the same user sees the same state; a retransmitted Sync gets the same answer; libwbxml
decodes every response the server sent.
"""

from __future__ import annotations

import asyncio
import smtplib
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from natsync.client import BodyPreference, BodyType, ClientChange, Command, EASClient, Response
from natsync.client import protocol as p
from natsync.store.api import FolderType
from tests.e2e.deployment import Deployment, deployment
from tests.libwbxml import assert_libwbxml_decodes

PDF = b"%PDF-1.4\n% natsync test attachment\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
SUBJECT = "Quarterly report"
REMOTE = "bob@remote.test"
#: Seconds the relay may take to hand the reply to the smarthost (it is kicked at once).
RELAY_WAIT = 20.0


def original_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Bob Remote <{REMOTE}>"
    msg["To"] = "Ann Example <ann@natsync.test>"
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = "<q1-report@remote.test>"
    msg["Date"] = "Tue, 24 Nov 2026 09:30:00 +0000"
    msg.set_content("Plain body: the numbers are attached.\n")
    msg.add_alternative(
        "<html><body><p>HTML body: the <b>numbers</b> are attached.</p></body></html>\n",
        subtype="html",
    )
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP requires


def reply_message(dep: Deployment) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Ann Example <{dep.email}>"
    msg["To"] = REMOTE
    msg["Subject"] = f"Re: {SUBJECT}"
    msg.set_content("Thanks, got it.\n")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP requires


def smtp_send(dep: Deployment, raw: bytes) -> None:
    with smtplib.SMTP(dep.smtp_host, dep.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail(REMOTE, [dep.email], raw)
    assert refused == {}


class Wire:
    """Every response body the server sent, to be read again by libwbxml."""

    def __init__(self) -> None:
        self.bodies: list[tuple[Command, bytes]] = []

    def __call__(self, command: Command, response: Response) -> None:
        if response.body and response.tree is not None:
            self.bodies.append((command, response.body))

    def check_with_libwbxml(self) -> None:
        assert self.bodies
        for _command, body in self.bodies:
            assert_libwbxml_decodes(body)


def phone(dep: Deployment, device_id: str, wire: Wire, **kw: object) -> EASClient:
    return EASClient(
        dep.url,
        dep.user,
        dep.password,
        ca_file=dep.ca_file,
        device_id=device_id,
        device_type="iPhone",
        on_response=wire,
        **kw,  # type: ignore[arg-type]
    )


async def test_mail_roundtrip_over_tls(tmp_path: Path) -> None:
    wire = Wire()
    async with deployment(tmp_path) as dep:
        await asyncio.to_thread(smtp_send, dep, original_message())
        async with (
            phone(dep, "E2EPHONEPLAIN", wire) as ann,
            phone(dep, "E2EPHONEHTML", wire, query_form="base64") as second,
            phone(dep, "E2EPHONEMIME", wire) as third,
        ):
            # -- version, provisioning, hierarchy
            options = await ann.options()
            assert "16.1" in options.versions
            assert ann.version == "16.1"
            key = await ann.provision()
            assert key != 0
            assert ann.policy is not None
            await ann.folder_sync()
            names = {f.display_name for f in ann.state.folders.values()}
            assert {"Inbox", "Drafts", "Deleted Items", "Sent Items", "Outbox"} <= names
            inbox = ann.folder(type=FolderType.INBOX).server_id

            # -- plain body
            synced = await ann.sync(
                inbox, body_preference=[BodyPreference(BodyType.PLAIN, truncation_size=32 * 1024)]
            )
            (item,) = synced.added
            assert item.subject == SUBJECT
            assert REMOTE in item.sender
            assert item.read is False
            assert item.body is not None
            assert item.body.type == BodyType.PLAIN
            assert "the numbers are attached" in item.body.data
            assert "<b>" not in item.body.data
            (attachment,) = item.attachments
            assert attachment.display_name == "report.pdf"

            # -- the attachment, by FileReference
            fetched = await ann.item_operations_fetch(file_reference=attachment.file_reference)
            assert fetched.data == PDF
            assert fetched.content_type.startswith("application/pdf")

            # -- HTML body, second device (base64 query form)
            await second.folder_sync()
            html = await second.sync(inbox, body_preference=[BodyType.HTML])
            (html_item,) = html.added
            assert html_item.server_id == item.server_id
            assert html_item.body is not None
            assert html_item.body.type == BodyType.HTML
            assert "<b>numbers</b>" in html_item.body.data

            # -- MIME body, third device
            await third.folder_sync()
            mime = await third.sync(inbox, body_preference=[BodyType.MIME])
            (mime_item,) = mime.added
            assert mime_item.body is not None
            assert mime_item.body.type == BodyType.MIME
            parsed = message_from_bytes(mime_item.body.data.encode(), policy=policy.default)
            assert parsed["Subject"] == SUBJECT
            assert [a.get_filename() for a in parsed.iter_attachments()] == ["report.pdf"]

            # -- read, new folder, move
            await ann.change_read(inbox, item.server_id, True)
            archive = await ann.folder_create("Archive")
            moved = await ann.move_items([item.server_id], inbox, archive.server_id)
            new_id = moved[item.server_id]
            assert new_id

            # -- SmartReply reaches the smarthost; a copy lands in Sent Items
            await ann.smart_reply(archive.server_id, new_id, reply_message(dep), save_in_sent=True)
            await asyncio.wait_for(dep.smarthost.arrived.wait(), RELAY_WAIT)
            ((mail_from, rcpts, content),) = dep.smarthost.messages
            assert rcpts == [REMOTE]
            assert dep.email in mail_from
            relayed = message_from_bytes(content, policy=policy.default)
            assert relayed["Subject"] == f"Re: {SUBJECT}"
            assert "q1-report@remote.test" in (relayed["In-Reply-To"] or "")
            assert "Thanks, got it." in content.decode("utf-8", "replace")

            # -- the second device sees the same state
            await second.folder_sync()
            assert second.folder(name="Archive").server_id == archive.server_id
            gone = await second.sync(inbox)
            assert item.server_id in [*gone.deleted, *gone.soft_deleted]
            assert not second.state.collection(inbox).server_ids

            # A retransmitted Sync with the previous SyncKey gets the same answer.
            initial = await second.request(Command.Sync, p.sync_request(archive.server_id, "0"))
            assert initial.tree is not None
            (first_page,) = p.parse_sync(initial.tree)
            request = p.sync_request(
                archive.server_id,
                first_page.sync_key,
                window_size=50,
                prefs=[p.BodyPreference(BodyType.PLAIN)],
            )
            answer = await second.request(Command.Sync, request)
            again = await second.request(Command.Sync, request)
            assert answer.tree is not None
            assert again.tree == answer.tree
            (page,) = p.parse_sync(answer.tree)
            assert [a.server_id for a in page.added] == [new_id]
            assert page.added[0].read is True
            # continue as a phone from that answer: later changes arrive as Change
            coll = second.state.collection(archive.server_id)
            coll.sync_key = page.sync_key
            coll.server_ids.add(new_id)
            await ann.sync(archive.server_id)
            await ann.sync(archive.server_id, changes=[ClientChange(new_id, flag_status=2)])
            changed = await second.sync(archive.server_id)
            assert not changed.added
            assert [c.server_id for c in changed.changed] == [new_id]
            assert changed.changed[0].flag_status == 2

            sent = second.folder(type=FolderType.SENT_ITEMS).server_id
            sent_items = await second.sync(sent)
            assert [i.subject for i in sent_items.added] == [f"Re: {SUBJECT}"]

    wire.check_with_libwbxml()


async def test_estimate_search_settings_and_ping(tmp_path: Path) -> None:
    wire = Wire()
    async with deployment(tmp_path) as dep, phone(dep, "E2EPHONEMISC", wire) as ann:
        await ann.folder_sync()
        inbox = ann.folder(type=FolderType.INBOX).server_id
        await ann.sync(inbox)
        assert await ann.get_item_estimate(inbox) == 0
        await asyncio.to_thread(smtp_send, dep, original_message())
        assert await ann.get_item_estimate(inbox) == 1

        found = await ann.search("Quarterly", collection_id=inbox)
        assert [i.subject for _c, _l, i in found.items] == [SUBJECT]

        settings = await ann.settings(user_information=True, device_information=True)
        addresses = {"PrimarySmtpAddress", "SMTPAddress"}  # 14.1+ and older spellings
        assert dep.email in [el.text() for el in settings.iter() if el.tag in addresses]

        assert ann.server_options is not None
        if "Ping" not in ann.server_options.commands:
            pytest.skip("the server does not advertise Ping yet (the Direct Push issue)")
        await ann.sync(inbox)
        ping = asyncio.create_task(ann.ping([inbox], heartbeat=60))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(smtp_send, dep, original_message())
        assert await asyncio.wait_for(ping, 30) == [inbox]
    wire.check_with_libwbxml()


async def test_a_12_1_phone_provisions_on_449_and_sends_mime_bodies(tmp_path: Path) -> None:
    """EAS 12.1: HTTP 449 instead of Status 142, SendMail/SmartForward with raw MIME bodies."""
    wire = Wire()
    async with deployment(tmp_path) as dep:
        await asyncio.to_thread(smtp_send, dep, original_message())
        async with phone(dep, "E2EPHONE121", wire, preferred_version="12.1") as old:
            await old.folder_sync()  # answered 449 first: the client provisions and retries
            assert old.version == "12.1"
            assert old.state.policy_key != 0
            inbox = old.folder(type=FolderType.INBOX).server_id
            (item,) = (await old.sync(inbox)).added
            forward = EmailMessage()
            forward["From"] = dep.email
            forward["To"] = "carol@remote.test"
            forward["Subject"] = f"Fwd: {SUBJECT}"
            forward.set_content("See below.\n")
            await old.smart_forward(
                inbox, item.server_id, forward.as_bytes(policy=policy.SMTP), save_in_sent=False
            )
            await asyncio.wait_for(dep.smarthost.arrived.wait(), RELAY_WAIT)
            ((_sender, rcpts, content),) = dep.smarthost.messages
            assert rcpts == ["carol@remote.test"]
            forwarded = message_from_bytes(content, policy=policy.default)
            names = [part.get_filename() for part in forwarded.walk() if part.get_filename()]
            assert "report.pdf" in names  # the original travels with the forward
    wire.check_with_libwbxml()


async def test_remote_wipe_reaches_the_phone_and_its_acknowledgement_is_recorded(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from natsync.client import RemoteWipeError
    from natsync.store.api import WipeState

    async with deployment(tmp_path) as dep, phone(dep, "E2EPHONEWIPE", Wire()) as lost:
        await lost.folder_sync()

        def order_wipe(txn):  # type: ignore[no-untyped-def]
            user = txn.get_user(dep.user)
            device = txn.get_device(user.id, "E2EPHONEWIPE")
            txn.set_wipe_state(device.id, WipeState.PENDING, datetime.now(UTC))

        await dep.store.run(order_wipe)
        with pytest.raises(RemoteWipeError):
            await lost.folder_sync()
        assert lost.state.wiped
        assert not lost.state.folders

        def wipe_state(txn):  # type: ignore[no-untyped-def]
            user = txn.get_user(dep.user)
            return txn.get_device(user.id, "E2EPHONEWIPE").wipe_state

        assert await dep.store.run(wipe_state) == WipeState.ACKNOWLEDGED
