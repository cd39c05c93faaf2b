"""`natsync run` with ``cert.mode = "acme"`` against pebble (HTTP-01, validated for real
through BIND): the cert part replaces `natsync init`'s stand-in with an ACME certificate, the
edge reloads it, and a renewal while a phone holds a Ping does not cut the Ping — the change
that follows reaches the phone through the same held request."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from natsync.cert.ca import load_ca
from natsync.store.api import FolderType
from tests.cert.acme_servers import Pebble
from tests.cert.conftest import bind, pebble  # noqa: F401 - the fixtures this module uses
from tests.cli.test_run import (
    PASSWORD,
    PUSH_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    add_user,
    free_ports,
    nat,
    send_mail,
    start_run,
)

#: Seconds an ACME order may take (pebble refuses a third of the nonces on purpose).
ORDER_TIMEOUT = 60.0


def _issuer(port: int, name: str) -> str:
    """The issuer of the certificate the edge shows for *name* (not verified: just read)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), 10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def _phone_context(directory: Path, acme: Pebble) -> ssl.SSLContext:
    """Trusts both natsync's CA (the stand-in) and pebble's root; the phone connects to
    127.0.0.1, so the name is not checked (the chain is)."""
    bundle = directory / "trust.pem"
    bundle.write_bytes((directory / "data" / "ca" / "ca.pem").read_bytes() + acme.root_pem())
    context = ssl.create_default_context(cafile=str(bundle))
    context.check_hostname = False
    return context


def test_acme_certificate_obtained_then_renewed_under_a_held_ping(
    pebble: Pebble,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    from natsync.client import EASClient

    name = f"run-{uuid.uuid4().hex[:8]}.example.test"
    edge, smtp, server, admin = free_ports(4)
    made = nat(
        "init", name, "-o", "natsync.toml", "--data-dir", "data", "--no-detect", "-y",
        "--cert", "acme", "--acme-directory", pebble.directory_url, "--acme-ca",
        str(pebble.ca_file), "--domain", "natsync.test", "--listen", "127.0.0.1",
        "--https-port", str(edge), "--smtp-port", str(smtp), "--server-port", str(server),
        "--http-port", str(pebble.http_port), "--admin-listen", f"127.0.0.1:{admin}",
        "--edge-admin-listen", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    add_user(tmp_path)
    config = tmp_path / "natsync.toml"
    stand_in_issuer = _issuer_of(tmp_path / "data" / "tls" / "public.pem")
    run = start_run(tmp_path, config, [edge, smtp, server, admin])
    proc, log = run.proc, run.log
    try:
        run.wait_log("cert: issued", timeout=ORDER_TIMEOUT)
        text = run.wait_log("self-check (after renewed)")
        assert "certificate renewed: reloading the edge" in text
        first = _issuer(edge, name)
        assert first != stand_in_issuer  # the edge shows the ACME certificate now
        assert "Pebble" in first
        # /healthz shows the certificate manager's state (status.json, after its step).
        cert = _cert_health(run)
        assert cert["healthy"] is True
        assert cert["challenge"] == "http-01"
        assert cert["days_left"] > 1
        assert cert["not_after"] == _not_after(tmp_path / "data" / "tls" / "public.pem")
        assert "renewal at" in cert["message"]

        async def renew_under_a_held_ping() -> list[str]:
            context = _phone_context(tmp_path, pebble)
            async with EASClient(
                f"https://127.0.0.1:{edge}", "you", PASSWORD, ssl_context=context,
                device_id="ACMEPHONE1",
            ) as phone:  # fmt: skip
                await phone.folder_sync()
                inbox = phone.folder(type=FolderType.INBOX).server_id
                await phone.sync(inbox)
                held = asyncio.create_task(phone.ping([inbox], heartbeat=120))
                await asyncio.sleep(0.5)
                # Renewal: the stand-in back in place and [cert] changed -> the cert part
                # restarts, finds the certificate due, orders, and the edge reloads.
                mark = len(log.read_text())
                _stand_in(tmp_path)
                config.write_text(
                    config.read_text().replace(
                        "[cert]\n", '[cert]\nacme_email = "ops@natsync.test"\n'
                    )
                )
                proc.send_signal(signal.SIGHUP)
                await asyncio.to_thread(run.wait_log, "cert: issued", ORDER_TIMEOUT, mark)
                text = await asyncio.to_thread(run.wait_log, "connection(s) kept", 10.0, mark)
                kept = text.split("certificates reloaded; ")[1].split(" ")[0]
                assert int(kept) >= 1  # the phone's connection, its Ping held
                assert not held.done()  # the renewal did not cut the held Ping
                await asyncio.to_thread(send_mail, smtp, "after the renewal")
                changed = await asyncio.wait_for(held, PUSH_TIMEOUT)
                result = await phone.sync(inbox)
                assert [i.subject for i in result.added] == ["after the renewal"]
                return changed

        assert asyncio.run(renew_under_a_held_ping()) != []
        assert "Pebble" in _issuer(edge, name)
        # SIGUSR1: renew now, whatever the expiry (a new certificate, the edge reloaded).
        before = _serial(tmp_path / "data" / "tls" / "public.pem")
        mark = len(log.read_text())
        proc.send_signal(signal.SIGUSR1)
        run.wait_log("certificates reloaded", ORDER_TIMEOUT, mark)
        assert _serial(tmp_path / "data" / "tls" / "public.pem") != before
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SHUTDOWN_TIMEOUT) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    assert "Traceback" not in log.read_text()


def _cert_health(run: Any) -> dict[str, Any]:
    """/healthz's cert entry once the manager has written its status for the new
    certificate (bounded wait)."""
    deadline = time.monotonic() + 10.0
    while True:
        doc = run.health()
        cert: dict[str, Any] = doc.get("cert", {})
        if cert.get("state") == "valid" or time.monotonic() > deadline:
            assert doc["status"] == "ok", doc
            assert cert.get("state") == "valid", doc
            return cert
        time.sleep(0.2)


def _not_after(path: Path) -> str:
    leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return leaf.not_valid_after_utc.isoformat()


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def _issuer_of(path: Path) -> str:
    leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return leaf.issuer.rfc4514_string()


def _stand_in(directory: Path) -> None:
    """A private-CA certificate in the public certificate's place, as `natsync init` leaves."""
    ca = load_ca(directory / "data" / "ca")
    tls = directory / "data" / "tls"
    name = x509.load_pem_x509_certificates((tls / "public.pem").read_bytes())[0]
    names = name.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ca.issue_server_cert(names.get_values_for_type(x509.DNSName), [], tls, basename="public")


@pytest.fixture(autouse=True)
def _uses_bind(bind: object) -> None:  # noqa: F811 - pebble validates through it
    return None
