"""The console's handlers against a real server and store on loopback: the session gate,
CSRF, the login limit, the audit log, and the device and user actions through natsync.admin
(with the device emulator as the phone)."""

from __future__ import annotations

import json

import pytest

from natsync.client import EASClient
from natsync.client.protocol import RemoteWipeError
from natsync.console.security import COOKIE, MAX_FAILURES_PER_ADDRESS
from natsync.store.api import AccessState, WipeState
from tests.console.conftest import (
    ADMIN_PASSWORD,
    ALICE_PASSWORD,
    Deployment,
    browser_like,
    login,
    settings_of,
)
from tests.server.conftest import basic

PAGES = ["/", "/devices", "/users", "/live", "/live/charts", "/live.json", "/doctor/progress",
         "/doctor/report", "/devices/alice/PHONE1"]  # fmt: skip
ACTIONS = ["/devices/action", "/users/add", "/users/action", "/doctor/run", "/logout"]


async def test_no_page_and_no_action_without_a_session(deployment: Deployment) -> None:
    async with browser_like() as http:
        for path in PAGES:
            async with http.get(deployment.base + path, allow_redirects=False) as resp:
                assert resp.status == 303, path
                assert resp.headers["Location"] == "/login"
        for path in ACTIONS:
            data = {"user": "alice", "action": "remove", "confirm": "yes", "csrf": "x"}
            async with http.post(deployment.base + path, data=data) as resp:
                assert resp.status == 403, path
        # A made-up cookie is no session either.
        http.cookie_jar.update_cookies({COOKIE: "forged"})
        async with http.get(deployment.base + "/users", allow_redirects=False) as resp:
            assert resp.status == 303
    users = await deployment.store.run(lambda t: t.list_users())
    assert [u.name for u in users] == ["alice"]


