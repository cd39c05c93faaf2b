"""A stand-in for the home edge's relayed listener: reads each connection's PROXY v2 header and
answers ``client=<address>`` and then echoes what follows. Run inside a namespace by the tunnel
test: ``python -m tests.relay.proxy_echo HOST PORT``."""

from __future__ import annotations

import asyncio
import sys

from natsync.edge.proxyv2 import ProxyHeaderError, parse_header


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = b""
    try:
        while (parsed := parse_header(data)) is None:
            chunk = await reader.read(100)
            if not chunk:
                return
            data += chunk
        header, used = parsed
        client = header.source[0] if header.source else "local"
        writer.write(f"client={client}\n".encode() + data[used:])
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
