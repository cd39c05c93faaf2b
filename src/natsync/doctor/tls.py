"""Check 3, TLS: will the phone accept the certificate the server presents?

The article's certificate mismatch: the certificate names what the server *is* (its internal
name, or the name it was issued for), not what the phone *connects to*. The phone compares the
name it typed (or the address it dialled) with the certificate's subjectAltName entries only,
and refuses on any mismatch, on an expired certificate and on a chain it cannot trace to a CA
it trusts. Pure: the presented chain (DER), the verification result and ``now`` in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from natsync.doctor.evidence import TlsEvidence
from natsync.doctor.findings import Check, Finding, Severity, ok

#: Days left below which a certificate is a warning: two weeks leaves time to renew by hand.
EXPIRY_WARN_DAYS = 14

#: OpenSSL verify codes that are about names or dates, not about trust (x509_vfy.h): when
#: verification stops at one of these, the chain itself led to a trusted root.
NOT_TRUST_CODES = frozenset(
    {
        9,  # X509_V_ERR_CERT_NOT_YET_VALID
        10,  # X509_V_ERR_CERT_HAS_EXPIRED
        62,  # X509_V_ERR_HOSTNAME_MISMATCH
        64,  # X509_V_ERR_IP_ADDRESS_MISMATCH
    }
)
#: natsync.cert.check findings the doctor words itself above (names, dates, trust, EKU); the
#: others (weak key, SHA-1, validity past Apple's limit, intermediate not sent ...) are added.
COVERED_CODE_PREFIXES = (
    "name.mismatch",
    "ip.",
    "san.",
    "validity.expired",
    "validity.not-yet",
    "validity.expiring",
    "validity.ok",
    "chain.trusted",
    "chain.untrusted",
    "chain.incomplete",
    "eku.",
    "name.covered",
    "input.",
)
#: Versions phones no longer accept (RFC 8996 deprecates TLS 1.0 and 1.1).
OLD_PROTOCOLS = frozenset({"SSLv3", "TLSv1", "TLSv1.1"})

_FIX_NAMES = (
    "Issue a certificate whose subjectAltName lists {name}: from natsync's private CA "
    "`natsync cert issue {flag} {name}` (phones must trust the CA: `natsync cert export-ca -o "
    "natsync-ca.pem`, for iPhones `natsync cert export-ca --format mobileconfig -o "
    "natsync-ca.mobileconfig`), "
    "or from a public CA / ACME for the public name. Set it as server.tls_cert / "
    "server.tls_key, or as the edge's certificate when TLS ends at the edge (SSL bridging: the "
    "edge presents the public name, the server keeps its own)."
)


def dns_name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 6.4: case-insensitive; a wildcard is the whole leftmost label, one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:] and "." in rest


def san_entries(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of the subjectAltName; empty lists without one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (
        [str(n) for n in san.get_values_for_type(x509.DNSName)],
        [str(a) for a in san.get_values_for_type(x509.IPAddress)],
    )


def covers(cert: x509.Certificate, name: str) -> bool:
    dns, ips = san_entries(cert)
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return any(dns_name_matches(p, name) for p in dns)
    return any(ipaddress.ip_address(i) == address for i in ips)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _fmt(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def check_tls(ev: TlsEvidence, now: dt.datetime) -> list[Finding]:
    where = f"{ev.address} port {ev.port}"
    if not ev.chain:
        return [
            Finding(
                Check.TLS,
                Severity.FAIL,
                f"No TLS at {where}",
                (ev.handshake_error or "the handshake failed before any certificate",),
                "The port accepts connections but the TLS handshake fails: it speaks plain "
                "HTTP or another protocol there (a port forward to the wrong service), the "
                "server behind a port forward or proxy is down, or "
                "client and server share no protocol version.",
                "Point the port at the HTTPS listener: set server.tls_cert and server.tls_key "
                "(or let the edge end TLS) and forward the public port to that listener.",
            )
        ]
    try:
        leaf = x509.load_der_x509_certificate(ev.chain[0])
    except ValueError as exc:
        return [
            Finding(
                Check.TLS,
                Severity.FAIL,
                f"Unreadable certificate at {where}",
                (str(exc),),
                "The server sent a certificate that cannot be parsed; phones refuse it.",
                "Re-issue the certificate and set it as server.tls_cert.",
            )
        ]
    findings: list[Finding] = []
    name = ev.server_name or ev.address
    findings.extend(_names(leaf, name, ev))
    findings.extend(_dates(leaf, now))
    findings.extend(_trust(leaf, ev))
    findings.extend(_usage(leaf))
    findings.extend(_cert_check(ev, name, now))
    if ev.protocol in OLD_PROTOCOLS:
        findings.append(
            Finding(
                Check.TLS,
                Severity.WARN,
                f"The server negotiated {ev.protocol}",
                (f"{ev.protocol}, {ev.cipher}",),
                "Current phones refuse TLS 1.0 and 1.1 (RFC 8996).",
                "Allow TLS 1.2 and 1.3 on the listener (natsync's own listener does).",
            )
        )
    if not any(f.severity != Severity.OK for f in findings):
        issuer = x509.Name(leaf.issuer).rfc4514_string()
        dns_names, ip_names = san_entries(leaf)
        findings.append(
            ok(
                Check.TLS,
                f"The certificate at {where} is valid for {name}",
                "subject alternative names: " + ", ".join([*dns_names, *ip_names]),
                f"issued by {issuer}, valid until {_fmt(leaf.not_valid_after_utc)}",
                f"trusted by {ev.trust}; {ev.protocol} {ev.cipher}".strip(),
            )
        )
    return findings


def _cert_check(ev: TlsEvidence, name: str, now: dt.datetime) -> list[Finding]:
    """What natsync.cert.check adds beyond the doctor's own wording (pure, like this module)."""
    from natsync.cert import check as cert_check

    try:
        with warnings.catch_warnings():
            # System bundles hold a few old roots with non-positive serials (RFC 5280 says
            # positive); cryptography warns about them, the phone's store has them anyway.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            chain = [x509.load_der_x509_certificate(d) for d in ev.chain]
            anchors = tuple(x509.load_der_x509_certificate(d) for d in ev.anchors)
    except ValueError:
        return []
    try:
        ipaddress.ip_address(name)
        names: tuple[str, ...] = ()
        ips: tuple[str, ...] = (name,)
    except ValueError:
        names, ips = (name,), ()
    result = cert_check.check(
        chain,
        names=names,
        ips=ips,
        trust=cert_check.TrustStore(ev.trust, anchors),
        now=now,
        source=f"the server at {ev.address} port {ev.port}",
    )
    flag = "--ip" if ips else "--name"
    out: list[Finding] = []
    for item in result.findings:
        if item.severity == cert_check.Severity.OK or item.code.startswith(COVERED_CODE_PREFIXES):
            continue
        severity = Severity.FAIL if item.severity == cert_check.Severity.FAIL else Severity.WARN
        out.append(
            Finding(
                Check.TLS,
                severity,
                f"Certificate: {item.code}",
                (item.message,),
                item.message[0].upper() + item.message[1:] + ".",
                f"Re-issue the certificate (`natsync cert issue {flag} {name}` from natsync's "
                f"CA, or from your CA) and see `natsync cert check {ev.address}:{ev.port} "
                f"{flag} {name}` for the details.",
            )
        )
    return out


