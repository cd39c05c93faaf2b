"""Each failure the doctor names, created for real on loopback, and the finding it gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


async def test_server_down_behind_a_forward(serve: ServeFactory, idle_cutter: object) -> None:
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


async def test_path_that_cuts_idle_connections(serve: ServeFactory, idle_cutter: object) -> None:
    from tests.doctor.conftest import IdleCutter

    served = await serve()
    relay = await IdleCutter(served.port, idle=1.5).start()
    try:
        options = served.options(url=f"https://localhost:{relay.port}", heartbeat=6)
        started = asyncio.get_running_loop().time()
        report = await diagnose(options)
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await relay.close()
    finding = only_failure(report, Check.PUSH)
    assert finding.title.startswith("Something on the path cuts a waiting Ping after about ")
    seconds = float(finding.title.rsplit("about ", 1)[1].split()[0])
    assert 1 <= seconds <= 3
    assert "NAT idle timeouts cut Direct Push" in finding.cause
    assert "server.heartbeat_max = " in finding.fix
    assert elapsed < 6, "the cut must be seen when it happens, not at the heartbeat"


async def test_heartbeat_above_the_server_maximum_is_retried_at_the_limit(
    serve: ServeFactory,
) -> None:
    served = await serve(heartbeat_max=1)
    report = await diagnose(served.options(heartbeat=5))
    push = next(f for f in report.findings if f.check == Check.PUSH)
    assert push.severity == Severity.OK
    assert any("made it 1 s instead of the 5 s asked" in e for e in push.evidence)
