"""natsync.edge.memory: giving back what idle TLS connections keep never changes a byte.

The property: a TLS 1.3 exchange (real OpenSSL, the two ends over memory BIOs, as uvloop runs
them) played with :func:`release_buffers` called on either end at any point between two calls
— also while half a record sits in a buffer — reads exactly what the same exchange reads
without it. Then over the real edge: a held Ping's two connections are trimmed and the Ping is
answered intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.edge import memory
from tests.edge.conftest import PUBLIC_NAME, EdgeFactory, Pki, Recorder, edge_config, exchange
from tests.edge.conftest import status_of as status
from tests.edge.test_proxy import EAS, post


def test_release_is_available_on_this_python_and_openssl() -> None:
    # CPython 3.11-3.13 with OpenSSL >= 3.0.14: what the edge runs on here and in CI
    assert memory.available()


def pair(pki: Pki) -> tuple[ssl.SSLObject, ssl.SSLObject, list[ssl.MemoryBIO]]:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.edge_cert, pki.edge_key)
    client_ctx = pki.client_context()
    bios = [ssl.MemoryBIO() for _ in range(4)]  # server in/out, client in/out
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname=PUBLIC_NAME)
    for _ in range(4):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    assert client.version() == "TLSv1.3"
    return server, client, bios


def read_all(end: ssl.SSLObject) -> bytes:
    got = b""
    while True:
        try:
            chunk = end.read(65536)
        except ssl.SSLWantReadError:
            return got
        if not chunk:
            return got
        got += chunk


#: One step of an exchange: ("write", side, data), ("move", side, cut), ("read", side),
#: ("release", side). "move" carries at most *cut* bytes of what *side* sent to the other end.
step = st.one_of(
    st.tuples(st.just("write"), st.sampled_from("sc"), st.binary(min_size=1, max_size=40000)),
    st.tuples(st.just("move"), st.sampled_from("sc"), st.integers(1, 70000)),
    st.tuples(st.just("read"), st.sampled_from("sc")),
    st.tuples(st.just("release"), st.sampled_from("sc")),
)


def play(pki: Pki, steps: list[tuple[object, ...]], release: bool) -> tuple[bytes, bytes, int]:
    """What the server and the client read over *steps* (then everything moved and read)."""
    server, client, bios = pair(pki)
    ends = {"s": (server, bios[1], bios[2]), "c": (client, bios[3], bios[0])}
    got = {"s": b"", "c": b""}
    freed = 0
    for kind, side, *rest in steps:
        end, outgoing, other_incoming = ends[str(side)]
        if kind == "write":
            end.write(rest[0])  # type: ignore[arg-type]
        elif kind == "move":
            other_incoming.write(outgoing.read(rest[0]))  # type: ignore[arg-type]
        elif kind == "read":
            got[str(side)] += read_all(end)
        elif release:
            freed += memory.release_buffers(end)
    for _ in range(2):
        for side in "sc":
            end, outgoing, other_incoming = ends[side]
            other_incoming.write(outgoing.read())
        for side in "sc":
            got[side] += read_all(ends[side][0])
    return got["s"], got["c"], freed


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, max_size=25))
def test_releasing_buffers_at_any_point_changes_no_byte(
    pki: Pki, steps: list[tuple[object, ...]]
) -> None:
    plain = play(pki, steps, release=False)
    released = play(pki, steps, release=True)
    assert released[:2] == plain[:2]
    written = {
        side: b"".join(cast(bytes, s[2]) for s in steps if s[0] == "write" and s[1] == side)
        for side in "sc"
    }
    assert plain[0] == written["c"]
    assert plain[1] == written["s"]


def test_a_client_that_read_its_session_tickets_gives_back_its_read_buffer(pki: Pki) -> None:
    server, client, bios = pair(pki)
    bios[2].write(bios[1].read())  # the server's two session tickets
    assert read_all(client) == b""
    assert memory.release_buffers(client) == 3  # read buffer, then both memory BIOs
    client.write(b"still works")
    bios[0].write(bios[3].read())
    assert read_all(server) == b"still works"


def test_half_a_record_in_the_buffer_is_kept(pki: Pki) -> None:
    server, client, bios = pair(pki)
    server.write(b"y" * 5000)
    record = bios[1].read()
    bios[2].write(record[:100])
    assert read_all(client) == b""  # OpenSSL holds the first 100 bytes of the record
    memory.release_buffers(client)
    bios[2].write(record[100:])
    assert read_all(client) == b"y" * 5000


def test_buffer_trim_waits_one_sweep_then_trims_once(pki: Pki) -> None:
    trim = memory.BufferTrim()
    _server, client, bios = pair(pki)
    bios[2].write(bios[1].read())  # its session tickets, read
    assert read_all(client) == b""
    trim.add(client)
    trim.add(None)  # a transport without TLS: nothing to trim
    assert trim.sweep() == 0  # its tickets may still be on the way
    assert trim.sweep() == 3
    assert trim.sweep() == 0  # once


async def test_a_held_ping_trimmed_on_both_legs_is_answered_intact_and_its_session_resumed(
    pki: Pki, recorder: Recorder, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(edge_config(pki, recorder.port))
    assert edge._sweeper is not None
    edge._sweeper.cancel()  # the test sweeps itself
    edge.edge.pool.trim.schedule = None  # and trims itself
    ping = post(EAS + b"?Cmd=Ping&User=alice&DeviceId=D1&DeviceType=T")
    task = asyncio.create_task(exchange(edge, pki, ping, timeout=10))
    for _ in range(250):
        if edge.edge.metrics.held_pings == 1:
            break
        await asyncio.sleep(0.02)
    assert edge.edge.metrics.held_pings == 1
    await asyncio.sleep(0.2)  # the server's session tickets reach the edge
    trim = edge.edge.pool.trim
    trim.sweep()
    # phone leg and server leg: OpenSSL's read buffer of each (the edge's own transport has no
    # memory BIOs: OpenSSL reads the sockets)
    assert trim.sweep() == 2
    # the server leg's session (its tickets in) is offered to the next server connection
    assert edge.edge.trust.context.cached_session is not None
    assert status(await exchange(edge, pki, post(), timeout=10)) == 200
    assert edge.edge.metrics.backend_resumed == 1
    recorder.release.set()
    answer = await task
    assert status(answer) == 200
    assert answer.endswith(b"backend:x")
