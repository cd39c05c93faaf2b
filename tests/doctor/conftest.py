"""Real parts for the doctor's tests: a private CA (natsync.cert.ca), a natsync server on
127.0.0.1 over TLS with a chosen certificate, a TCP relay that cuts idle connections, and a
stopped server's port. Everything listens on loopback, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from natsync.cert.ca import CA, init_ca
from natsync.config import ServerConfig
from natsync.doctor import Options
from natsync.server import RunningServer, start_server
from natsync.store.api import Store
from natsync.store.sqlite import SqliteStore
from tests.conftest import ALICE_EMAIL, ALICE_NAME, ALICE_PASSWORD, CREATED_AT

#: Seconds per doctor step in tests: loopback answers in milliseconds.
TEST_TIMEOUT = 2.0


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return init_ca(tmp_path / "ca")


def issue(ca: CA, directory: Path, names: list[str], ips: list[str]) -> tuple[Path, Path]:
    return ca.issue_server_cert(names, ips, directory)


def issue_expired(ca: CA, directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost / 127.0.0.1 that ended yesterday, signed by *ca*."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "expired.pem", directory / "expired.key"
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca.cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Served:
    server: RunningServer
    ca_file: Path
    server_cert: Path

    @property
    def port(self) -> int:
        return self.server.port

    def options(self, **kw: Any) -> Options:
        values: dict[str, Any] = {
            "url": f"https://localhost:{self.port}",
            "user": ALICE_NAME,
            "password": ALICE_PASSWORD,
            "email": ALICE_EMAIL,
            "ca_file": self.ca_file,
            "heartbeat": 0,
            "timeout": TEST_TIMEOUT,
        }
        values.update(kw)
        return Options(**values)


ServeFactory = Callable[..., Coroutine[Any, Any, Served]]


#: Where the served store is under a test's tmp_path: a config given to the doctor names it as
#: [server] store (the doctor removes its test device from it; a [server] without a store or
#: data_dir would mean ./natsync-data in the directory the tests run from).
DOCTOR_STORE = Path("doctor-store") / "natsync.db"


@pytest.fixture
def doctor_store(tmp_path: Path, alice_password_hash: str) -> Iterator[Store]:
    """A SQLite store with alice. The doctor looks at the server from outside, so which store
    driver serves it does not matter: one is enough (not the shared, per-driver ``store``)."""
    store = SqliteStore(tmp_path / DOCTOR_STORE)
    store.run_sync(
        lambda txn: txn.add_user(
            ALICE_NAME, ALICE_EMAIL, "Alice Example", alice_password_hash, CREATED_AT
        )
    )
    yield store
    store.close()


@pytest.fixture
async def serve(doctor_store: Store, ca: CA, tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """``await serve(cert=None, **config)``: a natsync server over TLS on 127.0.0.1:0."""
    running: list[RunningServer] = []

    async def make(cert: tuple[Path, Path] | None = None, **overrides: Any) -> Served:
        if cert is None:
            cert = issue(ca, tmp_path / "tls", ["localhost"], ["127.0.0.1"])
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            tls_cert=cert[0],
            tls_key=cert[1],
            data_dir=tmp_path / "data",
            domains=("example.test",),
            heartbeat_min=1,
            **overrides,
        )
        server = await start_server(config, doctor_store)
        running.append(server)
        return Served(server, ca.cert_path, cert[0])

    yield make
    for server in running:
        await server.close()


class IdleCutter:
    """A TCP relay on 127.0.0.1 that ends a connection after *idle* seconds with no bytes:
    closing both sides (a proxy's read timeout), or, with *silent*, forgetting it the way a
    home router does: from then on every byte either way is dropped and nobody is told."""

    def __init__(self, backend_port: int, idle: float, *, silent: bool = False) -> None:
        self.backend_port = backend_port
        self.idle = idle
        self.silent = silent
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> IdleCutter:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        loop = asyncio.get_running_loop()
        writers = [writer]
        pipes: list[asyncio.Task[None]] = []
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            except OSError:  # the server behind the forward is down: the router just closes
                return
            writers.append(up_writer)
            last = [loop.time()]
            forgotten = [False]

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        if forgotten[0]:
                            continue  # the router forgot this connection: dropped
                        last[0] = loop.time()
                        dst.write(data)
                        await dst.drain()

            pipes = [
                asyncio.create_task(pipe(reader, up_writer)),
                asyncio.create_task(pipe(up_reader, writer)),
            ]
            # Wake when both directions ended, or when the idle time since the last byte ran
            # out (bytes that flowed meanwhile push that moment back).
            while (remaining := self.idle - (loop.time() - last[0])) > 0:
                done, _ = await asyncio.wait(pipes, timeout=remaining)
                if len(done) == len(pipes):
                    break
            if self.silent:
                forgotten[0] = True  # the server's answer and close are lost too
                await pipes[0]
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in writers:
                w.close()
            for w in writers:
                with contextlib.suppress(OSError):
                    await w.wait_closed()
            self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@pytest.fixture
async def idle_cutter() -> AsyncIterator[Callable[..., Coroutine[Any, Any, IdleCutter]]]:
    made: list[IdleCutter] = []

    async def make(backend_port: int, idle: float, *, silent: bool = False) -> IdleCutter:
        relay = await IdleCutter(backend_port, idle, silent=silent).start()
        made.append(relay)
        return relay

    yield make
    for relay in made:
        await relay.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
