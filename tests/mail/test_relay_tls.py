"""The relay's STARTTLS to its smarthost (issue 19), against a real aiosmtpd smarthost with
TLS on loopback: mail goes over a verified STARTTLS; a certificate that does not verify or a
smarthost that does not offer STARTTLS keeps the mail queued when TLS is required."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from natsync.cert import init_ca
from natsync.cert.policy import server_context
from natsync.mail.relay import Relay, SmartHost, deliver
from natsync.store.api import Store, User
from tests.mail.test_relay import DOMAIN, NOW, OUTGOING, Smarthost, eventually, queue


@dataclass
class TlsSmarthost(Smarthost):
    """The recording smarthost, offering STARTTLS with a certificate of a test CA."""

    tls: bool = True
    ca_file: Path | None = None
    cert: tuple[Path, Path] | None = None
    over_tls: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.over_tls += session.ssl is not None
        return await super().handle_DATA(server, session, envelope)

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        context = None
        if self.tls and self.cert is not None:
            context = server_context()
            context.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="smarthost.test", tls_context=context, loop=loop),
            "127.0.0.1",
            port,
        )
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Path, Path], Path]:
    base = tmp_path_factory.mktemp("smarthost-pki")
    ca = init_ca(base / "ca")
    cert = ca.issue_server_cert(["smarthost.test"], ["127.0.0.1"], base, basename="smarthost")
    other = init_ca(base / "other-ca")
    return ca.cert_path, cert, other.cert_path


@pytest.fixture
async def tls_smarthost(pki: tuple[Path, tuple[Path, Path], Path]) -> AsyncIterator[TlsSmarthost]:
    host = TlsSmarthost(cert=pki[1])
    yield host
    await host.stop()


async def _relay_once(store: Store, alice: User, smarthost: SmartHost) -> Relay:
    relay = Relay(
        store, smarthost, hostname="mx.example.test",
        retry_base=timedelta(seconds=30), idle_poll=timedelta(seconds=60),
    )  # fmt: skip
    relay.start()
    await deliver(store, alice.email, ["carol@remote.example"], OUTGOING, NOW, [DOMAIN])
    relay.kick()
    return relay


async def test_mail_goes_over_verified_starttls(
    store: Store, alice: User, tls_smarthost: TlsSmarthost, pki: tuple[Path, ...]
) -> None:
    port = await tls_smarthost.start()
    host = SmartHost.from_setting(f"127.0.0.1:{port}", "required", str(pki[0]), timeout=5)
    relay = await _relay_once(store, alice, host)
    try:
        await asyncio.wait_for(tls_smarthost.arrived.wait(), 5)
        await eventually(lambda: relay.sent == 1)
    finally:
        await relay.aclose()
    assert tls_smarthost.over_tls == 1
    assert await queue(store) == []


@pytest.mark.parametrize("case", ["unknown CA", "no STARTTLS offered"])
async def test_without_verified_tls_the_mail_stays_queued(
    store: Store, alice: User, tls_smarthost: TlsSmarthost, pki: tuple[Path, ...], case: str
) -> None:
    ca_file = str(pki[2])  # another CA: the smarthost's certificate does not verify
    if case == "no STARTTLS offered":  # as a man in the middle stripping it would make it
        tls_smarthost.tls = False
        ca_file = str(pki[0])
    port = await tls_smarthost.start()
    host = SmartHost.from_setting(f"127.0.0.1:{port}", "required", ca_file, timeout=5)
    relay = await _relay_once(store, alice, host)
    try:
        await eventually(lambda: relay.retried >= 1)
    finally:
        await relay.aclose()
    assert tls_smarthost.received == []
    [entry] = await queue(store)
    assert entry.attempts == 1


def test_auto_requires_starttls_off_this_machine_only() -> None:
    assert SmartHost.from_setting("smtp.provider.example:587").starttls is True
    assert SmartHost.from_setting("127.0.0.1:25").starttls is None
    assert SmartHost.from_setting("[::1]:25").starttls is None
    assert SmartHost.from_setting("relay:25", "off").starttls is False
    with pytest.raises(ValueError, match="STARTTLS"):
        SmartHost.from_setting("relay:25", "sometimes")
