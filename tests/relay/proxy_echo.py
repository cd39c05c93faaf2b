"""A stand-in for the home edge's relayed listener: reads each connection's PROXY v2 header and
answers ``client=<address>`` and then echoes what follows. Run inside a namespace by the tunnel
test: ``python -m tests.relay.proxy_echo HOST PORT``."""

from __future__ import annotations

import asyncio
import sys

from natsync.base.proxyv2 import ProxyHeader, ProxyHeaderError, parse_header


async def read_header(reader: asyncio.StreamReader) -> tuple[ProxyHeader, bytes] | None:
    """The connection's PROXY v2 header and the bytes that came after it (None: it ended)."""
    data = b""
    while (parsed := parse_header(data)) is None:
        chunk = await reader.read(100)
        if not chunk:
            return None
        data += chunk
    header, used = parsed
    return header, data[used:]


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if (got := await read_header(reader)) is None:
            return
        header, rest = got
        client = header.source[0] if header.source else "local"
        writer.write(f"client={client}\n".encode() + rest)
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ProxyHeaderError, ConnectionError) as exc:
        writer.write(f"error={exc}\n".encode())
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(_serve, host, port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
