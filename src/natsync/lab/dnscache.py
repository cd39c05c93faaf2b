"""The phone's own DNS cache: honours the TTL, or keeps an answer for a fixed time whatever
the TTL says, like the old devices in the article ("some mobile devices cache DNS records; this
cache may not be renewed frequently enough to keep pace with IP address changes").

:class:`Cache` is the sans-I/O core (time is an argument); :func:`serve` is a small UDP
forwarder around it that the lab runs inside the phone's namespace on 127.0.0.1:53, asking the
zone's authoritative server. An answer always carries the seconds it will still be served from
the cache as its TTL, so `natsync doctor --resolver` reports the wait truthfully.

The same forwarder, with ``--local NAME=IP``, is the LAN's split-horizon resolver in the
hairpin scenario: it answers the public name with the server's private address itself.

Run: ``python -m natsync.lab.dnscache --upstream 192.0.3.1:53 [--sticky S] [--local N=IP]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("natsync.lab.dnscache")

#: Seconds to wait for the authoritative server before answering SERVFAIL.
UPSTREAM_TIMEOUT = 2.0
#: Entries kept at most: the phone asks for a handful of names.
MAX_ENTRIES = 1024


@dataclass(slots=True)
class Cache:
    """Answers by (name, type): kept for their TTL, or for ``sticky`` seconds when set."""

    sticky: float | None = None
    entries: dict[tuple[str, int], tuple[bytes, float]] = field(default_factory=dict)

    def lookup(self, key: tuple[str, int], now: float) -> tuple[bytes, int] | None:
        """The cached answer (wire form) and its seconds left, or None when absent/expired."""
        hit = self.entries.get(key)
        if hit is None:
            return None
        wire, expires = hit
        if now >= expires:
            del self.entries[key]
            return None
        return wire, max(1, int(expires - now))

    def store(self, key: tuple[str, int], wire: bytes, ttl: int, now: float) -> int:
        """Keep an answer; returns the seconds it will be served for."""
        keep = self.sticky if self.sticky is not None else ttl
        if keep <= 0:
            return 0
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (wire, now + keep)
        return int(keep)


def _min_ttl(response: dns.message.Message) -> int:
    ttls = [rrset.ttl for rrset in response.answer]
    return min(ttls) if ttls else 0


def _with_ttl(wire: bytes, query: dns.message.Message, ttl: int) -> bytes:
    response = dns.message.from_wire(wire)
    response.id = query.id
    for rrset in response.answer:
        rrset.ttl = ttl
    return response.to_wire()


#: TTL of the answers a split-horizon resolver gives from its own data.
LOCAL_TTL = 60


def local_answer(query: dns.message.Message, address: str) -> bytes:
    """The resolver's own answer for a name it serves itself (split-horizon DNS: the LAN's
    view of the public name is the server's private address)."""
    response = dns.message.make_response(query)
    q = query.question[0]
    response.answer.append(
        dns.rrset.from_text(q.name, LOCAL_TTL, dns.rdataclass.IN, dns.rdatatype.A, address)
    )
    response.flags |= dns.flags.AA
    return response.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(
        self, cache: Cache, upstream: tuple[str, int], local: dict[str, str] | None = None
    ) -> None:
        self.cache = cache
        self.upstream = upstream
        self.local = local or {}
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's datagram transport is not a subclass of asyncio's)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        if not query.question:
            return
        q = query.question[0]
        key = (q.name.to_text().lower(), int(q.rdtype))
        now = time.monotonic()
        hit = self.cache.lookup(key, now)
        own = self.local.get(key[0].rstrip("."))
        if own is not None and q.rdtype == dns.rdatatype.A:
            out = local_answer(query, own)
            log.info("%s A: the local view, %s", key[0], own)
        elif hit is not None:
            out = _with_ttl(hit[0], query, hit[1])
            log.info("%s %s: from the cache, %d s left", key[0], q.rdtype, hit[1])
        else:
            try:
                response = await dns.asyncquery.udp(
                    query, self.upstream[0], port=self.upstream[1], timeout=UPSTREAM_TIMEOUT
                )
            except (OSError, dns.exception.DNSException) as exc:
                log.info("%s: upstream failed: %s", key[0], exc)
                fail = dns.message.make_response(query)
                fail.set_rcode(dns.rcode.SERVFAIL)
                out = fail.to_wire()
            else:
                wire = response.to_wire()
                kept = 0
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    kept = self.cache.store(key, wire, _min_ttl(response), now)
                out = _with_ttl(wire, query, kept) if kept else wire
                log.info("%s %s: asked upstream, kept %d s", key[0], q.rdtype, kept)
        if self.transport is not None:
            self.transport.sendto(out, addr)


async def serve(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    sticky: float | None,
    local: dict[str, str] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(Cache(sticky), upstream, local), local_addr=listen
    )
    log.info("phone DNS cache on %s:%d (sticky: %s)", *listen, sticky)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


def _hostport(value: str, default_port: int = 53) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host, int(port)) if host else (value, default_port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The lab phone's DNS cache.")
    parser.add_argument("--listen", default="127.0.0.1:53")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--sticky", type=float, default=None, help="keep answers this long")
    parser.add_argument(
        "--local", action="append", default=[], metavar="NAME=IP",
        help="answer NAME with IP from our own data (split-horizon DNS)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    local = dict(item.split("=", 1) for item in args.local)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(serve(_hostport(args.listen), _hostport(args.upstream), args.sticky, local))


if __name__ == "__main__":
    main()
