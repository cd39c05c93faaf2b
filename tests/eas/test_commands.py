"""ItemOperations, SendMail / SmartReply / SmartForward, MoveItems, GetItemEstimate, Settings,
Search, ResolveRecipients and the minimal Ping — each against the real SQLite store."""

from __future__ import annotations

import base64
import struct

import pytest

from natsync.eas import dispatch
from natsync.eas.context import KickRelay, Response
from natsync.eas.errors import HttpError
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode, encode
from tests.eas.helpers import Phone, collection, commands, deliver, folder_id, hold_asked, make_mail

IO = "ItemOperations"
CM = "ComposeMail"


def _phone(store: Store, version: str = "16.1") -> Phone:
    phone = Phone(store, version=version)
    phone.provision()
    phone.folder_sync()
    return phone


def _subjects(store: Store, ftype: FolderType, user: str = "alice") -> list[str]:
    def run(txn: Txn) -> list[str]:
        u = txn.get_user(user)
        assert u is not None
        folder = txn.folder_by_type(u.id, ftype)
        msgs = txn.get_messages(u.id, list(txn.message_versions(folder.id)))
        return sorted(m.subject for m in msgs)

    return store.run_sync(run)


def test_itemoperations_fetch_message_and_attachment(store: Store) -> None:
    sid = deliver(store, make_mail("with file", "see attached", attachment=b"\x00\x01payload"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    fetch = E(
        IO,
        "Fetch",
        E(IO, "Store", "Mailbox"),
        E("AirSync", "CollectionId", inbox),
        E("AirSync", "ServerId", sid),
        E(IO, "Options", E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", 1))),
    )
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", fetch))
    assert tree.child_text("Status") == "1"
    got = tree.find("Response").find("Fetch")  # type: ignore[union-attr]
    assert got is not None
    assert got.child_text("Status") == "1"
    props = got.find("Properties")
    assert props is not None
    assert props.child_text("Subject") == "with file"
    attachment = props.find("Attachments").find("Attachment")  # type: ignore[union-attr]
    ref = attachment.child_text("FileReference")  # type: ignore[union-attr]
    assert ref

    by_ref = E(IO, "Fetch", E(IO, "Store", "Mailbox"), E("AirSyncBase", "FileReference", ref))
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", by_ref))
    data = tree.find("Response").find("Fetch").find("Properties").child_text("Data")  # type: ignore[union-attr]
    assert base64.b64decode(data or "") == b"\x00\x01payload"

    # Multipart: the data travels as a binary part after the WBXML.
    response = phone.call("ItemOperations", E(IO, "ItemOperations", by_ref), accept_multipart=True)
    assert response.content_type == "application/vnd.ms-sync.multipart"
    count = struct.unpack_from("<i", response.body)[0]
    assert count == 2
    (off0, len0), (off1, len1) = (
        struct.unpack_from("<ii", response.body, 4 + 8 * i) for i in range(2)
    )
    wbxml = decode(response.body[off0 : off0 + len0])
    part = wbxml.find("Response").find("Fetch").find("Properties").child_text("Part")  # type: ignore[union-attr]
    assert part == "1"
    assert response.body[off1 : off1 + len1] == b"\x00\x01payload"

    missing = E(IO, "Fetch", E(IO, "Store", "Mailbox"), E("AirSyncBase", "FileReference", "nope"))
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", missing))
    assert tree.find("Response").find("Fetch").child_text("Status") == "15"  # type: ignore[union-attr]

    # A Range of thousands of digits is no range: the Fetch's own Status, not a traceback
    huge = E(
        IO,
        "Fetch",
        E(IO, "Store", "Mailbox"),
        E("AirSyncBase", "FileReference", ref),
        E(IO, "Options", E(IO, "Range", "0-" + "9" * 5000)),
    )
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", huge))
    assert tree.find("Response").find("Fetch").child_text("Status") not in (None, "1")  # type: ignore[union-attr]
    ranged = E(
        IO,
        "Fetch",
        E(IO, "Store", "Mailbox"),
        E("AirSyncBase", "FileReference", ref),
        E(IO, "Options", E(IO, "Range", "2-4")),
    )
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", ranged))
    props = tree.find("Response").find("Fetch").find("Properties")  # type: ignore[union-attr]
    assert base64.b64decode(props.child_text("Data") or "") == b"pay"  # type: ignore[union-attr]


def test_empty_folder_contents(store: Store) -> None:
    deliver(store, make_mail("trash me", "x"), folder=FolderType.DELETED_ITEMS)
    trash = folder_id(store, FolderType.DELETED_ITEMS)
    phone = _phone(store)
    op = E(IO, "EmptyFolderContents", E("AirSync", "CollectionId", trash))
    tree = phone.tree("ItemOperations", E(IO, "ItemOperations", op))
    assert tree.find("Response").find("EmptyFolderContents").child_text("Status") == "1"  # type: ignore[union-attr]
    assert _subjects(store, FolderType.DELETED_ITEMS) == []


def _outgoing(subject: str, to: str = "alice@example.test") -> bytes:
    return make_mail(subject, "sent from the phone", sender="alice@example.test", to=to)


def test_sendmail_delivers_locally_and_saves_copy(store: Store) -> None:
    phone = _phone(store)
    body = E(
        CM,
        "SendMail",
        E(CM, "ClientId", "c1"),
        E(CM, "SaveInSentItems"),
        E(CM, "Mime", _outgoing("to myself")),
    )
    response = phone.call("SendMail", body)
    assert response.http_status == 200
    assert response.body == b""
    assert _subjects(store, FolderType.INBOX) == ["to myself"]
    assert _subjects(store, FolderType.SENT_ITEMS) == ["to myself"]
    # A retransmission (same ClientId) sends nothing again.
    phone.call("SendMail", body)
    assert _subjects(store, FolderType.INBOX) == ["to myself"]


def test_sendmail_remote_recipient_is_queued(store: Store) -> None:
    phone = _phone(store)
    body = E(CM, "SendMail", E(CM, "ClientId", "c2"), E(CM, "Mime", _outgoing("out", "x@far.test")))
    response = phone.call("SendMail", body)
    assert KickRelay() in response.effects
    assert _subjects(store, FolderType.SENT_ITEMS) == []


def test_sendmail_12_1_raw_mime(store: Store) -> None:
    phone = _phone(store, "12.1")
    response = phone.call("SendMail", raw=_outgoing("old style"), save_in_sent=True)
    assert response.http_status == 200
    assert _subjects(store, FolderType.INBOX) == ["old style"]
    assert _subjects(store, FolderType.SENT_ITEMS) == ["old style"]


def test_sendmail_garbage_is_refused_and_changes_nothing(store: Store) -> None:
    phone = _phone(store)
    body = E(
        CM, "SendMail", E(CM, "ClientId", "c3"), E(CM, "SaveInSentItems"), E(CM, "Mime", b"no")
    )
    tree = phone.tree("SendMail", body)
    assert tree.child_text("Status") in ("107", "119")
    assert _subjects(store, FolderType.SENT_ITEMS) == []


def test_smartreply_quotes_the_original(store: Store) -> None:
    original = deliver(store, make_mail("question", "what time?", sender="alice@example.test"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    reply = make_mail("Re: question", "noon", sender="alice@example.test", to="alice@example.test")
    body = E(
        CM,
        "SmartReply",
        E(CM, "ClientId", "r1"),
        E(CM, "Source", E(CM, "FolderId", inbox), E(CM, "ItemId", original)),
        E(CM, "Mime", reply),
    )
    response = phone.call("SmartReply", body)
    assert response.http_status == 200
    assert response.body == b""
    assert "Re: question" in _subjects(store, FolderType.INBOX)

    def raw_reply(txn: Txn) -> bytes:
        u = txn.get_user("alice")
        assert u is not None
        folder = txn.folder_by_type(u.id, FolderType.INBOX)
        for m in txn.get_messages(u.id, list(txn.message_versions(folder.id))):
            if m.subject == "Re: question":
                return txn.raw_message(m.id)
        raise AssertionError("no reply")

    raw = store.run_sync(raw_reply)
    assert b"what time?" in raw
    assert b"In-Reply-To" in raw
    missing = E(CM, "SmartReply", E(CM, "Source", E(CM, "ItemId", "1:999")), E(CM, "Mime", reply))
    assert phone.tree("SmartReply", missing).child_text("Status") == "150"


def test_moveitems(store: Store) -> None:
    sid = deliver(store, make_mail("move me", "x"))
    inbox = folder_id(store, FolderType.INBOX)
    trash = folder_id(store, FolderType.DELETED_ITEMS)
    phone = _phone(store)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    key = collection(phone.sync(inbox, key)).child_text("SyncKey") or ""
    mv = "Move"
    body = E(
        mv,
        "MoveItems",
        E(mv, "Move", E(mv, "SrcMsgId", sid), E(mv, "SrcFldId", inbox), E(mv, "DstFldId", trash)),
        E(
            mv,
            "Move",
            E(mv, "SrcMsgId", "1:999"),
            E(mv, "SrcFldId", inbox),
            E(mv, "DstFldId", trash),
        ),
        E(mv, "Move", E(mv, "SrcMsgId", sid), E(mv, "SrcFldId", inbox), E(mv, "DstFldId", "77")),
    )
    tree = phone.tree("MoveItems", body)
    ok, bad_src, bad_dst = tree.findall("Response")
    assert ok.child_text("Status") == "3"
    new_id = ok.child_text("DstMsgId") or ""
    assert new_id.startswith(trash + ":")
    assert bad_src.child_text("Status") == "1"
    assert bad_dst.child_text("Status") == "1"  # the source item already moved
    assert _subjects(store, FolderType.DELETED_ITEMS) == ["move me"]
    # The mover is not told to delete what it moved itself.
    assert commands(collection(phone.sync(inbox, key)), "Delete") == []


def test_getitemestimate(store: Store) -> None:
    for i in range(4):
        deliver(store, make_mail(f"m{i}", "x"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    gie = "GetItemEstimate"

    def estimate(sync_key: str, cid: str = inbox) -> Element:
        coll = E(gie, "Collection", E("AirSync", "SyncKey", sync_key), E(gie, "CollectionId", cid))
        tree = phone.tree(gie, E(gie, gie, E(gie, "Collections", coll)))
        response = tree.find("Response")
        assert response is not None
        return response

    good = estimate(key)
    assert good.child_text("Status") == "1"
    assert good.find("Collection").child_text("Estimate") == "4"  # type: ignore[union-attr]
    assert estimate("0").child_text("Status") == "3"
    assert estimate("{00000000}3").child_text("Status") == "4"
    assert estimate(key, "999").child_text("Status") == "2"


def test_settings(store: Store) -> None:
    phone = _phone(store)
    st = "Settings"
    body = E(
        st,
        st,
        E(
            st,
            "DeviceInformation",
            E(st, "Set", E(st, "Model", "Pixel 9"), E(st, "OS", "Android 16")),
        ),
        E(st, "UserInformation", E(st, "Get")),
        E(
            st,
            "Oof",
            E(
                st,
                "Set",
                E(st, "OofState", 1),
                E(
                    st,
                    "OofMessage",
                    E(st, "AppliesToInternal"),
                    E(st, "Enabled", 1),
                    E(st, "ReplyMessage", "Away"),
                    E(st, "BodyType", "Text"),
                ),
            ),
        ),
    )
    tree = phone.tree(st, body)
    assert tree.child_text("Status") == "1"
    assert tree.find("DeviceInformation").child_text("Status") == "1"  # type: ignore[union-attr]
    emails = [el.text() for el in tree.iter() if el.tag == "PrimarySmtpAddress"]
    assert emails == ["alice@example.test"]

    def device(txn: Txn) -> tuple[str, str]:
        u = txn.get_user("alice")
        assert u is not None
        d = txn.get_device(u.id, "phone1")
        assert d is not None
        return d.model, d.os

    assert store.run_sync(device) == ("Pixel 9", "Android 16")
    got = phone.tree(st, E(st, st, E(st, "Oof", E(st, "Get", E(st, "BodyType", "Text")))))
    oof = got.find("Oof").find("Get")  # type: ignore[union-attr]
    assert oof is not None
    assert oof.child_text("OofState") == "1"
    assert [el.text() for el in oof.iter() if el.tag == "ReplyMessage"] == ["Away"]
    old = _phone(store, "12.1")
    old_tree = old.tree(st, E(st, st, E(st, "UserInformation", E(st, "Get"))))
    assert [el.text() for el in old_tree.iter() if el.tag == "SMTPAddress"] == [
        "alice@example.test"
    ]


def test_search_mailbox_and_gal(store: Store) -> None:
    deliver(store, make_mail("quarterly report", "numbers inside"))
    deliver(store, make_mail("lunch", "pizza"))
    phone = _phone(store)
    se = "Search"
    query = E(
        se, "Query", E(se, "And", E("AirSync", "Class", "Email"), E(se, "FreeText", "report"))
    )
    body = E(
        se,
        se,
        E(se, "Store", E(se, "Name", "Mailbox"), query, E(se, "Options", E(se, "Range", "0-9"))),
    )
    tree = phone.tree(se, body)
    store_el = tree.find("Response").find("Store")  # type: ignore[union-attr]
    assert store_el is not None
    assert store_el.child_text("Status") == "1"
    results = store_el.findall("Result")
    assert len(results) == 1
    assert results[0].find("Properties").child_text("Subject") == "quarterly report"  # type: ignore[union-attr]
    assert store_el.child_text("Total") == "1"
    gal = E(se, se, E(se, "Store", E(se, "Name", "GAL"), E(se, "Query", "ali")))
    gal_tree = phone.tree(se, gal)
    assert [el.text() for el in gal_tree.iter() if el.tag == "EmailAddress"] == [
        "alice@example.test"
    ]


def test_resolverecipients(store: Store) -> None:
    phone = _phone(store)
    rr = "ResolveRecipients"
    body = E(rr, rr, E(rr, "To", "alice@example.test"), E(rr, "To", "nobody@nowhere.test"))
    tree = phone.tree(rr, body)
    found, missing = tree.findall("Response")
    assert found.child_text("Status") == "1"
    assert found.find("Recipient").child_text("EmailAddress") == "alice@example.test"  # type: ignore[union-attr]
    assert missing.child_text("Status") == "4"


def test_ping_answers_at_once_when_changed_else_waits(store: Store) -> None:
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    collection(phone.sync(inbox, key))
    pg = "Ping"
    body = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 300),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    waiting = phone.call("Ping", body)
    wait = hold_asked(waiting)
    assert wait is not None
    assert wait.heartbeat == 300
    deliver(store, make_mail("news", "x"))
    now = phone.tree("Ping", body)
    assert now.child_text("Status") == "2"
    assert [f.text() for f in now.find("Folders").findall("Folder")] == [inbox]  # type: ignore[union-attr]
    low = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 5),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox))),
    )
    bad = phone.tree("Ping", low)
    assert bad.child_text("Status") == "5"
    assert bad.child_text("HeartbeatInterval") == "60"
    missing = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 300),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", "999"))),
    )
    assert phone.tree("Ping", missing).child_text("Status") == "7"


