"""Sync state blobs: format 3 (marshal behind a CRC-32) round trips, format 2 (zlib JSON)
blobs written before it still read, and every damaged blob is an unknown key, never an error
or a wrong state; through Sync, an old-format state continues and a damaged one resyncs."""

from __future__ import annotations

import marshal
import struct
import zlib
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from natsync.eas import state as st
from natsync.store.api import FolderType, Store, Txn
from tests.eas.helpers import Phone, collection, commands, deliver, folder_id, make_mail

ANSWER = b"\x03\x01j\x00\x00\x00E\x01"  # looks like WBXML; any bytes are kept as they are


def _state(count: int = 3) -> dict[str, Any]:
    items = {f"5:{i}": 100 + i for i in range(1, count + 1)}
    return {"items": items, "filter": 2, "fm": -1, "for": "{0badcafe}4"}


def _marshal_blob(value: object, answer: bytes = b"") -> bytes:
    """A format 3 blob with a valid CRC around any marshallable *value*."""
    head = marshal.dumps(value, 4)
    return b"NS3" + struct.pack(">II", len(head), zlib.crc32(head)) + head + answer


def test_round_trip_keeps_types_and_answer() -> None:
    state = _state(10_000)
    state["folders"] = {"1": ["0", "Inbox", 2]}  # FolderSync's snapshot: lists stay lists
    blob = st.pack(state, ANSWER)
    assert blob.startswith(b"NS4")  # items as a base and changes: format 4
    assert blob.endswith(ANSWER)
    back = st.unpack(blob)
    assert back.pop(st.ANSWER) == ANSWER
    assert back == state
    assert type(back["folders"]["1"]) is list


def test_a_state_without_items_is_format_3() -> None:
    blob = st.pack({"folders": {"1": ["0", "Inbox", 2]}, "for": "0"}, ANSWER)
    assert blob.startswith(b"NS3")
    assert st.unpack(blob) == {"folders": {"1": ["0", "Inbox", 2]}, "for": "0", st.ANSWER: ANSWER}


def test_format_3_items_still_read() -> None:
    """A state a natsync before format 4 wrote: its items map whole."""
    state = _state(20)
    back = st.unpack(_marshal_blob(state, ANSWER))
    assert back.pop(st.ANSWER) == ANSWER
    assert back == state
    assert isinstance(back["items"], st.KnownItems)


def test_no_answer_means_no_answer_key() -> None:
    assert st.ANSWER not in st.unpack(st.pack(_state()))


def test_old_json_format_still_reads() -> None:
    state = _state()
    blob = st.pack_json(state, ANSWER)
    assert blob.startswith(b"NS2")
    assert st.unpack(blob) == {**state, st.ANSWER: ANSWER}


class _Kind(IntEnum):
    ONE = 1


def test_state_marshal_cannot_write_falls_back_to_json() -> None:
    state = {"items": {}, "filter": _Kind.ONE}  # marshal refuses int subclasses
    blob = st.pack(state, ANSWER)
    assert blob.startswith(b"NS2")
    assert st.unpack(blob) == {"items": {}, "filter": 1, st.ANSWER: ANSWER}


def _damaged() -> list[bytes]:
    good = st.pack(_state(50), ANSWER)
    head_end = 3 + 8 + struct.unpack(">I", good[3:7])[0]
    flipped = bytearray(good)
    flipped[head_end - 5] ^= 0x40  # inside the marshal head: the CRC no longer matches
    return [
        b"",
        b"not zlib",
        b"NS3",  # no header
        good[:20],  # head cut short
        good[: head_end - 1],  # head one byte short, no answer
        bytes(flipped),
        b"NS9" + good[3:],  # unknown format
        _marshal_blob([1, 2, 3]),  # valid, but not a dict
        _marshal_blob({"items": [1, 2]}),  # items not a map
        _marshal_blob(b"\xff" * 3)[:11] + b"\xe9",  # header claims more than is there
        b"NS2" + struct.pack(">I", 3) + b"abc",  # format 2, not zlib
        b"NS2" + struct.pack(">I", 10) + zlib.compress(b"[1,2]"),  # format 2, not a dict
    ]


