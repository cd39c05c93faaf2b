"""Sync, GetItemEstimate, MoveItems, ItemOperations, FolderCreate and Ping over the non-email
classes, sans sockets, on both stores.

The class codecs here are tiny test ones (a "Calendar" of subject + end time + UID, and a
"Tasks" of subject + completion), put in the registry for each test: the protocol machinery is
what is under test, not a real class's fields. Their ``in_window`` and ``delete_occurrence``
are this module's functions, given to the codecs as a real class gives its own. Every answer is
decoded by libwbxml as well as by natsync.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from natsync.classes.codec import ClassCodec, PimError, Record
from natsync.classes.email import BodyPreference
from natsync.eas import registry
from natsync.eas.context import WBXML_CONTENT_TYPE, KickRelay, Response
from natsync.eas.versions import Version
from natsync.store.api import FolderType, Item, Store, Txn, User
from natsync.wbxml import E, Element
from tests.eas.helpers import NOW, Phone, collection, commands, hold_asked
from tests.libwbxml import assert_libwbxml_decodes

AS = "AirSync"
CAL = "Calendar"
TASKS = "Tasks"


def _compact(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%Y%m%dT%H%M%SZ")


def _iso(compact: str) -> str:
    return datetime.strptime(compact, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()


# -- the test classes -----------------------------------------------------------------------------


def decode_event(data: Element, version: Version) -> Record:
    subject = data.child_text("Subject", CAL)
    end = data.child_text("EndTime", CAL)
    if not subject or not end:
        raise PimError("a test event needs Subject and EndTime")
    try:
        record: Record = {"subject": subject, "end": _iso(end), "deleted": []}
    except ValueError as exc:
        raise PimError(f"EndTime {end!r} is not a compact time") from exc
    uid = data.child_text("UID", CAL)
    if uid:
        record["uid"] = uid
    return record


def change_event(old: Mapping[str, Any], data: Element, version: Version) -> Record:
    """Ghosting, as Calendar does: what the Change does not carry stays."""
    record = dict(old)
    if (subject := data.child_text("Subject", CAL)) is not None:
        record["subject"] = subject
    if (end := data.child_text("EndTime", CAL)) is not None:
        record["end"] = _iso(end)
    if record["subject"] == "reject me":
        raise PimError("this test class refuses that subject")
    return record


def encode_event(
    record: Mapping[str, Any], version: Version, prefs: Sequence[BodyPreference]
) -> list[Element]:
    out = [E(CAL, "Subject", record["subject"]), E(CAL, "EndTime", _compact(record["end"]))]
    if record.get("uid"):
        out.append(E(CAL, "UID", record["uid"]))
    for when in record.get("deleted", []):
        out.append(E(CAL, "Location", f"deleted {when}"))
    return out


def decode_task(data: Element, version: Version) -> Record:
    return {"subject": data.child_text("Subject", TASKS) or "", "complete": False}


def change_task(old: Mapping[str, Any], data: Element, version: Version) -> Record:
    return {
        "subject": data.child_text("Subject", TASKS) or "",
        "complete": data.child_text("Complete", TASKS) == "1",
    }


def encode_task(
    record: Mapping[str, Any], version: Version, prefs: Sequence[BodyPreference]
) -> list[Element]:
    return [
        E(TASKS, "Subject", record["subject"]),
        E(TASKS, "Complete", "1" if record["complete"] else "0"),
    ]


def in_window(record: Mapping[str, Any], cutoff: datetime | None = None) -> bool:
    """Calendar: ends after *cutoff*; Tasks (no cutoff): not complete."""
    if cutoff is None:
        return not record["complete"]
    return datetime.fromisoformat(record["end"]) > cutoff


def delete_occurrence(old: Mapping[str, Any], instance: str) -> Record:
    return {**old, "deleted": [*old.get("deleted", []), instance]}


#: (old, new) of every client write the hook saw.
WRITES: list[tuple[Item | None, Item | None]] = []


def after_event_write(
    txn: Txn, user: User, old: Item | None, new: Item | None, now: datetime, rng: random.Random
) -> bool:
    WRITES.append((old, new))
    if new is not None and new.data["subject"].startswith("invite"):
        txn.enqueue_outbound(user.email, ["guest@remote.test"], b"Subject: invite\r\n\r\n", now)
        return True
    return False


EVENTS = ClassCodec(
    eas_class="Calendar",
    folder_types=frozenset({FolderType.CALENDAR, FolderType.USER_CALENDAR}),
    decode=decode_event,
    apply_change=change_event,
    encode=encode_event,
    after_client_write=after_event_write,
    in_window=in_window,
    delete_occurrence=delete_occurrence,
)
TODOS = ClassCodec(
    eas_class="Tasks",
    folder_types=frozenset({FolderType.TASKS, FolderType.USER_TASKS}),
    decode=decode_task,
    apply_change=change_task,
    encode=encode_task,
    in_window=in_window,
    delete_occurrence=delete_occurrence,
)


@pytest.fixture(autouse=True)
def test_classes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry, "CODECS", (EVENTS, TODOS))
    WRITES.clear()
    yield
    WRITES.clear()


class CheckedPhone(Phone):
    """A Phone whose every WBXML answer must decode with libwbxml too."""

    def call(self, cmd: str, body: Element | None = None, raw: bytes = b"", **kw: Any) -> Response:
        response = super().call(cmd, body, raw, **kw)
        if response.body and response.content_type == WBXML_CONTENT_TYPE:
            assert_libwbxml_decodes(response.body)
        return response


# -- helpers -------------------------------------------------------------------------------------


def folder_sid(store: Store, folder_type: FolderType) -> str:
    def run(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        return txn.folder_by_type(user.id, folder_type).server_id

    return store.run_sync(run)


def put_event(store: Store, subject: str, end: datetime, *, uid: str | None = None) -> Item:
    def run(txn: Txn) -> Item:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
        record: Record = {"subject": subject, "end": end.isoformat(), "deleted": []}
        if uid is not None:
            record["uid"] = uid
        return txn.add_item(folder.id, record, uid=uid)

    return store.run_sync(run)


def item(store: Store, server_id: str) -> Item | None:
    def run(txn: Txn) -> Item | None:
        user = txn.get_user("alice")
        assert user is not None
        return txn.get_item(user.id, server_id)

    return store.run_sync(run)


def event_data(subject: str, end: datetime, uid: str | None = None) -> Element:
    data = E(AS, "ApplicationData", E(CAL, "Subject", subject))
    data.add(CAL, "EndTime", end.strftime("%Y%m%dT%H%M%SZ"))
    if uid:
        data.add(CAL, "UID", uid)
    return data


def prime(phone: Phone, cid: str, options: Element | None = None) -> str:
    first = collection(phone.sync(cid, "0", options=options))
    assert first.child_text("Status") == "1"
    return first.child_text("SyncKey") or ""


def subjects(coll: Element, tag: str) -> list[str]:
    found = []
    for cmd in commands(coll, tag):
        data = cmd.find("ApplicationData", AS)
        assert data is not None
        found.append(data.child_text("Subject", CAL) or data.child_text("Subject", TASKS) or "")
    return found


def response(coll: Element, tag: str) -> Element:
    responses = coll.find("Responses", AS)
    assert responses is not None, "no Responses in the answer"
    found = responses.find(tag, AS)
    assert found is not None
    return found


SOON = NOW + timedelta(days=1)


def ready(store: Store, device_id: str = "phone1", version: str = "16.1") -> CheckedPhone:
    phone = CheckedPhone(store, device_id=device_id, version=version)
    phone.provision()
    return phone


# -- server -> client ----------------------------------------------------------------------------


def test_server_items_arrive_in_windows_and_retransmits_get_the_same_bytes(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    for n in range(5):
        put_event(store, f"event {n}", SOON + timedelta(hours=n))
    phone = ready(store)
    key = prime(phone, cal)
    first = collection(phone.sync(cal, key, window=3))
    assert first.find("MoreAvailable", AS) is not None
    assert len(subjects(first, "Add")) == 3
    # The same request again (the answer was lost): byte for byte the same answer.
    again = phone.call("Sync", _sync_body(cal, key, window=3))
    assert again.body == phone.call("Sync", _sync_body(cal, key, window=3)).body
    key2 = first.child_text("SyncKey") or ""
    second = collection(phone.sync(cal, key2, window=3))
    assert second.find("MoreAvailable", AS) is None
    got = subjects(first, "Add") + subjects(second, "Add")
    assert sorted(got) == [f"event {n}" for n in range(5)]
    ids = [c.child_text("ServerId", AS) for c in commands(first, "Add") + commands(second, "Add")]
    assert all(i and i.startswith(f"{cal}:") for i in ids)
    # A key the server never handed out: Status 3, start again from 0.
    assert collection(phone.sync(cal, "{0badc0de}7")).child_text("Status") == "3"


def _sync_body(cid: str, key: str, window: int | None = None) -> Element:
    coll = E(AS, "Collection", E(AS, "SyncKey", key), E(AS, "CollectionId", cid))
    if window is not None:
        coll.add(AS, "WindowSize", window)
    return E(AS, "Sync", E(AS, "Collections", coll))


def test_server_changes_and_deletes_reach_the_device(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    kept = put_event(store, "kept", SOON)
    gone = put_event(store, "gone", SOON)
    phone = ready(store)
    key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""
    store.run_sync(lambda txn: txn.update_item(kept.id, {**kept.data, "subject": "renamed"}))
    store.run_sync(lambda txn: txn.delete_item(gone.id))
    coll = collection(phone.sync(cal, key))
    assert subjects(coll, "Change") == ["renamed"]
    assert [c.child_text("ServerId", AS) for c in commands(coll, "Change")] == [kept.server_id]
    assert [c.child_text("ServerId", AS) for c in commands(coll, "Delete")] == [gone.server_id]
    quiet = collection(phone.sync(cal, coll.child_text("SyncKey") or ""))
    assert quiet.find("Commands", AS) is None


def test_12_1_collections_name_their_class(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    put_event(store, "old protocol", SOON)
    phone = ready(store, version="12.1")
    first = collection(phone.sync(cal, "0"))
    assert first.child_text("Class", AS) == "Calendar"
    coll = collection(phone.sync(cal, first.child_text("SyncKey") or ""))
    assert coll.child_text("Class", AS) == "Calendar"
    assert subjects(coll, "Add") == ["old protocol"]


# -- client -> server ----------------------------------------------------------------------------


def test_client_add_change_delete_reach_the_store_and_the_other_device(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    phone, tablet = ready(store), ready(store, "tablet")
    key = prime(phone, cal)
    tablet_key = collection(tablet.sync(cal, prime(tablet, cal))).child_text("SyncKey") or ""

    add = E(AS, "Add", E(AS, "ClientId", "c-1"), event_data("lunch", SOON, uid="lunch@phone"))
    coll = collection(phone.sync(cal, key, commands=[add]))
    added = response(coll, "Add")
    assert added.child_text("ClientId", AS) == "c-1"
    assert added.child_text("Status", AS) == "1"
    sid = added.child_text("ServerId", AS) or ""
    stored = item(store, sid)
    assert stored is not None
    assert (stored.uid, stored.data["subject"]) == ("lunch@phone", "lunch")
    assert coll.find("Commands", AS) is None  # never echoed back to the phone that made it
    key = coll.child_text("SyncKey") or ""

    tablet_coll = collection(tablet.sync(cal, tablet_key))
    assert subjects(tablet_coll, "Add") == ["lunch"]
    tablet_key = tablet_coll.child_text("SyncKey") or ""

    change = E(
        AS, "Change", E(AS, "ServerId", sid), E(AS, "ApplicationData", E(CAL, "Subject", "brunch"))
    )
    coll = collection(phone.sync(cal, key, commands=[change]))
    assert coll.find("Responses", AS) is None  # a successful Change has no response
    changed = item(store, sid)
    assert changed is not None
    assert changed.data["subject"] == "brunch"
    assert changed.data["end"] == stored.data["end"]  # ghosted: kept
    key = coll.child_text("SyncKey") or ""
    tablet_coll = collection(tablet.sync(cal, tablet_key))
    assert subjects(tablet_coll, "Change") == ["brunch"]
    tablet_key = tablet_coll.child_text("SyncKey") or ""

    # The tablet deletes it; the phone hears of it.
    delete = E(AS, "Delete", E(AS, "ServerId", sid))
    tablet_coll = collection(tablet.sync(cal, tablet_key, commands=[delete]))
    assert tablet_coll.find("Responses", AS) is None
    assert item(store, sid) is None
    coll = collection(phone.sync(cal, key))
    assert [c.child_text("ServerId", AS) for c in commands(coll, "Delete")] == [sid]
    assert [(o is None, n is None) for o, n in WRITES] == [
        (True, False),
        (False, False),
        (False, True),
    ]


def test_a_retransmitted_add_is_applied_once(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    phone = ready(store)
    key = prime(phone, cal)
    add = E(AS, "Add", E(AS, "ClientId", "c-1"), event_data("once", SOON))
    body = _sync_body(cal, key)
    collection_el = body.find("Collections", AS).find("Collection", AS)  # type: ignore[union-attr]
    assert collection_el is not None
    collection_el.append(E(AS, "Commands", add))
    first = phone.call("Sync", body)
    second = phone.call("Sync", body)
    assert first.body == second.body
    assert len(store.run_sync(lambda txn: txn.list_items(_cal_id(txn)))) == 1
    assert len(WRITES) == 1


def _cal_id(txn: Txn) -> int:
    user = txn.get_user("alice")
    assert user is not None
    return txn.folder_by_type(user.id, FolderType.CALENDAR).id


def test_bad_items_and_unknown_ids_get_their_status(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    existing = put_event(store, "there", SOON)
    phone = ready(store)
    key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""
    bad_add = E(
        AS, "Add", E(AS, "ClientId", "c-bad"), E(AS, "ApplicationData", E(CAL, "Subject", "no end"))
    )
    good_add = E(AS, "Add", E(AS, "ClientId", "c-good"), event_data("fine", SOON))
    unknown = [
        E(
            AS,
            tag,
            E(AS, "ServerId", f"{cal}:999"),
            *([event_data("x", SOON)] if tag == "Change" else []),
        )
        for tag in ("Change", "Delete", "Fetch")
    ]
    rejected = E(
        AS,
        "Change",
        E(AS, "ServerId", existing.server_id),
        E(AS, "ApplicationData", E(CAL, "Subject", "reject me")),
    )
    coll = collection(phone.sync(cal, key, commands=[bad_add, good_add, *unknown, rejected]))
    responses = coll.find("Responses", AS)
    assert responses is not None
    statuses = [
        (
            r.tag,
            r.child_text("ClientId", AS) or r.child_text("ServerId", AS),
            r.child_text("Status", AS),
        )
        for r in responses.children
    ]
    assert statuses == [
        ("Add", "c-bad", "6"),
        ("Add", "c-good", "1"),
        ("Change", f"{cal}:999", "8"),
        ("Delete", f"{cal}:999", "8"),
        ("Fetch", f"{cal}:999", "8"),
        ("Change", existing.server_id, "6"),
    ]
    assert item(store, existing.server_id) == existing  # the refused change changed nothing


def test_a_conflicting_change_loses_to_the_server_by_default(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    event = put_event(store, "original", SOON)
    phone = ready(store)
    key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""
    store.run_sync(lambda txn: txn.update_item(event.id, {**event.data, "subject": "server's"}))
    change = E(AS, "Change", E(AS, "ServerId", event.server_id), event_data("phone's", SOON))
    coll = collection(phone.sync(cal, key, commands=[change]))
    assert subjects(coll, "Change") == ["server's"]
    stored = item(store, event.server_id)
    assert stored is not None
    assert stored.data["subject"] == "server's"
    assert WRITES == []


def test_fetch_and_16_x_occurrence_delete(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    event = put_event(store, "weekly", SOON, uid="weekly@x")
    phone = ready(store)
    key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""
    fetch = E(AS, "Fetch", E(AS, "ServerId", event.server_id))
    one = E(
        AS,
        "Delete",
        E(AS, "ServerId", event.server_id),
        E("AirSyncBase", "InstanceId", "20260309T090000Z"),
    )
    coll = collection(phone.sync(cal, key, commands=[fetch, one]))
    fetched = response(coll, "Fetch")
    assert fetched.child_text("Status", AS) == "1"
    data = fetched.find("ApplicationData", AS)
    assert data is not None
    assert data.child_text("UID", CAL) == "weekly@x"
    stored = item(store, event.server_id)
    assert stored is not None
    assert stored.data["deleted"] == ["20260309T090000Z"]  # the series stays, one day less
    assert commands(coll, "Change") == []  # the phone made that change: not echoed


def test_a_hook_that_queues_mail_marks_the_response(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    phone = ready(store)
    key = prime(phone, cal)
    plain = E(AS, "Add", E(AS, "ClientId", "1"), event_data("alone", SOON))
    answer = phone.call("Sync", _with_commands(_sync_body(cal, key), plain))
    assert KickRelay() not in answer.effects
    key = collection(phone.tree("Sync", _sync_body(cal, key))).child_text("SyncKey") or ""
    invite = E(AS, "Add", E(AS, "ClientId", "2"), event_data("invite Bob", SOON))
    answer = phone.call("Sync", _with_commands(_sync_body(cal, key), invite))
    assert KickRelay() in answer.effects
    queued = store.run_sync(lambda txn: txn.due_outbound(NOW + timedelta(days=1), 10))
    assert [m.recipients for m in queued] == [("guest@remote.test",)]


def _with_commands(body: Element, *cmds: Element) -> Element:
    coll = body.find("Collections", AS).find("Collection", AS)  # type: ignore[union-attr]
    assert coll is not None
    coll.append(E(AS, "Commands", *cmds))
    return body


# -- FilterType ----------------------------------------------------------------------------------


def test_calendar_filter_keeps_recent_events_and_soft_deletes_the_rest(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    put_event(store, "last year", NOW - timedelta(days=300))
    put_event(store, "last week", NOW - timedelta(days=7))
    put_event(store, "tomorrow", SOON)
    phone = ready(store)
    all_key = collection(phone.sync(cal, prime(phone, cal)))
    assert sorted(subjects(all_key, "Add")) == ["last week", "last year", "tomorrow"]
    # The same collection with FilterType 4 (two weeks): the old one leaves the phone.
    two_weeks = E(AS, "Options", E(AS, "FilterType", 4))
    coll = collection(phone.sync(cal, all_key.child_text("SyncKey") or "", options=two_weeks))
    assert len(commands(coll, "SoftDelete")) == 1
    # From scratch with FilterType 7 (six months) the old one never arrives.
    other = ready(store, "tablet")
    six_months = E(AS, "Options", E(AS, "Class", "Calendar"), E(AS, "FilterType", 7))
    key = prime(other, cal, options=six_months)
    assert sorted(subjects(collection(other.sync(cal, key)), "Add")) == ["last week", "tomorrow"]


def test_tasks_filter_8_keeps_incomplete_tasks(store: Store) -> None:
    tasks = folder_sid(store, FolderType.TASKS)

    def put(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.TASKS)
        txn.add_item(folder.id, {"subject": "todo", "complete": False})
        txn.add_item(folder.id, {"subject": "done", "complete": True})

    store.run_sync(put)
    phone = ready(store)
    key = prime(phone, tasks, options=E(AS, "Options", E(AS, "FilterType", 8)))
    assert subjects(collection(phone.sync(tasks, key)), "Add") == ["todo"]
    estimate = _estimate(phone, tasks, key, 8)
    assert estimate == 1


def _estimate(phone: Phone, cid: str, key: str, filter_type: int) -> int:
    ns = "GetItemEstimate"
    coll = E(
        ns,
        "Collection",
        E(AS, "SyncKey", key),
        E(ns, "CollectionId", cid),
        E(AS, "Options", E(AS, "FilterType", filter_type)),
    )
    tree = phone.tree(ns, E(ns, "GetItemEstimate", E(ns, "Collections", coll)))
    found = tree.find("Response", ns)
    assert found is not None
    assert found.child_text("Status", ns) == "1"
    text = found.find("Collection", ns).child_text("Estimate", ns)  # type: ignore[union-attr]
    assert text is not None
    return int(text)


def test_get_item_estimate_counts_pending_items(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    for n in range(3):
        put_event(store, f"e{n}", SOON)
    put_event(store, "ancient", NOW - timedelta(days=400))
    phone = ready(store)
    key = prime(phone, cal)
    assert _estimate(phone, cal, key, 0) == 4
    assert _estimate(phone, cal, key, 5) == 3


# -- other commands ------------------------------------------------------------------------------


def test_move_items_within_a_class_only(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    contacts = folder_sid(store, FolderType.CONTACTS)
    phone = ready(store)
    fh = "FolderHierarchy"
    hierarchy_key = phone.folder_sync().child_text("SyncKey") or ""
    created = phone.tree(
        "FolderCreate",
        E(
            fh,
            "FolderCreate",
            E(fh, "SyncKey", hierarchy_key),
            E(fh, "ParentId", "0"),
            E(fh, "DisplayName", "Work"),
            E(fh, "Type", int(FolderType.USER_CALENDAR)),
        ),
    )
    assert created.child_text("Status") == "1"
    work = created.child_text("ServerId") or ""
    event = put_event(store, "standup", SOON, uid="standup@x")
    twin = put_event(store, "twin", SOON, uid="twin@x")
    work_key = prime(phone, work)
    cal_key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""

    mv = "Move"

    def move(src: str, src_folder: str, dst_folder: str) -> Element:
        body = E(
            mv,
            "MoveItems",
            E(
                mv,
                "Move",
                E(mv, "SrcMsgId", src),
                E(mv, "SrcFldId", src_folder),
                E(mv, "DstFldId", dst_folder),
            ),
        )
        found = phone.tree("MoveItems", body).find("Response", mv)
        assert found is not None
        return found

    assert move(event.server_id, cal, contacts).child_text("Status", mv) == "2"
    moved = move(event.server_id, cal, work)
    assert moved.child_text("Status", mv) == "3"
    new_id = moved.child_text("DstMsgId", mv) or ""
    assert new_id.startswith(f"{work}:")
    stored = item(store, new_id)
    assert stored is not None
    assert stored.uid == "standup@x"
    # The mover's states already know: no Delete in the calendar, no Add in Work come back.
    assert collection(phone.sync(cal, cal_key)).find("Commands", AS) is None
    assert collection(phone.sync(work, work_key)).find("Commands", AS) is None
    # An item whose uid the destination holds already: refused, left where it was.
    store.run_sync(
        lambda txn: txn.add_item(
            stored.folder_id, {"subject": "t", "end": SOON.isoformat()}, uid="twin@x"
        )
    )
    assert move(twin.server_id, cal, work).child_text("Status", mv) == "5"
    assert item(store, twin.server_id) == twin


def test_item_operations_fetches_an_item(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    event = put_event(store, "fetch me", SOON, uid="f@x")
    phone = ready(store)
    io = "ItemOperations"

    def fetch(*ids: Element) -> Element:
        body = E(io, "ItemOperations", E(io, "Fetch", E(io, "Store", "Mailbox"), *ids))
        found = phone.tree(io, body).find("Response", io)
        assert found is not None
        result = found.find("Fetch", io)
        assert result is not None
        return result

    got = fetch(E(AS, "CollectionId", cal), E(AS, "ServerId", event.server_id))
    assert got.child_text("Status", io) == "1"
    assert got.child_text("Class", AS) == "Calendar"
    props = got.find("Properties", io)
    assert props is not None
    assert props.child_text("Subject", CAL) == "fetch me"
    # Without the collection, by ServerId alone, too.
    assert fetch(E(AS, "ServerId", event.server_id)).child_text("Status", io) == "1"
    wrong = fetch(
        E(AS, "CollectionId", folder_sid(store, FolderType.TASKS)),
        E(AS, "ServerId", event.server_id),
    )
    assert wrong.child_text("Status", io) == "6"


def test_ping_wakes_on_a_pim_folder(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    phone = ready(store)
    phone.folder_sync()
    collection(phone.sync(cal, prime(phone, cal)))
    pg = "Ping"
    body = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 300),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", cal), E(pg, "Class", "Calendar"))),
    )
    assert hold_asked(phone.call("Ping", body)) is not None
    put_event(store, "news", SOON)
    now = phone.tree("Ping", body)
    assert now.child_text("Status") == "2"
    assert [f.text() for f in now.find("Folders").findall("Folder")] == [cal]  # type: ignore[union-attr]


def test_user_pim_folders_are_created_renamed_and_deleted_with_their_items(store: Store) -> None:
    phone = ready(store)
    fh = "FolderHierarchy"
    key = phone.folder_sync().child_text("SyncKey") or ""

    def op(cmd: str, *children: Element) -> Element:
        return phone.tree(cmd, E(fh, cmd, E(fh, "SyncKey", key), *children))

    made = {}
    for folder_type in (13, 14, 15, 17):
        created = op(
            "FolderCreate",
            E(fh, "ParentId", "0"),
            E(fh, "DisplayName", f"Mine {folder_type}"),
            E(fh, "Type", folder_type),
        )
        assert created.child_text("Status") == "1"
        key = created.child_text("SyncKey") or ""
        made[folder_type] = created.child_text("ServerId") or ""
    tasks = made[15]
    task_key = prime(phone, tasks)
    add = E(
        AS, "Add", E(AS, "ClientId", "t1"), E(AS, "ApplicationData", E(TASKS, "Subject", "file"))
    )
    sid = response(collection(phone.sync(tasks, task_key, commands=[add])), "Add").child_text(
        "ServerId", AS
    )
    assert sid is not None
    assert item(store, sid) is not None
    renamed = op(
        "FolderUpdate",
        E(fh, "ServerId", tasks),
        E(fh, "ParentId", "0"),
        E(fh, "DisplayName", "Errands"),
    )
    assert renamed.child_text("Status") == "1"
    key = renamed.child_text("SyncKey") or ""
    deleted = op("FolderDelete", E(fh, "ServerId", tasks))
    assert deleted.child_text("Status") == "1"
    key = deleted.child_text("SyncKey") or ""
    assert item(store, sid) is None
    assert collection(phone.sync(tasks, task_key)).child_text("Status") == "12"
    # The standard class folders stay.
    standard = op("FolderDelete", E(fh, "ServerId", folder_sid(store, FolderType.CALENDAR)))
    assert standard.child_text("Status") == "3"  # a special system folder


def test_the_real_class_modules_give_sync_its_filters_and_occurrence_deletes() -> None:
    """Sync asks the codec for ``in_window`` / ``delete_occurrence``: the real Calendar and
    Tasks codecs must carry their modules' functions."""
    from natsync.classes import calendar, tasks
    from natsync.eas.sync_window import item_filter

    keep = item_filter(calendar.CODEC, 4, NOW)  # two weeks back
    assert keep is not None
    assert keep({"end": calendar.utc_text(NOW - timedelta(days=1))}) is True
    assert keep({"end": calendar.utc_text(NOW - timedelta(days=30))}) is False
    assert item_filter(calendar.CODEC, 0, NOW) is None
    assert item_filter(calendar.CODEC, 8, NOW) is None  # a Tasks value means all events
    incomplete = item_filter(tasks.CODEC, 8, NOW)
    assert incomplete is not None
    assert [incomplete({"complete": done}) for done in (False, True)] == [True, False]
    assert calendar.CODEC.delete_occurrence is calendar.delete_occurrence
    assert tasks.CODEC.delete_occurrence is None


def test_a_sync_with_wait_is_held_on_a_quiet_calendar(store: Store) -> None:
    cal = folder_sid(store, FolderType.CALENDAR)
    phone = ready(store)
    key = collection(phone.sync(cal, prime(phone, cal))).child_text("SyncKey") or ""
    body = _sync_body(cal, key)
    body.add(AS, "Wait", 5)
    held = phone.call("Sync", body)
    wait = hold_asked(held)
    assert wait is not None
    assert wait.rerun
    assert held.body == b""
    put_event(store, "while waiting", SOON)
    assert subjects(collection(phone.tree("Sync", body)), "Add") == ["while waiting"]
