"""`natsync server --config` with a [sources.dav] table, as a real process: the first
authenticated request of a user starts their mirror, and an event already in their Radicale
calendar lands in their natsync Calendar folder."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from natsync.auth.passwords import hash_password
from natsync.store import open_store
from natsync.store.api import FolderType, Txn
from tests.sources.dav.conftest import PASSWORD, USER
from tests.sources.dav.radicale import DavSide, Radicale
from tests.sources.dav.test_radicale import CROSS, event_ics


async def _prepare(dav_server: Radicale) -> None:
    side = DavSide(dav_server, USER, PASSWORD)
    try:
        await side.reset()
        status, _, _ = await side.request(
            "PUT", f"/{USER}/calendar/cli.ics", event_ics("cli-event", "Standup")
        )
        assert status == 201
    finally:
        await side.aclose()


def test_server_process_mirrors_after_a_login(tmp_path: Path, dav_server: Radicale) -> None:
    asyncio.run(_prepare(dav_server))
    data = tmp_path / "data"
    data.mkdir()
    store = open_store(data / "natsync.db")
    hashed = hash_password(PASSWORD)
    store.run_sync(
        lambda txn: txn.add_user(USER, "ann@natsync.test", "Ann", hashed, datetime.now(UTC))
    )
    store.close()
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{data}"\n\n'
        f'[sources.dav]\nurl = "{dav_server.url}"\nca_file = "{dav_server.ca_file}"\n'
        "interval = 1\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "natsync"), "server", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = ""
        said_dav = False
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while time.monotonic() < deadline and not (url and said_dav):
            line = proc.stderr.readline()
            if not line:
                break
            said_dav = said_dav or f"CalDAV/CardDAV from {dav_server.url}" in line
            m = re.search(r"ActiveSync at (\S+)", line)
            url = url or (m.group(1) if m else "")
        assert said_dav
        assert url.startswith("http://127.0.0.1:")
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            url, method="OPTIONS", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        def subjects(txn: Txn) -> list[str]:
            user = txn.get_user(USER)
            assert user is not None
            folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
            return [str(i.data.get("subject")) for i in txn.list_items(folder.id)]

        reader = open_store(data / "natsync.db")
        try:
            deadline = time.monotonic() + CROSS
            while reader.run_sync(subjects) != ["Standup"]:
                assert time.monotonic() < deadline, "the event did not reach the store"
                time.sleep(0.1)
        finally:
            reader.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == 0