@pytest.mark.parametrize("blob", _damaged())
def test_damaged_blob_is_an_unknown_key(blob: bytes) -> None:
    assert st.load(blob) is None


def test_crc_mismatch_never_reaches_marshal() -> None:
    """Bytes that are not what marshal wrote (here: a valid marshal stream under a wrong CRC)
    are refused before they are parsed."""
    blob = bytearray(_marshal_blob({"items": {}}))
    blob[7] ^= 0x01  # the stored CRC
    assert st.load(bytes(blob)) is None


def test_a_kept_state_is_handed_out_once_then_decoded() -> None:
    state = _state(1_000)
    blob = st.pack(state, ANSWER, keep=True)
    first = st.unpack(blob)
    assert first is state  # kept: not decoded again
    assert first.pop(st.ANSWER) == ANSWER
    first["items"]["5:1"] = -7  # the caller owns it now: its changes are not the blob's
    second = st.unpack(blob)
    assert second is not state
    assert second.pop(st.ANSWER) == ANSWER
    assert second == _state(1_000)


def test_a_blob_unlike_the_kept_one_is_decoded_as_it_is() -> None:
    kept = _state(5)
    st.pack(kept, keep=True)
    other = _state(5)
    other["fm"] = 12  # the same size of head, other bytes
    assert st.unpack(st.pack(other)) == other
    forged = bytearray(st.pack(kept))  # a damaged copy of the kept head: refused, not kept
    forged[-3] ^= 0x01
    assert st.load(bytes(forged)) is None


def test_only_the_latest_states_are_kept() -> None:
    states = [_state(i + 1) for i in range(st.KEPT_STATES + 1)]
    blobs = [st.pack(state, keep=True) for state in states]
    assert st.unpack(blobs[0]) is not states[0]  # pushed out: decoded, and equal
    assert st.unpack(blobs[0]) == states[0]
    assert st.unpack(blobs[-1]) is states[-1]


#: One change of a KnownItems: (method, ServerId, modseq), applied by ``_apply`` to it and to
#: a plain dict alike.
_CHANGES = hs.lists(
    hs.tuples(
        hs.sampled_from(["set", "del", "pop", "popitem", "setdefault", "update", "ior", "clear"]),
        hs.sampled_from([f"5:{i}" for i in range(12)]),
        hs.integers(-1, 50),
    ),
    max_size=40,
)


def _apply(items: dict[str, int], method: str, sid: str, modseq: int) -> None:
    if method == "set":
        items[sid] = modseq
    elif method == "del" and sid in items:
        del items[sid]
    elif method == "pop":
        items.pop(sid, None)
    elif method == "popitem" and items:
        items.popitem()
    elif method == "setdefault":
        items.setdefault(sid, modseq)
    elif method == "update":
        items.update({sid: modseq})
    elif method == "ior":
        items |= {sid: modseq}
    elif method == "clear" and modseq % 17 == 0:
        items.clear()


@settings(max_examples=200, deadline=None)
@given(
    start=hs.dictionaries(hs.sampled_from([f"5:{i}" for i in range(12)]), hs.integers(0, 50)),
    rounds=hs.lists(_CHANGES, max_size=6),
)
def test_known_items_round_trip_whatever_changes_them(
    start: dict[str, int], rounds: list[list[tuple[str, str, int]]]
) -> None:
    """Window after window (each one loads the last blob, changes its items, packs them), the
    items read back are exactly those of a plain dict changed the same way: the changes kept
    beside the base miss none, whether a new base was written or not."""
    expected = dict(start)
    blob = st.pack({"items": dict(start), "fm": 1})
    for changes in rounds:
        items = st.unpack(blob)["items"]
        assert isinstance(items, st.KnownItems)
        for change in changes:
            _apply(items, *change)
            _apply(expected, *change)
        blob = st.pack({"items": items, "fm": 1})
        assert st.unpack(blob) == {"items": expected, "fm": 1}


