"""Shared, rotating TLS ticket keys (natsync.edge.tickets, the C module natsync.edge._tickets):
real OpenSSL handshakes over memory BIOs between a client and the phone listener's contexts of
two "workers" (two SiteContexts, as two edge processes build them)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsync.edge import tickets
from natsync.edge.config import SiteCert
from natsync.edge.tls import SiteContexts

from .conftest import PUBLIC_NAME, EdgeFactory, Pki, Recorder, edge_config
from .conftest import bio_handshake as handshake

if tickets._tickets is None:  # pragma: no cover - CI builds it (gcc and libssl-dev)
    pytest.skip(
        "natsync.edge._tickets is not built (no C compiler or libssl headers at install)",
        allow_module_level=True,
    )

C = tickets._tickets
SECRET = bytes(range(32))
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture
def period() -> Iterator[None]:
    """The clock's period number, restored after the test (set_period_no is process-wide)."""
    yield
    C.set_period_no(-1)


def worker(pki: Pki, *, shared: bool = True) -> ssl.SSLContext:
    sites = SiteContexts([SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key)])
    if shared:
        assert tickets.share(sites.listening, SECRET)
    return sites.listening


def client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = pki.client_context()
    context.maximum_version = version
    return context


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
def test_a_ticket_of_one_worker_resumes_at_another(pki: Pki, version: ssl.TLSVersion) -> None:
    phone_ctx, one, other = client(pki, version), worker(pki), worker(pki)
    phone, edge = handshake(phone_ctx, one)
    assert not edge.session_reused
    assert phone.session is not None
    before = C.counters()
    again, edge = handshake(phone_ctx, other, phone.session)
    assert edge.session_reused
    assert again.session_reused
    assert again.version() == ("TLSv1.3" if version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
    assert C.counters()["resumed"] == before["resumed"] + 1


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
def test_every_reconnect_resumes(pki: Pki, version: ssl.TLSVersion) -> None:
    """A client that offers its last session on each reconnect (wrk, phones) resumes every
    time, whichever worker it reaches. In TLS 1.3 each resumption brings a new ticket: clients
    use a ticket once (RFC 8446 appendix C.4; wrk, with none after a resumption, did a full
    handshake every other reconnect). A TLS 1.2 ticket under the current key is offered again
    and kept: no new one (as nginx and HAProxy)."""
    phone_ctx, workers = client(pki, version), [worker(pki), worker(pki)]
    phone, _ = handshake(phone_ctx, workers[0])
    for attempt in range(6):
        issued = C.counters()["issued"]
        phone, edge = handshake(phone_ctx, workers[attempt % 2], phone.session)
        assert edge.session_reused, f"reconnect {attempt + 1} was a full handshake"
        new_tickets = C.counters()["issued"] - issued
        assert new_tickets == (1 if version is ssl.TLSVersion.TLSv1_3 else 0), attempt


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
def test_without_shared_keys_another_worker_refuses_it(pki: Pki, version: ssl.TLSVersion) -> None:
    """The case the module exists for: OpenSSL's own key is one per context."""
    phone_ctx = client(pki, version)
    phone, _ = handshake(phone_ctx, worker(pki, shared=False))
    again, edge = handshake(phone_ctx, worker(pki, shared=False), phone.session)
    assert not edge.session_reused
    assert not again.session_reused


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
def test_keys_rotate_a_ticket_lives_two_periods(
    pki: Pki, period: None, version: ssl.TLSVersion
) -> None:
    phone_ctx, edge_ctx = client(pki, version), worker(pki)
    C.set_period_no(1000)
    phone, _ = handshake(phone_ctx, edge_ctx)
    first = phone.session
    C.set_period_no(1001)  # the previous period's key: accepted, and a new ticket issued
    before = C.counters()
    renewed, edge = handshake(phone_ctx, edge_ctx, first)
    assert edge.session_reused
    assert C.counters()["renewed"] == before["renewed"] + 1
    assert C.counters()["issued"] == before["issued"] + 1
    C.set_period_no(1002)  # two periods on: that key is gone, a full handshake
    stale, edge = handshake(phone_ctx, edge_ctx, first)
    assert not edge.session_reused
    assert not stale.session_reused
    assert C.counters()["refused"] == before["refused"] + 1
    _fresh, edge = handshake(phone_ctx, edge_ctx, renewed.session)  # issued in 1001: good
    assert edge.session_reused


def test_another_secret_is_another_key(pki: Pki) -> None:
    phone_ctx = client(pki, ssl.TLSVersion.TLSv1_3)
    phone, _ = handshake(phone_ctx, worker(pki))
    try:
        other = SiteContexts([SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key)]).listening
        assert tickets.share(other, bytes(32))  # the secret is the process's: set it back after
        _, edge = handshake(phone_ctx, other, phone.session)
        assert not edge.session_reused
    finally:
        C.set_secret(SECRET, tickets.KEY_PERIOD)


