"""The console in a real headless Chromium (Debian's chromium + chromidriver, via Selenium),
against a real natsync server on loopback and the device emulator as the phone: log in, see the
phone hold a Ping, quarantine and approve it and watch it sync, wipe it and see the wipe
acknowledged, run the doctor and open its report. Screenshots of each page go to
build/console-screenshots/ (docs/console.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from natsync.client import EASClient
from natsync.client.protocol import RemoteWipeError
from natsync.store.api import WipeState
from tests.console.conftest import (
    ADMIN_PASSWORD,
    ALICE_PASSWORD,
    NO_BROWSER,
    SHOTS,
    Deployment,
    deliver,
    do,
    wait_for,
)

pytestmark = NO_BROWSER


async def test_admin_session_in_a_real_browser(deployment: Deployment, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base = deployment.base

    def click(css: str) -> None:
        browser.find_element(By.CSS_SELECTOR, css).click()

    def shot(name: str) -> None:
        browser.save_screenshot(str(SHOTS / f"{name}.png"))

    def text() -> str:
        return str(browser.find_element(By.TAG_NAME, "body").text)

    def cell(device: str, attr: str) -> str:
        found = browser.find_elements(By.CSS_SELECTOR, f'tr[data-device="{device}"] td[{attr}]')
        return str(found[0].get_attribute(attr)) if found else ""

    def device_action(action: str) -> None:
        click(f'tr[data-device-actions="PHONE1"] button[data-action="{action}"]')

    # Log in (every page sends an anonymous browser to the login form).
    await do(browser.get, base + "/devices")
    assert "/login" in browser.current_url
    shot("login")
    await do(browser.find_element(By.NAME, "user").send_keys, "admin")
    await do(browser.find_element(By.NAME, "password").send_keys, ADMIN_PASSWORD)
    await do(click, "main button")
    await wait_for(lambda: "Status" in browser.title, "the Status page")
    shot("status")

    async with EASClient(deployment.eas_base, "alice", ALICE_PASSWORD, device_id="PHONE1") as phone:
        await phone.folder_sync()
        inbox = phone.folder(type=2).server_id
        await phone.sync(inbox)
        ping = asyncio.create_task(phone.ping([inbox], 120))
        try:
            await do(browser.get, base + "/devices")
            await wait_for(lambda: (browser.refresh(), cell("PHONE1", "data-ping"))[1] == "true",
                           "the phone's held Ping")  # fmt: skip
            shot("devices-holding-ping")
            # Quarantine, then approve (the Approve button of a quarantined device).
            await do(device_action, "quarantine")
            await wait_for(lambda: "Quarantine PHONE1" in text(), "the confirmation")
            await wait_for(lambda: browser.find_elements(By.ID, "confirm"), "the confirm button")
            await do(click, "#confirm")
            await wait_for(lambda: cell("PHONE1", "data-access") == "quarantined", "quarantine")
            ping.cancel()
        finally:
            ping.cancel()
        await deliver(deployment, "Held back while quarantined")
        quarantined = await phone.sync(inbox)
        assert [a.subject for a in quarantined.added] == ["Your device is waiting for approval"]
        await do(device_action, "allow")
        await wait_for(lambda: browser.find_elements(By.ID, "confirm"), "the confirm button")
        await do(click, "#confirm")
        await wait_for(lambda: cell("PHONE1", "data-access") == "allowed", "approval")
        shot("devices-approved")
        approved = await phone.sync(inbox)
        assert any("quarantine" in d for d in approved.deleted)
        assert [a.subject for a in approved.added] == ["Held back while quarantined"]
        # The device page shows what the phone did (once the server wrote it: now).
        await deployment.server.eas.recent.flush()
        await do(browser.get, base + "/devices/alice/PHONE1")
        assert "Sync" in await do(text)
        shot("device-detail")
        # Wipe: the confirmation names the device; the phone acknowledges at its next request.
        await do(browser.get, base + "/devices")
        await do(device_action, "wipe")
        await wait_for(lambda: "Erase ALL data on the phone PHONE1" in text(), "wipe question")
        shot("confirm-wipe")
        await wait_for(lambda: browser.find_elements(By.ID, "confirm"), "the confirm button")
        await do(click, "#confirm")
        await wait_for(lambda: "Wipe PHONE1: done" in text(), "the wipe ordered")
        assert "wipe pending" in await do(text)
        with pytest.raises(RemoteWipeError):
            await phone.folder_sync()
    await do(browser.get, base + "/devices")
    await wait_for(lambda: "wipe acknowledged" in text(), "the acknowledged wipe")
    shot("devices-wiped")
    device = await deployment.store.run(lambda t: t.get_device(1, "PHONE1"))
    assert device is not None
    assert device.wipe_state is WipeState.ACKNOWLEDGED

    # The doctor: run it, follow its progress (JS), open its report.
    await do(browser.get, base + "/")
    await do(click, "#doctor-run button")
    await wait_for(lambda: browser.find_elements(By.ID, "report"), "the doctor's report", 60)
    # The page reloaded when the run ended: the doctor's findings are lights now.
    await wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-light="ActiveSync from outside"]'),
        "the doctor's findings on the Status page",
    )
    shot("status-after-doctor")
    await do(click, "#report")
    await wait_for(lambda: "natsync doctor" in text().lower() or "doctor" in browser.title.lower(),
                   "the report page")  # fmt: skip
    shot("doctor-report")

    await do(browser.get, base + "/users")
    assert "alice@example.test" in await do(text)
    shot("users")
    await do(click, 'a[href="/users/alice/setup"]')
    await wait_for(lambda: "Phone setup for alice" in text(), "the setup page")
    shot("phone-setup")
    await do(browser.get, base + "/live")
    shot("live")
    await wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.spark"), "the charts")