async def test_session_cookie_is_httponly_and_samesite_strict(deployment: Deployment) -> None:
    async with (
        browser_like() as http,
        http.post(
            deployment.base + "/login",
            data={"user": "admin", "password": ADMIN_PASSWORD},
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == 303
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; under TLS it is set (test_edge)


async def test_every_change_needs_the_csrf_token(deployment: Deployment) -> None:
    async with browser_like() as http:
        csrf = await login(http, deployment.base)
        form = {"name": "bob", "email": "bob@example.test", "password": "bob-password"}
        for token in (None, "wrong-token"):
            data = form if token is None else {**form, "csrf": token}
            async with http.post(deployment.base + "/users/add", data=data) as resp:
                assert resp.status == 403
        assert await deployment.store.run(lambda t: t.get_user("bob")) is None
        async with http.post(deployment.base + "/users/add", data={**form, "csrf": csrf}) as resp:
            assert resp.status == 200
            assert "Added bob" in await resp.text()
    assert await deployment.store.run(lambda t: t.get_user("bob")) is not None
    audit = settings_of(deployment).audit_path.read_text().splitlines()
    lines = [json.loads(line) for line in audit]
    assert {"action": "user-add", "target": "bob", "result": "ok"}.items() <= lines[-1].items()
    assert any(line["result"].startswith("refused") for line in lines)


async def test_login_is_rate_limited(deployment: Deployment) -> None:
    async with browser_like() as http:
        for _ in range(MAX_FAILURES_PER_ADDRESS):
            data = {"user": "admin", "password": "guess-guess"}
            async with http.post(deployment.base + "/login", data=data) as resp:
                assert resp.status == 401
        data = {"user": "admin", "password": ADMIN_PASSWORD}
        async with http.post(deployment.base + "/login", data=data) as resp:
            assert resp.status == 429  # even the right password, until the window passes
            assert COOKIE not in resp.cookies
    audit = [json.loads(x) for x in settings_of(deployment).audit_path.read_text().splitlines()]
    assert [a["result"] for a in audit].count("failed") == MAX_FAILURES_PER_ADDRESS
    assert audit[-1]["result"] == "refused: too many failed logins"


async def test_device_lifecycle_through_the_console(deployment: Deployment) -> None:
    async with (
        EASClient(deployment.eas_base, "alice", ALICE_PASSWORD, device_id="PHONE1") as phone,
        browser_like() as http,
    ):
        await phone.folder_sync()
        csrf = await login(http, deployment.base)
        async with http.get(deployment.base + "/devices") as resp:
            page = await resp.text()
        assert 'data-device="PHONE1"' in page
        # The server recorded the phone's requests (a wrong password too): the device page
        # lists them once the server wrote them (every FLUSH_EVERY seconds, or now).
        query = "Cmd=FolderSync&User=alice&DeviceId=PHONE1&DeviceType=natsync"
        headers = {"Authorization": basic("alice", "wrong-password"),
                   "MS-ASProtocolVersion": "16.1"}  # fmt: skip
        async with http.post(f"{deployment.server.url}?{query}", headers=headers) as resp:
            assert resp.status == 401
        await deployment.server.eas.recent.flush()
        async with http.get(deployment.base + "/devices/alice/PHONE1") as resp:
            page = await resp.text()
        assert "FolderSync" in page
        assert "Provision" in page
        assert "<td>401</td>" in page
        form = {"csrf": csrf, "user": "alice", "device": "PHONE1"}
        async with http.post(
            deployment.base + "/devices/action", data={**form, "action": "wipe"}
        ) as resp:
            page = await resp.text()
        assert "Erase ALL data on the phone PHONE1" in page  # asks first, naming the device
        device = await deployment.store.run(lambda t: t.get_device(1, "PHONE1"))
        assert device is not None
        assert device.wipe_state is WipeState.NONE
        async with http.post(
            deployment.base + "/devices/action", data={**form, "action": "block", "confirm": "yes"}
        ) as resp:
            assert "Block PHONE1: done" in await resp.text()
        device = await deployment.store.run(lambda t: t.get_device(1, "PHONE1"))
        assert device is not None
        assert device.access_state is AccessState.BLOCKED
        await http.post(
            deployment.base + "/devices/action", data={**form, "action": "allow", "confirm": "yes"}
        )
        await http.post(
            deployment.base + "/devices/action", data={**form, "action": "wipe", "confirm": "yes"}
        )
        with pytest.raises(RemoteWipeError):
            await phone.folder_sync()
    device = await deployment.store.run(lambda t: t.get_device(1, "PHONE1"))
    assert device is not None
    assert device.wipe_state is WipeState.ACKNOWLEDGED
    actions = [
        json.loads(x)["action"] for x in settings_of(deployment).audit_path.read_text().splitlines()
    ]
    assert actions[-3:] == ["device-block", "device-allow", "device-wipe"]


async def test_user_actions(deployment: Deployment) -> None:
    async with browser_like() as http:
        csrf = await login(http, deployment.base)
        base = {"csrf": csrf, "user": "alice"}
        await http.post(deployment.base + "/users/action", data={**base, "action": "disable"})
        async with http.get(deployment.base + "/users") as resp:
            assert "disabled" in await resp.text()
        async with EASClient(deployment.eas_base, "alice", ALICE_PASSWORD) as phone:
            with pytest.raises(Exception, match="401"):
                await phone.folder_sync()
        await http.post(deployment.base + "/users/action", data={**base, "action": "enable"})
        data = {**base, "action": "passwd", "password": "short"}
        async with http.post(deployment.base + "/users/action", data=data) as resp:
            assert resp.status == 400
            assert "too short" in await resp.text()
        async with http.post(
            deployment.base + "/users/action", data={**base, "action": "remove"}
        ) as resp:
            assert "Remove the user alice" in await resp.text()
        assert await deployment.store.run(lambda t: t.get_user("alice")) is not None
        data = {**base, "action": "remove", "confirm": "yes"}
        await http.post(deployment.base + "/users/action", data=data)
    assert await deployment.store.run(lambda t: t.get_user("alice")) is None


async def test_phone_setup_profile_download(deployment: Deployment) -> None:
    import plistlib

    async with browser_like() as http:
        await login(http, deployment.base)
        async with http.get(deployment.base + "/users") as resp:
            assert 'href="/users/alice/setup"' in await resp.text()
        async with http.get(deployment.base + "/users/alice/setup") as resp:
            page = await resp.text()
        assert "mail.example.test" in page
        assert 'href="/users/alice/profile.mobileconfig"' in page
        async with http.get(deployment.base + "/users/alice/profile.mobileconfig") as resp:
            assert resp.content_type == "application/x-apple-aspen-config"
            assert "alice.mobileconfig" in resp.headers["Content-Disposition"]
            doc = plistlib.loads(await resp.read())
    (account,) = [p for p in doc["PayloadContent"] if p["PayloadType"] == "com.apple.eas.account"]
    assert account["Host"] == "mail.example.test"
    assert account["EmailAddress"] == "alice@example.test"
    lines = settings_of(deployment).audit_path.read_text().splitlines()
    assert '"action":"profile-download","target":"alice"' in lines[-1]


async def test_what_a_form_sent_is_escaped_in_the_answer(deployment: Deployment) -> None:
    async with browser_like() as http:
        csrf = await login(http, deployment.base)
        evil = "<script>alert(1)</script>"
        data = {"csrf": csrf, "user": evil, "device": "x", "action": "block", "confirm": "yes"}
        async with http.post(deployment.base + "/devices/action", data=data) as resp:
            page = await resp.text()
            assert resp.status == 404
        assert evil not in page
        assert "&lt;script&gt;" in page
        async with http.get(deployment.base + "/devices/%3Cb%3Ex/PHONE1") as resp:
            page = await resp.text()
            assert resp.status == 404
        assert "<b>x" not in page
        # A device action on no device asks nothing and says why.
        data = {"csrf": csrf, "user": "alice", "device": "NOPE", "action": "wipe"}
        async with http.post(deployment.base + "/devices/action", data=data) as resp:
            assert resp.status == 404
            assert "alice has no device" in await resp.text()


async def test_a_rebound_name_is_refused(deployment: Deployment) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 reaches the console with its own
    name in Host; the console answers only to its addresses, localhost and allowed_hosts."""
    async with browser_like() as http:
        for host, status in (("evil.example:8444", 421), ("localhost:9999", 303),
                             ("127.0.0.1", 303), ("[::1]:8444", 303)):  # fmt: skip
            async with http.get(
                deployment.base + "/", headers={"Host": host}, allow_redirects=False
            ) as resp:
                assert resp.status == status, host
    from natsync.console.security import host_ok

    assert host_ok("console.lan:8444", frozenset({"console.lan"}))
    assert not host_ok("", frozenset())
    assert not host_ok("127.0.0.1.evil.example", frozenset())


async def test_the_doctor_as_a_test_account_never_keeps_its_password(
    deployment: Deployment,
) -> None:
    """An unknown account is refused before anything runs; a known one runs the doctor's
    session checks as its phone, and its password is in no log."""
    import asyncio

    settings = settings_of(deployment)
    async with browser_like() as http:
        csrf = await login(http, deployment.base)
        data = {"csrf": csrf, "user": "nobody", "password": "secret-one"}
        async with http.post(deployment.base + "/doctor/run", data=data) as resp:
            assert resp.status == 404
            assert "nobody" in await resp.text()
        assert not deployment.console.console.doctor.running
        data = {"csrf": csrf, "user": "alice", "password": ALICE_PASSWORD}
        async with http.post(deployment.base + "/doctor/run", data=data) as resp:
            assert resp.status == 200  # the Status page, after the redirect
        task = deployment.console.console.doctor.task
        assert task is not None
        await asyncio.wait_for(task, 60)
    report = json.loads((settings.doctor_dir / "report.json").read_text())
    session = [f for f in report["findings"] if f["check"] == "session"]
    assert session
    assert all(f["severity"] == "ok" for f in session), session  # it logged in as alice's phone
    audit = settings.audit_path.read_text()
    assert "doctor-run" in audit
    assert " as alice" in audit
    assert "secret-one" not in audit
    assert ALICE_PASSWORD not in audit
