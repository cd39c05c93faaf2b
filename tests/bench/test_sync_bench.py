"""bench/sync_bench.py's lean phone: it accepts what the server really sends for the bench's
messages, and refuses an item sent twice, a body of another message, a wrong Truncated flag, a
body over the truncation or not plain text, an item without its headers."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from natsync.store.api import FolderType, Store
from natsync.wbxml import E, Element
from tests.conftest import SQLITE_ONLY
from tests.eas.helpers import Phone, collection, commands, deliver, folder_id

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import sync_bench  # type: ignore[import-not-found]  # noqa: E402  (bench/ is not a package)

TRUNCATION = 512


def _adds(store: Store) -> list[Element]:
    """Three bench messages as the server sends them (plain text, 512 bytes), newest first."""
    for i in range(3):
        deliver(store, sync_bench.make_message(i))
    phone = Phone(store)
    phone.provision()
    phone.folder_sync()
    inbox = folder_id(store, FolderType.INBOX)
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    options = E(
        "AirSync",
        "Options",
        E(
            "AirSyncBase",
            "BodyPreference",
            E("AirSyncBase", "Type", 1),
            E("AirSyncBase", "TruncationSize", TRUNCATION),
        ),
    )
    adds = commands(collection(phone.sync(inbox, key, window=10, options=options)), "Add")
    assert len(adds) == 3
    return adds


def _body(add: Element) -> Element:
    data = add.find("ApplicationData")
    assert data is not None
    body = data.find("Body", "AirSyncBase")
    assert body is not None
    return body


def _set(body: Element, tag: str, value: str) -> None:
    found = body.find(tag, "AirSyncBase")
    assert found is not None
    found.value = value


@SQLITE_ONLY
def test_the_phone_takes_what_the_server_sends(store: Store) -> None:
    seen: set[str] = set()
    for add in _adds(store):
        sync_bench.check_add(add, seen, TRUNCATION)
    assert len(seen) == 3


@SQLITE_ONLY
def test_the_phone_refuses_what_is_not_the_message(store: Store) -> None:
    first, second, _ = _adds(store)

    def refused(add: Element, seen: set[str] | None = None, truncation: int = TRUNCATION) -> None:
        with pytest.raises(sync_bench.PhoneCheckError):
            sync_bench.check_add(add, set() if seen is None else seen, truncation)

    sid = first.child_text("ServerId") or ""
    refused(first, {sid})  # already held: a duplicate
    swapped = copy.deepcopy(first)
    data = _body(second).find("Data", "AirSyncBase")
    assert data is not None
    _set(_body(swapped), "Data", data.text())  # another message's body
    refused(swapped)
    flag = copy.deepcopy(first)
    _set(_body(flag), "Truncated", "0")  # a 2,000-byte body cut to 512 that says it is whole
    refused(flag)
    html = copy.deepcopy(first)
    _set(_body(html), "Type", "2")
    refused(html)
    refused(first, truncation=100)  # more than the phone asked for
    headless = copy.deepcopy(first)
    appdata = headless.find("ApplicationData")
    assert appdata is not None
    appdata.children = [c for c in appdata.children if c.tag != "Subject"]
    refused(headless)
