"""The certificate manager against Debian's pebble, validating for real, with the edge answering
the challenges: HTTP-01 on the edge's port 80, TLS-ALPN-01 on the edge's 443 (pebble's
httpPort/tlsPort are the edge's test ports), DNS-01 through RFC 2136 into a real BIND; ARI
through a local RFC 9773 responder in front of pebble (pebble 2.4 has none); `auto` falling
through to what works; and a renewal while a phone holds a Ping through the edge."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from natsync.cert.acme_responders import ChallengeStore, start_http01_responder
from natsync.cert.ari import cert_id
from natsync.cert.manager import (
    CertificateManager,
    CheckAri,
    ManagerSettings,
    Renew,
    State,
    edge_reload_hook,
    ensure_placeholder,
    is_placeholder,
    read_status,
    reloader_hook,
)
from natsync.client import EASClient
from natsync.config import ServerConfig
from natsync.ddns.providers.rfc2136 import Rfc2136Updater
from natsync.edge import EdgeConfig, RunningEdge, start_edge
from natsync.edge.config import SiteCert
from natsync.edge.tls import fetch_certificate
from natsync.server import RunningServer, start_server
from natsync.store.api import FolderType, Store
from tests.cert.acme_servers import Bind, Pebble
from tests.cert.ari_proxy import run_ari_proxy
from tests.cert.factory import make_ca, make_leaf
from tests.conftest import ALICE_NAME, ALICE_PASSWORD
from tests.edge.conftest import Pki
from tests.edge.test_e2e import deliver

pytestmark = pytest.mark.timeout(90)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}.example.test"


@dataclass
class Clock:
    """The manager's clock: real time plus a shift the test moves (pebble keeps real time)."""

    shift: dt.timedelta = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.shift


def settings_for(
    pebble: Pebble, tmp_path: Path, names: tuple[str, ...], **extra: Any
) -> ManagerSettings:
    base: dict[str, Any] = {
        "names": names,
        "data_dir": tmp_path / "data",
        "directory": pebble.directory_url,
        "ca_file": pebble.ca_file,
    }
    return ManagerSettings(**(base | extra))


@asynccontextmanager
async def edge_on_pebble_ports(
    pebble: Pebble,
    settings: ManagerSettings,
    store: ChallengeStore,
    backend: str = "127.0.0.1:9",
    pin: str = "",
) -> AsyncIterator[RunningEdge]:
    """The edge on pebble's validation ports: 443 → tlsPort, 80 → httpPort, starting on a
    placeholder certificate (no certificate yet)."""
    ensure_placeholder(
        settings.cert_path, settings.key_path, settings.names, dt.datetime.now(dt.UTC)
    )
    config = EdgeConfig(
        listen=f"127.0.0.1:{pebble.tls_port}",
        http_listen=f"127.0.0.1:{pebble.http_port}",
        certificates=(SiteCert(settings.names, settings.cert_path, settings.key_path),),
        backend=backend,
        backend_pin=pin,
        insecure_backend=not pin,
        admin_listen="",
        forwards=(),
    )
    running = await start_edge(config, challenges=store)
    try:
        yield running
    finally:
        await running.close()


@asynccontextmanager
async def responders_on_pebble_ports(pebble: Pebble) -> AsyncIterator[ChallengeStore]:
    """The standalone HTTP-01 responder on pebble's httpPort (no edge needed)."""
    store = ChallengeStore()
    server = await start_http01_responder(store, "127.0.0.1", pebble.http_port)
    try:
        yield store
    finally:
        server.close()
        await server.wait_closed()


async def served_leaf(port: int, name: str) -> x509.Certificate:
    return (await fetch_certificate("127.0.0.1", port, name)).cert


def installed_leaf(settings: ManagerSettings) -> x509.Certificate:
    return x509.load_pem_x509_certificates(settings.cert_path.read_bytes())[0]


