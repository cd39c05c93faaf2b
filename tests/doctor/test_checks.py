"""Every check as a pure function over hand-made evidence: no sockets, no clocks."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from natsync.doctor.autodiscover import check_autodiscover
from natsync.doctor.evidence import (
    AutodiscoverEvidence,
    Connect,
    CutEvidence,
    DnsAnswer,
    HttpEvidence,
    IdleProbe,
    MappingEvidence,
    MxEvidence,
    NamesEvidence,
    NatEvidence,
    PinEvidence,
    PushEvidence,
    ReachEvidence,
    SessionEvidence,
    Step,
    TlsEvidence,
)
from natsync.doctor.findings import EXIT_FAIL, EXIT_OK, EXIT_WARN, Check, Finding, Report, Severity
from natsync.doctor.gather import parse_autodiscover, parse_target, special_use, split_server
from natsync.doctor.http import check_http
from natsync.doctor.inside import check_mappings, check_nat, check_pin
from natsync.doctor.names import check_names
from natsync.doctor.push import (
    advised_idle,
    check_push,
    cut_precision,
    narrow,
    probe_idles,
)
from natsync.doctor.reach import check_reach
from natsync.doctor.session import check_session
from natsync.doctor.tls import check_tls, dns_name_matches

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
NAME = "mail.example.org"


def severities(findings: list[Finding]) -> list[str]:
    return [str(f.severity) for f in findings]


def titled(findings: list[Finding], start: str) -> Finding:
    return next(f for f in findings if f.title.startswith(start))


# -- names


def names(resolver: DnsAnswer | None, *auth: DnsAnswer, **kw: object) -> list[Finding]:
    return check_names(NamesEvidence(name=NAME, resolver=resolver, authoritative=auth, **kw))  # type: ignore[arg-type]


def test_names_all_agree() -> None:
    found = names(
        DnsAnswer("r", ("93.184.216.34",), (), 40),
        DnsAnswer("ns1", ("93.184.216.34",), (), 60),
        zone="example.org",
    )
    assert set(severities(found)) == {"ok"}


def test_names_stale_resolver() -> None:
    found = names(
        DnsAnswer("r", ("93.184.216.34",), (), 1200),
        DnsAnswer("ns1", ("151.101.1.1",), (), 3600),
        zone="example.org",
    )
    stale = titled(found, "Stale DNS")
    assert stale.severity == Severity.FAIL
    assert stale.title == "Stale DNS: the phone's resolver still hands out 93.184.216.34"
    assert "(1200 s from now)" in stale.cause
    assert "Wait 1200 s" in stale.fix
    assert titled(found, "TTL 3600 s").severity == Severity.WARN


def test_names_nxdomain_but_authoritative_knows_it_is_negative_caching() -> None:
    found = names(DnsAnswer("r", nxdomain=True), DnsAnswer("ns1", ("93.184.216.34",)))
    [finding] = found
    assert finding.title == f"{NAME} does not resolve"
    assert "negative caching" in finding.cause


def test_names_nothing_anywhere() -> None:
    [finding] = names(DnsAnswer("r", nxdomain=True), authoritative_skipped="x")
    assert "natsync ddns update" in finding.fix
    assert "NXDOMAIN" in finding.evidence[0]


def test_names_private_address_published() -> None:
    found = names(DnsAnswer("r", ("192.168.1.10",)), authoritative_skipped="none")
    finding = titled(found, f"{NAME} resolves to 192.168.1.10")
    assert finding.severity == Severity.WARN
    assert "split-horizon" in finding.cause


def test_names_cgnat_shared_address_published() -> None:
    found = names(DnsAnswer("r", ("100.64.3.4",)), authoritative_skipped="none")
    assert "shared carrier-grade NAT space" in titled(found, f"{NAME} resolves").title


def test_names_public_address_moved() -> None:
    found = names(
        DnsAnswer("r", ("93.184.216.34",)),
        DnsAnswer("ns1", ("93.184.216.34",), (), 60),
        public=("151.101.65.1",),
    )
    finding = titled(found, "DNS does not point at the current public address")
    assert finding.severity == Severity.FAIL
    assert "ISP changed" in finding.cause
    assert "natsync ddns run" in finding.fix


def test_names_authoritative_servers_disagree() -> None:
    found = names(
        DnsAnswer("r", ("93.184.216.34",)),
        DnsAnswer("ns1", ("93.184.216.34",), (), 60),
        DnsAnswer("ns2", ("151.101.1.1",), (), 60),
        zone="example.org",
    )
    assert titled(found, "The authoritative servers of example.org disagree").severity == "warn"


def test_names_authoritative_unreachable() -> None:
    found = names(DnsAnswer("r", ("93.184.216.34",)), DnsAnswer("ns1", error="Timeout"))
    assert titled(found, "The authoritative servers").severity == Severity.WARN


def test_names_ipv6_only_and_literal() -> None:
    found = names(DnsAnswer("r", (), ("2001:db8::1",)), authoritative_skipped="x")
    assert titled(found, f"{NAME} has no IPv4 address").severity == Severity.WARN
    [literal] = check_names(NamesEvidence(name="93.184.216.34", literal=True))
    assert literal.severity == Severity.OK


def test_names_mx_missing_and_dead_target() -> None:
    base = DnsAnswer("r", ("93.184.216.34",))
    none = names(base, authoritative_skipped="x", mx=MxEvidence("example.org"))
    assert titled(none, "No MX record for example.org").severity == Severity.WARN
    dead = names(
        base,
        authoritative_skipped="x",
        mx=MxEvidence("example.org", ((10, "mx.example.org"),), (("mx.example.org", ()),)),
    )
    assert titled(dead, "The MX target mx.example.org").severity == Severity.FAIL


# -- reach


def test_reach_refused_names_the_port_forward() -> None:
    [finding] = check_reach(ReachEvidence((Connect("93.184.216.34", 443, False, "refused", 0.01),)))
    assert finding.severity == Severity.FAIL
    assert "natsync portmap add 443:<server port>/tcp" in finding.fix


def test_reach_timeout_from_inside_at_the_public_address_is_hairpin() -> None:
    ev = ReachEvidence(
        (Connect("93.184.216.34", 443, False, "timeout", 5.0),),
        inside=True,
        public=("93.184.216.34",),
    )
    [finding] = check_reach(ev)
    assert "hairpin NAT" in finding.cause
    assert "split-horizon DNS" in finding.fix


def test_reach_partial_and_smtp() -> None:
    ev = ReachEvidence(
        (
            Connect("93.184.216.34", 443, True, "", 0.02),
            Connect("2001:db8::7", 443, False, "unreachable", 0.0),
        ),
        (Connect("93.184.216.34", 25, False, "timeout", 5.0),),
    )
    https, smtp = check_reach(ev)
    assert https.severity == Severity.WARN
    assert "happy eyeballs" in https.cause
    assert smtp.severity == Severity.WARN
    assert "relay MX" in smtp.fix


def test_reach_nothing_to_connect_to() -> None:
    assert severities(check_reach(ReachEvidence())) == ["skip"]


# -- tls


def make_cert(
    names: list[str] = [NAME],  # noqa: B006 - read only
    ips: list[str] = (),  # type: ignore[assignment]
    *,
    start: dt.datetime = NOW - dt.timedelta(days=10),
    end: dt.datetime = NOW + dt.timedelta(days=300),
    eku: list[x509.ObjectIdentifier] | None = [ExtendedKeyUsageOID.SERVER_AUTH],  # noqa: B006
    cn: str = "server.lan",
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def tls(chain: tuple[bytes, ...], **kw: object) -> list[Finding]:
    values: dict[str, object] = {
        "address": "93.184.216.34",
        "port": 443,
        "server_name": NAME,
        "trust": "the CA file ca.pem",
        "chain": chain,
        "verified": True,
        "protocol": "TLSv1.3",
    }
    values.update(kw)
    return [f for f in check_tls(TlsEvidence(**values), NOW) if f.title.find("Certificate: ") != 0]  # type: ignore[arg-type]


def test_tls_good() -> None:
    [finding] = tls((make_cert(),))
    assert finding.severity == Severity.OK
    assert finding.title == f"The certificate at 93.184.216.34 port 443 is valid for {NAME}"


def test_tls_internal_name_only() -> None:
    found = tls((make_cert(["exchange.corp.local"], cn=NAME),), verified=False, verify_code=62)
    finding = titled(found, f"The certificate does not cover {NAME}")
    assert "names what the server is (exchange.corp.local)" in finding.cause
    assert "phones ignore the CN" in finding.cause
    assert f"natsync cert issue --name {NAME}" in finding.fix
    assert len([f for f in found if f.severity == Severity.FAIL]) == 1  # trust is not blamed


def test_tls_ip_needs_an_ip_san() -> None:
    found = tls((make_cert(["93.184.216.34"]),), server_name=None)
    finding = titled(found, "The certificate does not cover 93.184.216.34")
    assert "--ip 93.184.216.34" in finding.fix
    assert severities(tls((make_cert([], ["93.184.216.34"]),), server_name=None)) == ["ok"]


@pytest.mark.parametrize(
    ("pattern", "name", "match"),
    [
        ("*.example.org", "mail.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.b.example.org", False),
        ("MAIL.example.org", "mail.EXAMPLE.org.", True),
        ("*.org", "example.org", False),
    ],
)
def test_wildcards(pattern: str, name: str, match: bool) -> None:
    assert dns_name_matches(pattern, name) is match


def test_tls_expired_expiring_not_yet() -> None:
    expired = tls((make_cert(end=NOW - dt.timedelta(days=1)),), verified=False, verify_code=10)
    assert titled(expired, "The certificate expired on").severity == Severity.FAIL
    soon = tls((make_cert(end=NOW + dt.timedelta(days=3)),))
    assert titled(soon, "The certificate expires in 3 days").severity == Severity.WARN
    future = tls((make_cert(start=NOW + dt.timedelta(days=3)),), verified=False, verify_code=9)
    assert "clock" in titled(future, "The certificate is not valid before").cause


def test_tls_untrusted_self_signed_and_private_ca() -> None:
    found = tls(
        (make_cert(),),
        verified=False,
        verify_code=20,
        verify_message="unable to get local issuer certificate",
    )
    finding = titled(found, "The certificate chain is not trusted by the CA file ca.pem")
    assert "intermediate" in finding.cause


def test_tls_eku() -> None:
    missing = tls((make_cert(eku=None),))
    assert titled(missing, "The certificate has no extended key usage").severity == "warn"
    client = tls((make_cert(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),))
    assert titled(client, "The certificate is not for TLS servers").severity == "fail"


def test_tls_no_handshake_and_old_protocol() -> None:
    [none] = tls((), handshake_error="wrong version number")
    assert none.title == "No TLS at 93.184.216.34 port 443"
    old = tls((make_cert(),), protocol="TLSv1")
    assert titled(old, "The server negotiated TLSv1").severity == Severity.WARN


# -- http


def http(**kw: object) -> list[Finding]:
    values: dict[str, object] = {
        "url": "https://x/Microsoft-Server-ActiveSync",
        "options_status": 200,
        "options_headers": (("MS-ASProtocolVersions", "14.1,16.1"),),
        "anonymous_status": 401,
        "anonymous_challenge": 'Basic realm="natsync"',
    }
    values.update(kw)
    return check_http(HttpEvidence(**values))  # type: ignore[arg-type]


def test_http_good_and_version_chosen() -> None:
    found = http()
    assert severities(found) == ["ok", "ok"]
    assert "a phone would speak 16.1" in found[0].evidence


def test_http_not_activesync() -> None:
    found = http(options_headers=(("Server", "nginx"),))
    assert titled(found, "Something other than ActiveSync").severity == Severity.FAIL
    found = http(options_status=404, anonymous_status=404)
    assert titled(found, "The ActiveSync path is not published").severity == Severity.FAIL


def test_http_auth_problems() -> None:
    assert (
        titled(http(anonymous_challenge="NTLM"), "The server does not offer Basic").severity
        == "warn"
    )
    assert (
        titled(http(anonymous_status=200), "A command without credentials was accepted").severity
        == "fail"
    )
    assert severities(http(options_error="reset"))[0] == "fail"
    assert titled(
        http(options_headers=(("MS-ASProtocolVersions", "2.5"),)), "No ActiveSync version"
    )


# -- session


def session(*steps: Step) -> Finding:
    [finding] = check_session(SessionEvidence("alice", "16.1", steps))
    return finding


def test_session_good_and_failures() -> None:
    ok = session(Step("OPTIONS", True), Step("Provision", True), Step("Sync", True, "Inbox: 3"))
    assert ok.severity == Severity.OK
    assert "natsync user passwd alice" in session(Step("Provision", False, "", 401)).fix
    assert "locked out" in session(Step("Provision", False, "", 429)).title
    assert "natsync device list" in session(Step("FolderSync", False, "", 403)).fix
    assert session(Step("Provision", False, "", 0, 2)).title == "Provisioning does not settle"
    assert session(Step("Sync", False, "Status 4")).title == "Sync failed"


# -- push


def test_push_outcomes() -> None:
    [held] = check_push(PushEvidence(960, "expired", 960.2, 1), full=960)
    assert held.severity == Severity.OK
    assert not any("not tested" in e for e in held.evidence)
    [short_ok] = check_push(PushEvidence(300, "expired", 300.1, 1), full=960)
    assert any("between 300 s and the 960 s" in e for e in short_ok.evidence)
    [below] = check_push(PushEvidence(2, "refused", 0.01, 5, 60))
    assert below.severity == Severity.SKIP
    [retried] = check_push(PushEvidence(60, "expired", 60.0, 1, asked=960))
    assert "instead of the 960 s asked" in retried.evidence[1]


def _measured(survived: float, cut: float, **kw: Any) -> CutEvidence:
    probes = (IdleProbe(survived, "answered", survived), IdleProbe(cut, "cut", cut))
    return CutEvidence(survived, cut, cut_precision(cut), probes, 2, 19.0, **kw)


def test_push_cut_measured_advises_max_idle_path_seconds_below_the_cut() -> None:
    ev = PushEvidence(10, "silent", 15.0, measured=_measured(7.93, 8.05))
    [cut] = check_push(ev)
    assert cut.severity == Severity.FAIL
    assert cut.title.endswith("idle connections are cut after 7.9-8.1 s")
    assert "no answer at all after 15.0 s" in cut.evidence[1]
    assert any("longest idle time that survived: 7.93 s" in e for e in cut.evidence)
    assert "`max_idle_path_seconds = 7` under [server]" in cut.fix
    assert "heartbeat_max" not in cut.fix
    assert "also set server.heartbeat_min = 2" in cut.fix
    assert cut.data["advice"] == {
        "server.max_idle_path_seconds": 7,
        "server.heartbeat_min": 2,
    }
    assert cut.data["idle_cut"]["survived"] == 7.93
    assert cut.data["idle_cut"]["within_precision"] is True
    [long] = check_push(PushEvidence(960, "silent", 990.0, measured=_measured(299.0, 312.0)))
    assert "`max_idle_path_seconds = 299`" in long.fix
    assert "heartbeats up to 294 s" in long.fix
    assert "heartbeat_min" not in long.fix
    assert long.data["advice"] == {"server.max_idle_path_seconds": 299}
    assert "at least 1020 s" in long.fix


def test_push_cut_too_short_for_any_ping_or_not_measured() -> None:
    [tiny] = check_push(PushEvidence(960, "silent", 990.0, measured=_measured(3.2, 3.6)))
    assert "no server setting can fix it" in tiny.fix
    assert tiny.data["advice"] == {}
    stopped = CutEvidence(0.0, 960.0, 48.0, (), 1, 3.0, stopped="no probe could start (refused)")
    [unknown] = check_push(PushEvidence(960, "silent", 990.0, measured=stopped))
    assert unknown.title == "Something on the path cuts a waiting Ping before 960 s"
    assert "no probe could start" in unknown.evidence[-1]
    closed = CutEvidence(299.75, 300.0, 0.25, method="closed")
    [seen] = check_push(PushEvidence(960, "cut", 300.0, measured=closed))
    assert "closed the held Ping itself after 300.0 s" in " ".join(seen.evidence)
    assert "`max_idle_path_seconds = 299`" in seen.fix


def test_probe_planning_brackets_the_cut() -> None:
    assert probe_idles(0.0, 9.0, 8) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert cut_precision(8) == 0.5
    assert cut_precision(600) == 30.0

    # a path that cuts at 8 s: one round of probes below a 10 s heartbeat
    def simulate(idle: float) -> IdleProbe:
        return IdleProbe(idle, "answered" if idle < 8 else "cut", idle)

    survived, cut = 0.0, 10.0
    for _ in range(3):
        if cut - survived <= cut_precision(cut):
            break
        survived, cut, closed = narrow(
            survived, cut, [simulate(t) for t in probe_idles(survived, cut)]
        )
        assert closed is None
    assert survived < 8 <= cut
    assert cut - survived <= 0.5
    # the far end closing idle connections (its keep-alive) counts as survived, never as cut
    far = [
        IdleProbe(30.0, "answered", 30.0),
        IdleProbe(90.0, "closed", 75.0),
        IdleProbe(100.0, "cut", 100.0),
    ]
    assert narrow(0.0, 300.0, far) == (75.0, 100.0, 75.0)
    assert advised_idle(7.99) == 7
    assert advised_idle(8.0) == 8


# -- autodiscover


def test_autodiscover() -> None:
    good = AutodiscoverEvidence(
        "a@example.org",
        "https://mail.example.org/autodiscover/autodiscover.xml",
        200,
        mobilesync_url="https://mail.example.org/Microsoft-Server-ActiveSync",
        expected_url="https://mail.example.org:443/Microsoft-Server-ActiveSync",
    )
    assert check_autodiscover(good)[0].severity == Severity.OK
    inner = AutodiscoverEvidence(
        "a@example.org",
        "u",
        200,
        mobilesync_url="https://exchange.corp.local/Microsoft-Server-ActiveSync",
        expected_url="https://mail.example.org/Microsoft-Server-ActiveSync",
    )
    [finding] = check_autodiscover(inner)
    assert finding.severity == Severity.WARN
    assert "server.public_name" in finding.fix
    assert check_autodiscover(None)[0].severity == Severity.SKIP
    assert check_autodiscover(AutodiscoverEvidence("a@x", "u", 404))[0].severity == "warn"
    assert check_autodiscover(AutodiscoverEvidence("a@x", "u", 401))[0].severity == "fail"
    bad = AutodiscoverEvidence("a@x", "u", 200, error_code="601", error_message="no")
    assert check_autodiscover(bad)[0].severity == Severity.FAIL


def test_parse_autodiscover_answer() -> None:
    body = (
        b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
        b'autodiscover/responseschema/2006"><Response xmlns="http://schemas.microsoft.com/'
        b'exchange/autodiscover/mobilesync/responseschema/2006"><Action><Settings><Server>'
        b"<Type>MobileSync</Type><Url>https://m.example.org/Microsoft-Server-ActiveSync</Url>"
        b"</Server></Settings></Action></Response></Autodiscover>"
    )
    assert parse_autodiscover(body) == {
        "mobilesync_url": "https://m.example.org/Microsoft-Server-ActiveSync"
    }
    assert parse_autodiscover(b"<not xml")["error_code"] == "unreadable"


# -- inside


def test_inside_cgnat_and_pin() -> None:
    [cgnat] = check_nat(
        NatEvidence("cgnat", "carrier-grade or double NAT", ("upnp sees 100.64.0.5",))
    )
    assert cgnat.severity == Severity.FAIL
    assert "no phone on the internet can open a connection in" in cgnat.cause
    assert check_nat(NatEvidence("agree", "ok", (), "93.184.216.34"))[0].severity == "ok"
    assert check_nat(NatEvidence("disagree", "x"))[0].severity == "warn"
    assert check_pin(PinEvidence("", "sha256:AA", "b"))[0].severity == "warn"
    assert check_pin(PinEvidence("sha256:AA:BB", "sha256:aabb", "b"))[0].severity == "ok"
    assert check_pin(PinEvidence("sha256:AA", "", "b", "refused"))[0].severity == "warn"


# -- findings, targets


def test_exit_status_follows_the_worst_finding() -> None:
    report = Report("t", "outside")
    assert report.exit_status == EXIT_OK
    report.findings.append(Finding(Check.NAMES, Severity.SKIP, "s"))
    assert report.exit_status == EXIT_OK
    report.findings.append(Finding(Check.NAMES, Severity.WARN, "w"))
    assert report.exit_status == EXIT_WARN
    report.findings.append(Finding(Check.TLS, Severity.FAIL, "f"))
    assert report.exit_status == EXIT_FAIL
    assert report.to_json()["counts"] == {"ok": 0, "warn": 1, "fail": 1, "skip": 1}


def test_targets_and_servers() -> None:
    t = parse_target("mail.example.org")
    assert (t.scheme, t.host, t.port, t.literal) == ("https", NAME, 443, False)
    assert (
        parse_target("https://[::1]:8443/x").eas_url
        == "https://[::1]:8443/Microsoft-Server-ActiveSync"
    )
    assert parse_target("https://127.0.0.1").literal
    assert split_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert split_server("[::1]:53") == ("::1", 53)
    assert split_server("::1") == ("::1", 53)
    assert special_use("localhost")
    assert special_use("eas.example.test")
    assert not special_use(NAME)


# -- every command a finding can print works as printed


def every_command_finding() -> list[Finding]:
    """One finding of each branch that prints a command."""
    base = DnsAnswer("r", ("93.184.216.34",))
    ns = DnsAnswer("ns1", ("93.184.216.34",), (), 60)
    dead_mx = MxEvidence("example.org", ((10, "mx.example.org"),), (("mx.example.org", ()),))
    refused = Connect("93.184.216.34", 443, False, "refused", 0.01)
    return [
        *names(DnsAnswer("r", nxdomain=True), authoritative_skipped="x"),
        *names(DnsAnswer("r", ("192.168.1.10",)), authoritative_skipped="none"),
        *names(DnsAnswer("r", ("93.184.216.34",), (), 1200), DnsAnswer("ns1", ("151.101.1.1",))),
        *names(base, ns, public=("151.101.65.1",)),
        *names(
            DnsAnswer("r", ("93.184.216.34",), (), 3600),
            DnsAnswer("ns1", ("93.184.216.34",), (), 3600),
        ),
        *names(DnsAnswer("r", (), ("2001:db8::7",)), authoritative_skipped="x"),
        *names(base, authoritative_skipped="x", mx=MxEvidence("example.org")),
        *names(base, authoritative_skipped="x", mx=dead_mx),
        *check_reach(ReachEvidence((refused,))),
        *check_reach(ReachEvidence((refused,), inside=True, server_port=8443)),
        *check_reach(
            ReachEvidence(
                (
                    Connect("93.184.216.34", 443, True),
                    Connect("2001:db8::7", 443, False, "timeout"),
                ),
                (Connect("93.184.216.34", 25, False, "refused"),),
            )
        ),
        *tls((make_cert(["exchange.corp.local"]),), verified=False, verify_code=62),
        *tls((make_cert(["93.184.216.34"]),), server_name=None),
        *tls((make_cert(end=NOW - dt.timedelta(days=1)),), verified=False, verify_code=10),
        *tls((make_cert(),), verified=False, verify_code=18, verify_message="self-signed"),
        session(Step("Provision", False, "", 401)),
        session(Step("FolderSync", False, "", 403)),
        *check_nat(NatEvidence("cgnat", "x")),
        *check_nat(NatEvidence("no-address", "x")),
        *check_mappings(MappingEvidence(("443->8443/tcp",), ())),
        *check_mappings(MappingEvidence(("443->8443/tcp",), error="no IGD")),
        *check_pin(PinEvidence("", "sha256:AA", "127.0.0.1:8443", name="mail.lan")),
        *check_pin(PinEvidence("sha256:AA", "sha256:BB", "127.0.0.1:8443")),
        *check_pin(PinEvidence("", "", "127.0.0.1:8443", connect_error="refused")),
        *check_pin(PinEvidence("", "sha256:AA", "b:1", ca_file="ca.pem", ca_error="no")),
        *every_path_command_finding(),
    ]


def every_path_command_finding() -> list[Finding]:
    """The IPv6 and relay checks' branches that print a command."""
    from natsync.doctor.evidence import Ipv6Evidence, RelayEvidence, TunnelEvidence
    from natsync.doctor.ipv6 import check_ipv6
    from natsync.doctor.relay import check_relay

    v4, v6 = "198.51.100.7", "2001:db8::2"
    dropped = Connect(v6, 443, False, "timeout")
    tunnel = TunnelEvidence("natsync0", "203.0.113.10:51820", "10.77.0.1", wg_error="no device")
    relay = RelayEvidence(
        "eas.example.org", ("203.0.113.10",), ("203.0.113.10",), Connect("203.0.113.10", 443, True)
    )
    return [
        *check_ipv6(Ipv6Evidence("e.org", 443, (v4,), (v6,), (), (dropped,))),
        *check_ipv6(Ipv6Evidence("e.org", 443, (v4,), (v6,), (), (), host6=("2001:db8::9",))),
        *check_ipv6(Ipv6Evidence("e.org", 443, (v4,), (), (), (), host6=(v6,))),
        *check_ipv6(Ipv6Evidence("e.org", 443, (v4,), (v6,), (Connect(v4, 443, True),))),
        *check_relay(replace(relay, tunnel=tunnel)),
        *check_relay(replace(relay, edge=Connect("10.77.0.2", 8443, False, "refused"))),
        *check_relay(replace(relay, servers=(Connect("b:1", 0, False, "refused"),))),
        *check_relay(replace(relay, through="no TLS handshake")),
    ]


