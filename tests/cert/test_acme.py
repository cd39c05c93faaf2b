"""ACME against Debian's pebble, validating for real: HTTP-01 and TLS-ALPN-01 answered by our
loopback responders, DNS-01 through an RFC 2136 update into a real BIND that pebble resolves
through; badNonce retries, reused authorizations, a failing challenge, and renewal."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509

from natsync.cert.acme import (
    AccountStore,
    AcmeClient,
    AcmeError,
    ChallengeFailed,
    Dns01Solver,
    Http01Solver,
    Issued,
    Solver,
    TlsAlpn01Solver,
    obtain,
)
from natsync.cert.acme_responders import (
    ChallengeStore,
    start_http01_responder,
    start_tls_alpn01_responder,
)
from natsync.cert.check import Severity, TrustStore, check
from natsync.ddns.providers.rfc2136 import Rfc2136Updater
from natsync.ddns.update import read_published
from tests.cert.acme_servers import Bind, Pebble

pytestmark = pytest.mark.timeout(60)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}.example.test"


@asynccontextmanager
async def responders(pebble: Pebble, store: ChallengeStore) -> AsyncIterator[None]:
    http = await start_http01_responder(store, "127.0.0.1", pebble.http_port)
    tls = await start_tls_alpn01_responder(store, "127.0.0.1", pebble.tls_port)
    try:
        yield
    finally:
        for server in (http, tls):
            server.close()
            await server.wait_closed()


@asynccontextmanager
async def client_for(pebble: Pebble, accounts: Path) -> AsyncIterator[AcmeClient]:
    store = AccountStore(accounts)
    key = store.key(pebble.directory_url)
    async with AcmeClient(
        pebble.directory_url,
        key,
        ssl_context=pebble.ssl_context(),
        account_url=store.account_url(pebble.directory_url),
    ) as client:
        yield client
        if client.kid:
            store.save(pebble.directory_url, client.kid, key, [])


def pebble_trust(pebble: Pebble) -> TrustStore:
    return TrustStore("pebble's root", tuple(x509.load_pem_x509_certificates(pebble.root_pem())))


async def issue(
    pebble: Pebble, tmp_path: Path, solver: Solver, names: list[str], ips: Sequence[str] = ()
) -> tuple[Issued, AcmeClient]:
    async with client_for(pebble, tmp_path / "accounts") as client:
        issued = await obtain(client, names=names, ips=ips, solver=solver, out_dir=tmp_path / "tls")
    return issued, client


@pytest.mark.parametrize("kind", ["http-01", "tls-alpn-01"])
async def test_issue_with_a_validated_challenge(pebble: Pebble, tmp_path: Path, kind: str) -> None:
    store = ChallengeStore()
    name = unique(kind.split("-", maxsplit=1)[0])
    solver: Solver = Http01Solver(store) if kind == "http-01" else TlsAlpn01Solver(store)
    async with responders(pebble, store):
        issued, client = await issue(pebble, tmp_path, solver, [name])
    assert client.stats.challenges_answered == 1
    assert store.alpn_certificate_for(name) is None
    assert len(issued.chain) == 2  # leaf + pebble's intermediate
    report = check(
        issued.chain, names=[name], trust=pebble_trust(pebble), now=dt.datetime.now(dt.UTC)
    )
    assert report.severity is Severity.OK, [f.message for f in report.findings]
    assert x509.load_pem_x509_certificates(issued.cert_path.read_bytes()) == list(issued.chain)
    assert issued.key_path.stat().st_mode & 0o077 == 0


async def test_issue_for_an_ip_address_with_http01(pebble: Pebble, tmp_path: Path) -> None:
    store = ChallengeStore()
    async with responders(pebble, store):
        issued, _ = await issue(pebble, tmp_path, Http01Solver(store), [], ["127.0.0.1"])
    report = check(
        issued.chain, ips=["127.0.0.1"], trust=pebble_trust(pebble), now=dt.datetime.now(dt.UTC)
    )
    assert report.by_code("ip.covered")


async def test_issue_with_dns01_through_rfc2136(pebble: Pebble, bind: Bind, tmp_path: Path) -> None:
    name = unique("dns")
    published: list[frozenset[str]] = []

    class Watching(Dns01Solver):
        async def withdraw(self, identifier: str, token: str, key_authorization: str) -> None:
            owner = f"_acme-challenge.{identifier}."
            published.append(read_published(bind.server(), owner, "TXT").values)
            await super().withdraw(identifier, token, key_authorization)

    issued, client = await issue(pebble, tmp_path, Watching(Rfc2136Updater(bind.server())), [name])
    assert client.stats.challenges_answered == 1
    [values] = published
    assert len(values) == 1  # the TXT was in the zone while pebble looked ...
    owner = f"_acme-challenge.{name}."
    assert read_published(bind.server(), owner, "TXT").values == frozenset()  # ... and is gone
    report = check(
        issued.chain, names=[name], trust=pebble_trust(pebble), now=dt.datetime.now(dt.UTC)
    )
    assert report.severity is Severity.OK


async def test_a_failing_challenge_is_reported_clearly(pebble: Pebble, tmp_path: Path) -> None:
    store = ChallengeStore()

    class WrongAnswer(Http01Solver):
        async def publish(self, identifier: str, token: str, key_authorization: str) -> None:
            self.store.put(token, key_authorization + "-wrong")

    name = unique("bad")
    async with responders(pebble, store):
        with pytest.raises(ChallengeFailed) as caught:
            await issue(pebble, tmp_path, WrongAnswer(store), [name])
    message = caught.value.message
    assert message.startswith(f"the ACME server could not validate http-01 for {name}: ")
    assert caught.value.problem_type == "unauthorized"
    assert "key authorization" in message.lower()
    assert not (tmp_path / "tls" / "server.pem").exists()


async def test_nothing_listening_is_reported_as_a_connection_failure(
    pebble: Pebble, tmp_path: Path
) -> None:
    name = unique("down")
    with pytest.raises(ChallengeFailed, match=f"tls-alpn-01 for {name}: .*[Ff]ailed to connect"):
        await issue(pebble, tmp_path, TlsAlpn01Solver(ChallengeStore()), [name])


async def test_bad_nonces_are_retried(pebble: Pebble, tmp_path: Path) -> None:
    # pebble here refuses 30% of nonces; 40 requests without one retry would be a 1-in-10^6 run.
    async with client_for(pebble, tmp_path / "accounts") as client:
        url = await client.register()
        for _ in range(40):
            assert (await client.get(url))["status"] == "valid"
    assert client.stats.bad_nonce_retries > 0
    assert client.stats.posts == 41 + client.stats.bad_nonce_retries


async def test_account_key_is_kept_and_the_account_found_again(
    pebble: Pebble, tmp_path: Path
) -> None:
    async with client_for(pebble, tmp_path / "accounts") as first:
        kid = await first.register(["mailto:admin@example.test"])
    store = AccountStore(tmp_path / "accounts")
    assert store.account_url(pebble.directory_url) == kid
    key = store.key(pebble.directory_url)
    async with AcmeClient(pebble.directory_url, key, ssl_context=pebble.ssl_context()) as again:
        assert await again.register() == kid  # same key: the existing account (200)


async def test_renewal_reuses_the_valid_authorization(pebble: Pebble, tmp_path: Path) -> None:
    store = ChallengeStore()
    name = unique("renew")
    async with responders(pebble, store), client_for(pebble, tmp_path / "accounts") as client:
        first = await obtain(
            client, names=[name], solver=Http01Solver(store), out_dir=tmp_path / "tls"
        )
        answered = client.stats.challenges_answered
        second = await obtain(
            client, names=[name], solver=Http01Solver(store), out_dir=tmp_path / "tls"
        )
    assert answered == 1
    assert client.stats.challenges_answered == 1  # pebble reused the valid authorization
    assert client.stats.authorizations_reused == 1
    assert second.chain[0].serial_number != first.chain[0].serial_number
    assert x509.load_pem_x509_certificates(second.cert_path.read_bytes())[0] == second.chain[0]


async def test_a_validation_that_hangs_is_abandoned_at_the_poll_deadline(
    pebble: Pebble, tmp_path: Path
) -> None:
    """The HTTP-01 port accepts and then says nothing: pebble's validation hangs, and the
    client gives up at its deadline with a message saying what is still pending."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", pebble.http_port)
    name = unique("hang")
    try:
        async with client_for(pebble, tmp_path / "accounts") as client:
            client.poll_timeout = 1.0
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(AcmeError, match=f"authorization of {name} is still pending"):
                await obtain(
                    client, names=[name], solver=Http01Solver(ChallengeStore()), out_dir=tmp_path
                )
            assert 0.5 <= loop.time() - started < 5  # gives up before sleeping past it
        assert held  # pebble really connected and was left waiting
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