async def test_http01_on_the_edge_port_80_and_renewal_at_the_time_ari_suggests(
    pebble: Pebble, tmp_path: Path
) -> None:
    name = unique("ari")
    clock = Clock()
    store = ChallengeStore()
    async with run_ari_proxy(pebble) as ari:
        settings = settings_for(
            pebble, tmp_path, (name,), directory=ari.directory_url, challenge="http-01"
        )
        async with edge_on_pebble_ports(pebble, settings, store) as edge:
            manager = CertificateManager(
                settings, challenges=store, on_installed=[edge_reload_hook(edge)], clock=clock
            )
            assert manager.status().state is State.OBTAINING  # the placeholder does not count
            assert await manager.step() == Renew()
            first = installed_leaf(settings)
            assert (await served_leaf(edge.port, name)) == first  # the edge reloaded it
            assert ari.orders[-1] == {"identifiers": [{"type": "dns", "value": name}]}

            # RFC 9773 4.3: asked right after issuance; the routine window is 60-70 % in.
            assert await manager.step() == CheckAri()
            assert ari.asked == [cert_id(first)]
            status = manager.status()
            assert status.state is State.VALID
            assert status.renew_source == "ari"
            assert status.renew_at is not None
            life = first.not_valid_after_utc - first.not_valid_before_utc
            due = dt.datetime.fromisoformat(status.renew_at)
            start = first.not_valid_before_utc
            assert start + life * 0.6 <= due <= start + life * 0.7

            # The CA moves the window into the past (as after a mis-issuance): seen at the
            # next poll (Retry-After: 6 hours), and renewed at once with `replaces`.
            ari.windows[cert_id(first)] = (
                clock() - dt.timedelta(days=2),
                clock() - dt.timedelta(days=1),
            )
            clock.shift = dt.timedelta(hours=6, minutes=1)
            assert await manager.step() == CheckAri()
            assert await manager.step() == Renew()
            assert ari.orders[-1]["replaces"] == cert_id(first)
            second = installed_leaf(settings)
            assert second.serial_number != first.serial_number
            assert (await served_leaf(edge.port, name)) == second
            assert manager.status().challenge == "http-01"

            # Port 80 answers nothing but challenges: everything else is a redirect.
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
            writer.write(b"GET /Microsoft-Server-ActiveSync?x=1 HTTP/1.1\r\nHost: " + name.encode()
                         + b"\r\n\r\n")  # fmt: skip
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 301 ")
            location = f"Location: https://{name}:{pebble.tls_port}/Microsoft-Server-ActiveSync?x=1"
            assert location.encode() in answer


class PhoneDuringValidation(ChallengeStore):
    """A challenge store that, the moment a TLS-ALPN-01 challenge is put in, has a phone
    (ALPN http/1.1) open a TLS connection to the edge naming the same host."""

    port = 0
    seen: list[tuple[x509.Certificate, str | None, bool]]

    def put_alpn(self, identifier: str, key_authorization: str, now: dt.datetime) -> None:
        super().put_alpn(identifier, key_authorization, now)
        self.seen = []
        asyncio.get_running_loop().create_task(self._phone(identifier))

    async def _phone(self, name: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        _, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=context, server_hostname=name
        )
        tls = writer.get_extra_info("ssl_object")
        leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        pending = self.alpn_certificate_for(name) is not None
        self.seen.append((leaf, tls.selected_alpn_protocol(), pending))
        writer.close()


async def test_tls_alpn01_answered_by_the_edge_on_443(pebble: Pebble, tmp_path: Path) -> None:
    """pebble validates TLS-ALPN-01 on the edge's port (acme-tls/1, RFC 8737); a phone that
    connects naming the host during the validation gets the real certificate."""
    name = unique("alpn")
    store = PhoneDuringValidation()
    settings = settings_for(pebble, tmp_path, (name,), challenge="tls-alpn-01")
    async with edge_on_pebble_ports(pebble, settings, store) as edge:
        store.port = edge.port
        manager = CertificateManager(
            settings, challenges=store, on_installed=[edge_reload_hook(edge)]
        )
        await manager.step()
        [(phone_leaf, phone_alpn, pending)] = store.seen
        assert pending  # the phone came while the validation certificate was up
        assert is_placeholder(phone_leaf)  # ... and got the real one (no certificate yet)
        assert phone_alpn == "http/1.1"
        leaf = installed_leaf(settings)
        assert (await served_leaf(edge.port, name)) == leaf
        assert store.alpn_certificate_for(name) is None  # withdrawn after validation
        await manager.step()  # pebble 2.4's directory has no renewalInfo
        assert manager.schedule.ari_offered is False
        status = manager.status()
        assert status.state is State.VALID
        assert status.renew_source == "lifetime"
        assert status.challenge == "tls-alpn-01"
    key = settings.data_dir / "acme" / "accounts"
    [account_key] = key.glob("*/account.key")
    assert account_key.stat().st_mode & 0o777 == 0o600


async def test_dns01_through_rfc2136_when_ports_are_closed(
    pebble: Pebble, bind: Bind, tmp_path: Path
) -> None:
    name = unique("dns")
    settings = settings_for(pebble, tmp_path, (name,), http_reachable=False, tls_reachable=False)
    manager = CertificateManager(settings, dns=Rfc2136Updater(bind.server()))
    assert [c.challenge for c in manager.candidates] == ["dns-01"]
    await manager.step()
    status = manager.status()
    assert status.state is State.VALID
    assert status.challenge == "dns-01"
    assert "ports 80 and 443 are closed" in status.challenge_reason
    assert installed_leaf(settings).subject.rfc4514_string() == f"CN={name}"


