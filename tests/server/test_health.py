"""natsync.server.health: the histograms and their Prometheus text, without a server; the
count of items left out of answers also through a real server's /metrics."""

from __future__ import annotations

from natsync.server.health import (
    MAX_LEFT_OUT_IDS,
    PUSH_BUCKETS,
    Histogram,
    ServerMetrics,
    reply,
)
from natsync.store.api import Store
from tests.server.conftest import Client


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 5.0):
        histogram.observe(value)
    lines = histogram.render("x", 'cmd="Sync"')
    assert lines == [
        'x_bucket{cmd="Sync",le="0.1"} 1',
        'x_bucket{cmd="Sync",le="1"} 3',
        'x_bucket{cmd="Sync",le="+Inf"} 4',
        'x_sum{cmd="Sync"} 6.250000',
        'x_count{cmd="Sync"} 4',
    ]


def test_request_time_by_command_and_push_latency() -> None:
    metrics = ServerMetrics()
    metrics.request("Sync", 0.02, 200)
    metrics.request("Ping", 30.0, 200)
    metrics.pushed(10.0, 10.004)  # from a mail's end of DATA
    metrics.pushed(20.0, 20.3, "commit")  # a change no mail made: from its commit
    metrics.pushed(None, 11.0)  # no change time known: not a measurement
    text = metrics.render(held=3)
    assert "natsync_server_held_requests 3" in text
    assert 'natsync_server_requests_total{cmd="Sync",status="200"} 1' in text
    assert 'natsync_server_request_seconds_bucket{cmd="Ping",le="60"} 1' in text
    assert 'natsync_server_request_seconds_bucket{cmd="Ping",le="10"} 0' in text
    assert 'natsync_server_push_latency_seconds_count{from="data"} 1' in text
    assert 'natsync_server_push_latency_seconds_bucket{from="data",le="0.005"} 1' in text
    assert 'natsync_server_push_latency_seconds_count{from="commit"} 1' in text
    assert 'natsync_server_push_latency_seconds_bucket{from="commit",le="0.25"} 0' in text
    assert 'natsync_server_push_latency_seconds_bucket{from="commit",le="0.5"} 1' in text
    assert len(PUSH_BUCKETS) > 5


def test_commands_beyond_the_limit_share_one_label() -> None:
    metrics = ServerMetrics()
    for i in range(100):
        metrics.request(f"Cmd{i}", 0.001, 200)
    assert len(metrics.request_time) <= 65
    assert "other" in metrics.request_time


class _App:
    def __init__(self) -> None:
        self.metrics = ServerMetrics()
        self._holds: dict[str, object] = {"d": object()}


def test_only_loopback_clients_are_answered() -> None:
    app = _App()
    assert reply(app, "203.0.113.9", "/metrics").status == 404
    assert reply(app, "127.0.0.1", "/metrics").status == 200
    assert b'"held": 1' in reply(app, "::1", "/healthz").body


def test_items_left_out_are_counted_and_the_newest_named() -> None:
    metrics = ServerMetrics()
    metrics.skipped("Sync", (), 1.0)  # an answer that left nothing out
    metrics.skipped("Sync", ("5:1", "5:2"), 100.0)
    metrics.skipped("Find", ("5:1",), 101.0)
    for n in range(MAX_LEFT_OUT_IDS + 4):
        metrics.skipped("Search", (f"7:{n}",), 200.0 + n)
    text = metrics.render(held=0)
    assert 'natsync_server_items_left_out_total{cmd="Sync"} 2' in text
    assert 'natsync_server_items_left_out_total{cmd="Search"} 20' in text
    named = [line for line in text.splitlines() if line.startswith("natsync_server_item_left_")]
    assert len(named) == MAX_LEFT_OUT_IDS  # bounded: the newest only
    assert named[-1] == (
        'natsync_server_item_left_out_timestamp_seconds{cmd="Search",item="7:19"} 219.000'
    )
    assert not any('item="5:' in line for line in named)


async def test_an_item_left_out_of_a_sync_shows_on_metrics(client: Client, store: Store) -> None:
    """Through real HTTP: a note the Notes codec cannot render (its categories are a number, as
    a damaged import can leave them) is left out of the Sync; /metrics counts it once and names
    its id; a later Sync of the folder does not report it again."""
    from natsync.store.api import FolderType, Txn
    from natsync.wbxml import E
    from tests.eas.helpers import folder_id

    def add(txn: Txn) -> tuple[str, str]:
        user = txn.get_user("alice")
        assert user is not None
        notes = txn.folder_by_type(user.id, FolderType.NOTES)
        good = txn.add_item(notes.id, {"subject": "fine"}).server_id
        return good, txn.add_item(notes.id, {"subject": "bad", "categories": 5}).server_id

    good, bad = store.run_sync(add)
    notes = folder_id(store, FolderType.NOTES)
    await client.provision()
    fs = "FolderHierarchy"
    folder_sync = E(fs, "FolderSync", E(fs, "SyncKey", "0"))
    assert (await client.cmd("FolderSync", folder_sync)).status == 200

    async def sync(key: str) -> tuple[str, list[str]]:
        coll = E("AirSync", "Collection", E("AirSync", "SyncKey", key))
        coll.add("AirSync", "CollectionId", notes)
        answer = await client.cmd("Sync", E("AirSync", "Sync", E("AirSync", "Collections", coll)))
        assert answer.status == 200
        found = answer.tree().find("Collections").find("Collection")  # type: ignore[union-attr]
        assert found is not None
        cmds = found.find("Commands")
        sent = [a.child_text("ServerId") or "" for a in cmds.children] if cmds is not None else []
        return found.child_text("SyncKey") or "", sent

    async def metrics() -> str:
        async with client.session.get(client.url.split("/Microsoft")[0] + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    key, _ = await sync("0")
    key, sent = await sync(key)
    assert sent == [good]
    text = await metrics()
    assert 'natsync_server_items_left_out_total{cmd="Sync"} 1' in text
    assert f'natsync_server_item_left_out_timestamp_seconds{{cmd="Sync",item="{bad}"}}' in text
    key, sent = await sync(key)
    assert sent == []
    assert 'natsync_server_items_left_out_total{cmd="Sync"} 1' in await metrics()
