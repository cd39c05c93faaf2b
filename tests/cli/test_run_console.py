"""`natsync run` with a [console] table: the first server process serves the web console on its
loopback port, on the server's store; its Live page charts the server's own metrics (the Pings
it holds, requests by command, push latency) and its Status page shows the supervisor's parts
(from DATA_DIR/run/status.json, which the supervisor writes).

The browser test drives Debian's chromium (chromium-driver, Selenium) against the real `natsync
run` subprocess: log in, add a user, see the phone that syncs as that user, its held Ping and
its push latency after a real push (SMTP in → the held Ping answered), the Live charts and the
Status lights update, reset the user's password, wipe the phone, and see a killed part come
back on the Status page. Screenshots: build/console-screenshots/run-*.png."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from natsync.auth.passwords import hash_password
from natsync.client import EASClient
from natsync.client.protocol import ClientError, RemoteWipeError
from natsync.store.api import FolderType
from tests.cli.test_run import (
    PASSWORD,
    PUSH_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    Running,
    add_user,
    free_ports,
    init_file,
    phone,
    send_mail,
    start_run,
)
from tests.console.conftest import (
    ADMIN_PASSWORD,
    NO_BROWSER,
    SHOTS,
    browser_like,
    do,
    login,
    open_browser,
    wait_for,
)

#: Seconds until the Live page has sampled a held Ping (it samples every 5 s).
LIVE_TIMEOUT = 30.0
#: The user the browser adds, and the passwords it sets.
CAROL, CAROL_PW, CAROL_PW2 = "carol", "carol first password", "carol second password"


@pytest.fixture(scope="module")
def run_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    """`natsync run` with [console] on a free loopback port; the user `you` exists."""
    tmp_path = tmp_path_factory.mktemp("runconsole")
    ports = free_ports(5)
    console_port = ports.pop()
    config = init_file(tmp_path, ports)
    config.write_text(
        config.read_text()
        + f'\n[console]\nport = {console_port}\npassword_hash = "{hash_password(ADMIN_PASSWORD)}"\n'
        + "doctor_heartbeat = 0\n"  # the console's doctor: no 60 s held Ping in a test
    )
    add_user(tmp_path)
    run = start_run(tmp_path, config, ports)
    try:
        yield run, f"http://127.0.0.1:{console_port}"
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert run.proc.stdout is not None
        run.proc.stdout.close()


async def _live_held(base: str) -> list[dict[str, object]]:
    """Log in and read /live.json until a sample shows a held Ping; the samples."""
    async with browser_like() as http:
        await login(http, base)
        deadline = time.monotonic() + LIVE_TIMEOUT
        while True:
            async with http.get(f"{base}/live.json") as resp:
                assert resp.status == 200
                samples: list[dict[str, object]] = (await resp.json())["samples"]
            if any(s["held"] == 1 for s in samples) or time.monotonic() > deadline:
                return samples
            await asyncio.sleep(0.5)


async def _live_page(base: str) -> str:
    async with browser_like() as http:
        await login(http, base)
        async with http.get(f"{base}/live") as resp:
            assert resp.status == 200
            return await resp.text()


def test_run_serves_the_console_and_live_shows_the_servers_held_pings(
    run_console: tuple[Running, str],
) -> None:
    run, base = run_console
    assert run.info["server"][0]["console_port"] == int(base.rsplit(":", 1)[1])
    assert run.info["server"][0]["console"] == base + "/"

    async def scenario() -> tuple[str, list[dict[str, object]], str]:
        async with browser_like() as http, http.get(f"{base}/login") as resp:
            assert resp.status == 200
            login_page = await resp.text()
        async with phone(run, "RUNCONSOLE1") as client:
            await client.folder_sync()
            inbox = client.folder(type=FolderType.INBOX).server_id
            await client.sync(inbox)
            ping = asyncio.create_task(client.ping([inbox], heartbeat=120))
            samples = await _live_held(base)
            page = await _live_page(base)
            await asyncio.to_thread(send_mail, run.smtp_port, "wakes the Ping")
            assert await asyncio.wait_for(ping, PUSH_TIMEOUT) == [inbox]
        return login_page, samples, page

    login_page, samples, page = asyncio.run(scenario())
    assert 'name="password"' in login_page
    assert any(s["held"] == 1 for s in samples), samples  # the server's held Ping
    assert "the server&#x27;s own metrics" in page or "the server's own metrics" in page
    assert f"console listening on 127.0.0.1:{base.rsplit(':', 1)[1]}" in run.log.read_text()


def test_the_supervisor_publishes_its_parts(run_console: tuple[Running, str]) -> None:
    """DATA_DIR/run/status.json: the supervisor's PID and each part's PID, state, restarts."""
    run, _ = run_console
    path = run.config.parent / "data" / "run" / "status.json"
    for _ in range(50):  # it looks every 2 s: a part that just said "ready" shows by then
        doc = json.loads(path.read_text())
        if {p["state"] for p in doc["parts"]} == {"running"}:
            break
        time.sleep(0.1)
    assert doc["supervisor"]["pid"] == run.proc.pid
    assert doc["supervisor"]["state"] == "running"
    parts = {p["name"]: p for p in doc["parts"]}
    assert parts["server"]["pid"] == run.info["server"][0]["pid"]
    assert parts["edge"]["pid"] == run.info["edge"][0]["pid"]
    assert {p["state"] for p in parts.values()} == {"running"}
    assert all(p["started_at"] for p in parts.values())


def test_the_edge_does_not_publish_the_console(run_console: tuple[Running, str]) -> None:
    """Through the phones' way in (the edge, TLS), the console's paths are not found; on its
    own loopback port they are."""
    run, base = run_console
    context = ssl.create_default_context(cafile=str(run.ca))
    for path in ("/login", "/", "/live.json", "/devices", "/static/console.js"):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"https://localhost:{run.edge_port}{path}", timeout=10,
                                   context=context)  # fmt: skip
        answer.value.close()
        assert answer.value.code == 404, path
    with urllib.request.urlopen(base + "/login", timeout=10) as direct:
        assert direct.status == 200


def _mail(port: int, to: str, subject: str) -> None:
    message = f"From: a@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhi\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", [to], message)


def _carol(run: Running, password: str) -> EASClient:
    return EASClient(
        f"https://localhost:{run.edge_port}", CAROL, password, ca_file=str(run.ca),
        device_id="CAROLPHONE",
    )  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with open_browser() as driver:
        yield driver


@NO_BROWSER
def test_an_admin_session_in_chromium_against_natsync_run(
    run_console: tuple[Running, str], chromium: Any
) -> None:
    asyncio.run(_session(*run_console, chromium))


async def _session(run: Running, base: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    def click(css: str) -> None:
        browser.find_element(By.CSS_SELECTOR, css).click()

    def fill(name: str, value: str, within: Any = None) -> None:
        field = (within or browser).find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    def shot(name: str) -> None:
        browser.save_screenshot(str(SHOTS / f"run-{name}.png"))

    def text() -> str:
        return str(browser.find_element(By.TAG_NAME, "body").text)

    def light(name: str) -> tuple[str, str]:
        """(class, words) of the Status page's light *name* ("", "" when absent)."""
        found = browser.find_elements(By.CSS_SELECTOR, f'section[data-light="{name}"]')
        if not found:
            return "", ""
        return str(found[0].get_attribute("class")), str(found[0].text)

    def reloaded(check: Any) -> Any:
        return lambda: (browser.refresh(), check())[1]

    def device_action(action: str) -> None:
        click(f'tr[data-device-actions="CAROLPHONE"] button[data-action="{action}"]')

    async def confirm() -> None:
        """Click the confirmation page's button once that page is there (the action's click
        only starts loading it)."""
        await wait_for(lambda: browser.find_elements(By.ID, "confirm"), "the confirm button")
        await do(browser.find_element(By.ID, "confirm").click)

    def access() -> str:
        found = browser.find_elements(
            By.CSS_SELECTOR, 'tr[data-device="CAROLPHONE"] td[data-access]'
        )
        return str(found[0].get_attribute("data-access")) if found else ""

    # Log in.
    await do(browser.get, base + "/")
    assert "/login" in browser.current_url
    await do(fill, "user", "admin")
    await do(fill, "password", ADMIN_PASSWORD)
    await do(click, "main button")
    await wait_for(lambda: "Status" in browser.title, "the Status page")
    # The supervisor's parts, with their real PIDs.
    server_pid, edge_pid = run.info["server"][0]["pid"], run.info["edge"][0]["pid"]
    await wait_for(reloaded(lambda: all("green" in light(n)[0] for n in ("server", "edge"))),
                   "the parts running on the Status page")  # fmt: skip
    cls, words = light("natsync run")
    assert "green" in cls
    assert f"running · pid {run.proc.pid}" in words
    for name, pid in (("server", server_pid), ("edge", edge_pid)):
        cls, words = light(name)
        assert "green" in cls, words
        assert re.fullmatch(rf"{name} — running · pid {pid} · up \d+ (s|min) · 0 restarts", words)
    shot("status")

    # Add a user.
    await do(browser.get, base + "/users")
    add = await do(browser.find_element, By.CSS_SELECTOR, 'form[action="/users/add"]')
    for name, value in (("name", CAROL), ("email", "carol@natsync.test"),
                        ("display_name", "Carol"), ("password", CAROL_PW)):  # fmt: skip
        await do(fill, name, value, add)
    await do(add.find_element(By.TAG_NAME, "button").click)
    await wait_for(lambda: f"Added {CAROL}" in text(), "the user added")
    shot("users")

    # Her phone syncs and holds a Ping: the Devices page shows it, the Live chart counts it.
    await do(browser.get, base + "/live")
    before = await do(lambda: light_chart(browser, "held Pings"))
    async with _carol(run, CAROL_PW) as carol:
        await carol.folder_sync()
        inbox = carol.folder(type=FolderType.INBOX).server_id
        await carol.sync(inbox)
        ping = asyncio.create_task(carol.ping([inbox], heartbeat=120))
        # The charts refresh themselves (console.js): no reload here.
        await wait_for(
            lambda: light_chart(browser, "held Pings").startswith("held Pings: 1 "),
            f"the Live chart to count the held Ping (was {before!r})", LIVE_TIMEOUT,
        )  # fmt: skip
        shot("live-held")
        await do(browser.get, base + "/devices")
        cell = 'tr[data-device="CAROLPHONE"] td[data-ping="true"]'
        await wait_for(reloaded(lambda: browser.find_elements(By.CSS_SELECTOR, cell)),
                       "the held Ping on the Devices page")  # fmt: skip
        shot("devices-holding")
        # A real push: a mail through SMTP in wakes the held Ping.
        pushed_at = time.monotonic()
        await asyncio.to_thread(_mail, run.smtp_port, "carol@natsync.test", "for Carol")
        assert await asyncio.wait_for(ping, PUSH_TIMEOUT) == [inbox]
        waited_ms = (time.monotonic() - pushed_at) * 1000
        added = await carol.sync(inbox)
        assert [a.subject for a in added.added] == ["for Carol"]

        # Its push latency on the device's page (the server writes its record every 2 s).
        await do(browser.get, f"{base}/devices/{CAROL}/CAROLPHONE")

        def push_cell() -> str:
            return str(browser.find_element(By.CSS_SELECTOR, "tr#push td").text)

        shown = await wait_for(reloaded(lambda: push_cell().startswith("p50") and push_cell()),
                               "the push latency on the device page")  # fmt: skip
        match = re.fullmatch(r"p50 ([\d.]+) ms · p99 ([\d.]+) ms \(1 push\)", shown)
        assert match is not None, shown
        assert 0 <= float(match.group(1)) <= waited_ms  # within what the phone itself waited
        shot("device-push")
        # And on Live: the server's histogram (its p50 chart shows a number now).
        await do(browser.get, base + "/live")
        await wait_for(lambda: re.match(r"push p50: [\d.e-]+ s", light_chart(browser, "push p50")),
                       "the push latency chart", LIVE_TIMEOUT)  # fmt: skip
        shot("live-push")

        # Quarantine her phone: its Sync gets only the notice; approved, it gets the mail.
        await do(browser.get, base + "/devices")
        await do(device_action, "quarantine")
        await confirm()
        await wait_for(lambda: access() == "quarantined", "the phone quarantined")
        await asyncio.to_thread(_mail, run.smtp_port, "carol@natsync.test", "held back")
        waiting = await carol.sync(inbox)
        assert [a.subject for a in waiting.added] == ["Your device is waiting for approval"]
        await do(device_action, "allow")  # the "Approve" button of a quarantined device
        await confirm()
        await wait_for(lambda: access() == "allowed", "the phone approved")
        approved = await carol.sync(inbox)
        assert "held back" in {a.subject for a in approved.added}  # (its mail sent afresh)
        assert any("quarantine" in d for d in approved.deleted)  # the notice goes

    # Reset her password: the old one fails at once, the new one works.
    await do(browser.get, base + "/users")
    reset = await do(
        browser.find_element, By.XPATH,
        f"//form[input[@name='user' and @value='{CAROL}'] and input[@value='passwd']]",
    )  # fmt: skip
    await do(fill, "password", CAROL_PW2, reset)
    await do(reset.find_element(By.TAG_NAME, "button").click)
    await wait_for(lambda: f"passwd {CAROL}: done" in text(), "the password reset")
    async with _carol(run, CAROL_PW) as old:
        with pytest.raises(ClientError) as refused:
            await old.folder_sync()
        assert refused.value.http_status == 401
    async with _carol(run, CAROL_PW2) as carol:
        await carol.folder_sync()
        # Wipe her phone: asked first, by name; acknowledged at its next request.
        await do(browser.get, base + "/devices")
        await do(device_action, "wipe")
        await wait_for(lambda: "Erase ALL data on the phone CAROLPHONE" in text(), "the question")
        await confirm()
        await wait_for(lambda: "Wipe CAROLPHONE: done" in text(), "the wipe ordered")
        with pytest.raises(RemoteWipeError):
            await carol.folder_sync()
    await wait_for(reloaded(lambda: "wipe acknowledged" in text()), "the acknowledged wipe")
    shot("devices-wiped")

    # natsync run's self-check (after start): its report one click away on the Status page.
    await do(browser.get, base + "/")
    await wait_for(reloaded(lambda: browser.find_elements(By.ID, "report")),
                   "the self-check's report link", 30)  # fmt: skip
    assert light("ActiveSync from outside")[0]  # the self-check's findings are lights
    await do(click, "#report")
    await wait_for(lambda: "natsync doctor" in text().lower(), "the self-check's report")
    shot("self-check-report")
    # Run the doctor now (inside-out, against what the self-check checks) as a phone of `you`:
    # the page follows its progress and reloads with the new report.
    await do(browser.get, base + "/")
    first = await do(
        lambda: browser.find_element(By.ID, "report").find_element(By.XPATH, "..").text
    )
    form = await do(browser.find_element, By.ID, "doctor-run")
    await do(form.find_element(By.TAG_NAME, "summary").click)
    await do(fill, "user", "you", form)
    await do(fill, "password", PASSWORD, form)
    await do(click, "#doctor-run button")
    await wait_for(lambda: "The doctor is running" in text(), "the doctor started")

    def new_report() -> bool:
        found = browser.find_elements(By.ID, "report")
        return bool(found) and found[0].find_element(By.XPATH, "..").text != first

    def progress() -> str:
        return str(browser.find_element(By.ID, "doctor-progress").text)

    try:
        await wait_for(new_report, "the console's doctor run to end", 60)
    except AssertionError:
        raise AssertionError(await do(progress) + "\n" + await do(text)) from None
    assert "exit status" in await do(lambda: browser.find_element(By.ID, "doctor-progress").text)
    # As that phone: the session was checked (Provision, FolderSync, Sync), Autodiscover too.
    cls, words = light("ActiveSync from outside")
    assert "green" in cls, words
    assert "not checked" not in light("Autodiscover")[1]
    # The inside-out check dials the edge's backend natsync run gave it ([server]'s free port
    # here), not [edge]'s own default 127.0.0.1:8443 (a false red before).
    assert "does not accept connections" not in await do(text)
    shot("status-after-doctor")

    # A part dies: the Status page shows it restarted, with its new PID and one restart.
    os.kill(edge_pid, signal.SIGKILL)
    await do(browser.get, base + "/")

    def edge_back() -> bool:
        cls, words = light("edge")
        return "green" in cls and "1 restart" in words and f"pid {edge_pid}" not in words

    await wait_for(reloaded(edge_back), "the edge restarted on the Status page", 30)
    shot("status-restarted")
    audit = (run.config.parent / "data" / "console" / "audit.log").read_text()
    for action in ("user-add", "user-passwd", "device-wipe"):
        assert f'"action":"{action}"' in audit.replace(" ", ""), action


def light_chart(driver: Any, label: str) -> str:
    """The text of the Live chart *label* ("held Pings: 1 (max 1)")."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'svg[data-chart="{label}"] text')
    return str(found[0].text) if found else ""
