from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.cert.acme_servers import Bind, Pebble, run_bind, run_pebble
from tests.edge.conftest import pki  # noqa: F401 - the natsync server's own certificate
from tests.edge.test_e2e import server  # noqa: F401 - the natsync server behind the edge


@pytest.fixture(scope="session")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    if shutil.which("named") is None:
        pytest.skip("BIND 9 (named) is not installed: make apt-test installs bind9")
    with run_bind(tmp_path_factory.mktemp("acme-bind")) as running:
        yield running


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory, bind: Bind) -> Iterator[Pebble]:
    if shutil.which("pebble") is None:
        pytest.skip("pebble is not installed: make apt-test installs it")
    # A third of nonces refused: every issuance meets badNonce several times.
    with run_pebble(tmp_path_factory.mktemp("pebble"), bind.port, nonce_reject=30) as running:
        yield running
