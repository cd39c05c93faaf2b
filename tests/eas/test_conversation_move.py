"""ItemOperations Move (MS-ASCMD 2.2.3.117.1): a conversation, named by the ConversationId the
phone got from Sync, moves to a folder; MoveAlways makes later messages of it go there at
delivery. Answers decoded by libwbxml too."""

from __future__ import annotations

from datetime import timedelta

from natsync.mail.relay import deliver_to_inbox
from natsync.mime import parse_message
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode
from tests.eas.helpers import NOW, Phone, collection, commands, deliver, folder_id, make_mail
from tests.libwbxml import assert_libwbxml_decodes

IO = "ItemOperations"


def _subjects(store: Store, folder: str) -> list[str]:
    def run(txn: Txn) -> list[str]:
        user = txn.get_user("alice")
        assert user is not None
        f = txn.get_folder(user.id, folder)
        assert f is not None
        return sorted(
            m.subject for m in txn.get_messages(user.id, list(txn.message_versions(f.id)))
        )

    return store.run_sync(run)


def _projects_folder(store: Store) -> str:
    def run(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        return txn.create_folder(user.id, "0", "Projects", FolderType.USER_MAIL).server_id

    return store.run_sync(run)


def _move(phone: Phone, cid: bytes, dst: str, always: bool = True) -> Element:
    move = E(IO, "Move", Element(IO, "ConversationId", [], cid), E(IO, "DstFldId", dst))
    if always:
        move.append(E(IO, "Options", Element(IO, "MoveAlways")))
    response = phone.call("ItemOperations", E(IO, "ItemOperations", move))
    assert response.http_status == 200
    assert_libwbxml_decodes(response.body)
    tree = decode(response.body)
    assert tree.child_text("Status") == "1"
    result = tree.find("Response").find("Move")  # type: ignore[union-attr]
    assert result is not None
    return result


def test_conversation_moves_and_moves_always(store: Store) -> None:
    deliver(store, make_mail("Plan", "first"), at=NOW - timedelta(hours=3))
    deliver(store, make_mail("RE: Plan", "second"), at=NOW - timedelta(hours=2))
    deliver(store, make_mail("Other", "unrelated"), at=NOW - timedelta(hours=1))
    deliver(store, make_mail("Re: Plan", "my answer"), folder=FolderType.SENT_ITEMS)
    projects = _projects_folder(store)
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    synced = commands(collection(phone.sync(inbox, key)), "Add")
    by_subject = {
        a.find("ApplicationData").child_text("Subject"): a.find("ApplicationData").find(
            "ConversationId"
        )  # type: ignore[union-attr]
        for a in synced
    }
    plan = by_subject["Plan"]
    assert plan is not None
    cid = plan.value
    assert isinstance(cid, bytes)
    assert by_subject["RE: Plan"].value == cid  # type: ignore[union-attr]

    result = _move(phone, cid, projects, always=True)
    assert result.child_text("Status") == "1"
    assert result.find("ConversationId").value == cid  # type: ignore[union-attr]
    assert _subjects(store, inbox) == ["Other"]
    assert _subjects(store, projects) == ["Plan", "RE: Plan"]
    sent = folder_id(store, FolderType.SENT_ITEMS)
    assert _subjects(store, sent) == ["Re: Plan"]  # what the user sent stays (MS-ASCON 2.2.2.8)

    # MoveAlways: the next message of the conversation goes to Projects at delivery.
    def arrive(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        deliver_to_inbox(txn, user, parse_message(make_mail("Re: Plan", "third"), NOW))
        deliver_to_inbox(txn, user, parse_message(make_mail("Lunch", "?"), NOW))

    store.run_sync(arrive)
    assert _subjects(store, projects) == ["Plan", "RE: Plan", "Re: Plan"]
    assert _subjects(store, inbox) == ["Lunch", "Other"]


def test_move_statuses(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    inbox = folder_id(store, FolderType.INBOX)
    assert _move(phone, b"short", inbox).child_text("Status") == "2"
    assert _move(phone, bytes(16), "99:nope").child_text("Status") == "6"
    contacts = folder_id(store, FolderType.CONTACTS)
    assert _move(phone, bytes(16), contacts).child_text("Status") == "6"  # not a mail folder
    # MoveAlways is required (MS-ASCMD 2.2.3.118): 155 without it.
    assert _move(phone, bytes(16), inbox, always=False).child_text("Status") == "155"
    # Nothing of the conversation here yet: moved nothing, the rule is kept.
    assert _move(phone, bytes(16), inbox).child_text("Status") == "1"
