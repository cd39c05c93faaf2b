"""Each failure the doctor names, created for real on loopback, and the finding it gives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from natsync.cert.ca import CA
from natsync.doctor import Check, Report, Severity, diagnose
from natsync.doctor.findings import EXIT_FAIL, EXIT_OK, Finding
from tests.doctor.conftest import (
    TEST_TIMEOUT,
    Options,
    ServeFactory,
    free_port,
    issue,
    issue_expired,
)


def failures(report: Report, check: Check) -> list[Finding]:
    return [f for f in report.findings if f.check == check and f.severity == Severity.FAIL]


def only_failure(report: Report, check: Check) -> Finding:
    found = failures(report, check)
    assert len(found) == 1, [f.title for f in report.findings]
    return found[0]


async def test_healthy_server_is_all_green(serve: ServeFactory) -> None:
    served = await serve()
    report = await diagnose(served.options(heartbeat=1))
    assert report.exit_status == EXIT_OK, [(f.severity, f.title) for f in report.findings]
    checks = {f.check for f in report.findings if f.severity == Severity.OK}
    assert {Check.REACH, Check.TLS, Check.HTTP, Check.SESSION, Check.PUSH} <= checks
    assert {Check.AUTODISCOVER, Check.NAMES} <= checks
    push = next(f for f in report.findings if f.check == Check.PUSH)
    assert "survived its whole heartbeat (1 s)" in push.title


async def test_certificate_for_another_name(serve: ServeFactory, ca: CA, tmp_path: Path) -> None:
    served = await serve(cert=issue(ca, tmp_path / "other", ["exchange.corp.local"], []))
    report = await diagnose(served.options())
    finding = only_failure(report, Check.TLS)
    assert finding.title == "The certificate does not cover localhost"
    assert "subjectAltName entries: exchange.corp.local" in finding.evidence
    assert "names what the server is (exchange.corp.local)" in finding.cause
    assert "not what the phone connects to (localhost)" in finding.cause
    assert "subjectAltName lists localhost" in finding.fix
    assert report.exit_status == EXIT_FAIL
    assert "refuses this certificate" in report.stopped
    assert not [f for f in report.findings if f.check == Check.SESSION and f.severity != "skip"]


async def test_untrusted_chain_without_the_ca(serve: ServeFactory) -> None:
    served = await serve()
    report = await diagnose(served.options(ca_file=None))
    finding = only_failure(report, Check.TLS)
    assert finding.title == "The certificate chain is not trusted by the system trust store"
    assert "private CA the phone was never given" in finding.cause
    assert "--ca-file" in finding.fix
    # natsync sends its CA after the leaf: OpenSSL meets a root it does not trust.
    assert any("self-signed certificate in certificate chain" in e for e in finding.evidence)


async def test_expired_certificate(serve: ServeFactory, ca: CA, tmp_path: Path) -> None:
    served = await serve(cert=issue_expired(ca, tmp_path / "old"))
    report = await diagnose(served.options())
    finding = only_failure(report, Check.TLS)
    assert finding.title.startswith("The certificate expired on ")
    assert "past its end date" in finding.cause
    assert "Issue a new certificate" in finding.fix


async def test_closed_port() -> None:
    port = free_port()
    report = await diagnose(Options(url=f"https://127.0.0.1:{port}", timeout=TEST_TIMEOUT))
    finding = only_failure(report, Check.REACH)
    assert finding.title == f"HTTPS port {port} is unreachable"
    assert f"127.0.0.1 port {port}: refused" in finding.evidence[0]
    assert "nothing listens on that port" in finding.cause
    assert "port forward" in finding.cause
    assert f"natsync portmap add {port}:<server port>/tcp" in finding.fix
    assert "nothing accepts connections" in report.stopped
    skipped = {f.check for f in report.findings if f.severity == Severity.SKIP}
    assert {Check.TLS, Check.HTTP, Check.SESSION, Check.PUSH} <= skipped


async def test_server_down_behind_a_forward(serve: ServeFactory, idle_cutter: Any) -> None:
    """The router (here a relay) still accepts, but the server behind it is stopped."""
    from tests.doctor.conftest import IdleCutter

    served = await serve()
    relay = await IdleCutter(served.port, idle=5).start()
    try:
        await served.server.close()
        port = relay.port
        report = await diagnose(served.options(url=f"https://localhost:{port}"))
    finally:
        await relay.close()
    finding = only_failure(report, Check.TLS)
    assert finding.title == f"No TLS at 127.0.0.1 port {port}"
    assert "the server behind a port forward or proxy is down" in finding.cause


async def test_wrong_password(serve: ServeFactory) -> None:
    served = await serve()
    report = await diagnose(served.options(password="not-the-password"))
    finding = only_failure(report, Check.SESSION)
    assert finding.title == "Authentication failed for alice"
    assert "password is wrong" in finding.cause
    assert "`natsync user passwd alice`" in finding.fix
    assert any("HTTP 401" in e for e in finding.evidence)
    assert "session fails" in report.stopped


async def test_path_that_closes_idle_connections(serve: ServeFactory, idle_cutter: Any) -> None:
    """A proxy that closes a connection idle for 1.5 s: the held Ping is closed at that moment,
    which is the cut, seen directly."""
    served = await serve()
    relay = await idle_cutter(served.port, 1.5)
    options = served.options(url=f"https://localhost:{relay.port}", heartbeat=6)
    started = asyncio.get_running_loop().time()
    report = await diagnose(options)
    elapsed = asyncio.get_running_loop().time() - started
    finding = only_failure(report, Check.PUSH)
    assert finding.title.startswith("Something on the path cuts a waiting Ping: idle ")
    cut = finding.data["idle_cut"]
    assert cut["method"] == "closed"
    assert 1.5 <= cut["cut"] <= 2.0
    assert "NAT idle timeouts cut Direct Push" in finding.cause
    assert "no server setting can fix it" in finding.fix  # 1.5 s leaves no room for a Ping
    assert elapsed < 6, "the cut must be seen when it happens, not at the heartbeat"


async def test_path_that_forgets_idle_connections_silently(
    serve: ServeFactory, idle_cutter: Any
) -> None:
    """A router that silently forgets connections idle for 2.5 s: the Ping's answer is lost,
    and idle probes bracket the cut between the longest idle that survived and the shortest
    that did not, within the stated precision; the advice is max_idle_path_seconds below it."""
    served = await serve()
    relay = await idle_cutter(served.port, 2.5, silent=True)
    options = served.options(url=f"https://localhost:{relay.port}", heartbeat=4)
    started = asyncio.get_running_loop().time()
    report = await diagnose(options)
    elapsed = asyncio.get_running_loop().time() - started
    finding = only_failure(report, Check.PUSH)
    cut = finding.data["idle_cut"]
    assert cut["method"] == "probes", finding.evidence
    assert cut["within_precision"] is True
    assert cut["survived"] <= 2.5 + 0.1
    assert cut["cut"] >= 2.5 - 0.1
    assert cut["cut"] - cut["survived"] <= cut["precision"] == 0.5
    assert any("no answer at all" in e for e in finding.evidence)
    assert any(e.startswith("longest idle time that survived") for e in finding.evidence)
    assert finding.data["advice"] == {}  # 2 s leaves no room for a Ping: raise the timeout
    assert "at least 64 s" in finding.fix
    assert elapsed < 4 + 5 + 2 * 4 + 2, "Ping + grace + at most two rounds of probes"


async def test_heartbeat_above_the_server_maximum_is_retried_at_the_limit(
    serve: ServeFactory,
) -> None:
    served = await serve(heartbeat_max=1)
    report = await diagnose(served.options(heartbeat=5))
    push = next(f for f in report.findings if f.check == Check.PUSH)
    assert push.severity == Severity.OK
    assert any("made it 1 s instead of the 5 s asked" in e for e in push.evidence)


def _intermediate_chain(tmp_path: Path) -> tuple[Path, Path, Path]:
    """root → intermediate → leaf (localhost); the server file holds only the leaf, the trust
    file root and intermediate: the doctor's machine trusts it, a phone would not."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(
        subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            ).add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            )
        return builder.sign(signer, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = build("Test Root", name("Test Root"), root_key, root_key, True)
    mid = build("Test Intermediate", root.subject, mid_key, root_key, True)
    leaf = build("localhost", mid.subject, leaf_key, mid_key, False)
    pem = serialization.Encoding.PEM
    cert_file, key_file, trust = tmp_path / "leaf.pem", tmp_path / "leaf.key", tmp_path / "t.pem"
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    trust.write_bytes(root.public_bytes(pem) + mid.public_bytes(pem))
    return cert_file, key_file, trust


async def test_intermediate_not_sent(serve: ServeFactory, tmp_path: Path) -> None:
    cert_file, key_file, trust = _intermediate_chain(tmp_path)
    served = await serve(cert=(cert_file, key_file))
    report = await diagnose(served.options(ca_file=trust))
    finding = next(f for f in report.findings if f.check == Check.TLS and f.severity != "ok")
    assert finding.severity == Severity.WARN
    assert finding.title == "Certificate: chain.intermediate-not-sent"
    assert "Phones do not fetch missing intermediates" in finding.cause
    assert "natsync cert check 127.0.0.1:" in finding.fix
    assert report.exit_status == 1  # works here, warns about phones


async def test_resolve_checks_the_public_name_at_a_lan_address(
    serve: ServeFactory, ca: CA, tmp_path: Path
) -> None:
    """`--resolve mail.natsync.invalid:127.0.0.1`: before DNS names the server, the public name is
    checked at the LAN address, certificate and all, as a phone will see it."""
    from natsync.cli.doctor import parse_resolve

    served = await serve(cert=issue(ca, tmp_path / "pub", ["mail.natsync.invalid"], []))
    url = f"https://mail.natsync.invalid:{served.port}"
    options = served.options(url=url, resolve=(parse_resolve("mail.natsync.invalid:127.0.0.1"),))
    report = await diagnose(options)
    assert report.exit_status == 0, [(f.title, f.evidence) for f in report.findings]
    names = next(f for f in report.findings if f.check == Check.NAMES)
    assert names.severity == Severity.SKIP
    assert "--resolve mail.natsync.invalid:127.0.0.1 given" in names.cause
    tls = next(f for f in report.findings if f.check == Check.TLS)
    assert tls.severity == Severity.OK
    assert any(f.check == Check.SESSION and f.severity == Severity.OK for f in report.findings)
    # the same name without --resolve: no such name, nothing further
    report = await diagnose(served.options(url=url))
    assert report.exit_status == 2
    assert "has no address" in report.stopped


def test_resolve_forms() -> None:
    from natsync.cli.doctor import parse_resolve

    assert parse_resolve("Mail.Example.org:192.168.1.10") == ("mail.example.org", "192.168.1.10")
    assert parse_resolve("mail.example.org:443:192.168.1.10") == (
        "mail.example.org",
        "192.168.1.10",
    )
    assert parse_resolve("mail.example.org:[fd00::1]") == ("mail.example.org", "fd00::1")
    assert parse_resolve("mail.example.org:fd00::1") == ("mail.example.org", "fd00::1")


async def test_cut_beyond_the_servers_keep_alive_is_narrowed_with_held_pings(
    serve: ServeFactory, idle_cutter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The far end closes idle connections after 1 s (its keep-alive), before the path's 2.5 s
    cut: idle probes can only say "survives 1 s"; held Pings, one after the other, narrow the
    bracket to whole seconds around the cut."""
    from natsync.server import front

    monkeypatch.setattr(front, "KEEPALIVE_TIMEOUT", 1.0)
    served = await serve()
    relay = await idle_cutter(served.port, 2.5, silent=True)
    report = await diagnose(served.options(url=f"https://localhost:{relay.port}", heartbeat=4))
    finding = only_failure(report, Check.PUSH)
    cut = finding.data["idle_cut"]
    assert cut["method"] == "probes and pings", finding.evidence
    assert cut["survived"] == 2.0
    assert cut["cut"] == 3.0
    assert cut["precision"] == 1.0
    assert cut["within_precision"] is True
    evidence = " ".join(finding.evidence)
    assert "the far end closed" in evidence
    assert "then 2 held Ping(s) beyond what idle probes can reach (2 s: answered, 3 s: cut)" in (
        evidence
    )
