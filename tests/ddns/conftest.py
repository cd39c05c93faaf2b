from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ddns.servers import Named, run_named


@pytest.fixture
def named(tmp_path: Path) -> Iterator[Named]:
    if shutil.which("named") is None:
        pytest.skip("BIND 9 (named) is not installed: make apt-test installs bind9")
    with run_named(tmp_path / "bind") as server:
        yield server
