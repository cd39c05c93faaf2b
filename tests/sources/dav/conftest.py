"""One real Radicale per test module (it starts in well under a second; each test resets the
user's account)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sources.dav.radicale import Radicale, radicale

USER = "ann"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    with radicale(tmp_path_factory.mktemp("radicale"), {USER: PASSWORD}) as server:
        yield server
