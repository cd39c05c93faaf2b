"""What the providers' stand-in servers share: an HTTPS server on loopback (a self-signed
certificate the client trusts through ``ca_file``), and where the records go.

A record store is either a dict (the provider's API is the only view) or a real BIND written
through RFC 2136 with TSIG (:class:`BindZone`), so the updater's confirmation at the
authoritative server, and the lab's "a dyndns2 server that writes into BIND", are real.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import dns.name
import dns.query
import dns.rcode
import dns.update
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.ddns.update import DnsServer, read_published


def self_signed(
    directory: Path, name: str = "provider test", host: str = "127.0.0.1"
) -> tuple[Path, Path]:
    """A certificate for *host* that is its own CA (trusted by giving it as ca_file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class RecordStore(Protocol):
    def get(self, name: str, rdtype: str) -> tuple[set[str], int | None]: ...

    def put(self, name: str, rdtype: str, values: set[str], ttl: int) -> None: ...


@dataclass
class MemoryZone:
    records: dict[tuple[str, str], tuple[set[str], int]] = field(default_factory=dict)

    def get(self, name: str, rdtype: str) -> tuple[set[str], int | None]:
        values, ttl = self.records.get((name.rstrip(".").lower(), rdtype), (set(), None))
        return set(values), ttl

    def put(self, name: str, rdtype: str, values: set[str], ttl: int) -> None:
        key = (name.rstrip(".").lower(), rdtype)
        if values:
            self.records[key] = (set(values), ttl)
        else:
            self.records.pop(key, None)


@dataclass
class BindZone:
    """Records kept in a real BIND, written by RFC 2136 updates signed with TSIG."""

    server: DnsServer

    def get(self, name: str, rdtype: str) -> tuple[set[str], int | None]:
        published = read_published(self.server, name.rstrip(".") + ".", rdtype)
        return set(published.values), published.ttl

    def put(self, name: str, rdtype: str, values: set[str], ttl: int) -> None:
        key = self.server.key
        update = dns.update.UpdateMessage(self.server.zone, keyring=key.to_dns() if key else None)
        owner = dns.name.from_text(name.rstrip(".") + ".")
        if values:
            update.replace(owner, ttl, rdtype, *sorted(values))
        else:
            update.delete(owner, rdtype)
        answer = dns.query.tcp(update, self.server.host, port=self.server.port, timeout=5)
        if answer.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"BIND refused {name} {rdtype}: {dns.rcode.to_text(answer.rcode())}")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    requests: list[Request]

    def handle(self, request: Request) -> Reply: ...


@dataclass
class Running:
    url: str
    ca_file: Path | None
    server: http.server.ThreadingHTTPServer


@contextmanager
def serve(
    provider: Provider, directory: Path | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[Running]:
    """*provider* over HTTPS (with *directory* for the certificate) or HTTP, on *host*."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            request = Request(
                self.command,
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            provider.requests.append(request)
            reply = provider.handle(request)
            data = reply.body
            content_type = "text/plain"
            if not isinstance(data, bytes | str):
                data = json.dumps(data)
                content_type = "application/json"
            payload = data.encode() if isinstance(data, str) else data
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    ca_file = None
    if directory is not None:
        cert, key = self_signed(directory, host=host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        ca_file = cert
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if directory is not None else "http"
    try:
        yield Running(f"{scheme}://{host}:{server.server_address[1]}", ca_file, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
