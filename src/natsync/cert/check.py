"""What a phone will say about a certificate chain, said before the phone ever sees it.

Sans-I/O: the caller passes the chain (as the server presents it, leaf first), what the phone
uses (the names it types, the addresses it dials), the trust store it checks against and
``now``; this module returns findings in plain language. Fetching the chain is
:mod:`natsync.cert.fetch`; rendering is the CLI's.

The rules are the ones phones apply:

- Names (RFC 6125 section 6.4, as tightened by the CA/Browser Forum and every current TLS
  stack): a DNS name is matched only against the certificate's subjectAltName DNS entries, not
  the subject CN, case-insensitively, in A-label (punycode) form. A wildcard is the whole
  leftmost label (``*.example.com``) and stands for exactly one label: it does not match the
  bare ``example.com`` nor ``a.b.example.com``; partial-label wildcards (``f*.example.com``) are
  refused, and never considered for IDN (``xn--``) labels.
- Addresses (RFC 5280 section 4.2.1.6): a connection to an IP address is matched only against
  iPAddress SAN entries; an address written as a DNS entry or in the CN matches nothing.
- Chain (RFC 5280 section 6): each certificate must be signed by the next, up to a root in the
  phone's store; phones do not fetch missing intermediates, so the server must send them.
- Apple's rules for TLS server certificates (iOS 13+): serverAuth in an EKU extension, RSA keys
  of at least 2048 bits, SHA-2 signatures, and at most 825 days of validity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Days left below which a certificate is reported as about to expire: two weeks leaves time
#: to renew by hand if automatic renewal failed.
WARN_DAYS_LEFT = 14
#: Longest validity Apple platforms accept for a TLS server certificate (iOS 13 / macOS 10.15).
APPLE_MAX_VALIDITY = dt.timedelta(days=825)
#: Smallest RSA key any current phone accepts (Apple: 2048; Android's BoringSSL: 1024 is gone).
MIN_RSA_BITS = 2048
#: Longest chain we walk: real chains are 2-4 long; this bounds a loop of cross-signed certs.
MAX_CHAIN_DEPTH = 8


class Severity(IntEnum):
    """How bad a finding is; the worst one is the check's exit status (0 ok, 1 warn, 2 fail)."""

    OK = 0
    WARN = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the check found: a stable code for scripts, a sentence for people."""

    severity: Severity
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"severity": str(self.severity), "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The roots a phone trusts, and a label that says which store they are."""

    label: str
    certificates: tuple[x509.Certificate, ...]
    #: Self-signed certificates: the anchors a path may end at.
    roots: tuple[x509.Certificate, ...] = field(init=False, repr=False)
    #: Non-root certificates the store file happens to hold (a phone's store has none).
    intermediates: tuple[x509.Certificate, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        roots = tuple(c for c in self.certificates if _self_issued(c))
        object.__setattr__(self, "roots", roots)
        object.__setattr__(
            self, "intermediates", tuple(c for c in self.certificates if c not in roots)
        )


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    leaf: x509.Certificate
    path: tuple[x509.Certificate, ...] = field(default=())

    @property
    def severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    @property
    def exit_code(self) -> int:
        return int(self.severity)

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_json(self) -> dict[str, object]:
        return {
            "status": str(self.severity),
            "exit_code": self.exit_code,
            "certificate": describe(self.leaf),
            "path": [c.subject.rfc4514_string() for c in self.path],
            "findings": [f.to_json() for f in self.findings],
        }


# --- small helpers ---------------------------------------------------------------------------


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _signed_by(cert, cert)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, UnsupportedAlgorithm):
        # SHA-1 and older: cryptography will not verify them. Link by name; the signature
        # check reports the algorithm itself as a failure.
        return _weak_hash(cert)
    except (TypeError, InvalidSignature):
        return False
    return True


def _weak_hash(cert: x509.Certificate) -> bool:
    try:
        return isinstance(cert.signature_hash_algorithm, hashes.SHA1 | hashes.MD5)
    except UnsupportedAlgorithm:
        return False


