"""`natsync cert check` reasoning: each defect the article meets gives the right finding, and
the verdict agrees with a real TLS handshake (OpenSSL through Python's ssl module)."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificates
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.cert.ca import init_ca
from natsync.cert.check import Severity, TrustStore, check, dns_name_matches
from tests.cert.factory import NOW, Issuer, make_ca, make_leaf


def store(*issuers: Issuer, label: str = "the test store") -> TrustStore:
    return TrustStore(label, tuple(i.cert for i in issuers))


def codes(report: object) -> dict[str, Severity]:
    return {f.code: f.severity for f in report.findings}  # type: ignore[attr-defined]


def test_issued_by_natsync_ca_passes(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    cert_path, _ = ca.issue_server_cert(
        ["mail.example.com", "autodiscover.example.com"], ["203.0.113.5"], tmp_path
    )
    chain = load_pem_x509_certificates(cert_path.read_bytes())
    report = check(
        chain,
        names=["mail.example.com", "autodiscover.example.com"],
        ips=["203.0.113.5"],
        trust=TrustStore("natsync's CA", (ca.cert,)),
        now=dt.datetime.now(dt.UTC),
    )
    assert report.severity is Severity.OK, [f.message for f in report.findings]
    assert report.exit_code == 0
    found = codes(report)
    for code in ("name.covered", "ip.covered", "chain.trusted", "validity.ok", "eku.ok"):
        assert found[code] is Severity.OK
    assert report.path == (chain[0], ca.cert)


def test_the_articles_failure_is_caught_in_advance() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["exchange.corp.local"], ["10.0.0.5"])
    report = check(
        [leaf], names=["mail.example.com"], ips=["198.51.100.7"], trust=store(root), now=NOW
    )
    assert report.exit_code == 2
    [name] = report.by_code("name.mismatch")
    assert name.message.startswith(
        "the certificate names exchange.corp.local and 10.0.0.5; the phone connects to "
        "mail.example.com at 198.51.100.7, the router's public address, so it will refuse"
    )
    assert "inside the LAN" in name.message
    [address] = report.by_code("ip.mismatch")
    assert "198.51.100.7, the router's public address, so it will refuse" in address.message


def test_wrong_name_fails() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["www.example.com"])
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    assert codes(report)["name.mismatch"] is Severity.FAIL
    assert (
        "no name in the certificate matches mail.example.com"
        in report.by_code("name.mismatch")[0].message
    )


def test_name_only_in_cn_fails_and_says_why() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["www.example.com"], cn="mail.example.com")
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    assert "only in the subject CN" in report.by_code("name.mismatch")[0].message


def test_no_san_extension_at_all() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["mail.example.com"], with_san=False)
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    assert codes(report)["san.missing"] is Severity.FAIL


def test_address_written_as_a_name_does_not_cover_the_address() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["203.0.113.5"], cn="203.0.113.5")
    report = check([leaf], ips=["203.0.113.5"], trust=store(root), now=NOW)
    [finding] = report.by_code("ip.mismatch")
    assert "written as a name" in finding.message


def test_internal_ip_only_fails_for_the_public_address() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, [], ["192.168.1.10"])
    report = check([leaf], ips=["203.0.113.5"], trust=store(root), now=NOW)
    [finding] = report.by_code("ip.mismatch")
    assert finding.severity is Severity.FAIL
    assert "names 192.168.1.10; the phone connects to 203.0.113.5" in finding.message


def test_expired_and_not_yet_valid() -> None:
    root = make_ca()
    old, _ = make_leaf(
        root, not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=10)
    )
    report = check([old], names=["mail.example.com"], trust=store(root), now=NOW)
    [finding] = report.by_code("validity.expired")
    assert finding.severity is Severity.FAIL
    assert "10 days ago" in finding.message
    future, _ = make_leaf(root, not_before=NOW + dt.timedelta(days=2))
    report = check([future], names=["mail.example.com"], trust=store(root), now=NOW)
    assert codes(report)["validity.not-yet"] is Severity.FAIL


def test_expiring_soon_warns_and_too_long_fails() -> None:
    root = make_ca()
    soon, _ = make_leaf(root, not_after=NOW + dt.timedelta(days=5))
    report = check([soon], names=["mail.example.com"], trust=store(root), now=NOW)
    assert report.severity is Severity.WARN
    assert "in 5 days" in report.by_code("validity.expiring")[0].message
    long, _ = make_leaf(root, not_after=NOW + dt.timedelta(days=1000))
    report = check([long], names=["mail.example.com"], trust=store(root), now=NOW)
    assert codes(report)["validity.too-long"] is Severity.FAIL


def test_incomplete_chain_fails() -> None:
    root = make_ca()
    inter = make_ca("Test Intermediate", parent=root)
    leaf, _ = make_leaf(inter)
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    [finding] = report.by_code("chain.incomplete")
    assert finding.severity is Severity.FAIL
    assert "CN=Test Intermediate" in finding.message
    assert "does not send" in finding.message


def test_intermediate_known_only_to_the_store_warns() -> None:
    root = make_ca()
    inter = make_ca("Test Intermediate", parent=root)
    leaf, _ = make_leaf(inter)
    report = check([leaf], names=["mail.example.com"], trust=store(root, inter), now=NOW)
    assert codes(report)["chain.intermediate-not-sent"] is Severity.WARN
    assert codes(report)["chain.trusted"] is Severity.OK
    full = check([leaf, inter.cert], names=["mail.example.com"], trust=store(root), now=NOW)
    assert full.severity is Severity.OK
    assert full.path == (leaf, inter.cert, root.cert)


def test_untrusted_root_and_self_signed() -> None:
    root, other = make_ca(), make_ca("Other Root")
    leaf, _ = make_leaf(root)
    report = check([leaf, root.cert], names=["mail.example.com"], trust=store(other), now=NOW)
    assert codes(report)["chain.untrusted-root"] is Severity.FAIL
    assert "not in the test store" in report.by_code("chain.untrusted-root")[0].message


def test_wrong_eku_fails() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    [finding] = report.by_code("eku.no-server-auth")
    assert finding.severity is Severity.FAIL
    assert "clientAuth" in finding.message
    bare, _ = make_leaf(root, eku=None)
    assert codes(check([bare], trust=store(root), now=NOW))["eku.missing"] is Severity.FAIL


def test_sha1_signature_and_small_rsa_key_fail(tmp_path: Path) -> None:
    # cryptography refuses to sign with SHA-1, so OpenSSL makes the old-style certificate.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-sha1",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(tmp_path / "c.pem"),
            "-subj",
            "/CN=mail.example.com",
            "-addext",
            "subjectAltName=DNS:mail.example.com",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
        check=True,
        capture_output=True,
    )
    [leaf] = load_pem_x509_certificates((tmp_path / "c.pem").read_bytes())
    report = check(
        [leaf],
        names=["mail.example.com"],
        trust=TrustStore("x", (leaf,)),
        now=dt.datetime.now(dt.UTC),
    )
    assert codes(report)["chain.trusted"] is Severity.OK
    assert codes(report)["signature.weak"] is Severity.FAIL
    assert "SHA1" in report.by_code("signature.weak")[0].message
    assert codes(report)["key.weak"] is Severity.FAIL
    assert "RSA 1024 bits" in report.by_code("key.weak")[0].message


def test_name_matched_only_by_a_later_san_warns() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["exchange.corp.local", "mail.example.com"])
    report = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    assert report.severity is Severity.WARN
    [finding] = report.by_code("name.not-first")
    assert "entry 2" in finding.message


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("mail.example.com", "MAIL.Example.com.", True),
        ("*.example.com", "mail.example.com", True),
        ("*.example.com", "example.com", False),  # not the bare domain
        ("*.example.com", "a.mail.example.com", False),  # exactly one label
        ("m*.example.com", "mail.example.com", False),  # partial-label wildcard
        ("mail.*.com", "mail.example.com", False),  # not the leftmost label
        ("*.com", "example.com", False),  # not a whole TLD
        ("*.example.com", "xn--mnchen-3ya.example.com", False),  # no wildcard into IDN labels
        ("xn--mnchen-3ya.example.com", "münchen.example.com", True),  # A-label comparison
        ("*.xn--mnchen-3ya.de", "mail.münchen.de", True),
    ],
)
def test_rfc6125_name_matching(pattern: str, name: str, expected: bool) -> None:
    assert dns_name_matches(pattern, name) is expected


def _handshake_ok(
    tmp_path: Path, leaf_chain: list[object], key: object, ca: Issuer, host: str
) -> bool:
    """Whether OpenSSL, verifying against *ca*, accepts the chain for *host*."""
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert_file.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in leaf_chain)  # type: ignore[attr-defined]
    )
    key_file.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    import socket

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw:
            try:
                with client_ctx.wrap_socket(raw, server_hostname=host):
                    return True
            except ssl.SSLCertVerificationError:
                return False
    finally:
        thread.join(5)
        listener.close()


def test_verdicts_agree_with_a_real_tls_client(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    root = make_ca(now=now)
    inter = make_ca("Test Intermediate", parent=root, now=now)
    good, good_key = make_leaf(
        inter,
        ["mail.example.com"],
        ["127.0.0.1"],
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=90),
    )
    cases = [
        ([good, inter.cert], "mail.example.com", True),
        ([good, inter.cert], "127.0.0.1", True),
        ([good, inter.cert], "other.example.com", False),
        ([good], "mail.example.com", False),  # intermediate not sent
    ]
    for chain, host, accepted in cases:
        is_ip = host[0].isdigit()
        report = check(
            chain,
            names=[] if is_ip else [host],
            ips=[host] if is_ip else [],
            trust=store(root),
            now=now,
        )
        assert (report.severity is Severity.OK) is accepted, (host, report.findings)
        assert _handshake_ok(tmp_path, chain, good_key, root, host) is accepted


def test_wildcard_near_misses_are_explained() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["*.example.com"])
    bare = check([leaf], names=["example.com"], trust=store(root), now=NOW)
    assert "does not cover example.com itself" in bare.by_code("name.mismatch")[0].message
    deep = check([leaf], names=["a.mail.example.com"], trust=store(root), now=NOW)
    assert "exactly one label" in deep.by_code("name.mismatch")[0].message
    covered = check([leaf], names=["mail.example.com"], trust=store(root), now=NOW)
    assert covered.severity is Severity.OK


def test_a_carrier_grade_nat_address_is_named_as_such() -> None:
    root = make_ca()
    leaf, _ = make_leaf(root, ["mail.example.com"])
    report = check([leaf], ips=["100.64.12.34"], trust=store(root), now=NOW)
    assert "carrier-grade NAT" in report.by_code("ip.mismatch")[0].message


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(max_size=40), name=st.text(max_size=40))
def test_name_matching_never_raises(pattern: str, name: str) -> None:
    assert dns_name_matches(pattern, name) in (True, False)


@settings(max_examples=200, deadline=None)
@given(
    label=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    domain=st.sampled_from(["example.com", "mail.example.org", "a.b.c.test"]),
)
def test_a_wildcard_covers_exactly_one_label(label: str, domain: str) -> None:
    if label.startswith("xn--"):
        return
    assert dns_name_matches(f"*.{domain}", f"{label}.{domain}")
    assert not dns_name_matches(f"*.{domain}", domain)
    assert not dns_name_matches(f"*.{domain}", f"{label}.{label}.{domain}")
