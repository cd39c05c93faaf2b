"""The client's phone-like behaviour against a scripted HTTP peer on loopback.

The peer is a few lines of aiohttp that answer what a real server would at each step, so the
client's own logic (version choice, re-provisioning on 449 / Status 142, wipe
acknowledgement, MoreAvailable paging, SyncKey reset) is tested without the real server.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web

from natsync.client import ClientError, Command, EASClient, RemoteWipeError
from natsync.client.state import DeviceState
from natsync.wbxml import E, Element, decode, encode

WBXML = "application/vnd.ms-sync.wbxml"


@dataclass
class Peer:
    url: str = ""
    #: (command, tree, headers) of every POST, in order.
    seen: list[tuple[str, Element | None, dict[str, str]]] = field(default_factory=list)
    handler: Callable[[str, Element | None, dict[str, str]], web.Response] | None = None
    versions: str = "2.5,12.0,12.1,14.0,14.1,16.0,16.1"
    queries: list[str] = field(default_factory=list)


def wbxml(tree: Element) -> web.Response:
    return web.Response(body=encode(tree), content_type=WBXML)


def provision_answer(tree: Element | None, final_key: int = 777) -> web.Response:
    assert tree is not None
    policy = tree.find("Policies").find("Policy")  # type: ignore[union-attr]
    acking = policy.find("PolicyKey") is not None
    key = final_key if acking else 111
    children = [
        E("Provision", "PolicyType", "MS-EAS-Provisioning-WBXML"),
        E("Provision", "Status", 1),
        E("Provision", "PolicyKey", key),
    ]
    if not acking:
        children.append(
            E(
                "Provision",
                "Data",
                E("Provision", "EASProvisionDoc", E("Provision", "DevicePasswordEnabled", 0)),
            )
        )
    return wbxml(
        E(
            "Provision",
            "Provision",
            E("Provision", "Status", 1),
            E("Provision", "Policies", E("Provision", "Policy", *children)),
        )
    )


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    state = Peer()

    async def options(request: web.Request) -> web.Response:
        return web.Response(
            headers={
                "MS-ASProtocolVersions": state.versions,
                "MS-ASProtocolCommands": "Sync,FolderSync,Provision",
            }
        )

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        tree = decode(body) if body else None
        cmd = request.query.get("Cmd", "")
        state.queries.append(request.raw_path.partition("?")[2])
        headers = dict(request.headers)
        state.seen.append((cmd, tree, headers))
        assert state.handler is not None
        return state.handler(cmd, tree, headers)

    app = web.Application()
    app.router.add_route("OPTIONS", "/Microsoft-Server-ActiveSync", options)
    app.router.add_post("/Microsoft-Server-ActiveSync", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def test_version_comes_from_options_and_449_triggers_provisioning(peer: Peer) -> None:
    peer.versions = "12.0,12.1,14.0"

    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        if cmd == "Provision":
            return provision_answer(tree)
        if headers.get("X-MS-PolicyKey") != "777":
            return web.Response(status=449)
        return wbxml(
            E(
                "FolderHierarchy",
                "FolderSync",
                E("FolderHierarchy", "Status", 1),
                E("FolderHierarchy", "SyncKey", "1"),
            )
        )

    peer.handler = handler
    async with EASClient(peer.url, "u", "pw") as client:
        result = await client.folder_sync()
        assert result.sync_key == "1"
        assert client.version == "14.0"
        assert client.state.policy_key == 777
        assert client.policy is not None
    cmds = [c for c, _, _ in peer.seen]
    assert cmds == ["FolderSync", "Provision", "Provision", "FolderSync"]
    # phase 1 without a key, phase 2 under the temporary key
    assert "X-MS-PolicyKey" not in peer.seen[1][2]
    assert peer.seen[2][2]["X-MS-PolicyKey"] == "111"
    assert all(h["MS-ASProtocolVersion"] == "14.0" for _, _, h in peer.seen)


async def test_status_142_reprovisions_once_and_a_second_demand_is_an_error(peer: Peer) -> None:
    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        if cmd == "Provision":
            return provision_answer(tree)
        return wbxml(E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "Status", 142)))

    peer.handler = handler
    async with EASClient(peer.url, "u", "pw") as client:
        with pytest.raises(ClientError, match="still demands provisioning") as info:
            await client.folder_sync()
    assert info.value.eas_status == 142
    assert [c for c, _, _ in peer.seen] == ["FolderSync", "Provision", "Provision", "FolderSync"]


async def test_remote_wipe_is_acknowledged_and_state_dropped(peer: Peer, tmp_path: Path) -> None:
    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        assert tree is not None
        if cmd == "Provision":
            if tree.find("RemoteWipe") is not None:
                return wbxml(E("Provision", "Provision", E("Provision", "Status", 1)))
            return wbxml(
                E(
                    "Provision",
                    "Provision",
                    E("Provision", "Status", 1),
                    E("Provision", "RemoteWipe"),
                )
            )
        return wbxml(E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "Status", 140)))

    peer.handler = handler
    state_file = tmp_path / "phone.json"
    async with EASClient(peer.url, "u", "pw", state_path=state_file) as client:
        client.state.folder_sync_key = "7"
        client.state.policy_key = 5
        with pytest.raises(RemoteWipeError):
            await client.folder_sync()
    ack = peer.seen[-1][1]
    assert ack is not None
    wipe = ack.find("RemoteWipe")
    assert wipe is not None
    assert wipe.child_text("Status") == "1"
    saved = DeviceState.load(state_file)
    assert saved.wiped
    assert saved.policy_key == 0
    assert saved.folder_sync_key == "0"


def sync_page(key: str, ids: list[str], more: bool, status: int = 1) -> web.Response:
    commands = E("AirSync", "Commands")
    for sid in ids:
        commands.append(
            E(
                "AirSync",
                "Add",
                E("AirSync", "ServerId", sid),
                E("AirSync", "ApplicationData", E("Email", "Subject", f"s{sid}")),
            )
        )
    coll = E(
        "AirSync",
        "Collection",
        E("AirSync", "SyncKey", key),
        E("AirSync", "CollectionId", "5"),
        E("AirSync", "Status", status),
    )
    if ids:
        coll.append(commands)
    if more:
        coll.add("AirSync", "MoreAvailable")
    return wbxml(E("AirSync", "Sync", E("AirSync", "Collections", coll)))


async def test_sync_pages_until_more_available_clears(peer: Peer) -> None:
    pages = {
        "0": ("k1", [], False),
        "k1": ("k2", ["5:1", "5:2"], True),
        "k2": ("k3", ["5:3"], False),
    }

    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        assert tree is not None
        key = tree.find("Collections").find("Collection").child_text("SyncKey")  # type: ignore[union-attr]
        nxt, ids, more = pages[key or ""]
        return sync_page(nxt, ids, more)

    peer.handler = handler
    async with EASClient(peer.url, "u", "pw") as client:
        client.state.policy_key = 1
        result = await client.sync("5", window_size=2)
    assert [i.server_id for i in result.added] == ["5:1", "5:2", "5:3"]
    assert result.sync_key == "k3"
    assert result.rounds == 3
    assert result.duplicates == []
    window = peer.seen[1][1].find("Collections").find("Collection").child_text("WindowSize")  # type: ignore[union-attr]
    assert window == "2"


async def test_sync_reports_duplicates_and_restarts_after_status_3(peer: Peer) -> None:
    calls = {"n": 0}

    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        assert tree is not None
        key = tree.find("Collections").find("Collection").child_text("SyncKey")  # type: ignore[union-attr]
        calls["n"] += 1
        if key == "stale":
            return sync_page("", [], False, status=3)
        if key == "0":
            return sync_page("k1", [], False)
        return sync_page("k2", ["5:1"], False)

    peer.handler = handler
    async with EASClient(peer.url, "u", "pw") as client:
        client.state.policy_key = 1
        coll = client.state.collection("5")
        coll.sync_key = "stale"
        coll.server_ids.add("5:1")
        result = await client.sync("5")
        assert result.reset
        assert result.duplicates == []  # a clean restart forgets what it held
        assert [i.server_id for i in result.added] == ["5:1"]
        coll.sync_key = "k1"
        again = await client.sync("5")
        assert again.duplicates == ["5:1"]


async def test_http_errors_carry_their_status(peer: Peer) -> None:
    peer.handler = lambda cmd, tree, headers: web.Response(status=401)
    async with EASClient(peer.url, "u", "wrong") as client:
        with pytest.raises(ClientError, match="authentication failed") as info:
            await client.folder_sync()
    assert info.value.http_status == 401


async def test_base64_query_form_moves_version_and_key_out_of_the_headers(peer: Peer) -> None:
    def handler(cmd: str, tree: Element | None, headers: dict[str, str]) -> web.Response:
        return wbxml(
            E(
                "FolderHierarchy",
                "FolderSync",
                E("FolderHierarchy", "Status", 1),
                E("FolderHierarchy", "SyncKey", "1"),
            )
        )

    peer.handler = handler
    async with EASClient(peer.url, "u", "pw", query_form="base64") as client:
        client.state.policy_key = 9
        await client.folder_sync()
    _, _, headers = peer.seen[0]
    assert "MS-ASProtocolVersion" not in headers
    assert "X-MS-PolicyKey" not in headers
    # the value is percent-encoded, so no "+" can turn into a space on the way
    assert peer.queries[0]
    assert "+" not in peer.queries[0]
    raw = base64.b64decode(unquote(peer.queries[0]))
    assert raw[1] == Command.FolderSync
    assert struct.unpack("<I", raw[5 + raw[4] + 1 : 5 + raw[4] + 5])[0] == 9
