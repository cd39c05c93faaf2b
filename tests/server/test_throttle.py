"""Throttling on the real server (127.0.0.1): a looping phone gets 503 with X-MS-ASThrottle and
Retry-After and one log line naming it; the allowlist and 0 turn it off; others are unaffected."""

from __future__ import annotations

import logging

import pytest

from natsync.wbxml import E
from tests.server.conftest import ServerFactory

FH = "FolderHierarchy"


def _fs():  # type: ignore[no-untyped-def]
    return E(FH, "FolderSync", E(FH, "SyncKey", "0"))


async def test_a_looping_device_gets_503_and_one_log_line(
    make_client: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="natsync.server")
    client = await make_client(throttle_requests=3, throttle_window=60.0)
    await client.provision()  # 2 requests
    assert (await client.cmd("FolderSync", _fs())).status == 200
    for _ in range(5):
        refused = await client.cmd("FolderSync", _fs())
        assert refused.status == 503
        assert refused.headers["X-MS-ASThrottle"] == "CommandFrequency"
        assert 1 <= int(refused.headers["Retry-After"]) <= 20
    lines = [r.getMessage() for r in caplog.records if "throttling device" in r.getMessage()]
    assert len(lines) == 1
    assert "srvphone" in lines[0]
    assert "alice" in lines[0]
    client.device = "otherphone"  # another device of the same user has its own budget
    assert (await client.cmd("Provision", E("Provision", "Provision"))).status != 503


@pytest.mark.parametrize("overrides", [{"throttle_exempt": ("alice",)}, {"throttle_requests": 0}])
async def test_allowlist_and_off(make_client: ServerFactory, overrides: dict[str, object]) -> None:
    client = await make_client(throttle_window=60.0, **{"throttle_requests": 1, **overrides})
    await client.provision()
    for _ in range(5):
        assert (await client.cmd("FolderSync", _fs())).status == 200


def test_throttle_settings_are_read_and_checked() -> None:
    from natsync.config import server_config_from_dict
    from natsync.errors import ConfigError

    config = server_config_from_dict(
        {"throttle_requests": 10, "throttle_window": 5.0, "throttle_exempt": ["admin"]}
    )
    assert (config.throttle_requests, config.throttle_exempt) == (10, ("admin",))
    with pytest.raises(ConfigError, match="throttle"):
        server_config_from_dict({"throttle_requests": -1})
    with pytest.raises(ConfigError, match="throttle_exempt"):
        server_config_from_dict({"throttle_exempt": "admin"})