def test_every_printed_command_parses_with_the_users_file(tmp_path: Path) -> None:
    """Each `natsync ...` command a finding can print is accepted by natsync's own command line
    as printed (the command exists, every argument and option is one it takes, a named file
    exists); run with --config FILE, each names FILE, quoted, never natsync.toml."""
    import os
    import shlex

    import click

    from natsync.cli import main

    given = "my home.toml"
    (tmp_path / given).write_text("[server]\n")
    (tmp_path / "natsync.toml").write_text("[server]\n")
    (tmp_path / "relay.toml").write_text("[relay]\n")
    (tmp_path / "edge.toml").write_text("[edge]\n")
    findings = every_command_finding()
    printed = {
        c
        for f in [*findings, *(f.for_config(given) for f in findings)]
        for text in (f.cause, f.fix)
        for c in text.split("`")[1::2]
        if c.startswith("natsync ")
    }
    assert len(printed) >= 15, sorted(printed)
    with_config = [c for c in printed if "--config" in c]
    assert any(c.endswith("--config 'my home.toml'") for c in with_config)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        for command in sorted(printed):
            if "<server port>" in command:  # an outside run cannot know it: said in words
                continue
            args = shlex.split(command)[1:]
            try:
                ctx = main.make_context("natsync", list(args))
                group: click.Command = main
                while isinstance(group, click.Group):
                    rest = [*ctx._protected_args, *ctx.args]
                    name, sub, rest = group.resolve_command(ctx, rest)
                    assert sub is not None
                    ctx = sub.make_context(name or "", rest, parent=ctx)
                    group = sub
            except click.UsageError as exc:
                raise AssertionError(f"{command!r}: {exc.format_message()}") from None
    finally:
        os.chdir(old)
