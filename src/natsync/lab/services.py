"""The real servers of the lab's "internet": BIND 9 as the zone's primary, coturn as a STUN
server and pebble as the ACME certificate authority. Their configuration is written here (pure
text); starting them is a ``Popen`` by the caller (the runner, or the ddns tests on loopback),
stopped by PID with :func:`stop`.
"""

# ruff: noqa: S603 - the lab runs fixed programs (ip, nft, named ...) found on PATH,
# with argument lists, never a shell line

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from natsync.lab.errors import LabError

#: How long a real server may take to start before we give up on it.
START_TIMEOUT = 15.0
#: How long a stopped process gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0
#: Polling step while waiting for a server to come up.
POLL = 0.05


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID: TERM, then KILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE)


def key_file_text(name: str, secret: bytes) -> str:
    encoded = base64.b64encode(secret).decode()
    return f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{encoded}";\n}};\n'


def named_conf(
    directory: Path,
    host: str,
    port: int,
    zone: str,
    key_name: str,
    updatable: Sequence[str],
    acme_names: Sequence[str] = (),
) -> str:
    """BIND 9 as the primary of ``zone``, no recursion, updates by TSIG for ``updatable`` (A,
    AAAA) and the DNS-01 TXT records of ``acme_names`` (``_acme-challenge.NAME``)."""
    grants = "\n".join(
        [f"    grant {key_name} name {n}. A AAAA;" for n in updatable]
        + [f"    grant {key_name} name _acme-challenge.{n}. TXT;" for n in acme_names]
    )
    return f"""
options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ {host}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ any; }};
  dnssec-validation no;
  notify no;
}};
controls {{ }};
include "{directory}/ddns.key";
zone "{zone}" {{
  type primary;
  file "{directory}/{zone}.zone";
  update-policy {{
{grants}
  }};
}};
"""


def zone_text(zone: str, records: Sequence[str], ttl: int = 300) -> str:
    """A zone file: SOA (negative TTL 60), NS, then ``records`` as written ("mail IN A ...")."""
    body = "\n".join(records)
    return f"""$TTL {ttl}
@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60
@ IN NS ns1.{zone}.
{body}
"""


def named_argv(directory: Path) -> list[str]:
    return ["named", "-g", "-c", str(directory / "named.conf")]


def wait_dns(
    host: str, port: int, zone: str, proc: subprocess.Popen[bytes], log: Path, netns: str | None
) -> None:
    """Until the server answers the zone's SOA (asked with dig inside ``netns``)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"named exited: {log.read_text()[-2000:]}")
        if netns:
            done = subprocess.run(
                [
                    *("ip", "netns", "exec", netns, "dig", "+short", "+norec", "+time=1"),
                    *("+tries=1", "-p", str(port), f"@{host}", "SOA", zone),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                return
        else:
            try:
                answer = dns.query.tcp(
                    dns.message.make_query(zone, "SOA"), host, port=port, timeout=1
                )
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
            except (OSError, dns.exception.DNSException):
                pass
        time.sleep(POLL)
    raise LabError(f"named did not answer within {START_TIMEOUT} s: {log.read_text()[-2000:]}")


def stun_argv(directory: Path, host: str, port: int, host6: str | None = None) -> list[str]:
    """coturn as a plain STUN server (no TURN, no TLS), in the foreground, logging to stdout."""
    return [
        "turnserver",
        "-n",
        "--stun-only",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--listening-ip",
        host,
        *(["--listening-ip", host6] if host6 else []),
        "--listening-port",
        str(port),
        "--pidfile",
        str(directory / "turnserver.pid"),
        "--userdb",
        str(directory / "turndb"),
        "--log-file",
        "stdout",
        "--simple-log",
        "--no-stdout-log",
    ]


def wait_log(proc: subprocess.Popen[bytes], log: Path, marker: bytes, what: str) -> None:
    """Until ``marker`` appears in the process's log (it says it is ready)."""
    deadline = time.monotonic() + START_TIMEOUT
    while marker not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(POLL)


#: pebble's ACME API and its management API (the roots of what it issues), on the internet host.
PEBBLE_ACME_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
#: Certificates pebble issues live 90 days, like Let's Encrypt's (pebble's default: 5 years).
PEBBLE_VALIDITY = 90 * 86400


def pebble_config(
    host: str,
    cert: Path,
    key: Path,
    *,
    acme_port: int = PEBBLE_ACME_PORT,
    management_port: int = PEBBLE_MANAGEMENT_PORT,
    http_port: int = 80,
    tls_port: int = 443,
) -> str:
    """pebble's config: its ACME and management APIs on ``host`` with a TLS certificate that
    natsync's CA issued (Debian's pebble ships none); ``http_port`` and ``tls_port`` are where
    it connects to answer http-01 and tls-alpn-01 challenges — 80 and 443 as a public CA does
    (so the lab's router must forward port 80); the ACME tests on loopback pick free ones."""
    return json.dumps(
        {
            "pebble": {
                "listenAddress": f"{host}:{acme_port}",
                "managementListenAddress": f"{host}:{management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": PEBBLE_VALIDITY,
            }
        },
        indent=2,
    )


def pebble_argv(config: Path, dns_server: str) -> list[str]:
    """pebble resolving the names it validates through ``dns_server`` (HOST:PORT)."""
    return ["pebble", "-config", str(config), "-dnsserver", dns_server]


def pebble_env(**settings: str) -> dict[str, str]:
    """pebble validating challenges for real and at once: no PEBBLE_VA_ALWAYS_VALID, no random
    sleep before validating; it still refuses 5% of nonces (PEBBLE_WFE_NONCEREJECT), which
    natsync's client retries. ``settings``: more PEBBLE_* variables."""
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", **settings)
    env.pop("PEBBLE_VA_ALWAYS_VALID", None)
    return env
