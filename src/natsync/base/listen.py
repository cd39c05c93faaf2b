"""Where the server listens: ``server.host = "::"`` and host names mean both address families.

asyncio's ``create_server`` sets IPV6_V6ONLY on every IPv6 socket, so a server bound to "::"
alone would take IPv6 only, and phones on IPv4 networks would be refused. Here "::" (and "")
become asyncio's "every address" (one socket for 0.0.0.0, one for ::), and a host name binds
every address it resolves to, of both families. A literal address ("0.0.0.0", "127.0.0.1",
"::1", "2001:db8::5") binds that one address only: that is what the user asked for.

With port 0 each of those sockets would get its own free port; the port is chosen first so
that every family listens on the same one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

#: Hosts meaning "every address of both families".
EVERY_ADDRESS = ("", "::", "*")
#: Tries at a port free on every address (another process may take it in between).
FREE_PORT_TRIES = 20


def is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def listen_host(host: str) -> str | None:
    """The host for ``create_server``: None (every address, both families) for "::"."""
    host = host.strip("[]") if host.startswith("[") else host
    return None if host in EVERY_ADDRESS else host


def _addresses(host: str | None) -> list[tuple[socket.AddressFamily, str]]:
    infos = socket.getaddrinfo(host, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    seen: list[tuple[socket.AddressFamily, str]] = []
    for family, *_, address in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address[0]) not in seen:
            seen.append((family, str(address[0])))
    return seen


def _bindable(addresses: list[tuple[socket.AddressFamily, str]], port: int) -> bool:
    with contextlib.ExitStack() as stack:
        for family, address in addresses:
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def listen_port(host: str | None, port: int) -> int:
    """*port*, or for port 0 with several addresses, one port free on all of them."""
    if port != 0:
        return port
    addresses = _addresses(host)
    if len(addresses) < 2:
        return 0
    for _ in range(FREE_PORT_TRIES):
        family, address = addresses[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            candidate = int(probe.getsockname()[1])
        if _bindable(addresses, candidate):
            return candidate
    return 0
