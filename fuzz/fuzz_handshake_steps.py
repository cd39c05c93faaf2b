#!/usr/bin/env python3
"""atheris harness for the C steps the edge drives new connections with (natsync.edge._tickets,
issue 27) against their Python references: any bytes a client sends, cut into records as they
come, must bring both server objects to the same outcome at every step (handshake_step against
CPython's ``do_handshake``: done, wants to read, wants to write, or an ``ssl.SSLError``), the C
step must never raise, and the ALPN offer OpenSSL's ClientHello callback noted (offers_acme_tls,
for TLS-ALPN-01) must be what natsync.cert.client_hello reads in the same ClientHello.

    python fuzz/fuzz_handshake_steps.py -max_total_time=60 fuzz/corpus-fuzz_handshake_steps
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import sys
import tempfile
from pathlib import Path

import atheris
from _harness import fuzz_main
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.cert.client_hello import ClientHello, ClientHelloError, parse_client_hello
from natsync.edge import _tickets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.edge.handshake_steps
from tests.edge.handshake_steps import c_step, python_step

NAME = "mail.example.test"


def _server_context() -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
    return context


SERVER = _server_context()
_tickets.probe_alpn(SERVER)


def _hello(version: ssl.TLSVersion, alpn: list[str]) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = version
    context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=NAME)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


HELLOS = [
    _hello(ssl.TLSVersion.TLSv1_3, ["http/1.1"]),
    _hello(ssl.TLSVersion.TLSv1_2, ["h2", "http/1.1"]),
    _hello(ssl.TLSVersion.TLSv1_3, ["acme-tls/1"]),
]
SEEDS = [bytes(64), bytes(range(256))]


def client_bytes(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A real ClientHello with bytes changed, cut short or followed by more (the C module gives
    the fuzzer no coverage to steer by, so every input starts from a real one)."""
    hello = bytearray(HELLOS[fdp.ConsumeIntInRange(0, len(HELLOS) - 1)])
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        hello[fdp.ConsumeIntInRange(0, len(hello) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
    del hello[fdp.ConsumeIntInRange(0, len(hello)) :]
    return bytes(hello) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(1, 600) for _ in range(fdp.ConsumeIntInRange(1, 6))]
    rest = client_bytes(fdp)
    sent = rest
    ours_in, reference_in = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = SERVER.wrap_bio(ours_in, ssl.MemoryBIO(), server_side=True)
    reference = SERVER.wrap_bio(reference_in, ssl.MemoryBIO(), server_side=True)
    for size in [*cuts, len(rest)]:
        chunk, rest = rest[:size], rest[size:]
        ours_in.write(chunk)
        reference_in.write(chunk)
        got, want = c_step(ours), python_step(reference)
        if got != want:
            raise AssertionError(f"C step {got!r}, Python {want!r}")
        _same_alpn(ours, sent)
        if got in ("done", "error") or not rest:
            return


def _same_alpn(ours: ssl.SSLObject, sent: bytes) -> None:
    seen = _tickets.offers_acme_tls(ours._sslobj)  # type: ignore[attr-defined]
    if seen is None:  # OpenSSL has not taken a whole ClientHello yet (or refused it)
        return
    try:
        hello = parse_client_hello(sent)
    except ClientHelloError:
        return  # the reference refuses what OpenSSL took (it reads only what TLS-ALPN-01 needs)
    if isinstance(hello, ClientHello) and seen != ("acme-tls/1" in hello.alpn):
        raise AssertionError(f"OpenSSL's note {seen!r}, the reference {hello.alpn!r}")


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