async def test_auto_falls_through_to_what_works_and_remembers_it(
    pebble: Pebble, bind: Bind, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Port 443 said to be open, but nothing answers there: tls-alpn-01 fails, dns-01 works,
    and the next order starts with dns-01."""
    name = unique("auto")
    settings = settings_for(pebble, tmp_path, (name,), tls_reachable=True, http_reachable=False)
    manager = CertificateManager(settings, dns=Rfc2136Updater(bind.server()))
    assert [c.challenge for c in manager.candidates] == ["tls-alpn-01", "dns-01"]
    await manager.renew_now()
    assert manager.challenge == "dns-01"
    assert "tls-alpn-01 did not work" in caplog.text
    caplog.clear()
    await manager.renew_now()  # pebble reuses the valid authorization; dns-01 goes first
    assert "tls-alpn-01" not in caplog.text


async def test_failures_back_off_and_show_in_the_status(pebble: Pebble, tmp_path: Path) -> None:
    name = unique("fail")
    clock = Clock()
    settings = settings_for(pebble, tmp_path, (name,), challenge="http-01")
    manager = CertificateManager(settings, clock=clock)  # nothing answers on port 80
    assert await manager.step() == Renew()
    status = manager.status()
    assert status.failures == 1
    assert not status.healthy  # no certificate at all, and the first order failed
    assert "http-01" in status.last_error
    assert status.next_check is not None
    assert dt.datetime.fromisoformat(status.next_check) > clock()
    manager._save_status()
    saved = read_status(settings.data_dir)
    assert saved is not None
    assert saved["failures"] == 1


# --- a renewal while a phone holds a Ping through the edge ----------------------------------


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def phone_holding_a_ping(
    url: str, roots: Path, store: Store
) -> AsyncIterator[tuple[EASClient, str, asyncio.Task[list[str]]]]:
    """A phone that synced its inbox and now holds a Ping at *url*."""
    await deliver(store, "before")
    async with EASClient(url, ALICE_NAME, ALICE_PASSWORD, ca_file=roots) as phone:
        await phone.folder_sync()
        inbox = phone.folder(type=int(FolderType.INBOX)).server_id
        await phone.sync(inbox)
        ping = asyncio.create_task(phone.ping([inbox], heartbeat=60))
        yield phone, inbox, ping


async def test_a_renewal_does_not_cut_a_held_ping(
    pebble: Pebble,
    tmp_path: Path,
    pki: Pki,
    store: Store,
    server: RunningServer,
) -> None:
    name = unique("ping")
    clock = Clock()
    challenges = ChallengeStore()
    settings = settings_for(pebble, tmp_path, (name,), ips=("127.0.0.1",), challenge="http-01")
    roots = tmp_path / "pebble-roots.pem"
    roots.write_bytes(pebble.root_pem())
    async with edge_on_pebble_ports(
        pebble, settings, challenges, backend=f"127.0.0.1:{server.port}", pin=pki.server_pin
    ) as edge:
        manager = CertificateManager(
            settings, challenges=challenges, on_installed=[edge_reload_hook(edge)], clock=clock
        )
        stop = asyncio.Event()
        running = asyncio.create_task(manager.run(stop))
        try:
            await wait_for(lambda: manager.status().state is State.VALID, 30)
            first = installed_leaf(settings)
            url = f"https://127.0.0.1:{edge.port}"
            async with phone_holding_a_ping(url, roots, store) as (phone, inbox, ping):
                await wait_for(lambda: edge.edge.metrics.held_pings == 1)

                # 61 days later by the manager's clock: past two thirds of 90 days.
                clock.shift = dt.timedelta(days=61)
                manager.wake()
                await wait_for(lambda: installed_leaf(settings) != first, 30)
                clock.shift = dt.timedelta(0)  # (shifted, the new certificate is due at once)
                await wait_for(lambda: manager.status().state is State.VALID)
                second = installed_leaf(settings)
                assert second.serial_number != first.serial_number
                assert (await served_leaf(edge.port, name)) == second  # new handshakes
                assert not ping.done()  # the held Ping was not cut ...
                assert edge.edge.metrics.held_pings == 1
                await deliver(store, "after-renewal")
                assert await asyncio.wait_for(ping, 20) == [inbox]  # ... and answers
                synced = await phone.sync(inbox)
                assert [item.subject for item in synced.added] == ["after-renewal"]
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
    assert not running.exception()


async def test_a_renewal_reaches_a_server_serving_directly_without_cutting_a_ping(
    pebble: Pebble, tmp_path: Path, store: Store
) -> None:
    """No edge: the server holds the certificate itself; HTTP-01 is answered by the standalone
    responder on pebble's port, and the server's CertReloader takes the renewed files."""
    name = unique("direct")
    clock = Clock()
    challenges = ChallengeStore()
    settings = settings_for(pebble, tmp_path, (name,), ips=("127.0.0.1",), challenge="http-01")
    responder = await start_http01_responder(challenges, "127.0.0.1", pebble.http_port)
    try:
        first_manager = CertificateManager(settings, challenges=challenges, clock=clock)
        await first_manager.step()
        first = installed_leaf(settings)
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            tls_cert=settings.cert_path,
            tls_key=settings.key_path,
            domains=("example.test",),
            heartbeat_min=1,
        )
        server = await start_server(config, store)
        try:
            assert server.tls_reloader is not None
            manager = CertificateManager(
                settings,
                challenges=challenges,
                on_installed=[reloader_hook(server.tls_reloader)],
                clock=clock,
            )
            roots = tmp_path / "pebble-roots.pem"
            roots.write_bytes(pebble.root_pem())
            url = f"https://127.0.0.1:{server.port}"
            async with phone_holding_a_ping(url, roots, store) as (_phone, inbox, ping):
                await asyncio.sleep(0.5)
                assert not ping.done()
                clock.shift = dt.timedelta(days=61)
                assert await manager.step() == Renew()
                clock.shift = dt.timedelta(0)
                second = installed_leaf(settings)
                assert second.serial_number != first.serial_number
                assert (await served_leaf(server.port, name)) == second
                assert server.tls_reloader.generation == 2
                assert not ping.done()
                await deliver(store, "after-renewal")
                assert await asyncio.wait_for(ping, 20) == [inbox]
        finally:
            await server.close()
    finally:
        responder.close()
        await responder.wait_closed()


async def test_expiry_close_without_success_is_loud_and_unhealthy(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate 85 days into its 90 and an order that fails (nothing answers http-01):
    an error line that says so, and an unhealthy status naming the reason."""
    name = unique("late")
    settings = settings_for(pebble, tmp_path, (name,), challenge="http-01")
    now = dt.datetime.now(dt.UTC)
    leaf, _ = make_leaf(make_ca(now=now), [name], not_before=now - dt.timedelta(days=85),
                          not_after=now + dt.timedelta(days=5))  # fmt: skip
    settings.out_dir.mkdir(parents=True)
    settings.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    manager = CertificateManager(settings)
    assert manager.status().state is State.EXPIRING
    assert await manager.step() == Renew()  # due (past two thirds): no need to ask ARI first
    status = manager.status()
    assert not status.healthy
    assert status.state is State.EXPIRING
    assert "renewal keeps failing" in status.message
    assert "could not validate http-01" in status.message
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"CERTIFICATE EXPIRING: {name} expires" in r.getMessage() for r in errors)


