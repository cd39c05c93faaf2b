"""The phone-facing TLS contexts (natsync.edge.tls.SiteContexts): ECDSA-first — an ECDSA and an
RSA certificate for the same names, the client's signature algorithms choosing (real OpenSSL
handshakes over memory BIOs)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from natsync.cert.acme_responders import ChallengeStore
from natsync.cert.jose import ACME_IDENTIFIER_OID
from natsync.edge import tickets
from natsync.edge import tls as tls_module
from natsync.edge.config import SiteCert
from natsync.edge.http import PURE_PYTHON_ENV
from natsync.edge.tls import BackendTrust, SiteContexts
from natsync.errors import ConfigError

from .conftest import PUBLIC_NAME, Pki, bio_handshake, edge_config

#: What a client without ECDSA offers in TLS 1.2: RSA signatures only.
RSA_ONLY_TLS12 = "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.fixture(scope="module")
def rsa_site(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> SiteCert:
    cert, key = pki.ca.issue_server_cert(
        [PUBLIC_NAME], ["127.0.0.1"], tmp_path_factory.mktemp("rsa"), basename="rsa",
        key_type="rsa",
    )  # fmt: skip
    return SiteCert((PUBLIC_NAME,), cert, key)


def served_key(phone: ssl.SSLObject) -> object:
    der = phone.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).public_key()


def both(pki: Pki, rsa_site: SiteCert) -> SiteContexts:
    ecdsa = SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key)
    return SiteContexts([rsa_site, ecdsa])  # RSA listed first: ECDSA is still preferred


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_client_with_ecdsa_gets_the_ecdsa_certificate(
    pki: Pki, rsa_site: SiteCert, version: ssl.TLSVersion
) -> None:
    client = pki.client_context()
    client.maximum_version = version
    phone, _ = bio_handshake(client, both(pki, rsa_site).listening)
    assert isinstance(served_key(phone), ec.EllipticCurvePublicKey)


def test_a_client_without_ecdsa_gets_the_rsa_certificate(pki: Pki, rsa_site: SiteCert) -> None:
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(RSA_ONLY_TLS12)
    phone, _ = bio_handshake(client, both(pki, rsa_site).listening)
    assert isinstance(served_key(phone), rsa.RSAPublicKey)


def test_the_same_names_by_sni_get_both(pki: Pki, rsa_site: SiteCert, tmp_path: Path) -> None:
    """A second site first in the list: the pair is chosen by SNI, not only as the default."""
    other_cert, other_key = pki.ca.issue_server_cert(["other.test"], [], tmp_path, basename="o")
    sites = SiteContexts(
        [SiteCert(("other.test",), other_cert, other_key), rsa_site,
         SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key)]
    )  # fmt: skip
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(RSA_ONLY_TLS12)
    phone, _ = bio_handshake(client, sites.listening)
    assert isinstance(served_key(phone), rsa.RSAPublicKey)
    phone, _ = bio_handshake(pki.client_context(), sites.listening)
    assert isinstance(served_key(phone), ec.EllipticCurvePublicKey)


def test_two_certificates_of_one_key_type_for_the_same_names_are_refused(
    pki: Pki, tmp_path: Path
) -> None:
    again_cert, again_key = pki.ca.issue_server_cert([PUBLIC_NAME], [], tmp_path, basename="e2")
    with pytest.raises(ConfigError, match="both ECDSA certificates"):
        SiteContexts(
            [SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key),
             SiteCert((PUBLIC_NAME,), again_cert, again_key)]
        )  # fmt: skip


@pytest.mark.parametrize(
    ("offer", "challenged"),
    [(["acme-tls/1"], True), (["http/1.1"], False), (["h2", "http/1.1"], False), (None, False)],
)
def test_openssl_notes_the_alpn_offer_for_tls_alpn_01_without_peeking(
    pki: Pki, offer: list[str] | None, challenged: bool
) -> None:
    """With the C module, OpenSSL's ClientHello callback notes whether acme-tls/1 is offered
    (RFC 8737 section 3), so the transport need not peek: over memory BIOs (nothing peeked)
    only the offering handshake gets the validation certificate, a phone the real one."""
    if tickets._tickets is None or os.environ.get(PURE_PYTHON_ENV):
        pytest.skip("natsync.edge._tickets is not built or switched off: the edge peeks")
    store = ChallengeStore()
    store.put_alpn(PUBLIC_NAME, "key-auth", dt.datetime.now(dt.UTC))
    sites = SiteContexts([SiteCert((PUBLIC_NAME,), pki.edge_cert, pki.edge_key)], store)
    assert sites.alpn_probe
    client = pki.client_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    if offer:
        client.set_alpn_protocols(offer)
    phone, _edge = bio_handshake(client, sites.listening)
    leaf = x509.load_der_x509_certificate(phone.getpeercert(binary_form=True))
    assert (ACME_IDENTIFIER_OID in [ext.oid for ext in leaf.extensions]) is challenged
    assert phone.selected_alpn_protocol() == (
        "acme-tls/1" if challenged else ("http/1.1" if offer else None)
    )


def test_the_kept_server_session_changes_only_when_it_is_news(pki: Pki) -> None:
    """A resumed connection's session is not taken as the next one to offer (each taken copy
    is a decoded certificate chain its resumed connections keep alive: issue 27); a full
    handshake's is, and so is any once the kept one is past half its ticket's lifetime."""
    trust = BackendTrust(edge_config(pki, 1))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    first, _ = bio_handshake(trust.context, server_ctx)
    assert not first.session_reused
    trust.remember(first)
    kept = trust.context.cached_session
    assert kept is not None

    resumed, _ = bio_handshake(trust.context, server_ctx)  # offered the kept session
    assert resumed.session_reused
    trust.remember(resumed)
    assert trust.context.cached_session is kept

    trust.context.cached_session = None
    full, _ = bio_handshake(trust.context, server_ctx)  # nothing offered: a full handshake
    assert not full.session_reused
    trust.context.cached_session = kept
    trust.remember(full)  # the kept session was refused or not offered: this one is news
    fresh = trust.context.cached_session
    assert fresh is not None
    assert fresh is not kept

    later, _ = bio_handshake(trust.context, server_ctx)
    assert later.session_reused
    half = (fresh.ticket_lifetime_hint or fresh.timeout) / 2
    with mock.patch.object(tls_module.time, "time", return_value=fresh.time + half - 1):
        trust.remember(later)
    assert trust.context.cached_session is fresh
    with mock.patch.object(tls_module.time, "time", return_value=fresh.time + half + 1):
        trust.remember(later)  # the kept one ages: the resumed connection's newer tickets
    assert trust.context.cached_session is not fresh
