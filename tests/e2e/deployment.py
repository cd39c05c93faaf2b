"""A whole natsync deployment in the test's event loop: store, TLS server, SMTP in, relay,
and a second aiosmtpd acting as the smarthost that records what it is handed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from natsync.auth.passwords import hash_password
from natsync.cert import init_ca
from natsync.config import ServerConfig
from natsync.mail.relay import Relay, SmartHost
from natsync.mail.smtp_in import start_smtp_server
from natsync.server import start_server
from natsync.store import open_store
from natsync.store.api import Store

DOMAIN = "natsync.test"
USER = "ann"
EMAIL = f"{USER}@{DOMAIN}"
PASSWORD = "correct horse battery staple"


@dataclass
class Recorder:
    """aiosmtpd handler of the fake smarthost: keeps every accepted envelope."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        self.messages.append((envelope.mail_from or "", list(envelope.rcpt_tos), content))
        self.arrived.set()
        return "250 2.0.0 queued"


@dataclass
class Deployment:
    url: str
    ca_file: Path
    smtp_host: str
    smtp_port: int
    store: Store
    smarthost: Recorder
    user: str = USER
    email: str = EMAIL
    password: str = PASSWORD
    extra: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def deployment(tmp_path: Path, store: Store | None = None) -> AsyncIterator[Deployment]:
    """The deployment on *store* (a new SQLite file when None; a given store stays open)."""
    ca = init_ca(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], tmp_path / "tls")
    owned = store is None
    store = open_store(tmp_path / "natsync.sqlite3") if store is None else store
    hashed = hash_password(PASSWORD)
    await store.run(lambda txn: txn.add_user(USER, EMAIL, "Ann Example", hashed, datetime.now(UTC)))
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    smarthost_server = await loop.create_server(
        lambda: SMTP(recorder, hostname="smarthost.test", loop=loop), "127.0.0.1", 0
    )
    smarthost_port = smarthost_server.sockets[0].getsockname()[1]
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        tls_cert=cert,
        tls_key=key,
        data_dir=tmp_path,
        domains=(DOMAIN,),
        smarthost=f"127.0.0.1:{smarthost_port}",
    )
    relay = Relay(store, SmartHost("127.0.0.1", smarthost_port), hostname="localhost")
    relay.start()
    server = await start_server(config, store, relay=relay)
    smtp = await start_smtp_server(
        store, "127.0.0.1", 0, (DOMAIN,), hostname="localhost", relay=relay
    )
    try:
        yield Deployment(
            url=f"https://localhost:{server.port}",
            ca_file=ca.cert_path,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            store=store,
            smarthost=recorder,
        )
    finally:
        await smtp.close()
        await server.close()
        await relay.aclose()
        smarthost_server.close()
        await smarthost_server.wait_closed()
        if owned:
            await store.aclose()
