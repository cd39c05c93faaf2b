"""The admin listener: ``/healthz`` and Prometheus ``/metrics``, never published.

It listens on its own address (default 127.0.0.1:9180), plain HTTP, GET only; the edge's public
listener never routes here. A handful of monitoring connections at most, so streams are fine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("natsync.edge")

#: Longest request head the admin listener reads, and how long it waits for it.
MAX_ADMIN_HEAD = 4096
ADMIN_READ_TIMEOUT = 5.0


def _response(status: str, body: str, content_type: str) -> bytes:
    data = body.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + data


async def start_admin(
    host: str, port: int, metrics: Callable[[], str], healthy: Callable[[], bool]
) -> asyncio.Server:
    """Serve /healthz ("ok" / 503) and /metrics on host:port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ADMIN_READ_TIMEOUT)
            parts = line.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].split(b"?")[0] if len(parts) == 3 else b""
            if parts[0] != b"GET":
                answer = _response("405 Method Not Allowed", "GET only\n", "text/plain")
            elif path == b"/healthz":
                ok = healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                answer = _response(status, "ok\n" if ok else "stopping\n", "text/plain")
            elif path == b"/metrics":
                answer = _response("200 OK", metrics(), "text/plain; version=0.0.4")
            else:
                answer = _response("404 Not Found", "not found\n", "text/plain")
            writer.write(answer)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_ADMIN_HEAD)