def test_ping_heartbeat_digits(store: Store) -> None:
    """A HeartbeatInterval must be ASCII digits ("²" passes str.isdigit but not int()): else
    Status 4. Leading zeros are read through; thousands of digits are too long, Status 5."""
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    collection(phone.sync(inbox, key))
    pg = "Ping"

    def ping(heartbeat: str) -> Response:
        folders = E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email")))
        return phone.call("Ping", E(pg, "Ping", E(pg, "HeartbeatInterval", heartbeat), folders))

    for bad in ("²", "3²0", "-300", "3 00"):
        assert decode(ping(bad).body).child_text("Status") == "4", bad
    long = decode(ping("9" * 5000).body)
    assert long.child_text("Status") == "5"
    assert long.child_text("HeartbeatInterval") == "3540"
    wait = hold_asked(ping("0000000000000000000300"))
    assert wait is not None
    assert wait.heartbeat == 300


def _file_reference(store: Store, sid: str) -> str:
    def run(txn: Txn) -> str:
        u = txn.get_user("alice")
        assert u is not None
        msg = txn.get_message(u.id, sid)
        assert msg is not None
        return msg.attachments[0].file_reference

    return store.run_sync(run)


def test_getattachment_12_1(store: Store) -> None:
    sid = deliver(store, make_mail("file", "x", attachment=b"\x07\x08bytes"))
    ref = _file_reference(store, sid)
    old = _phone(store, "14.0")
    response = old.call("GetAttachment", attachment_name=ref)
    assert response.body == b"\x07\x08bytes"
    assert response.content_type == "application/octet-stream"
    assert old.call("GetAttachment", attachment_name="nope").http_status == 500
    new = _phone(store, "16.1")
    assert new.call("GetAttachment", attachment_name=ref).http_status == 400


