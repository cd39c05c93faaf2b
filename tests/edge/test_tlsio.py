"""natsync.edge._tlsio (the TLS transport's reads and writes in C, OpenSSL's read_ahead on)
against its Python reference, CPython's ``_ssl`` (the transport's path without it): the same
plaintext and the same ending for any records, close_notify, FIN and garbage a peer sends
(hypothesis; fuzz/fuzz_edge_tlsio.py does the same with atheris), and through the transport
itself: records read ahead together are all delivered without another readiness event, also
after a pause, and the transport's exchanges are the same with and without the C path."""

from __future__ import annotations

import asyncio
import random
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsync.edge import transport
from natsync.edge.transport import TLSTransport
from tests.edge.conftest import Pki
from tests.edge.test_transport import (
    Ours,
    cut,
    exchange,
    raw_tls,
    run,
    server_context,
    uv,  # noqa: F401 (the fixture)
)
from tests.edge.tlsio_drive import drive, handshake

pytestmark = pytest.mark.skipif(
    transport.tlsio is None,
    reason="natsync.edge._tlsio is not built (no libssl headers) or switched off "
    "(NATSYNC_PURE_PYTHON): the transport runs on _ssl alone, tested by test_transport.py",
)


def record(body: bytes) -> bytes:
    """*body* as a TLS application-data record (whose protection check fails)."""
    return b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body


def contexts(pki: Pki, version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    client = pki.client_context()
    client.maximum_version = version
    return server_context(pki), client


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=20_000), max_size=6),
    garbage=st.one_of(st.just(b""), st.binary(max_size=300), st.binary(max_size=300).map(record)),
    close_notify=st.booleans(),
    fin=st.booleans(),
    tls13=st.booleans(),
)
def test_c_reads_deliver_and_end_as_ssl_does(
    pki: Pki, pieces: list[bytes], garbage: bytes, close_notify: bool, fin: bool, tls13: bool
) -> None:
    version = ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2
    server, client = contexts(pki, version)
    c = drive(server, client, True, pieces, garbage, close_notify, fin)
    python = drive(server, client, False, pieces, garbage, close_notify, fin)
    assert c == python
    if not garbage:  # nothing spoils the records: all of them arrive
        assert c[0] == b"".join(pieces)
        assert c[1] == ("eof" if close_notify or fin else "want")


def test_a_c_write_is_read_by_the_peer_and_a_bad_record_is_an_ssl_error(pki: Pki) -> None:
    server, client = contexts(pki, ssl.TLSVersion.TLSv1_3)
    ours, theirs, tls, peer, incoming, _outgoing = handshake(server, client)
    c = transport.tlsio
    try:
        assert c.write(tls._sslobj, b"hello " * 1000) == 1
        assert c.write(tls._sslobj, memoryview(b"world")) == 1
        assert c.write(tls._sslobj, b"") == 1
        got = bytearray()
        while len(got) < 6005:
            try:
                got += peer.read(65536)
            except ssl.SSLWantReadError:
                incoming.write(theirs.recv(65536))
        assert bytes(got) == b"hello " * 1000 + b"world"
        assert not c.pending(tls._sslobj)
        assert c.read(tls._sslobj, bytearray(1024)) == -1  # nothing there: want read
        theirs.sendall(b"\x17\x03\x03\x00\x05junk!")  # a record that fails its check
        with pytest.raises(ssl.SSLError):
            c.read(tls._sslobj, bytearray(1024))
        with pytest.raises(TypeError):
            c.read(object(), bytearray(1))
    finally:
        tls._sslobj = None
        ours.close()
        theirs.close()


def test_records_read_ahead_together_are_all_delivered_also_after_a_pause(
    uv: asyncio.AbstractEventLoop,  # noqa: F811 (the fixture)
    pki: Pki,
) -> None:
    async def main() -> None:
        ours = Ours(server_context(pki))
        sock, tls, _incoming, outgoing = await raw_tls(ours.port, pki.client_context())
        peer = await ours.first()
        assert isinstance(peer.transport, TLSTransport)
        assert peer.transport._c is transport.tlsio
        loop = asyncio.get_running_loop()
        for i in range(20):  # twenty records in one segment: one recv takes them all
            tls.write(b"%02d" % i * 50)
        await loop.sock_sendall(sock, outgoing.read())
        await peer.until(2000)
        assert bytes(peer.data) == b"".join(b"%02d" % i * 50 for i in range(20))
        peer.transport.pause_reading()
        for _ in range(20):
            tls.write(b"x" * 100)
        await loop.sock_sendall(sock, outgoing.read())
        await asyncio.sleep(0.1)
        assert len(peer.data) == 2000
        peer.transport.resume_reading()  # the records OpenSSL holds: read without an event
        await peer.until(4000)
        sock.close()
        await peer.lost
        ours.server.close()

    run(uv, main())


@pytest.mark.parametrize("seed", range(4))
def test_exchanges_are_the_same_with_and_without_the_c_path(
    uv: asyncio.AbstractEventLoop,  # noqa: F811 (the fixture)
    pki: Pki,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(seed)
    up_data, down_data = rng.randbytes(rng.randrange(300_000)), rng.randbytes(100_000)
    up = cut(up_data, [rng.randrange(1, 40_000) for _ in range(5)])
    down = cut(down_data, [rng.randrange(1, 40_000) for _ in range(5)])
    pauses = [rng.random() < 0.5 for _ in range(4)]
    with_c = run(uv, exchange(pki, True, True, up, down, pauses))
    monkeypatch.setattr(transport, "tlsio", None)
    without = run(uv, exchange(pki, True, True, up, down, pauses))
    assert with_c[0] == without[0] == up_data
    assert with_c[1] == without[1] == down_data
    assert with_c[3] == without[3] == (None, None)