def test_install_refuses_what_is_not_a_context() -> None:
    with pytest.raises(TypeError):
        C.install(object())
    with pytest.raises(ValueError):
        C.set_secret(b"short", 3600)


def reconnect(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None]:
    """One blocking request over a new connection offering *session*: whether it was resumed,
    and the session to offer next."""
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw, server_hostname=PUBLIC_NAME, session=session) as tls,
    ):
        tls.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 404"), answer[:40]
        return bool(tls.session_reused), tls.session


async def test_a_phone_reconnecting_to_the_edge_resumes_and_metrics_say_so(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    """Through a running edge (real sockets and its own TLS transport): the second connection
    offers the first one's session and is resumed; /metrics counts it."""
    edge = await make_edge(edge_config(pki, recorder.port))
    context = pki.client_context()
    before = C.counters()["resumed"]
    first, session = await asyncio.to_thread(reconnect, edge.port, context, None)
    second, _ = await asyncio.to_thread(reconnect, edge.port, context, session)
    assert not first
    assert second
    assert C.counters()["resumed"] == before + 1
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.admin_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    metrics = (await reader.read()).decode()
    writer.close()
    assert f'natsync_edge_tls_tickets_total{{result="resumed"}} {before + 1}' in metrics


def test_the_secret_comes_from_the_supervisor_and_is_not_passed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """natsync run gives its edge parts one secret in the environment (natsync.run.supervisor);
    the part keeps it and takes it out of its environment."""
    monkeypatch.setattr(tickets, "_made", {})
    given = tickets.new_secret_hex()
    monkeypatch.setenv(tickets.SECRET_ENV, given)
    assert tickets.process_secret() == bytes.fromhex(given)
    assert tickets.SECRET_ENV not in os.environ
    assert tickets.process_secret() == bytes.fromhex(given)  # made once


@given(secret=st.binary(min_size=16, max_size=64), period_no=st.integers(0, 2**62))
def test_the_c_key_schedule_is_the_python_reference(secret: bytes, period_no: int) -> None:
    try:
        C.set_secret(secret, tickets.KEY_PERIOD)
        assert C.derive(period_no) == tickets.derive(secret, period_no)
        assert C.derive(period_no + 1) == tickets.derive(secret, period_no + 1)  # the other slot
        assert C.derive(period_no) == tickets.derive(secret, period_no)  # from the cache
    finally:
        C.set_secret(SECRET, tickets.KEY_PERIOD)


def sync_over(tls: ssl.SSLSocket) -> bytes:
    """One keep-alive Sync on *tls*; the answer's head (the recorder answers with a length)."""
    tls.sendall(
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=D&DeviceType=T HTTP/1.1"
        b"\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
    )
    answer = b""
    while b"backend:x" not in answer:
        chunk = tls.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def syncs_across_periods(port: int, context: ssl.SSLContext) -> list[tuple[int, bool, bytes]]:
    """(period, resumed, answer) for Syncs made before and after the ticket keys rotate: one
    keep-alive connection across the change, then new connections offering its session."""
    seen = []
    C.set_period_no(1000)
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw, server_hostname=PUBLIC_NAME) as kept,
    ):
        seen.append((1000, bool(kept.session_reused), sync_over(kept)))
        session = kept.session
        C.set_period_no(1001)  # the hour turns with the connection open
        seen.append((1001, bool(kept.session_reused), sync_over(kept)))
    for period_no in (1001, 1003):  # the previous key (renewed), then an expired one
        C.set_period_no(period_no)
        with (
            socket.create_connection(("127.0.0.1", port), 5) as raw,
            context.wrap_socket(raw, server_hostname=PUBLIC_NAME, session=session) as tls,
        ):
            seen.append((period_no, bool(tls.session_reused), sync_over(tls)))
    return seen


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
async def test_syncs_across_a_ticket_key_rotation_are_answered_on_both_legs(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory, period: None, version: ssl.TLSVersion
) -> None:
    """Issue 27's 502 came at about an hour's turn: the hourly rotation of the phone leg's ticket
    keys does not touch a connection that is open, a phone resuming across it, nor the server
    leg (its own context and session: one pooled server connection serves every Sync)."""
    edge = await make_edge(edge_config(pki, recorder.port))
    seen = await asyncio.to_thread(syncs_across_periods, edge.port, client(pki, version))
    assert [(p, resumed) for p, resumed, _ in seen] == [
        (1000, False),
        (1001, False),
        (1001, True),
        (1003, False),
    ]
    assert all(answer.startswith(b"HTTP/1.1 200") for _, _, answer in seen), seen
    assert recorder.connections == 1  # the server leg: one connection, pooled, reused
    assert edge.edge.metrics.backend_errors == {}