def _names(leaf: x509.Certificate, name: str, ev: TlsEvidence) -> list[Finding]:
    if covers(leaf, name):
        return []
    dns, ips = san_entries(leaf)
    listed = ", ".join([*dns, *ips]) or "none"
    evidence = [f"the phone connects to {name}", f"subjectAltName entries: {listed}"]
    cn = _common_name(leaf)
    cause = (
        f"The certificate names what the server is ({listed}), not what the phone connects "
        f"to ({name}). The phone compares the name it uses with the names in the "
        "certificate and refuses the connection when none matches: the mismatch of a server "
        "behind NAT whose certificate carries another name than the public one."
    )
    if cn:
        evidence.append(f"subject CN: {cn}")
        if dns_name_matches(cn, name):
            cause += (
                f" The subject CN does say {cn}, but phones ignore the CN when the "
                "certificate has a subjectAltName (RFC 6125)."
            )
    if ev.verify_code in NOT_TRUST_CODES and ev.verify_message:
        evidence.append(f"verification: {ev.verify_message}")
    return [
        Finding(
            Check.TLS,
            Severity.FAIL,
            f"The certificate does not cover {name}",
            tuple(evidence),
            cause,
            _FIX_NAMES.format(name=name, flag="--ip" if _is_ip(name) else "--name"),
        )
    ]


