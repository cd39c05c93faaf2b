"""The router's answers reach the certificate manager under `natsync run`: the portmap part
notes every mapping result for ports 80 / 443 (natsync.cert.manager.ReachabilityFile, in the
data directory), the cert part follows the file (natsync.run.parts._follow_reachability) and
``auto`` chooses again. Against pebble and BIND: with 80 and 443 refused by the router the
order goes by dns-01 and says why; once the router maps 443, tls-alpn-01 on the edge is tried
first and used."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from natsync.cert.acme_responders import ChallengeStore
from natsync.cert.manager import CertificateManager, ReachabilityFile
from natsync.ddns.providers.rfc2136 import Rfc2136Updater
from natsync.deployment import deployment_from_dict
from natsync.portmap.manager import MappingSpec, MapResult
from natsync.run.parts import REACHABILITY_POLL, _follow_reachability, manager_settings
from tests.cert.acme_servers import ZONE, Bind, Pebble
from tests.cert.conftest import bind, pebble  # noqa: F401 - the fixtures this module uses
from tests.cert.test_manager import edge_on_pebble_ports


def _deployment(tmp_path: Path, name: str, acme: Pebble) -> Any:
    return deployment_from_dict(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "portmap": {"mappings": ["80/tcp", "443/tcp"]},
            "cert": {"name": name, "directory": acme.directory_url,
                     "ca_file": str(acme.ca_file)},
        },
        tmp_path / "natsync.toml",
    )  # fmt: skip


def test_what_the_router_answered_is_written_and_read(tmp_path: Path) -> None:
    written = ReachabilityFile(tmp_path)
    assert written.read() is None
    written.note(MapResult(MappingSpec("tcp", 8080, 80), "failed", "UPnP error 718"))
    written.note(MapResult(MappingSpec("tcp", 25, 25), "created"))  # not 80 / 443
    assert ReachabilityFile(tmp_path).read() == (False, None)
    written.note(MapResult(MappingSpec("tcp", 8443, 443), "created"))
    assert ReachabilityFile(tmp_path).read() == (False, True)
    # a router that grants another outside port than asked: 443 does not reach the edge
    written.note(MapResult(MappingSpec("tcp", 8443, 443), "renewed", external_port=44300))
    assert ReachabilityFile(tmp_path).read() == (False, False)
    # an IPv6 pinhole says nothing about the IPv4 mapping validators come through
    written.note(MapResult(MappingSpec("tcp", 80, 80), "created", method="pcp6"))
    assert ReachabilityFile(tmp_path).read() == (False, False)
    written.clear()
    assert ReachabilityFile(tmp_path).read() is None


async def test_auto_follows_the_router_under_run(
    pebble: Pebble,  # noqa: F811 - the fixture imported above
    bind: Bind,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"reach-{uuid.uuid4().hex[:8]}.{ZONE}"
    deployment = _deployment(tmp_path, name, pebble)
    settings = manager_settings(deployment)
    router = ReachabilityFile(settings.data_dir)  # what the portmap part writes
    router.clear()
    router.note(MapResult(MappingSpec("tcp", 80, 80), "failed", "UPnP error 718"))
    router.note(MapResult(MappingSpec("tcp", 443, 443), "failed", "UPnP error 718"))
    store = ChallengeStore()
    manager = CertificateManager(settings, challenges=store, dns=Rfc2136Updater(bind.server()))
    # Nothing known yet from [cert]: dns-01 first, then the unknown ports.
    assert [c.challenge for c in manager.candidates] == ["dns-01", "tls-alpn-01", "http-01"]
    stop = asyncio.Event()
    follow = asyncio.create_task(_follow_reachability(deployment, manager, stop))
    try:
        await asyncio.sleep(0.1)
        assert [(c.challenge, c.reason) for c in manager.candidates] == [
            ("dns-01", "a DNS updater is configured and ports 80 and 443 are closed from outside")
        ]
        async with edge_on_pebble_ports(pebble, settings, store):
            await manager.renew_now()
            assert manager.challenge == "dns-01"
            # The router maps 443 now (the portmap part's next round): tls-alpn-01 first.
            router.note(MapResult(MappingSpec("tcp", 443, 443), "created"))
            await asyncio.sleep(REACHABILITY_POLL + 0.5)
            assert [c.challenge for c in manager.candidates] == ["tls-alpn-01", "dns-01"]
            manager.challenge = ""  # forget what worked last, so the order goes by the choice
            await manager.renew_now()
            # pebble reuses the valid authorization (PEBBLE_AUTHZREUSE): what is shown here is
            # the choice; TLS-ALPN-01 validated on the edge: tests/cert/test_manager.py.
            assert manager.last_stats is not None
            assert manager.last_stats.authorizations_reused == 1
            assert manager.challenge == "tls-alpn-01"
            assert manager.challenge_reason == "port 443 reaches the edge from outside"
    finally:
        stop.set()
        await follow