def test_a_window_writes_its_changes_beside_the_base_it_read() -> None:
    state = _state(8_000)
    blob = st.pack(state)
    items = st.unpack(blob)["items"]
    base = items.base
    assert base is not None
    for i in range(100):  # one window of an initial sync
        items[f"6:{i}"] = 9_000 + i
    del items["5:1"]
    blob = st.pack({**state, "items": items})
    again = st.unpack(blob)["items"]
    assert again.base is base or again.base == base  # the same base, not rewritten
    assert len(again.changed) == 101
    assert again.changed["5:1"] is None
    assert again == {
        **{k: v for k, v in state["items"].items() if k != "5:1"},
        **{f"6:{i}": 9_000 + i for i in range(100)},
    }
    for i in range(1_100):  # more changes than 1/REBASE_SHARE of the map: a new base
        again[f"7:{i}"] = i
    blob = st.pack({**state, "items": again})
    last = st.unpack(blob)["items"]
    assert last.changed == {}
    assert last.base != base
    assert len(last) == 8_000 - 1 + 100 + 1_100


@pytest.mark.parametrize("base", [b"not marshal", 7, marshal.dumps([1, 2], 4)])
def test_a_base_that_is_not_a_map_is_an_unknown_key(base: object) -> None:
    assert st.load(_marshal_blob({"items": {}, st.BASE: base})) is None


def _device_txn(store: Store, fn: Any) -> Any:
    def run(txn: Txn) -> Any:
        user = txn.get_user("alice")
        assert user is not None
        device = txn.get_device(user.id, "phone1")
        assert device is not None
        return fn(txn, device.id)

    return store.run_sync(run)


def test_sync_continues_from_an_old_format_state(store: Store) -> None:
    """A device whose state was written as format 2 keeps its key: no resync on upgrade."""
    for i in range(4):
        deliver(store, make_mail(f"message {i}", f"body {i}"))
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    first = collection(phone.sync(inbox, key, window=2))
    sent = [a.child_text("ServerId") for a in commands(first, "Add")]
    key = first.child_text("SyncKey") or ""

    def rewrite(txn: Txn, device: int) -> None:
        blob = txn.get_sync_state(device, inbox, key)
        assert blob is not None
        assert blob.startswith(b"NS4")
        saved = st.unpack(blob)
        answer = saved.pop(st.ANSWER)
        txn.put_sync_state(device, inbox, key, st.pack_json(saved, answer))

    _device_txn(store, rewrite)
    rest = collection(phone.sync(inbox, key, window=10))
    assert rest.child_text("Status") == "1"
    more = [a.child_text("ServerId") for a in commands(rest, "Add")]
    assert len(more) == 2
    assert not set(more) & set(sent)
    blob = _device_txn(store, lambda t, d: t.get_sync_state(d, inbox, rest.child_text("SyncKey")))
    assert blob.startswith(b"NS4")  # the next state is written in the new format


def test_damaged_state_is_status_3_then_a_clean_resync(store: Store) -> None:
    deliver(store, make_mail("only", "body"))
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""

    def damage(txn: Txn, device: int) -> None:
        blob = txn.get_sync_state(device, inbox, key)
        assert blob is not None
        txn.put_sync_state(device, inbox, key, blob[:-1] + bytes([blob[-1] ^ 1]))

    _device_txn(store, damage)
    bad = collection(phone.sync(inbox, key))
    assert bad.child_text("Status") == "3"
    assert bad.child_text("SyncKey") == "0"
    again = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    items = collection(phone.sync(inbox, again))
    assert items.child_text("Status") == "1"
    assert len(commands(items, "Add")) == 1
