"""Sync windows that resume where the last one stopped (natsync.eas.sync_window): they are used
while the folder is unchanged, and whatever happens between windows (mail delivered, deleted,
read, a client command, a retransmission) the phone ends up holding exactly the folder, each
item sent once."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from natsync.eas import state as st
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element
from tests.eas.helpers import NOW, Phone, collection, deliver, folder_id, make_mail

NS = "AirSync"
_numbers = itertools.count()


def _deliver(store: Store, count: int) -> None:
    for _ in range(count):
        n = next(_numbers)
        deliver(store, make_mail(f"message {n}", f"body {n}"), at=NOW - timedelta(minutes=1))


def _saved(store: Store, phone: Phone, inbox: str, key: str) -> dict[str, object] | None:
    def run(txn: Txn) -> bytes | None:
        user = txn.get_user("alice")
        assert user is not None
        device = txn.get_device(user.id, phone.device_id)
        assert device is not None
        return txn.get_sync_state(device.id, inbox, key)

    return st.load(store.run_sync(run))


def _folder(store: Store) -> dict[str, int]:
    def run(txn: Txn) -> dict[str, int]:
        user = txn.get_user("alice")
        assert user is not None
        return dict(txn.message_versions(txn.folder_by_type(user.id, FolderType.INBOX).id))

    return store.run_sync(run)


class _Device:
    """What the phone holds, changed by each answer; fails on an Add of an item it holds, or a
    Change or Delete of one it does not."""

    def __init__(self, store: Store, name: str) -> None:
        self.phone = Phone(store, device_id=name)
        self.phone.provision()
        self.phone.folder_sync()
        self.inbox = folder_id(store, FolderType.INBOX)
        self.key = collection(self.phone.sync(self.inbox, "0")).child_text("SyncKey") or ""
        self.held: set[str] = set()
        self.adds = 0

    def apply(self, coll: Element) -> bool:
        """Take one answer in; True when MoreAvailable."""
        assert coll.child_text("Status") == "1"
        cmds = coll.find("Commands")
        for cmd in cmds.children if cmds is not None else []:
            sid = cmd.child_text("ServerId") or ""
            if cmd.tag == "Add":
                assert sid not in self.held, f"{sid} sent twice"
                self.held.add(sid)
                self.adds += 1
            elif cmd.tag in ("Delete", "SoftDelete"):
                assert sid in self.held, f"{cmd.tag} of {sid}, which the phone does not hold"
                self.held.discard(sid)
            else:
                assert cmd.tag == "Change"
                assert sid in self.held, f"Change of {sid}, which the phone does not hold"
        self.key = coll.child_text("SyncKey") or self.key
        return coll.find("MoreAvailable") is not None

    def sync(self, window: int, commands: list[Element] | None = None) -> bool:
        return self.apply(
            collection(self.phone.sync(self.inbox, self.key, window=window, commands=commands))
        )


def test_an_initial_sync_resumes_window_after_window(store: Store) -> None:
    _deliver(store, 23)
    device = _Device(store, "resume1")
    points = []
    while device.sync(5):
        saved = _saved(store, device.phone, device.inbox, device.key)
        assert saved is not None
        points.append(saved[st.RESUME])
    folder = _folder(store)
    assert device.held == set(folder)
    assert device.adds == len(folder)
    # Every window but the last left a point to resume from, further along each time, at the
    # folder's modseq (nothing changed in between).
    assert len(points) == len(folder) // 5 - (len(folder) % 5 == 0)
    walked = [point[1] for point in points]  # type: ignore[index]
    assert walked == sorted(walked)
    assert walked[0] == 5


def test_a_change_between_windows_diffs_in_full_and_misses_nothing(store: Store) -> None:
    _deliver(store, 12)
    device = _Device(store, "resume2")
    assert device.sync(4)
    sent = sorted(device.held)

    def meddle(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        first, second = txn.get_messages(user.id, sent[:2])
        txn.set_read(first.id, True)  # one the phone holds changes
        txn.delete_message(second.id)  # one it holds goes
        versions = txn.message_versions(txn.folder_by_type(user.id, FolderType.INBOX).id)
        oldest = next(iter(versions))  # one it was not sent yet goes
        gone = txn.get_message(user.id, oldest)
        assert gone is not None
        txn.delete_message(gone.id)

    store.run_sync(meddle)
    _deliver(store, 3)
    coll = collection(device.phone.sync(device.inbox, device.key, window=4))
    tags = {cmd.tag for cmd in coll.find("Commands").children}  # type: ignore[union-attr]
    assert {"Change", "Delete"} <= tags
    more = device.apply(coll)
    while more:
        more = device.sync(4)
    assert device.held == set(_folder(store))


def test_a_client_command_is_answered_and_the_sync_goes_on(store: Store) -> None:
    _deliver(store, 9)
    device = _Device(store, "resume3")
    assert device.sync(3)
    read = E(
        NS,
        "Change",
        E(NS, "ServerId", sorted(device.held)[0]),
        E(NS, "ApplicationData", E("Email", "Read", 1)),
    )
    more = device.sync(3, [read])
    saved = _saved(store, device.phone, device.inbox, device.key)
    assert saved is not None
    assert st.RESUME not in saved  # a window with a client command leaves no point
    while more:
        more = device.sync(3)
    assert device.held == set(_folder(store))


#: What may happen between two windows: mail arrives, the phone's or another item is read or
#: deleted, the phone deletes one itself or moves one out (MoveItems: its state is edited
#: outside a window), or it sends its last request again.
_EVENTS = hs.lists(
    hs.sampled_from(
        ["deliver", "read", "delete", "delete-unsent", "client-delete", "move", "again"]
    ),
    max_size=8,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(start=hs.integers(0, 12), window=hs.integers(1, 5), events=_EVENTS)
def test_whatever_happens_between_windows_the_phone_holds_the_folder(
    store: Store, start: int, window: int, events: list[str]
) -> None:
    _deliver(store, start)
    device = _Device(store, f"prop{next(_numbers)}")
    last_key = device.key
    for event in events:
        if event == "again":
            # A retransmission gets the same answer; the phone already took it in.
            before = set(device.held)
            device.phone.sync(device.inbox, last_key, window=window)
            assert device.held == before
        else:
            _meddle(store, device, event)
        last_key = device.key
        device.sync(window)
    while device.sync(window):
        pass
    assert device.held == set(_folder(store))


def _meddle(store: Store, device: _Device, event: str) -> None:
    if event == "deliver":
        _deliver(store, 1)
        return
    if event == "move":
        if device.held:
            sid = sorted(device.held)[0]
            trash = folder_id(store, FolderType.DELETED_ITEMS)
            move = E(
                "Move", "Move", E("Move", "SrcMsgId", sid), E("Move", "SrcFldId", device.inbox)
            )
            move.add("Move", "DstFldId", trash)
            answer = device.phone.tree("MoveItems", E("Move", "MoveItems", move))
            assert answer.find("Response").child_text("Status") == "3"  # type: ignore[union-attr]
            device.held.discard(sid)
        return
    if event == "client-delete":
        if device.held:
            sid = sorted(device.held)[0]
            device.held.discard(sid)
            device.sync(1, [E(NS, "Delete", E(NS, "ServerId", sid))])
        return

    def run(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        versions = txn.message_versions(txn.folder_by_type(user.id, FolderType.INBOX).id)
        pool = (
            sorted(device.held)
            if event in ("read", "delete")
            else sorted(set(versions) - device.held)
        )
        if not pool:
            return
        msg = txn.get_message(user.id, pool[0])
        assert msg is not None
        if event == "read":
            txn.set_read(msg.id, not msg.read)
        else:
            txn.delete_message(msg.id)

    store.run_sync(run)
