"""Items of the non-email classes end to end: two phones (the EAS client) over real TLS on
loopback, against the real server on both stores.

Created on phone 1, an item appears on phone 2; changes and deletes travel both ways; a Ping on
the calendar folder wakes for a change made on the other phone; an item whose class hook queues
mail gets that mail to the smarthost. The classes are the tiny test ones of
tests/eas/test_sync_pim.py (the machinery is under test here, each real class has its own
end-to-end tests). libwbxml decodes every response the server sent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from natsync.client import EASClient, ItemCommand
from natsync.eas import registry
from natsync.store.api import FolderType
from natsync.wbxml import E, Element
from tests.conftest import StoreFactory
from tests.e2e.deployment import Deployment, deployment
from tests.e2e.test_mail_roundtrip import RELAY_WAIT, Wire, phone
from tests.eas.test_sync_pim import EVENTS, TODOS

CAL = "Calendar"
WHEN = datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
#: Seconds a Ping may take to wake after the other phone's change (it is pushed at once).
PUSH_WAIT = 20.0


@pytest.fixture(autouse=True)
def test_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "CODECS", (EVENTS, TODOS))


def event(subject: str, end: datetime = WHEN) -> Element:
    return E(
        "AirSync",
        "ApplicationData",
        E(CAL, "Subject", subject),
        E(CAL, "EndTime", end.strftime("%Y%m%dT%H%M%SZ")),
    )


def subjects(items: dict[str, Element]) -> dict[str, str]:
    return {sid: data.child_text("Subject", CAL) or "" for sid, data in items.items()}


async def ready(dep: Deployment, device_id: str, wire: Wire) -> tuple[EASClient, str]:
    client = phone(dep, device_id, wire)  # closed by the caller
    await client.folder_sync()
    calendar = client.folder(type=FolderType.CALENDAR).server_id
    await client.sync_items(calendar)
    return client, calendar


async def test_items_travel_between_two_phones_with_push(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    wire = Wire()
    async with deployment(tmp_path, store_factory(with_alice=False)) as dep:
        one, calendar = await ready(dep, "E2EPIMONE", wire)
        two, _ = await ready(dep, "E2EPIMTWO", wire)
        try:
            # Created on phone 1 → appears on phone 2.
            client_id = one.new_client_id()
            made = await one.sync_items(calendar, [ItemCommand.add(event("party"), client_id)])
            sid = made.created[client_id]
            assert made.items == {}  # not echoed back to its maker
            seen = await two.sync_items(calendar)
            assert subjects(seen.items) == {sid: "party"}

            # Phone 2 waits on the calendar; phone 1's change wakes it.
            ping = asyncio.create_task(two.ping([calendar], heartbeat=60))
            await asyncio.sleep(0.3)
            await one.sync_items(calendar, [ItemCommand.change(sid, event("party at 8"))])
            assert await asyncio.wait_for(ping, PUSH_WAIT) == [calendar]
            assert subjects((await two.sync_items(calendar)).items) == {sid: "party at 8"}

            # Changed on phone 2 → phone 1; deleted on phone 2 → gone from phone 1.
            later = WHEN + timedelta(hours=2)
            await two.sync_items(calendar, [ItemCommand.change(sid, event("party", later))])
            back = await one.sync_items(calendar)
            assert subjects(back.items) == {sid: "party"}
            assert back.items[sid].child_text("EndTime", CAL) == "20261224T200000Z"
            await two.sync_items(calendar, [ItemCommand.remove(sid)])
            assert (await one.sync_items(calendar)).deleted == [sid]
            assert sid not in two.state.collection(calendar).server_ids

            # A write whose class hook queues mail gets it to the smarthost (the relay kick).
            invite = one.new_client_id()
            await one.sync_items(calendar, [ItemCommand.add(event("invite the team"), invite)])
            await asyncio.wait_for(dep.smarthost.arrived.wait(), RELAY_WAIT)
            ((_, rcpts, _),) = dep.smarthost.messages
            assert rcpts == ["guest@remote.test"]
        finally:
            await one.close()
            await two.close()
    wire.check_with_libwbxml()
