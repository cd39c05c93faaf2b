from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.cert.acme_servers import Bind, Pebble, run_bind, run_pebble


@pytest.fixture(scope="session")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    if shutil.which("named") is None:
        pytest.skip("BIND 9 (named) is not installed: make apt-test installs bind9")
    with run_bind(tmp_path_factory.mktemp("acme-bind")) as server:
        yield server


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory, bind: Bind) -> Iterator[Pebble]:
    if shutil.which("pebble") is None:
        pytest.skip("pebble is not installed: make apt-test installs it")
    # A third of nonces refused: every issuance meets badNonce several times.
    with run_pebble(tmp_path_factory.mktemp("pebble"), bind.port, nonce_reject=30) as server:
        yield server