def _dates(leaf: x509.Certificate, now: dt.datetime) -> list[Finding]:
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    span = f"valid from {_fmt(start)} until {_fmt(end)}; now {_fmt(now)}"
    renew = (
        "Issue a new certificate for the same names, put it in server.tls_cert / "
        "server.tls_key (or the edge's certificate) and restart; renew automatically (ACME, "
        "or a scheduled re-issue from natsync's CA) so it cannot lapse again."
    )
    if now > end:
        return [
            Finding(
                Check.TLS,
                Severity.FAIL,
                f"The certificate expired on {_fmt(end)}",
                (span,),
                "Phones refuse a certificate past its end date, however well it matches: the "
                "server keeps presenting the old file until someone replaces it.",
                renew,
            )
        ]
    if now < start:
        return [
            Finding(
                Check.TLS,
                Severity.FAIL,
                f"The certificate is not valid before {_fmt(start)}",
                (span,),
                "The certificate's start date is in the future: a clock is wrong (the "
                "server's when it was issued, or this machine's).",
                "Set the clocks right (NTP) and re-issue the certificate.",
            )
        ]
    days = (end - now).days
    if days < EXPIRY_WARN_DAYS:
        return [
            Finding(
                Check.TLS,
                Severity.WARN,
                f"The certificate expires in {days} days",
                (span,),
                "Once it expires every phone refuses to connect.",
                renew,
            )
        ]
    return []


def _trust(leaf: x509.Certificate, ev: TlsEvidence) -> list[Finding]:
    if ev.verified or ev.verify_code in NOT_TRUST_CODES:
        return []
    self_signed = leaf.issuer == leaf.subject
    issuer = x509.Name(leaf.issuer).rfc4514_string()
    evidence = [
        f"verification against {ev.trust}: {ev.verify_message or ev.handshake_error}",
        f"the server sent {len(ev.chain)} certificate(s); the leaf is issued by {issuer}",
    ]
    roots_sent = [x509.load_der_x509_certificate(d) for d in ev.chain[1:] if _self_issued_der(d)]
    if self_signed:
        cause = (
            "The certificate is self-signed: nothing the phone trusts vouches for it, so "
            "the phone refuses it (or asks its user to accept it blindly, which teaches the "
            "wrong habit)."
        )
    elif roots_sent:
        root = x509.Name(roots_sent[0].subject).rfc4514_string()
        cause = (
            f"The server sends its own root, {root}, and that root is not in {ev.trust}: "
            "a private CA the phone was never given. Until the phone trusts it, the phone "
            "refuses the connection."
        )
    else:
        cause = (
            f"The chain does not lead to a certificate authority in {ev.trust}: either it "
            "is signed by a private CA the phone was never given, or the server does not "
            "send the intermediate certificate that links it to a trusted root (phones do "
            "not fetch missing intermediates)."
        )
    return [
        Finding(
            Check.TLS,
            Severity.FAIL,
            f"The certificate chain is not trusted by {ev.trust}",
            tuple(evidence),
            cause,
            "Install the CA that issued it on the phone (natsync's CA is "
            "<data_dir>/ca/ca.pem; give the doctor the same file with --ca-file), or use a "
            "certificate from a public CA; if an intermediate is missing, append it after "
            "the leaf in server.tls_cert.",
        )
    ]


def _self_issued_der(der: bytes) -> bool:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return cert.issuer == cert.subject


def _usage(leaf: x509.Certificate) -> list[Finding]:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return [
            Finding(
                Check.TLS,
                Severity.WARN,
                "The certificate has no extended key usage",
                ("no extendedKeyUsage extension",),
                "iOS (13 and later) refuses TLS server certificates without serverAuth in an "
                "extendedKeyUsage extension.",
                "Re-issue the certificate with extendedKeyUsage serverAuth (natsync's CA "
                "always adds it).",
            )
        ]
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return []
    return [
        Finding(
            Check.TLS,
            Severity.FAIL,
            "The certificate is not for TLS servers",
            (f"extendedKeyUsage: {', '.join(o.dotted_string for o in eku)}",),
            "The certificate's extended key usage does not include serverAuth, so clients "
            "refuse it for a server.",
            "Re-issue it with extendedKeyUsage serverAuth.",
        )
    ]