def test_smartforward_includes_attachments(store: Store) -> None:
    original = deliver(store, make_mail("report", "see file", attachment=b"ATTACHED-BYTES"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    fwd = make_mail("Fwd: report", "FYI", sender="alice@example.test", to="alice@example.test")
    body = E(
        CM,
        "SmartForward",
        E(CM, "ClientId", "f1"),
        E(CM, "SaveInSentItems"),
        E(CM, "Source", E(CM, "FolderId", inbox), E(CM, "ItemId", original)),
        E(CM, "Mime", fwd),
    )
    response = phone.call("SmartForward", body)
    assert response.http_status == 200
    assert response.body == b""
    assert "Fwd: report" in _subjects(store, FolderType.SENT_ITEMS)

    def sent_raw(txn: Txn) -> bytes:
        u = txn.get_user("alice")
        assert u is not None
        folder = txn.folder_by_type(u.id, FolderType.SENT_ITEMS)
        (m,) = txn.get_messages(u.id, list(txn.message_versions(folder.id)))
        return txn.raw_message(m.id)

    raw = store.run_sync(sent_raw)
    assert b"data.bin" in raw


def test_smartreply_12_1_query_parameters(store: Store) -> None:
    original = deliver(store, make_mail("old question", "when?", sender="alice@example.test"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store, "12.1")
    reply = make_mail(
        "Re: old question", "now", sender="alice@example.test", to="alice@example.test"
    )
    response = phone.call(
        "SmartReply", raw=reply, item_id=original, collection_id=inbox, save_in_sent=True
    )
    assert response.http_status == 200
    assert _subjects(store, FolderType.SENT_ITEMS) == ["Re: old question"]


def test_search_or_and_collection_scope(store: Store) -> None:
    deliver(store, make_mail("apples", "fruit"))
    deliver(store, make_mail("bananas", "fruit"))
    deliver(store, make_mail("carrots", "vegetable"), folder=FolderType.DELETED_ITEMS)
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)
    se = "Search"

    def subjects(query: Element, options: Element | None = None) -> list[str]:
        store_el = E(se, "Store", E(se, "Name", "Mailbox"), query)
        if options is not None:
            store_el.append(options)
        tree = phone.tree(se, E(se, se, store_el))
        return sorted(el.text() for el in tree.iter() if el.tag == "Subject")

    either = E(se, "Query", E(se, "Or", E(se, "FreeText", "apples"), E(se, "FreeText", "carrots")))
    assert subjects(either) == ["apples", "carrots"]
    scoped = E(
        se,
        "Query",
        E(se, "And", E("AirSync", "CollectionId", inbox), E(se, "FreeText", "fruit")),
    )
    assert subjects(scoped) == ["apples", "bananas"]
    first_only = subjects(scoped, E(se, "Options", E(se, "Range", "0-0")))
    assert len(first_only) == 1
    huge = E(
        se,
        se,
        E(
            se,
            "Store",
            E(se, "Name", "Mailbox"),
            scoped,
            E(se, "Options", E(se, "Range", "0-" + "9" * 5000)),
        ),
    )
    answer = phone.tree(se, huge)
    assert answer.find("Response").find("Store").child_text("Status") not in (None, "1")  # type: ignore[union-attr]


def test_empty_folder_contents_with_subfolders(store: Store) -> None:
    trash = folder_id(store, FolderType.DELETED_ITEMS)
    phone = _phone(store)
    fh = "FolderHierarchy"
    key = phone.folder_sync().child_text("SyncKey") or ""
    created = phone.tree(
        "FolderCreate",
        E(
            fh,
            "FolderCreate",
            E(fh, "SyncKey", key),
            E(fh, "ParentId", trash),
            E(fh, "DisplayName", "old stuff"),
            E(fh, "Type", 12),
        ),
    )
    assert created.child_text("Status") == "1"
    op = E(
        IO,
        "EmptyFolderContents",
        E("AirSync", "CollectionId", trash),
        E(IO, "Options", E(IO, "DeleteSubFolders")),
    )
    phone.tree("ItemOperations", E(IO, "ItemOperations", op))

    def names(txn: Txn) -> list[str]:
        u = txn.get_user("alice")
        assert u is not None
        return [f.display_name for f in txn.list_folders(u.id)]

    assert "old stuff" not in store.run_sync(names)


def test_ping_asks_for_foldersync_after_a_hierarchy_change(store: Store) -> None:
    inbox = folder_id(store, FolderType.INBOX)
    phone = _phone(store)  # has run FolderSync
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    collection(phone.sync(inbox, key))
    pg = "Ping"
    body = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 300),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    assert hold_asked(phone.call("Ping", body)) is not None

    def add_folder(txn: Txn) -> None:
        u = txn.get_user("alice")
        assert u is not None
        txn.create_folder(u.id, "0", "Made elsewhere", FolderType.USER_MAIL)

    store.run_sync(add_folder)
    assert phone.tree("Ping", body).child_text("Status") == "7"
    phone.folder_sync(phone.folder_sync().child_text("SyncKey") or "")
    assert hold_asked(phone.call("Ping", body)) is not None


def test_a_user_removed_after_authentication_is_answered_401(store: Store) -> None:
    """The server hands the command the user its authentication read (no second read): a user
    removed in between is still refused, by the device's write finding them gone."""
    phone = Phone(store)
    account = store.run_sync(lambda txn: txn.get_user(phone.user))
    assert account is not None
    store.run_sync(lambda txn: txn.remove_user(account.id))
    request = phone.request("FolderSync")
    body = E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))

    def run(txn: Txn) -> object:
        return dispatch.handle(
            txn, request, phone.user, body, encode(body), phone.now, phone.config,
            rng=phone.rng, account=account,
        )  # fmt: skip

    with pytest.raises(HttpError) as refused:
        store.run_sync(run)
    assert refused.value.http_status == 401
