"""Drafts on a 16.x phone (MS-ASCMD 2.2.3.7.2 / 2.2.3.24, MS-ASEMAIL 2.2.2.69 Send, MS-ASAIRS
2.2.2.2 / 2.2.2.21 attachment Add / Delete): every writable field added and changed, attachments
added and deleted, Send through the SendMail path, retransmission applying nothing twice, and a
second phone seeing the same draft. Every answer is also decoded by libwbxml."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode
from tests.eas.helpers import Phone, collection, commands, folder_id
from tests.libwbxml import assert_libwbxml_decodes

NS = "AirSync"
ASB = "AirSyncBase"


def _sync(phone: Phone, folder: str, key: str, cmds: list[Element] | None = None) -> Element:
    ns = "AirSync"
    coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", folder))
    coll.append(E(ns, "Options", E(ASB, "BodyPreference", E(ASB, "Type", 1))))
    if cmds:
        coll.append(E(ns, "Commands", *cmds))
    response = phone.call("Sync", E(ns, "Sync", E(ns, "Collections", coll)))
    assert response.http_status == 200
    assert_libwbxml_decodes(response.body)
    return collection(decode(response.body))


def _ready(store: Store, device: str = "phone1") -> tuple[Phone, str, str]:
    phone = Phone(store, device_id=device)
    phone.provision()
    phone.folder_sync()
    drafts = folder_id(store, FolderType.DRAFTS)
    key = _sync(phone, drafts, "0").child_text("SyncKey") or ""
    return phone, drafts, key


def _body(text: str, kind: int = 1) -> Element:
    return E(ASB, "Body", E(ASB, "Type", kind), E(ASB, "Data", text))


def _attach(client_id: str, name: str, data: bytes) -> Element:
    return E(
        ASB,
        "Add",
        E(ASB, "ClientId", client_id),
        Element(ASB, "Content", [], data),
        E(ASB, "DisplayName", name),
        E(ASB, "Method", 1),
        E(ASB, "ContentType", "text/plain"),
    )


def _stored(store: Store, folder: FolderType) -> list[tuple[str, EmailMessage]]:
    def run(txn: Txn) -> list[tuple[str, EmailMessage]]:
        user = txn.get_user("alice")
        assert user is not None
        f = txn.folder_by_type(user.id, folder)
        out = []
        for msg in txn.get_messages(user.id, list(txn.message_versions(f.id))):
            parsed = email.message_from_bytes(txn.raw_message(msg.id), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            out.append((msg.server_id, parsed))
        return out

    return store.run_sync(run)


def _attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        content = part.get_content()
        out[part.get_filename() or ""] = content.encode() if isinstance(content, str) else content
    return out


def test_draft_add_change_every_field_and_attachments(store: Store) -> None:
    phone, drafts, key = _ready(store)
    add = E(
        NS,
        "Add",
        E(NS, "ClientId", "d1"),
        E(
            NS,
            "ApplicationData",
            E("Email", "To", "bob@remote.test"),
            E("Email", "Cc", "carol@remote.test"),
            E("Email2", "Bcc", "dave@remote.test"),
            E("Email", "Subject", "first try"),
            E("Email", "Importance", 2),
            _body("half a thought"),
            E(
                ASB,
                "Attachments",
                _attach("a1", "notes.txt", b"one"),
                _attach("a2", "b.txt", b"two"),
            ),
        ),
    )
    coll = _sync(phone, drafts, key, [add])
    reply = coll.find("Responses").find("Add")  # type: ignore[union-attr]
    assert reply is not None
    assert reply.child_text("Status") == "1"
    sid = reply.child_text("ServerId") or ""
    refs = {
        a.child_text("ClientId"): a.child_text("FileReference")
        for a in reply.find("ApplicationData").find("Attachments").findall("Attachment")  # type: ignore[union-attr]
    }
    assert set(refs) == {"a1", "a2"}
    assert all(refs.values())
    assert commands(coll, "Add") == []  # not echoed back to its writer
    ((stored_sid, msg),) = _stored(store, FolderType.DRAFTS)
    assert stored_sid == sid
    assert msg["To"] == "bob@remote.test"
    assert msg["Cc"] == "carol@remote.test"
    assert msg["Bcc"] == "dave@remote.test"
    assert msg["Subject"] == "first try"
    assert msg["Importance"] == "High"
    assert "half a thought" in msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert _attachments(msg) == {"notes.txt": b"one", "b.txt": b"two"}

    # Change: new To, no Cc, Subject, HTML body, Importance low; drop one attachment, add one.
    change = E(
        NS,
        "Change",
        E(NS, "ServerId", sid),
        E(
            NS,
            "ApplicationData",
            E("Email", "To", "erin@remote.test"),
            E("Email", "Cc", ""),
            E("Email", "Subject", "second try"),
            E("Email", "Importance", 0),
            _body("<p>whole thought</p>", 2),
            E(
                ASB,
                "Attachments",
                E(ASB, "Delete", E(ASB, "FileReference", refs["a1"])),
                _attach("a3", "c.txt", b"three"),
            ),
        ),
    )
    key = coll.child_text("SyncKey") or ""
    coll = _sync(phone, drafts, key, [change])
    answered = coll.find("Responses").find("Change")  # type: ignore[union-attr]
    assert answered is not None
    assert answered.child_text("Status") == "1"
    (attachment,) = answered.find("ApplicationData").find("Attachments").findall("Attachment")  # type: ignore[union-attr]
    assert attachment.child_text("ClientId") == "a3"
    # The same answer replaces the old ServerId with the new draft (and its attachments).
    assert [d.child_text("ServerId") for d in commands(coll, "Delete")] == [sid]
    (new_add,) = commands(coll, "Add")
    new_sid = new_add.child_text("ServerId")
    listed = new_add.find("ApplicationData").find("Attachments").findall("Attachment")  # type: ignore[union-attr]
    assert attachment.child_text("FileReference") in [a.child_text("FileReference") for a in listed]
    ((stored_sid, msg),) = _stored(store, FolderType.DRAFTS)
    assert stored_sid == new_sid
    assert msg["To"] == "erin@remote.test"
    assert msg["Cc"] is None
    assert msg["Bcc"] == "dave@remote.test"  # not named in the Change: kept
    assert msg["Subject"] == "second try"
    assert msg["Importance"] == "Low"
    assert "whole thought" in msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert _attachments(msg) == {"b.txt": b"two", "c.txt": b"three"}

    # A retransmission of that request (same SyncKey) is answered again and changes nothing.
    again = _sync(phone, drafts, key, [change])
    assert again.child_text("SyncKey") == coll.child_text("SyncKey")
    assert [s for s, _ in _stored(store, FolderType.DRAFTS)] == [new_sid]


def test_second_phone_sees_the_changed_draft_with_attachments(store: Store) -> None:
    one, drafts, key_one = _ready(store, "phone1")
    two, _, key_two = _ready(store, "phone2")
    add = E(
        NS, "Add", E(NS, "ClientId", "d1"),
        E(NS, "ApplicationData", E("Email", "Subject", "shared"), _body("v1")),
    )  # fmt: skip
    coll = _sync(one, drafts, key_one, [add])
    sid = coll.find("Responses").find("Add").child_text("ServerId")  # type: ignore[union-attr]
    change = E(
        NS, "Change", E(NS, "ServerId", sid),
        E(NS, "ApplicationData", _body("v2"), E(ASB, "Attachments", _attach("x", "x.txt", b"X"))),
    )  # fmt: skip
    _sync(one, drafts, coll.child_text("SyncKey") or "", [change])
    seen = _sync(two, drafts, key_two)
    (added,) = commands(seen, "Add")
    data = added.find("ApplicationData")
    assert data is not None
    assert data.child_text("Subject") == "shared"
    assert "v2" in (data.find("Body").child_text("Data") or "")  # type: ignore[union-attr]
    (att,) = data.find("Attachments").findall("Attachment")  # type: ignore[union-attr]
    assert att.child_text("DisplayName") == "x.txt"


def test_send_from_drafts_goes_out_lands_in_sent_and_leaves_drafts(store: Store) -> None:
    phone, drafts, key = _ready(store)
    add = E(
        NS, "Add", E(NS, "ClientId", "d1"),
        E(NS, "ApplicationData", E("Email", "To", "alice@example.test"),
          E("Email", "Subject", "to myself"), _body("draft")),
    )  # fmt: skip
    coll = _sync(phone, drafts, key, [add])
    sid = coll.find("Responses").find("Add").child_text("ServerId")  # type: ignore[union-attr]
    send = E(
        NS, "Change", E(NS, "ServerId", sid),
        E(NS, "ApplicationData", _body("final words"), Element("Email2", "Send")),
    )  # fmt: skip
    coll = _sync(phone, drafts, coll.child_text("SyncKey") or "", [send])
    assert coll.find("Responses") is None  # success, nothing to tell
    assert [d.child_text("ServerId") for d in commands(coll, "Delete")] == [sid]
    assert commands(coll, "Add") == []
    assert _stored(store, FolderType.DRAFTS) == []
    ((_, sent),) = _stored(store, FolderType.SENT_ITEMS)
    assert sent["Subject"] == "to myself"
    inbox = _stored(store, FolderType.INBOX)  # delivered locally through the SendMail path
    assert [m["Subject"] for _, m in inbox] == ["to myself"]
    assert "final words" in inbox[0][1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    # The retransmitted Send sends nothing again.
    _sync(phone, drafts, key, [add])  # (an older key: its cached answer)
    assert len(_stored(store, FolderType.INBOX)) == 1


def test_add_with_send_sends_at_once_and_bad_drafts_are_status_6(store: Store) -> None:
    phone, drafts, key = _ready(store)
    add = E(
        NS, "Add", E(NS, "ClientId", "d1"),
        E(NS, "ApplicationData", E("Email", "To", "alice"), E("Email", "Subject", "quick"),
          _body("x"), Element("Email2", "Send")),
    )  # fmt: skip
    coll = _sync(phone, drafts, key, [add])
    reply = coll.find("Responses").find("Add")  # type: ignore[union-attr]
    assert reply.child_text("Status") == "1"
    assert reply.find("ServerId") is None
    assert [m["Subject"] for _, m in _stored(store, FolderType.INBOX)] == ["quick"]
    bad = E(
        NS, "Add", E(NS, "ClientId", "d2"),
        E(NS, "ApplicationData", E("Email", "Importance", 7)),
    )  # fmt: skip
    coll = _sync(phone, drafts, coll.child_text("SyncKey") or "", [bad])
    assert coll.find("Responses").find("Add").child_text("Status") == "6"  # type: ignore[union-attr]
    nobody = E(
        NS, "Add", E(NS, "ClientId", "d3"),
        E(NS, "ApplicationData", E("Email", "To", "nobody-here"), Element("Email2", "Send")),
    )  # fmt: skip
    coll = _sync(phone, drafts, coll.child_text("SyncKey") or "", [nobody])
    assert coll.find("Responses").find("Add").child_text("Status") == "6"  # type: ignore[union-attr]


def test_flagging_a_draft_keeps_its_server_id(store: Store) -> None:
    phone, drafts, key = _ready(store)
    add = E(
        NS, "Add", E(NS, "ClientId", "d1"),
        E(NS, "ApplicationData", E("Email", "Subject", "keep me"), _body("x")),
    )  # fmt: skip
    coll = _sync(phone, drafts, key, [add])
    sid = coll.find("Responses").find("Add").child_text("ServerId")  # type: ignore[union-attr]
    flag = E(
        NS, "Change", E(NS, "ServerId", sid),
        E(NS, "ApplicationData", E("Email", "Flag", E("Email", "Status", 2),
                                   E("Email", "FlagType", "Follow up"))),
    )  # fmt: skip
    coll = _sync(phone, drafts, coll.child_text("SyncKey") or "", [flag])
    assert commands(coll, "Delete") == []
    assert [s for s, _ in _stored(store, FolderType.DRAFTS)] == [sid]
