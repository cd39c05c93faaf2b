"""`natsync server` as a real process: starts from a config file, challenges OPTIONS, stops on
SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def test_natsync_server_serves_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "natsync.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{tmp_path / "data"}"\n',
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
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while time.monotonic() < deadline and not url:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"ActiveSync at (\S+)", line)
            url = m.group(1) if m else ""
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(url, method="OPTIONS")
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(request, timeout=5)  # no user yet: the Basic challenge
        assert anonymous.value.code == 401
        assert anonymous.value.headers["WWW-Authenticate"].startswith("Basic realm=")
        anonymous.value.close()
        assert (tmp_path / "data" / "natsync.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert code == 0
