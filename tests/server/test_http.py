"""The aiohttp server for real on 127.0.0.1: OPTIONS, auth, rate limits, provisioning per
version, query forms, errors that change nothing and leave a log line, Autodiscover, held Ping,
and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from pathlib import Path

import pytest

from natsync.eas.request import ParamTag, encode_base64_query
from natsync.eas.versions import V14_1
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E
from tests.eas.helpers import deliver, folder_id, make_mail
from tests.server.conftest import Client, ServerFactory, basic, manual_login_clock, self_signed

FH = "FolderHierarchy"


def _fs(key: str = "0"):  # type: ignore[no-untyped-def]
    return E(FH, "FolderSync", E(FH, "SyncKey", key))


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "natsync.server.access"]


async def test_options_advertises_versions_and_commands(client: Client) -> None:
    answer = await client.raw("", method="OPTIONS")
    assert answer.status == 200
    assert answer.headers["MS-ASProtocolVersions"] == "12.1,14.0,14.1,16.0,16.1"
    commands = answer.headers["MS-ASProtocolCommands"].split(",")
    assert "Sync" in commands
    assert "Provision" in commands
    assert {"Find", "ValidateCert"} <= set(commands)
    assert "GetHierarchy" not in commands  # only what we implement (2.5-era commands are not)
    assert answer.headers["MS-Server-ActiveSync"]


async def test_auth_failures_look_the_same(client: Client) -> None:
    client.auth = basic("alice", "wrong")
    wrong = await client.cmd("FolderSync", _fs())
    client.auth = basic("mallory", "wrong")
    unknown = await client.cmd("FolderSync", _fs())
    client.auth = ""
    missing = await client.cmd("FolderSync", _fs())
    for answer in (wrong, unknown, missing):
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="natsync"'
        assert answer.body == b""


async def test_failed_logins_are_rate_limited(make_client: ServerFactory) -> None:
    client = await make_client(max_failed_logins_per_user=2, max_failed_logins_per_ip=100)
    manual_login_clock(client)  # the lock lasts however slowly the next request comes
    client.auth = basic("alice", "wrong")
    assert (await client.cmd("FolderSync", _fs())).status == 401
    assert (await client.cmd("FolderSync", _fs())).status == 401
    client.auth = basic()  # even the right password is not checked now
    limited = await client.cmd("FolderSync", _fs())
    assert limited.status == 429
    assert "Retry-After" in limited.headers


async def test_per_ip_limit_covers_unknown_users(make_client: ServerFactory) -> None:
    client = await make_client(max_failed_logins_per_user=100, max_failed_logins_per_ip=2)
    manual_login_clock(client)  # the lock lasts however slowly the next request comes
    for name in ("u1", "u2"):
        client.auth = basic(name, "x")
        assert (await client.cmd("FolderSync", _fs())).status == 401
    client.auth = basic()
    assert (await client.cmd("FolderSync", _fs())).status == 429


async def test_provisioning_16_1_status_and_12_1_http_449(client: Client) -> None:
    answer = await client.cmd("FolderSync", _fs())
    assert answer.status == 200
    assert answer.tree().child_text("Status") == "142"
    client.version = "12.1"
    client.device = "oldphone"
    assert (await client.cmd("FolderSync", _fs())).status == 449
    await client.provision()
    answer = await client.cmd("FolderSync", _fs())
    assert answer.status == 200
    assert answer.tree().child_text("Status") == "1"


async def test_base64_query_form(client: Client, store: Store) -> None:
    client.version = "14.1"
    await client.provision()
    query = encode_base64_query(
        "FolderSync",
        client.device,
        "TestPhone",
        V14_1,
        policy_key=client.policy_key,
        params={ParamTag.User: b"alice"},
    )
    from natsync.wbxml import encode

    answer = await client.raw(query, encode(_fs()), headers={"MS-ASProtocolVersion": ""})
    assert answer.status == 200
    assert answer.tree().child_text("Status") == "1"


async def test_sync_over_http_with_libwbxml_checks(client: Client, store: Store) -> None:
    for i in range(3):
        deliver(store, make_mail(f"hello {i}", "body", html="<b>body</b>"))
    await client.provision()
    assert (await client.cmd("FolderSync", _fs())).tree().child_text("Status") == "1"
    inbox = folder_id(store, FolderType.INBOX)
    ns = "AirSync"

    def sync(key: str):  # type: ignore[no-untyped-def]
        coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", inbox))
        coll.append(
            E(
                ns,
                "Options",
                E("AirSyncBase", "BodyPreference", E("AirSyncBase", "Type", 2)),
            )
        )
        return E(ns, "Sync", E(ns, "Collections", coll))

    first = (await client.cmd("Sync", sync("0"))).tree()
    key = first.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    second = await client.cmd("Sync", sync(key))
    again = await client.cmd("Sync", sync(key))
    assert second.body == again.body  # retransmission: the same answer
    adds = [el for el in second.tree().iter() if el.tag == "Add"]
    assert len(adds) == 3


async def test_errors_change_nothing_and_are_logged(
    make_client: ServerFactory, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsync.server.access")
    client = await make_client(max_request_body=4096)
    await client.provision()
    before = store.run_sync(_snapshot)
    bad_wbxml = await client.raw(
        "Cmd=Sync&User=alice&DeviceId=srvphone&DeviceType=TestPhone", b"\x03\x01\x6a\x00\x45\x99"
    )
    assert bad_wbxml.status == 400
    unknown = await client.raw("Cmd=Frobnicate&User=alice&DeviceId=d&DeviceType=t", b"")
    assert unknown.status == 400
    # (Every EAS command is implemented now, so none answers 501: a wrong password instead.)
    refused = await client.raw(
        "Cmd=ValidateCert&User=alice&DeviceId=d&DeviceType=t",
        headers={"Authorization": basic("alice", "wrong")},
    )
    assert refused.status == 401
    oversize = await client.raw(
        "Cmd=SendMail&User=alice&DeviceId=srvphone&DeviceType=TestPhone", b"x" * 10_000
    )
    assert oversize.status == 413
    missing = await client.raw("Cmd=Sync&User=alice&DeviceType=TestPhone", b"")
    assert missing.status == 400
    assert store.run_sync(_snapshot) == before
    lines = _access_lines(caplog)
    statuses = [line["http"] for line in lines[-5:]]
    assert statuses == [400, 400, 401, 413, 400]
    assert all("error" in line for line in lines[-5:])
    assert lines[-5]["user"] == "alice"
    assert lines[-5]["cmd"] == "Sync"


def _snapshot(txn: Txn) -> tuple[object, ...]:
    user = txn.get_user("alice")
    assert user is not None
    devices = [(d.device_id, d.policy_key) for d in txn.list_devices(user.id)]
    folders = [(f.server_id, f.modseq) for f in txn.list_folders(user.id)]
    return tuple(devices), tuple(folders), txn.hierarchy_modseq(user.id)


async def test_autodiscover(client: Client) -> None:
    url = client.url.replace("/Microsoft-Server-ActiveSync", "/AutoDiscover/AutoDiscover.xml")
    request = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/'
        b'requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress>'
        b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/"
        b"mobilesync/responseschema/2006</AcceptableResponseSchema></Request></Autodiscover>"
    )
    answer = await client.raw("", request, url=url, headers={"Content-Type": "text/xml"})
    assert answer.status == 200
    assert b"<Type>MobileSync</Type>" in answer.body
    assert b"/Microsoft-Server-ActiveSync</Url>" in answer.body
    other = request.replace(b"mobilesync/responseschema", b"outlook/responseschema")
    answer = await client.raw("", other, url=url, headers={"Content-Type": "text/xml"})
    assert b"<ErrorCode>601</ErrorCode>" in answer.body
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Autodiscover>&a;</Autodiscover>'
    answer = await client.raw("", evil, url=url, headers={"Content-Type": "text/xml"})
    assert b"<ErrorCode>600</ErrorCode>" in answer.body
    client.auth = basic("alice", "nope")
    assert (await client.raw("", request, url=url)).status == 401


async def test_ping_is_held_until_mail_arrives(make_client: ServerFactory, store: Store) -> None:
    client = await make_client(heartbeat_min=1)
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    ns = "AirSync"
    coll = E(ns, "Collection", E(ns, "SyncKey", "0"), E(ns, "CollectionId", inbox))
    first = (await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))).tree()
    key = first.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", inbox))
    await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))
    pg = "Ping"
    ping = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 30),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    held = asyncio.ensure_future(client.cmd("Ping", ping))
    await asyncio.sleep(0.3)
    assert not held.done()
    await store.run(_deliver_in)
    answer = await asyncio.wait_for(held, 5)
    assert answer.tree().child_text("Status") == "2"
    expiring = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 1),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    # The folder changed since the last Sync, so the device is told at once ...
    assert (await client.cmd("Ping", expiring)).tree().child_text("Status") == "2"
    # ... and once it has synced, an idle heartbeat expires with Status 1.
    coll = E(ns, "Collection", E(ns, "SyncKey", "0"), E(ns, "CollectionId", inbox))
    t = (await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))).tree()
    key = t.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", inbox))
    await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))
    assert (await client.cmd("Ping", expiring)).tree().child_text("Status") == "1"


def _deliver_in(txn: Txn) -> None:
    from natsync.mime import parse_message
    from tests.eas.helpers import NOW

    user = txn.get_user("alice")
    assert user is not None
    inbox = txn.folder_by_type(user.id, FolderType.INBOX)
    txn.add_message(inbox.id, parse_message(make_mail("pushed", "x"), NOW))


async def test_tls(make_client: ServerFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    client = await make_client(tls_cert=cert, tls_key=key, ssl_context=context)
    assert client.url.startswith("https://127.0.0.1:")
    answer = await client.raw("", method="OPTIONS")
    assert answer.status == 200
    await client.provision()
    assert (await client.cmd("FolderSync", _fs())).tree().child_text("Status") == "1"


async def test_held_sync_answers_on_change_or_empty(
    make_client: ServerFactory, store: Store
) -> None:
    client = await make_client(heartbeat_min=1, heartbeat_max=1)
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    ns = "AirSync"

    def sync(key: str, wait: bool = False):  # type: ignore[no-untyped-def]
        coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", inbox))
        root = E(ns, "Sync", E(ns, "Collections", coll))
        if wait:
            root.add(ns, "Wait", 1)  # one minute, capped by heartbeat_max to one second
        return root

    first = (await client.cmd("Sync", sync("0"))).tree()
    key = first.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    expired = await client.cmd("Sync", sync(key, wait=True))
    assert expired.status == 200
    assert expired.body == b""
    held = asyncio.ensure_future(client.cmd("Sync", sync(key, wait=True)))
    await asyncio.sleep(0.2)
    await store.run(_deliver_in)
    answer = await asyncio.wait_for(held, 5)
    adds = [el for el in answer.tree().iter() if el.tag == "Add"]
    assert len(adds) == 1


async def test_options_checks_credentials_when_given(client: Client) -> None:
    assert (await client.raw("", method="OPTIONS")).status == 200
    client.auth = basic("alice", "wrong")
    wrong = await client.raw("", method="OPTIONS")
    assert wrong.status == 401
    assert wrong.headers["WWW-Authenticate"] == 'Basic realm="natsync"'


@pytest.mark.parametrize("method", ["OPTIONS", "GET"])
async def test_anonymous_options_and_get_are_challenged_as_exchange_does(
    client: Client, method: str
) -> None:
    """MS-ASHTTP 2.2.3 / what IIS answers: no credentials -> 401 with the Basic challenge and
    none of the protocol headers (an analyzer takes a 200 for anonymous access)."""
    client.auth = ""
    answer = await client.raw("", method=method, headers={"Authorization": ""})
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="natsync"'
    assert "MS-ASProtocolVersions" not in answer.headers
    assert "MS-ASProtocolCommands" not in answer.headers
    client.auth = basic()
    answer = await client.raw("", method=method)
    if method == "GET":
        assert answer.status == 405
        assert answer.headers["Allow"] == "OPTIONS,POST"
    else:
        assert answer.status == 200
        assert answer.headers["X-MS-RP"] == answer.headers["MS-ASProtocolVersions"]


async def test_x_ms_rp_on_the_first_provision_only_until_the_server_changes(
    client: Client, store: Store
) -> None:
    """X-MS-RP names the versions on a device's first Provision (and again after an upgrade
    changed what is served), so the phone asks OPTIONS again for the command list."""
    ns = "Provision"
    policy = E(ns, "Policy", E(ns, "PolicyType", "MS-EAS-Provisioning-WBXML"))
    first = await client.cmd("Provision", E(ns, "Provision", E(ns, "Policies", policy)))
    assert first.status == 200
    assert first.headers["X-MS-RP"] == "12.1,14.0,14.1,16.0,16.1"
    again = await client.cmd("Provision", E(ns, "Provision", E(ns, "Policies", policy)))
    assert "X-MS-RP" not in again.headers

    def forget(txn: Txn) -> None:  # what an upgrade looks like: the device was told less
        user = txn.get_user("alice")
        assert user is not None
        device = txn.get_device(user.id, client.device)
        assert device is not None
        txn.set_device_setting(device.id, "provision.announced", "12.1,14.0;Sync")

    await store.run(forget)
    upgraded = await client.cmd("Provision", E(ns, "Provision", E(ns, "Policies", policy)))
    assert upgraded.headers["X-MS-RP"] == "12.1,14.0,14.1,16.0,16.1"


async def test_newer_ping_ends_the_older_one(make_client: ServerFactory, store: Store) -> None:
    client = await make_client()
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    ns = "AirSync"
    key = ""
    for sync_key in ("0", None):
        coll = E(ns, "Collection", E(ns, "SyncKey", sync_key or key), E(ns, "CollectionId", inbox))
        tree = (await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))).tree()
        key = tree.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    pg = "Ping"
    ping = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 600),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    first = asyncio.ensure_future(client.cmd("Ping", ping))
    await asyncio.sleep(0.3)
    second = asyncio.ensure_future(client.cmd("Ping", ping))
    old = await asyncio.wait_for(first, 5)
    assert old.tree().child_text("Status") == "1"
    assert not second.done()
    await store.run(_deliver_in)
    new = await asyncio.wait_for(second, 5)
    assert new.tree().child_text("Status") == "2"


async def test_dropped_connection_ends_the_held_ping(
    make_client: ServerFactory, store: Store
) -> None:
    import aiohttp

    client = await make_client()
    await client.provision()
    inbox = folder_id(store, FolderType.INBOX)
    ns = "AirSync"
    key = ""
    for sync_key in ("0", None):
        coll = E(ns, "Collection", E(ns, "SyncKey", sync_key or key), E(ns, "CollectionId", inbox))
        tree = (await client.cmd("Sync", E(ns, "Sync", E(ns, "Collections", coll)))).tree()
        key = tree.find("Collections").find("Collection").child_text("SyncKey") or ""  # type: ignore[union-attr]
    pg = "Ping"
    ping = E(
        pg,
        "Ping",
        E(pg, "HeartbeatInterval", 600),
        E(pg, "Folders", E(pg, "Folder", E(pg, "Id", inbox), E(pg, "Class", "Email"))),
    )
    eas = client.server.eas
    async with aiohttp.ClientSession() as other:
        phone = Client(other, client.server)
        phone.policy_key = client.policy_key
        held = asyncio.ensure_future(phone.cmd("Ping", ping))
        for _ in range(50):
            await asyncio.sleep(0.05)
            if eas._holds:
                break
        assert eas._holds
        held.cancel()  # the phone goes away mid-Ping
        with contextlib.suppress(asyncio.CancelledError):
            await held
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not eas._holds:
            break
    assert not eas._holds


async def test_chunked_oversize_body_is_413_while_reading(
    make_client: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsync.server.access")
    client = await make_client(max_request_body=4096)
    await client.provision()

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"x" * 1024

    query = "Cmd=SendMail&User=alice&DeviceId=srvphone&DeviceType=TestPhone"
    headers = {
        "Authorization": client.auth,
        "MS-ASProtocolVersion": "16.1",
        "X-MS-PolicyKey": str(client.policy_key),
        "Content-Type": "message/rfc822",
    }
    async with client.session.post(f"{client.url}?{query}", data=chunks(), headers=headers) as r:
        assert r.status == 413
    assert _access_lines(caplog)[-1]["http"] == 413


async def test_successful_requests_log_status_and_size(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsync.server.access")
    await client.provision()
    await client.cmd("FolderSync", _fs())
    line = _access_lines(caplog)[-1]
    assert line["cmd"] == "FolderSync"
    assert line["status"] == 1
    assert line["user"] == "alice"
    assert line["device"] == "srvphone"
    assert isinstance(line["bytes"], int)
    assert line["bytes"] > 0


async def test_attachment_fetch_over_http_inline_and_multipart(
    client: Client, store: Store
) -> None:
    import base64
    import struct

    sid = deliver(store, make_mail("file", "x", attachment=b"\x00\xffbinary"))

    def reference(txn: Txn) -> str:
        user = txn.get_user("alice")
        assert user is not None
        msg = txn.get_message(user.id, sid)
        assert msg is not None
        return msg.attachments[0].file_reference

    ref = store.run_sync(reference)
    await client.provision()
    io = "ItemOperations"
    fetch = E(
        io, io, E(io, "Fetch", E(io, "Store", "Mailbox"), E("AirSyncBase", "FileReference", ref))
    )
    inline = await client.cmd(io, fetch)  # libwbxml decodes it (Client.raw)
    data = [el.text() for el in inline.tree().iter() if el.tag == "Data"]
    assert [base64.b64decode(d) for d in data] == [b"\x00\xffbinary"]
    multi = await client.cmd(io, fetch, headers={"MS-ASAcceptMultiPart": "T"})
    assert multi.headers["Content-Type"] == "application/vnd.ms-sync.multipart"
    count, off0, len0, off1, len1 = struct.unpack_from("<iiiii", multi.body)
    assert count == 2
    assert multi.body[off1 : off1 + len1] == b"\x00\xffbinary"
    from tests.libwbxml import assert_libwbxml_decodes

    assert_libwbxml_decodes(multi.body[off0 : off0 + len0])
