"""Issue 19: one item never breaks a folder (natsync.eas.isolation), on both stores, sans sockets.

The store is poisoned the way today's users' stores can be: rows written directly, bypassing
every cleaning on the way in (text with NUL and control characters in a message's columns and
raw MIME, a note record whose values have the wrong type, a category that is not text). Sync,
ItemOperations, Search, GetItemEstimate and MoveItems must answer for the folder; an item that
still cannot be sent is left out once (reported in the log and the answer's ``skipped``), the
folder's state stays consistent (retransmission, estimates, later changes), and it comes back
when it is repaired. Every answer is decoded by our codec and, where its XML can show it, by
libwbxml.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from natsync.eas import isolation, sync_window
from natsync.eas.context import Response
from natsync.mime import parse_message
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, WBXMLError, decode
from tests.conftest import SQLITE_ONLY
from tests.eas.helpers import (
    NOW,
    Phone,
    collection,
    commands,
    deliver,
    folder_id,
    hold_asked,
    make_mail,
)
from tests.libwbxml import assert_valid_response

AS = "AirSync"
IO = "ItemOperations"
GIE = "GetItemEstimate"
SE = "Search"


# -- helpers --------------------------------------------------------------------------------------


def add_item(store: Store, ftype: FolderType, record: Mapping[str, Any]) -> str:
    def run(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        return txn.add_item(txn.folder_by_type(user.id, ftype).id, record).server_id

    return store.run_sync(run)


def update_item(store: Store, server_id: str, record: Mapping[str, Any]) -> None:
    def run(txn: Txn) -> None:
        item = txn.get_item(1, server_id)
        assert item is not None
        txn.update_item(item.id, record)

    store.run_sync(run)


def phone_for(store: Store) -> Phone:
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    return phone


def answer(
    phone: Phone, cmd: str, body: Element, *, crosscheck: bool = True
) -> tuple[Element, Response]:
    """The command's decoded answer and its Response; with *crosscheck*, libwbxml reads the
    answer too (assert_valid_response), at a process start per answer."""
    response = phone.call(cmd, body)
    assert response.http_status == 200, response
    tree = assert_valid_response(response.body) if crosscheck else decode(response.body)
    return tree, response


def sync_body(cid: str, key: str, window: int = 2, *extra: Element) -> Element:
    coll = E(AS, "Collection", E(AS, "SyncKey", key), E(AS, "CollectionId", cid))
    coll.add(AS, "WindowSize", window)
    for el in extra:
        coll.append(el)
    return E(AS, "Sync", E(AS, "Collections", coll))


def sync_all(phone: Phone, cid: str, key: str) -> tuple[str, dict[str, Element], list[str]]:
    """Sync *cid* from *key* to the end in windows of 2: (last key, ServerId -> the Add or
    Change sent, the ids the answers left out)."""
    sent: dict[str, Element] = {}
    skipped: list[str] = []
    for _ in range(10):
        tree, response = answer(phone, "Sync", sync_body(cid, key))
        coll = collection(tree)
        assert coll.child_text("Status") == "1"
        key = coll.child_text("SyncKey") or ""
        for cmd in [*commands(coll, "Add"), *commands(coll, "Change")]:
            sid = cmd.child_text("ServerId") or ""
            assert sid not in sent, f"{sid} sent twice"
            sent[sid] = cmd
        skipped += response.skipped
        if coll.find("MoreAvailable") is None:
            return key, sent, skipped
    raise AssertionError("MoreAvailable never cleared")


def estimate(phone: Phone, cid: str, key: str) -> int:
    coll = E(GIE, "Collection", E(AS, "SyncKey", key), E(GIE, "CollectionId", cid))
    tree, _ = answer(phone, GIE, E(GIE, GIE, E(GIE, "Collections", coll)))
    response = tree.find("Response")
    assert response is not None
    assert response.child_text("Status") == "1"
    return int(response.find("Collection").child_text("Estimate") or -1)  # type: ignore[union-attr]


def fetch_statuses(phone: Phone, cid: str, server_ids: list[str]) -> list[str | None]:
    ops = [
        E(IO, "Fetch", E(IO, "Store", "Mailbox"), E(AS, "CollectionId", cid), E(AS, "ServerId", s))
        for s in server_ids
    ]
    tree, _ = answer(phone, IO, E(IO, IO, *ops))
    assert tree.child_text("Status") == "1"
    response = tree.find("Response")
    assert response is not None
    return [f.child_text("Status") for f in response.findall("Fetch")]


def warned(caplog: pytest.LogCaptureFixture, item_id: str) -> int:
    return sum(
        1 for r in caplog.records if r.name == "natsync.eas.isolation" and item_id in r.getMessage()
    )


# -- a class (Notes): records that cannot be rendered or encoded ---------------------------------


def test_a_note_that_cannot_be_sent_costs_only_itself(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, "natsync.eas.isolation")
    notes = folder_id(store, FolderType.NOTES)
    first = add_item(store, FolderType.NOTES, {"subject": "first"})
    # list(5) raises in the codec: the item cannot be rendered.
    unrenderable = add_item(store, FolderType.NOTES, {"subject": "render", "categories": 5})
    # A category that is a JSON object becomes an element value the encoder refuses.
    unencodable = add_item(store, FolderType.NOTES, {"subject": "enc", "categories": [{"x": 1}]})
    dirty = add_item(
        store, FolderType.NOTES, {"subject": "ctl\x01\x1b x\ufffe", "body": "b\x0bo\x02dy"}
    )
    last = add_item(store, FolderType.NOTES, {"subject": "last"})
    phone = phone_for(store)
    tree, _ = answer(phone, "Sync", sync_body(notes, "0"))
    key0 = collection(tree).child_text("SyncKey") or ""

    key, sent, skipped = sync_all(phone, notes, key0)
    assert set(sent) == {first, dirty, last}  # the rest of every window, and later ones
    subject = sent[dirty].find("ApplicationData").child_text("Subject")  # type: ignore[union-attr]
    assert subject == "ctl x"  # what XML 1.0 forbids is dropped, the rest is sent
    assert sorted(skipped) == sorted([unrenderable, unencodable])
    assert warned(caplog, unrenderable) == warned(caplog, unencodable) == 1

    # Consistent state: nothing pending, nothing estimated, no wake-up, nothing reported again.
    assert estimate(phone, notes, key) == 0
    pg = "Ping"
    folders = E(pg, "Folders", E(pg, "Folder", E(pg, "Id", notes), E(pg, "Class", "Notes")))
    ping = E(pg, pg, E(pg, "HeartbeatInterval", 300), folders)
    assert hold_asked(phone.call(pg, ping)) is not None  # held: nothing to tell the phone
    held_sync = sync_body(notes, key)
    held_sync.add(AS, "Wait", 5)
    assert hold_asked(phone.call("Sync", held_sync)) is not None
    tree, response = answer(phone, "Sync", sync_body(notes, key))
    coll = collection(tree)
    assert coll.find("Commands") is None
    assert response.skipped == ()
    assert warned(caplog, unrenderable) == 1
    next_key = coll.child_text("SyncKey") or ""
    # A retransmission of that request gets the same answer, byte for byte.
    assert phone.call("Sync", sync_body(notes, key)).body == response.body

    # The phone asks for them: Status 14 in ItemOperations, 6 in a Sync Fetch; others as usual.
    assert fetch_statuses(phone, notes, [unencodable, first, unrenderable]) == ["14", "1", "14"]
    fetches = E(AS, "Commands", E(AS, "Fetch", E(AS, "ServerId", unencodable)))
    tree, _ = answer(phone, "Sync", sync_body(notes, next_key, 2, fetches))
    (fetched,) = collection(tree).find("Responses").findall("Fetch")  # type: ignore[union-attr]
    assert fetched.child_text("Status") == "6"
    key = collection(tree).child_text("SyncKey") or ""

    # A good item turning bad: its Change is left out, the phone keeps what it had.
    update_item(store, last, {"subject": "last", "categories": 7})
    assert estimate(phone, notes, key) == 1
    key, sent, skipped = sync_all(phone, notes, key)
    assert (sent, skipped) == ({}, [last])
    assert estimate(phone, notes, key) == 0

    # After an upgrade (a newer natsync may render what this one could not) they are tried
    # again, once, and left out again by a build that still cannot send them.
    monkeypatch.setattr(sync_window, "BUILD", "upgraded")
    assert estimate(phone, notes, key) == 3
    key, sent, skipped = sync_all(phone, notes, key)
    assert (sent, sorted(skipped)) == ({}, sorted([unrenderable, unencodable, last]))
    assert estimate(phone, notes, key) == 0
    assert warned(caplog, unrenderable) == 3  # the first Sync, the ItemOperations, this one

    # Repaired, they come: an Add for what the phone never had, a Change for the other.
    update_item(store, unrenderable, {"subject": "render fixed"})
    update_item(store, last, {"subject": "last fixed"})
    assert estimate(phone, notes, key) == 2
    key, sent, skipped = sync_all(phone, notes, key)
    assert skipped == []
    assert {sid: cmd.tag for sid, cmd in sent.items()} == {unrenderable: "Add", last: "Change"}


# -- email: rows written before issue 19 ---------------------------------------------------------


def poison_rows(store: Store) -> tuple[str, str]:
    """A message whose columns and raw MIME hold what no WBXML string may carry (as a store
    written before the cleaning holds it), and one whose category is not text (SQL)."""
    raw = b"Subject: raw\r\nContent-Type: text/plain\r\n\r\nNUL \x00 and \x01 in the MIME\r\n"
    parsed = parse_message(raw, NOW)
    dirty = dataclasses.replace(
        parsed,
        subject="nul\x00 subject \x1b report",
        from_addr="Eve\x01 <eve@remote.test>",
        preview="p\x00\x02",
        body_text="report",
    )

    def run(txn: Txn) -> tuple[str, str]:
        user = txn.get_user("alice")
        assert user is not None
        inbox = txn.folder_by_type(user.id, FolderType.INBOX)
        first = txn.add_message(inbox.id, dirty)
        second = txn.add_message(inbox.id, parse_message(make_mail("report two", "x"), NOW))
        txn._conn.execute(  # type: ignore[attr-defined]
            "UPDATE messages SET categories = ? WHERE id = ?",
            (json.dumps([{"not": "text"}]), second.id),
        )
        return first.server_id, second.server_id

    return store.run_sync(run)


def test_a_store_holding_poisoned_mail_syncs_again(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "natsync.eas.isolation")
    before = deliver(store, make_mail("report before", "ordinary"))
    dirty, bad_category = poison_rows(store)
    after = deliver(store, make_mail("report after", "ordinary"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = phone_for(store)
    tree, _ = answer(phone, "Sync", sync_body(inbox, "0"))
    key, sent, skipped = sync_all(phone, inbox, collection(tree).child_text("SyncKey") or "")
    assert set(sent) == {before, dirty, after}
    assert skipped == [bad_category]
    data = sent[dirty].find("ApplicationData")
    assert data is not None
    assert data.child_text("Subject") == "nul subject  report"
    assert data.child_text("From") == "Eve <eve@remote.test>"
    assert estimate(phone, inbox, key) == 0

    # The whole MIME, asked for, is the stored message untouched (opaque: no string may hold it).
    mime = E(
        AS,
        "Options",
        E(AS, "MIMESupport", 2),
        E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", 4)),
    )
    fetch = E(AS, "Commands", E(AS, "Fetch", E(AS, "ServerId", dirty)))
    tree, _ = answer(phone, "Sync", sync_body(inbox, key, 2, mime, fetch))
    (fetched,) = collection(tree).find("Responses").findall("Fetch")  # type: ignore[union-attr]
    body = fetched.find("ApplicationData").find("Body")  # type: ignore[union-attr]
    assert body is not None
    mime_data = body.find("Data")
    assert mime_data is not None
    assert isinstance(mime_data.value, bytes)
    assert mime_data.value.endswith(b"NUL \x00 and \x01 in the MIME\r\n")
    key = collection(tree).child_text("SyncKey") or ""

    # Search finds the readable ones and leaves the other out; ItemOperations says 14 for it.
    query = E(SE, "Query", E(SE, "And", E(AS, "Class", "Email"), E(SE, "FreeText", "report")))
    tree, response = answer(phone, SE, E(SE, SE, E(SE, "Store", E(SE, "Name", "Mailbox"), query)))
    store_el = tree.find("Response").find("Store")  # type: ignore[union-attr]
    assert store_el is not None
    assert store_el.child_text("Status") == "1"
    found = {r.child_text("LongId") for r in store_el.findall("Result")}
    assert found == {before, dirty, after}
    assert response.skipped == (bad_category,)
    assert fetch_statuses(phone, inbox, [dirty, bad_category]) == ["1", "14"]

    # MoveItems takes either; the moved message syncs in its new folder.
    mv = "Move"
    trash = folder_id(store, FolderType.DELETED_ITEMS)
    moves = [
        E(mv, "Move", E(mv, "SrcMsgId", s), E(mv, "SrcFldId", inbox), E(mv, "DstFldId", trash))
        for s in (dirty, bad_category)
    ]
    tree, _ = answer(phone, "MoveItems", E(mv, "MoveItems", *moves))
    assert [r.child_text("Status") for r in tree.findall("Response")] == ["3", "3"]
    moved_dirty, moved_bad = (r.child_text("DstMsgId") or "" for r in tree.findall("Response"))
    tree, _ = answer(phone, "Sync", sync_body(trash, "0"))
    _, sent, skipped = sync_all(phone, trash, collection(tree).child_text("SyncKey") or "")
    assert (list(sent), skipped) == ([moved_dirty], [moved_bad])
    # Each answer that left it out said so once: Sync, Search, ItemOperations, Sync elsewhere.
    assert (warned(caplog, bad_category), warned(caplog, moved_bad)) == (3, 1)


def test_a_damaged_picture_costs_the_picture_not_the_gal_entry(store: Store) -> None:
    """A user's own card whose picture is not base64 (a damaged row): GAL Search and
    ResolveRecipients still find the user, with Status 173 (no picture) for it."""
    add_item(
        store,
        FolderType.CONTACTS,
        {"first_name": "Alice\x01", "email1_address": "alice@example.test", "picture": "A"},
    )
    phone = phone_for(store)
    picture = E(SE, "Picture", E(SE, "MaxSize", 10_000))
    options = E(SE, "Options", picture)
    gal = E(SE, SE, E(SE, "Store", E(SE, "Name", "GAL"), E(SE, "Query", "alice"), options))
    tree, _ = answer(phone, SE, gal)
    (result,) = tree.find("Response").find("Store").findall("Result")  # type: ignore[union-attr]
    props = result.find("Properties")
    assert props is not None
    assert props.child_text("FirstName", "GAL") == "Alice"
    assert props.find("Picture", "GAL").child_text("Status", "GAL") == "173"  # type: ignore[union-attr]
    rr = "ResolveRecipients"
    options = E(rr, "Options", E(rr, "Picture", E(rr, "MaxSize", 10_000)))
    tree, _ = answer(phone, rr, E(rr, rr, E(rr, "To", "alice@example.test"), options))
    (picture,) = [el for el in tree.iter() if el.tag == "Picture"]
    assert picture.child_text("Status") == "173"


def test_encode_isolated_replaces_only_what_fails_and_raises_for_the_rest() -> None:
    good = E(AS, "Add", E(AS, "ServerId", "1:1"))
    bad = Element(AS, "Add", [E(AS, "ServerId", "1:2")], "value and children")
    commands = E(AS, "Commands", good, bad)
    root = E(AS, "Sync", E(AS, "Collections", E(AS, "Collection", commands)))
    left_out: list[str] = []
    items = [isolation.Isolated("1:1", good, commands), isolation.Isolated("1:2", bad, commands)]
    data = isolation.encode_isolated(root, items, left_out)
    assert left_out == ["1:2"]
    assert decode(data).find("Collections").find("Collection").find("Commands").children == [good]  # type: ignore[union-attr]
    # A fault outside every item is not hidden.
    outside = E(AS, "Sync", Element(AS, "Status", [E(AS, "Status")], "x"))
    with pytest.raises(WBXMLError, match="both a value and child"):
        isolation.encode_isolated(outside, [isolation.Isolated("1:1", good, commands)], [])


def test_one_bad_item_in_a_sync_of_several_collections(store: Store) -> None:
    """The answer naming two collections at once is encoded again as a whole: the item left out
    of one stays out, and the other collection is answered in full."""
    notes = folder_id(store, FolderType.NOTES)
    inbox = folder_id(store, FolderType.INBOX)
    good = add_item(store, FolderType.NOTES, {"subject": "good"})
    bad = add_item(store, FolderType.NOTES, {"subject": "bad", "categories": [["nested"]]})
    mail = deliver(store, make_mail("hello", "x"))
    phone = phone_for(store)
    keys = {}
    for cid in (notes, inbox):
        tree, _ = answer(phone, "Sync", sync_body(cid, "0"))
        keys[cid] = collection(tree).child_text("SyncKey") or ""
    colls = [E(AS, "Collection", E(AS, "SyncKey", keys[c]), E(AS, "CollectionId", c)) for c in keys]
    tree, response = answer(phone, "Sync", E(AS, "Sync", E(AS, "Collections", *colls)))
    answered = tree.find("Collections").findall("Collection")  # type: ignore[union-attr]
    sent = {c.child_text("CollectionId"): [a.child_text("ServerId") for a in commands(c, "Add")]
            for c in answered}  # fmt: skip
    assert sent == {notes: [good], inbox: [mail]}
    assert response.skipped == (bad,)


# -- Find (EAS 16.1): one Result that cannot be sent costs only itself ---------------------------

FD = "Find"


def find_mailbox(phone: Phone, text: str, rng: str = "0-9") -> tuple[Element, Response]:
    query = E(FD, "Query", E(AS, "Class", "Email"), E(FD, "FreeText", text))
    criterion = E(FD, "MailBoxSearchCriterion", query, E(FD, "Options", E(FD, "Range", rng)))
    body = E(FD, FD, E(FD, "SearchId", "s1"), E(FD, "ExecuteSearch", criterion))
    # libwbxml knows code pages 0-24 only (Find is 25): our decoder reads the answer.
    tree, response = answer(phone, FD, body, crosscheck=False)
    assert tree.child_text("Status") == "1"
    return tree, response


@SQLITE_ONLY  # only SQLite's dynamic typing lets a row hold a value of the wrong type (an
# old import, a damaged row); PostgreSQL's typed columns refuse such a row.
def test_find_leaves_out_only_the_result_that_cannot_be_sent(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "natsync.eas.isolation")
    received = [NOW - timedelta(minutes=5 - n) for n in range(4)]
    ids = [
        deliver(store, make_mail(f"quarterly {n}", "the figures"), at=at)
        for n, at in enumerate(received)
    ]
    oldest, unrenderable, unencodable, newest = ids

    def damage(txn: Txn) -> None:
        conn = txn._conn  # type: ignore[attr-defined]
        # A Subject stored as a BLOB: rendering its Result fails (a text pattern on bytes).
        conn.execute(
            "UPDATE messages SET subject = CAST(subject AS BLOB) WHERE server_id = ?",
            (unrenderable,),
        )
        # An Importance that is a REAL: the Result renders, the encoder refuses a float value.
        conn.execute("UPDATE messages SET importance = 1.5 WHERE server_id = ?", (unencodable,))

    store.run_sync(damage)
    phone = phone_for(store)
    tree, response = find_mailbox(phone, "quarterly")
    found = tree.find("Response")
    assert found is not None
    assert found.child_text("Status") == "1"
    results = found.findall("Result")
    # Newest first; the two damaged ones are left out, the rest is sent with its properties.
    assert [r.child_text("ServerId", AS) for r in results] == [newest, oldest]
    props = results[0].find("Properties")
    assert props is not None
    assert props.child_text("Subject", "Email") == "quarterly 3"
    assert found.child_text("Range") == "0-1"  # what was sent
    assert found.child_text("Total") == "4"  # what matched
    assert sorted(response.skipped) == sorted([unrenderable, unencodable])
    assert warned(caplog, unrenderable) == warned(caplog, unencodable) == 1

    # A page holding only the unencodable one: no Result, no Range, still Status 1.
    tree, response = find_mailbox(phone, "quarterly", "1-1")
    found = tree.find("Response")
    assert found is not None
    assert (found.findall("Result"), found.find("Range"), found.child_text("Total")) == (
        [],
        None,
        "4",
    )
    assert response.skipped == (unencodable,)


def test_find_answers_a_store_holding_poisoned_mail(store: Store) -> None:
    """Rows written before issue 19 (NUL and control characters in columns and MIME, a category
    that is not text), on both stores: Find sends each, its text cleaned."""
    before = deliver(store, make_mail("report before", "ordinary"))
    dirty, bad_category = poison_rows(store)
    phone = phone_for(store)
    tree, response = find_mailbox(phone, "report")
    found = tree.find("Response")
    assert found is not None
    by_id = {r.child_text("ServerId", AS): r for r in found.findall("Result")}
    assert set(by_id) == {before, dirty, bad_category}
    assert response.skipped == ()
    props = by_id[dirty].find("Properties")
    assert props is not None
    assert props.child_text("Subject", "Email") == "nul subject  report"
    assert props.child_text("From", "Email") == "Eve <eve@remote.test>"
    assert props.child_text("Preview", FD) == "p"
