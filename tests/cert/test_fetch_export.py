"""Fetching the presented chain from a live TLS server (with SNI), and exporting the CA."""

from __future__ import annotations

import datetime as dt
import plistlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from natsync.cert.ca import init_ca
from natsync.cert.check import Severity, check
from natsync.cert.export import export_ca, mobileconfig
from natsync.cert.fetch import (
    CertFetchError,
    _fetch_with_openssl,
    fetch_chain,
    file_store,
    load_certificates,
    split_host_port,
    system_store,
)
from tests.cert.tls_server import serve_tls


def test_fetch_gets_the_whole_presented_chain_and_sends_sni(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    default = ca.issue_server_cert(["default.example.test"], [], tmp_path, basename="default")
    mail = ca.issue_server_cert(["mail.example.test"], [], tmp_path, basename="mail")
    with serve_tls(*default, by_sni={"mail.example.test": mail}) as (port, seen):
        fetched = fetch_chain("127.0.0.1", port, server_name="mail.example.test")
        plain = fetch_chain("127.0.0.1", port, server_name="127.0.0.1")  # no SNI for an address
        by_openssl = _fetch_with_openssl("127.0.0.1", port, "mail.example.test", 10)
    assert seen[:2] == ["mail.example.test", None]
    assert len(fetched.chain) == 2
    assert fetched.chain[1] == ca.cert
    assert fetched.tls_version == "TLSv1.3"
    names = fetched.chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["mail.example.test"]
    assert plain.chain[0] != fetched.chain[0]
    assert by_openssl.chain == fetched.chain
    report = check(
        fetched.chain,
        names=["mail.example.test"],
        trust=file_store(ca.cert_path),
        now=dt.datetime.now(dt.UTC),
    )
    assert report.severity is Severity.OK


def test_fetch_from_a_closed_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CertFetchError, match=f"127.0.0.1:{port}"):
        fetch_chain("127.0.0.1", port, server_name="x.example", timeout=2)


def test_split_host_port(tmp_path: Path) -> None:
    assert split_host_port("mail.example.com:8443") == ("mail.example.com", 8443)
    assert split_host_port("mail.example.com") == ("mail.example.com", 443)
    assert split_host_port("[::1]:444") == ("::1", 444)
    assert split_host_port("::1") == ("::1", 443)
    assert split_host_port(str(tmp_path / "cert.pem")) is None


def test_load_certificates_pem_der_and_garbage(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    der = tmp_path / "ca.der"
    der.write_bytes(ca.cert.public_bytes(serialization.Encoding.DER))
    assert load_certificates(der) == (ca.cert,)
    assert load_certificates(ca.cert_path) == (ca.cert,)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(CertFetchError, match="no readable certificate"):
        load_certificates(junk)


def test_system_store_has_roots() -> None:
    try:
        store = system_store()
    except CertFetchError:
        pytest.skip("no system CA bundle on this machine")
    assert len(store.roots) > 10


def test_export_pem_and_der_round_trip(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    assert x509.load_pem_x509_certificate(export_ca(ca.cert, "pem")) == ca.cert
    assert x509.load_der_x509_certificate(export_ca(ca.cert, "der")) == ca.cert


def test_mobileconfig_holds_the_ca_as_a_root_payload(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    data = mobileconfig(ca.cert)
    assert data.startswith(b"<?xml")
    profile = plistlib.loads(data)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    [payload] = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert x509.load_der_x509_certificate(payload["PayloadContent"]) == ca.cert
    assert payload["PayloadUUID"] != profile["PayloadUUID"]
    # Same CA, same identifiers: installing it again replaces the profile.
    assert mobileconfig(ca.cert) == data
    other = init_ca(tmp_path / "other")
    assert plistlib.loads(mobileconfig(other.cert))["PayloadUUID"] != profile["PayloadUUID"]


def test_a_live_server_that_omits_its_intermediate(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from natsync.cert.check import TrustStore
    from tests.cert.factory import make_ca, make_leaf

    now = dt.datetime.now(dt.UTC)
    root = make_ca(now=now)
    inter = make_ca("Test Intermediate", parent=root, now=now)
    leaf, key = make_leaf(
        inter,
        ["mail.example.test"],
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=90),
    )
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    with serve_tls(tmp_path / "leaf.pem", tmp_path / "leaf.key") as (port, _):
        fetched = fetch_chain("127.0.0.1", port, server_name="mail.example.test")
    assert fetched.chain == (leaf,)
    source = f"the server at 127.0.0.1:{port}"
    only_root = check(
        fetched.chain,
        names=["mail.example.test"],
        trust=TrustStore("the test roots", (root.cert,)),
        now=now,
        source=source,
    )
    [incomplete] = only_root.by_code("chain.incomplete")
    assert f"which {source} does not send" in incomplete.message
    with_inter = check(
        fetched.chain,
        names=["mail.example.test"],
        trust=TrustStore("the test bundle", (root.cert, inter.cert)),
        now=now,
        source=source,
    )
    assert with_inter.severity is Severity.WARN
    [warning] = with_inter.by_code("chain.intermediate-not-sent")
    assert warning.message.startswith(f"{source} does not send the intermediate CN=Test Inter")
