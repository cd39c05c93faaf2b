"""A real natsync server on 127.0.0.1 (port 0) over the real SQLite store fixture, and an
HTTP client whose every WBXML answer is also decoded by libwbxml."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.config import ServerConfig
from natsync.server import RunningServer, start_server
from natsync.store.api import Store
from natsync.wbxml import Element, decode, encode
from tests.libwbxml import assert_libwbxml_decodes

PASSWORD = "alice-password"
BASE_CONFIG = ServerConfig(host="127.0.0.1", port=0, domains=("example.test",))


def basic(user: str = "alice", password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def tree(self) -> Element:
        assert self.body, f"empty answer (HTTP {self.status})"
        return decode(self.body)


class Client:
    """Speaks to the server like a phone; checks every WBXML answer with libwbxml."""

    def __init__(self, session: aiohttp.ClientSession, server: RunningServer) -> None:
        self.session = session
        self.server = server
        self.url = server.url
        self.version = "16.1"
        self.device = "srvphone"
        self.policy_key: int | None = None
        self.auth = basic()

    async def raw(
        self,
        query: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        url: str | None = None,
    ) -> Answer:
        hdrs = {"Authorization": self.auth, "MS-ASProtocolVersion": self.version}
        if self.policy_key is not None:
            hdrs["X-MS-PolicyKey"] = str(self.policy_key)
        if body:
            hdrs["Content-Type"] = "application/vnd.ms-sync.wbxml"
        hdrs.update(headers or {})
        target = (url or self.url) + (f"?{query}" if query else "")
        async with self.session.request(method, target, data=body, headers=hdrs) as resp:
            data = await resp.read()
            if data and resp.headers.get("Content-Type", "").endswith("wbxml"):
                assert_libwbxml_decodes(data)
            return Answer(resp.status, resp.headers, data)

    async def cmd(self, cmd: str, body: Element | None = None, **kw: Any) -> Answer:
        query = f"Cmd={cmd}&User=alice&DeviceId={self.device}&DeviceType=TestPhone"
        return await self.raw(query, encode(body) if body is not None else b"", **kw)

    async def provision(self) -> None:
        from natsync.wbxml import E

        ns = "Provision"
        policy = E(ns, "Policy", E(ns, "PolicyType", "MS-EAS-Provisioning-WBXML"))
        first = (await self.cmd("Provision", E(ns, "Provision", E(ns, "Policies", policy)))).tree()
        temp = first.find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
        ack = E(
            ns,
            "Policy",
            E(ns, "PolicyType", "MS-EAS-Provisioning-WBXML"),
            E(ns, "PolicyKey", temp),
            E(ns, "Status", 1),
        )
        second = (await self.cmd("Provision", E(ns, "Provision", E(ns, "Policies", ack)))).tree()
        final = second.find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
        self.policy_key = int(final or 0)


ServerFactory = Callable[..., Coroutine[Any, Any, Client]]


class ManualClock:
    """A monotonic clock the test moves: given to a server's login limits (``eas.auth.clock``),
    a lock lasts until the test advances it past the lock — not until a loaded machine gets
    round to the next request (the real clock's lock can end between two tries)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def manual_login_clock(client: Client) -> ManualClock:
    """Puts the server's login limits of *client* on a :class:`ManualClock`, and returns it."""
    clock = ManualClock()
    client.server.eas.auth.clock = clock
    return clock


@pytest.fixture
async def make_client(store: Store) -> AsyncIterator[ServerFactory]:
    servers: list[RunningServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(ssl_context: ssl.SSLContext | None = None, **overrides: Any) -> Client:
        config = replace(BASE_CONFIG, **overrides)
        server = await start_server(config, store)
        servers.append(server)
        connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
        session = aiohttp.ClientSession(connector=connector)
        sessions.append(session)
        return Client(session, server)

    yield make
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()


@pytest.fixture
async def client(make_client: ServerFactory) -> Client:
    return await make_client()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 / localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
