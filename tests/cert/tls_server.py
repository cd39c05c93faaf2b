"""A small threaded TLS server for the cert tests: presents a chain, picks it by SNI, and
records the SNI it was sent."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve_tls(
    cert_file: Path, key_file: Path, by_sni: dict[str, tuple[Path, Path]] | None = None
) -> Iterator[tuple[int, list[str | None]]]:
    """Serve TLS on a free loopback port until the block ends; yields (port, SNIs seen)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    seen: list[str | None] = []
    others: dict[str, ssl.SSLContext] = {}
    for name, (cert, key) in (by_sni or {}).items():
        other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        other.load_cert_chain(cert, key)
        others[name] = other

    def pick(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        seen.append(name)
        if name in others:
            sock.context = others[name]

    context.sni_callback = pick  # type: ignore[assignment]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()
