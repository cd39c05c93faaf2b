"""The server's listen backlog (``natsync.server.front.BACKLOG``) on a real socket: a burst of
connections arriving while the server's loop is busy waits in the kernel's queue instead of
having its SYNs dropped (which costs a 1 s retransmission: past the edge's 0.9 s TCP deadline,
the soak's 503 of issue 19)."""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SQLITE_ONLY
from tests.server.conftest import ServerFactory

#: Connections in the burst: well past aiohttp's old backlog of 128.
BURST = 600
#: The edge's TCP deadline (natsync.edge.tls.BACKEND_CONNECT_TIMEOUT).
DEADLINE = 0.9


def _somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def _burst(port: int, connected: list[float]) -> None:
    """Open BURST non-blocking connections at once; record when each completes (within the
    deadline), then close them all."""
    socks = []
    try:
        started = time.monotonic()
        for _ in range(BURST):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        poller = select.poll()
        waiting = {s.fileno(): s for s in socks}
        for fd in waiting:
            poller.register(fd, select.POLLOUT)
        while waiting and (left := started + DEADLINE - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                if waiting.pop(fd).getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(time.monotonic() - started)
                poller.unregister(fd)
    finally:
        for sock in socks:
            sock.close()


@SQLITE_ONLY  # about the listener, not the store
@pytest.mark.skipif(
    _somaxconn() < BURST, reason="net.core.somaxconn caps every backlog below BURST"
)
async def test_a_burst_of_connections_waits_in_the_backlog_while_the_server_is_busy(
    make_client: ServerFactory,
) -> None:
    client = await make_client()
    port = client.server.port
    connected: list[float] = []
    burst = threading.Thread(target=_burst, args=(port, connected))
    burst.start()
    # The server's loop is busy (this test shares it, and blocks it on purpose): no accept.
    time.sleep(DEADLINE + 0.3)  # noqa: ASYNC251
    burst.join()
    # Every TCP connection completed in the kernel within the edge's deadline (with a backlog of
    # 128, the SYNs past it were dropped and those connects waited for a retransmission).
    assert len(connected) == BURST
    assert max(connected) < DEADLINE