async def test_run_outlives_an_unexpected_failure(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The status file cannot be written (a directory is in its place): logged, run goes on,
    and stops when told."""
    settings = settings_for(pebble, tmp_path, (unique("odd"),), challenge="http-01")
    manager = CertificateManager(settings)
    (settings.acme_dir / "status.json").mkdir(parents=True)
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    await wait_for(lambda: "step failed" in caplog.text, 20)
    assert not running.done()
    assert manager.status().failures == 1  # the order itself failed and was counted
    stop.set()
    await asyncio.wait_for(running, 5)
    assert running.exception() is None


async def test_an_already_replaced_certificate_is_ordered_anew(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9773 section 5: the CA refuses `replaces` (alreadyReplaced); the order goes again
    without it and the host still gets its certificate."""
    name = unique("replaced")
    clock = Clock()
    async with run_ari_proxy(pebble) as ari, responders_on_pebble_ports(pebble) as store:
        settings = settings_for(
            pebble, tmp_path, (name,), directory=ari.directory_url, challenge="http-01"
        )
        manager = CertificateManager(settings, challenges=store, clock=clock)
        await manager.step()  # the first certificate
        first = installed_leaf(settings)
        await manager.step()  # ARI: the CA offers it, so the next order names `replaces`
        ari.already_replaced = True
        ari.windows[cert_id(first)] = (clock() - dt.timedelta(days=1), clock())
        clock.shift = dt.timedelta(hours=7)
        assert await manager.step() == CheckAri()
        assert await manager.step() == Renew()
    sent = [o.get("replaces") for o in ari.orders]  # (pebble's badNonce: some sent twice)
    refused = sent.index(cert_id(first))
    assert sent[refused + 1 :]
    assert all(r is None for r in sent[refused + 1 :])
    assert installed_leaf(settings).serial_number != first.serial_number
    assert "was already replaced; ordering anew" in caplog.text
