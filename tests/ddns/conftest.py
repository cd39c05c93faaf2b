from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ddns.servers import ACME_OWNER, UPDATABLE, Echo, Named, run_echo, run_named


@pytest.fixture
def named(tmp_path: Path) -> Iterator[Named]:
    if shutil.which("named") is None:
        pytest.skip("BIND 9 (named) is not installed: make apt-test installs bind9")
    with run_named(tmp_path / "bind") as server:
        yield server


@pytest.fixture
def named_txt(tmp_path: Path) -> Iterator[Named]:
    """BIND as in ``named``, whose update-policy also grants TXT, and ACME_OWNER."""
    if shutil.which("named") is None:
        pytest.skip("BIND 9 (named) is not installed: make apt-test installs bind9")
    with run_named(tmp_path / "bind-txt", updatable=(*UPDATABLE, ACME_OWNER), txt=True) as server:
        yield server


@pytest.fixture
def echo() -> Iterator[tuple[str, type[Echo]]]:
    """An address echo service on loopback; set Echo.address to move the public address."""
    with run_echo() as url:
        yield url, Echo


@pytest.fixture(scope="session", autouse=True)
def _remove_leftover_lab_namespaces() -> Iterator[None]:
    """Namespaces of a crashed earlier run (their owner process is gone) are deleted before and
    after the session; live ones of a concurrent session are left alone."""
    import os

    from tests.ddns.lab import cleanup_leftovers

    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield
        return
    cleanup_leftovers()
    yield
    cleanup_leftovers()
