"""Real servers for the ACME tests: Debian's pebble (the ACME test server) and BIND 9 as the
authoritative server pebble resolves through, started by PID and stopped by PID on loopback.

pebble from Debian ships no TLS certificate for itself: natsync's own CA issues one. Its
validation ports (httpPort, tlsPort) are fixed in its config, so they are chosen before it
starts and the tests' responders listen on them.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from natsync.cert.ca import init_ca
from natsync.ddns.update import DnsServer, TsigKey, parse_key
from natsync.lab.services import pebble_argv, pebble_config, pebble_env

ZONE = "example.test"
KEY_NAME = "natsync-acme"
#: Every name under the zone resolves to loopback, where the tests' responders listen.
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Bind:
    port: int
    key: TsigKey
    key_file: Path

    def server(self) -> DnsServer:
        return DnsServer("127.0.0.1", self.port, ZONE, self.key, 3.0)


@contextmanager
def run_bind(directory: Path) -> Iterator[Bind]:
    """BIND 9 in the foreground: primary for example.test (every name → 127.0.0.1); the
    TSIG key may add and delete TXT records anywhere in the zone (for _acme-challenge)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    secret = base64.b64encode(os.urandom(32)).decode()
    key_file = directory / "acme.key"
    key_file.write_text(
        f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'
    )
    key_file.chmod(0o600)
    (directory / "named.conf").write_text(f"""
options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ any; }};
  dnssec-validation no;
  notify no;
}};
controls {{ }};
include "{key_file}";
zone "{ZONE}" {{
  type primary;
  file "{directory}/{ZONE}.zone";
  update-policy {{ grant {KEY_NAME} subdomain {ZONE}. TXT; }};
}};
""")
    (directory / f"{ZONE}.zone").write_text(f"""$TTL 60
@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60
@ IN NS ns1.{ZONE}.
@ IN A 127.0.0.1
* IN A 127.0.0.1
""")
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["named", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"named exited: {log.read_text()[-2000:]}")
            try:
                answer = dns.query.tcp(
                    dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=1
                )
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    break
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"named did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Bind(port, parse_key(key_file.read_text()), key_file)
    finally:
        stop(proc)


@dataclass
class Pebble:
    directory_url: str
    roots_url: str
    ca_file: Path  # trusts pebble's own TLS certificate (issued by natsync's CA)
    http_port: int
    tls_port: int
    log: Path
    tls_cert: Path  # pebble's own TLS certificate and key (a proxy in front reuses them)
    tls_key: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def root_pem(self) -> bytes:
        with urllib.request.urlopen(self.roots_url, context=self.ssl_context()) as resp:
            return bytes(resp.read())


@contextmanager
def run_pebble(directory: Path, dns_port: int, nonce_reject: int = 5) -> Iterator[Pebble]:
    """pebble on loopback, validating challenges for real (no PEBBLE_VA_ALWAYS_VALID)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = init_ca(directory / "tls-ca", common_name="pebble's TLS CA (natsync test)")
    cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], directory, basename="pebble")
    acme_port, mgmt_port = free_port(), free_port()
    http_port, tls_port = free_port(), free_port()
    config = directory / "pebble.json"
    config.write_text(
        pebble_config("127.0.0.1", cert, key, acme_port=acme_port, management_port=mgmt_port,
                      http_port=http_port, tls_port=tls_port)
    )  # fmt: skip
    # Reuse valid authorizations every time, so a renewal order shows the reuse path.
    env = pebble_env(PEBBLE_WFE_NONCEREJECT=str(nonce_reject), PEBBLE_AUTHZREUSE="100")
    log = directory / "pebble.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pebble_argv(config, f"127.0.0.1:{dns_port}"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
        )
    pebble = Pebble(
        f"https://127.0.0.1:{acme_port}/dir",
        f"https://127.0.0.1:{mgmt_port}/roots/0",
        ca.cert_path,
        http_port,
        tls_port,
        log,
        cert,
        key,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    pebble.directory_url, context=pebble.ssl_context(), timeout=1
                ):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield pebble
    finally:
        stop(proc)