def _and_list(items: Sequence[str]) -> str:
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def san_entries(cert: x509.Certificate) -> list[str]:
    """The SAN entries in certificate order, DNS names and addresses as text."""
    sans = _sans(cert)
    if sans is None:
        return []
    out: list[str] = []
    for general in sans:
        if isinstance(general, x509.DNSName | x509.IPAddress):
            out.append(str(general.value))
    return out


def describe(cert: x509.Certificate) -> dict[str, object]:
    """The facts of a certificate a person looks for, JSON-ready."""
    key = cert.public_key()
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": san_entries(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": key_description(key),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def key_description(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size} bits"
    return type(key).__name__


def _to_alabel(name: str) -> str | None:
    """*name* in A-label form, lower case, no trailing dot; None if it is not a valid name."""
    name = name.strip().rstrip(".").lower()
    if not name:
        return None
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name if name.isascii() else None


def dns_name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 section 6.4.3 as phones apply it (see the module docstring)."""
    pat = _to_alabel(pattern) if not pattern.startswith("*.") else pattern.lower().rstrip(".")
    host = _to_alabel(name)
    if pat is None or host is None:
        return False
    if "*" not in pat:
        return pat == host
    labels = pat.split(".")
    if labels[0] != "*" or "*" in ".".join(labels[1:]):
        return False  # partial-label or non-leftmost wildcard: refused
    if len(labels) < 3:
        return False  # "*.com": a wildcard over a whole top-level domain matches nothing
    suffix = _to_alabel(".".join(labels[1:]))
    host_labels = host.split(".")
    if suffix is None or len(host_labels) != len(labels):
        return False  # exactly one label: not the bare domain, not two labels deep
    if host_labels[0].startswith("xn--"):
        return False  # RFC 6125 6.4.3: no wildcard matching into an IDN A-label
    return ".".join(host_labels[1:]) == suffix


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if address.is_loopback:
        return "a loopback address (this machine only)"
    if address.is_link_local:
        return "a link-local address"
    if address in _CGNAT:
        return "a carrier-grade NAT address (the ISP's, not reachable from the internet)"
    if address.is_private and not _documentation(address):
        return "a private address, reachable only inside the LAN"
    return "the router's public address"


#: RFC 6598 shared address space: what a router behind carrier-grade NAT has as "public".
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _documentation(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """RFC 5737 / RFC 3849 ranges: they stand for public addresses in examples and tests."""
    nets = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    return any(
        address in ipaddress.ip_network(n)
        for n in nets
        if ipaddress.ip_network(n).version == address.version
    )


# --- the check -------------------------------------------------------------------------------


def check(
    chain: Sequence[x509.Certificate],
    *,
    names: Sequence[str] = (),
    ips: Sequence[str] = (),
    trust: TrustStore,
    now: dt.datetime,
    source: str = "the server",
) -> Report:
    """Findings for *chain* (leaf first, as presented by *source*) against what the phone uses.

    *names* are the names the phone uses, the one it is configured with first (only that one
    is expected to be the certificate's first entry, for old proxies); *ips*
    are addresses the phone may connect to directly (checked against IP SANs). *trust* is the
    store the phone checks against; *now* is the time to judge validity at.
    """
    if not chain:
        raise ValueError("an empty chain has no certificate to check")
    leaf = chain[0]
    findings: list[Finding] = []
    findings += _check_names(leaf, names, ips)
    path, chain_findings = _check_chain(chain, trust, source)
    findings += chain_findings
    findings += _check_validity(leaf, path or (leaf,), now)
    findings += _check_usage(leaf)
    findings += _check_crypto(path or (leaf,))
    return Report(tuple(findings), leaf, tuple(path))


def _check_names(leaf: x509.Certificate, names: Sequence[str], ips: Sequence[str]) -> list[Finding]:
    out: list[Finding] = []
    sans = _sans(leaf)
    entries = san_entries(leaf)
    cns = _common_names(leaf)
    shown = entries or cns
    cert_names = _and_list(shown)
    if sans is None:
        out.append(
            Finding(
                Severity.FAIL,
                "san.missing",
                f"the certificate has no subjectAltName extension, only the subject name "
                f"{_and_list(cns)}; iOS 13+, Android and every current browser ignore the subject "
                "name, so no phone will accept it for any name: issue a certificate with SANs",
            )
        )
    dns_sans = [str(v) for v in sans.get_values_for_type(x509.DNSName)] if sans else []
    ip_sans = [a for a in sans.get_values_for_type(x509.IPAddress)] if sans else []
    parsed_ips = []
    for text in ips:
        try:
            parsed_ips.append(ipaddress.ip_address(text))
        except ValueError:
            out.append(Finding(Severity.FAIL, "input.bad-ip", f"{text!r} is not an IP address"))
    at = ""
    if parsed_ips:
        first = parsed_ips[0]
        at = f" at {first}, {_address_kind(first)}"
    for position, name in enumerate(names):
        matched = [i for i, pattern in enumerate(dns_sans) if dns_name_matches(pattern, name)]
        if matched:
            pattern = dns_sans[matched[0]]
            out.append(
                Finding(Severity.OK, "name.covered", f"{name} is covered by the SAN {pattern}")
            )
            first_entry = entries[0] if entries else ""
            first_ok = dns_name_matches(first_entry, name) or any(
                dns_name_matches(cn, name) for cn in cns
            )
            if position == 0 and not first_ok:  # the name the phone is configured with
                out.append(
                    Finding(
                        Severity.WARN,
                        "name.not-first",
                        f"{name} matches only SAN {pattern} (entry {matched[0] + 1}), not the "
                        f"first entry {first_entry} nor the subject CN {_and_list(cns)}; old "
                        "reverse proxies and some old clients check only that one: issue the "
                        f"certificate with {name} first",
                    )
                )
            continue
        hint = ""
        wildcard = _wildcard_near_miss(dns_sans, name)
        if wildcard:
            hint = f"; {wildcard}"
        elif any(name.lower() == cn.lower() for cn in cns):
            hint = f"; {name} is only in the subject CN, which phones ignore when checking names"
        elif any(_internal(e) for e in shown):
            hint = (
                "; it names what the server is inside the LAN, not what the phone connects to: "
                f"issue one for {name} (natsync cert issue --name {name}, or natsync cert acme)"
            )
        out.append(
            Finding(
                Severity.FAIL,
                "name.mismatch",
                f"the certificate names {cert_names}; the phone connects to {name}{at}, so it "
                f"will refuse: no name in the certificate matches {name}{hint}",
            )
        )
    for address in parsed_ips:
        if address in ip_sans:
            out.append(
                Finding(
                    Severity.OK,
                    "ip.covered",
                    f"{address} is covered by an IP address SAN",
                )
            )
            continue
        as_text = [e for e in (*dns_sans, *cns) if e.strip() == str(address)]
        why = (
            f"{address} is written as a name (DNS entry or CN), not as an IP address entry, "
            "and phones match addresses only against IP address entries"
            if as_text
            else f"the certificate has no IP address entry for {address}"
        )
        out.append(
            Finding(
                Severity.FAIL,
                "ip.mismatch",
                f"the certificate names {cert_names}; the phone connects to {address}, "
                f"{_address_kind(address)}, so it will refuse: {why}",
            )
        )
    if not names and not ips:
        out.append(
            Finding(
                Severity.WARN,
                "input.no-target",
                f"no --name or --ip given, so names were not checked; the certificate names "
                f"{cert_names}",
            )
        )
    return out


def _wildcard_near_miss(patterns: Sequence[str], name: str) -> str:
    """Why a wildcard that looks as if it covers *name* does not (RFC 6125 6.4.3)."""
    host = _to_alabel(name) or name.lower()
    for pattern in patterns:
        if not pattern.startswith("*."):
            continue
        suffix = pattern[2:].lower().rstrip(".")
        if host == suffix:
            return f"{pattern} does not cover {suffix} itself: add {suffix} as its own entry"
        if host.endswith("." + suffix):
            return f"{pattern} stands for exactly one label, so it does not cover {name}"
    return ""


def _internal(entry: str) -> bool:
    """A name or address that only makes sense inside a LAN."""
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        lowered = entry.lower().rstrip(".")
        return "." not in lowered or lowered.endswith(
            (".local", ".lan", ".internal", ".corp", ".home", ".localdomain", ".intranet")
        )
    return (address.is_private and not _documentation(address)) or address.is_loopback


def _find_issuer(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], exclude: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in pool:
        if candidate not in exclude and _signed_by(cert, candidate):
            return candidate
    return None


def _check_chain(
    chain: Sequence[x509.Certificate], trust: TrustStore, source: str
) -> tuple[list[x509.Certificate], list[Finding]]:
    out: list[Finding] = []
    leaf = chain[0]
    presented = list(chain[1:])
    roots = trust.roots
    path = [leaf]
    not_sent: list[x509.Certificate] = []
    anchor: x509.Certificate | None = None
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        if current in roots:
            anchor = current
            break
        found = _find_issuer(current, roots, ())
        if found is not None:
            anchor = found
            path.append(found)
            break
        found = _find_issuer(current, presented, path)
        if found is None:
            found = _find_issuer(current, trust.intermediates, path)
            if found is not None:
                not_sent.append(found)
        if found is None:
            break
        path.append(found)
        current = found
    if anchor is not None:
        out.append(
            Finding(
                Severity.OK,
                "chain.trusted",
                f"the chain leads to {anchor.subject.rfc4514_string()}, a root in {trust.label}",
            )
        )
    elif _self_issued(current):
        what = "the certificate is self-signed" if current is leaf else "the chain ends at"
        out.append(
            Finding(
                Severity.FAIL,
                "chain.untrusted-root",
                f"{what} ({current.subject.rfc4514_string()}), which is not in {trust.label}: the "
                "phone will refuse unless that root is installed on it (natsync cert export-ca "
                "makes a profile for phones)",
            )
        )
    else:
        out.append(
            Finding(
                Severity.FAIL,
                "chain.incomplete",
                f"the chain is incomplete: {current.subject.rfc4514_string()} is issued by "
                f"{current.issuer.rfc4514_string()}, which {source} does not send and "
                f"{trust.label} does not hold, so the phone cannot reach a trusted root: send "
                "the intermediate certificates with the leaf (leaf first, then each issuer)",
            )
        )
    for missing in not_sent:
        out.append(
            Finding(
                Severity.WARN if anchor is not None else Severity.FAIL,
                "chain.intermediate-not-sent",
                f"{source} does not send the intermediate {missing.subject.rfc4514_string()}; "
                f"it was found only in {trust.label}. Phones do not fetch missing "
                "intermediates (Android and most ActiveSync clients refuse): add it to the "
                "certificate file after the leaf",
            )
        )
    extra = [c for c in presented if c not in path]
    if extra:
        out.append(
            Finding(
                Severity.WARN,
                "chain.extra",
                f"{source} sends {len(extra)} certificate(s) that are not part of the path "
                f"({_and_list([c.subject.rfc4514_string() for c in extra])}): harmless for most "
                "clients, but some strict ones refuse an out-of-order chain",
            )
        )
    return path, out


def _days(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def _check_validity(
    leaf: x509.Certificate, path: Sequence[x509.Certificate], now: dt.datetime
) -> list[Finding]:
    out: list[Finding] = []
    for cert in path:
        role = "the certificate" if cert is leaf else f"the issuer {cert.subject.rfc4514_string()}"
        after = cert.not_valid_after_utc
        before = cert.not_valid_before_utc
        if now > after:
            out.append(
                Finding(
                    Severity.FAIL,
                    "validity.expired",
                    f"{role} expired on {after:%Y-%m-%d} ({_days(now - after)} days ago): every "
                    "phone refuses it; renew it (natsync cert issue / natsync cert renew)",
                )
            )
        elif now < before:
            out.append(
                Finding(
                    Severity.FAIL,
                    "validity.not-yet",
                    f"{role} is valid only from {before:%Y-%m-%d %H:%M} UTC: a phone whose clock "
                    "is right refuses it until then (check the issuing machine's clock)",
                )
            )
        elif cert is leaf:
            left = _days(after - now)
            if left < WARN_DAYS_LEFT:
                out.append(
                    Finding(
                        Severity.WARN,
                        "validity.expiring",
                        f"the certificate expires on {after:%Y-%m-%d}, in {left} days: renew it",
                    )
                )
            else:
                out.append(
                    Finding(
                        Severity.OK,
                        "validity.ok",
                        f"valid until {after:%Y-%m-%d} ({left} days left)",
                    )
                )
    if leaf.not_valid_after_utc - leaf.not_valid_before_utc > APPLE_MAX_VALIDITY:
        days = _days(leaf.not_valid_after_utc - leaf.not_valid_before_utc)
        out.append(
            Finding(
                Severity.FAIL,
                "validity.too-long",
                f"the certificate is valid for {days} days; iPhones and iPads refuse TLS server "
                f"certificates valid for more than {APPLE_MAX_VALIDITY.days} days",
            )
        )
    return out


def _check_usage(leaf: x509.Certificate) -> list[Finding]:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return [
            Finding(
                Severity.FAIL,
                "eku.missing",
                "the certificate has no extended key usage extension; iPhones and iPads require "
                "one that includes serverAuth (TLS Web Server Authentication)",
            )
        ]
    if ExtendedKeyUsageOID.SERVER_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        out = [Finding(Severity.OK, "eku.ok", "extended key usage includes serverAuth")]
    else:
        have = _and_list([getattr(o, "_name", o.dotted_string) for o in eku])
        out = [
            Finding(
                Severity.FAIL,
                "eku.no-server-auth",
                f"the certificate's extended key usage is {have}, without serverAuth: it is not "
                "for TLS servers and phones refuse it",
            )
        ]
    try:
        basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return out
    if basic.ca:
        out.append(
            Finding(
                Severity.WARN,
                "usage.leaf-is-ca",
                "the server's certificate is itself a CA certificate; some clients refuse a CA "
                "certificate as a server certificate: issue a leaf from the CA instead",
            )
        )
    return out


def _check_crypto(path: Sequence[x509.Certificate]) -> list[Finding]:
    out: list[Finding] = []
    leaf = path[0]
    key = leaf.public_key()
    described = key_description(key)
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        out.append(
            Finding(
                Severity.FAIL,
                "key.weak",
                f"the key is {described}; phones require at least {MIN_RSA_BITS}-bit RSA",
            )
        )
    elif isinstance(key, dsa.DSAPublicKey):
        out.append(Finding(Severity.FAIL, "key.weak", "DSA keys are not accepted by phones"))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        out.append(
            Finding(
                Severity.WARN,
                "key.unsupported",
                f"the key is {described}; most phones cannot use EdDSA server certificates yet",
            )
        )
    else:
        out.append(Finding(Severity.OK, "key.ok", f"the key is {described}"))
    for cert in path:
        if cert.subject == cert.issuer and cert is not leaf:
            continue  # a root's own signature is not checked by anyone
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            continue  # an algorithm cryptography does not know: the chain check names it
        who = "the certificate" if cert is leaf else cert.subject.rfc4514_string()
        if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
            out.append(
                Finding(
                    Severity.FAIL,
                    "signature.weak",
                    f"{who} is signed with {algorithm.name.upper()}; phones have refused SHA-1 "
                    "signatures since 2017: reissue it with SHA-256",
                )
            )
    if not any(f.code == "signature.weak" for f in out):
        try:
            hash_alg = leaf.signature_hash_algorithm
        except UnsupportedAlgorithm:
            hash_alg = None
        name = hash_alg.name if hash_alg else str(leaf.signature_algorithm_oid.dotted_string)
        if isinstance(leaf.public_key(), ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            name = key_description(leaf.public_key())
        out.append(Finding(Severity.OK, "signature.ok", f"signed with {name.upper()}"))
    return out
