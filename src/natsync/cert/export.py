"""What a phone needs to trust the private CA: PEM, DER, or an iOS configuration profile.

Android imports PEM or DER ("CA certificate" in Settings → Security → Encryption &
credentials). iOS installs a configuration profile (.mobileconfig, a property list; Apple's
"Configuration Profile Reference", payload type ``com.apple.security.root``), after which the
user still has to switch on full trust for it in Settings → General → About → Certificate Trust
Settings. The profile's identifiers are derived from the CA's fingerprint, so exporting again
gives the same profile and installing it again replaces the first instead of adding a second.
"""

from __future__ import annotations

import plistlib
import uuid
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

#: Namespace for the profile's UUIDs (uuid5 of the CA fingerprint): stable across exports.
PROFILE_NAMESPACE = uuid.UUID("6b1f3a52-6d1e-4b53-9a57-6e6174737963")
#: Reverse-DNS prefix of the payload identifiers.
PROFILE_ID_PREFIX = "org.natsync.ca"


class ExportFormat(StrEnum):
    PEM = "pem"
    DER = "der"
    MOBILECONFIG = "mobileconfig"


def export_ca(cert: x509.Certificate, fmt: ExportFormat | str) -> bytes:
    """The CA certificate *cert* in the format a phone (or a person) asks for."""
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.PEM:
        return cert.public_bytes(Encoding.PEM)
    if fmt is ExportFormat.DER:
        return cert.public_bytes(Encoding.DER)
    return mobileconfig(cert)


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


def root_payload(cert: x509.Certificate) -> dict[str, object]:
    """The ``com.apple.security.root`` payload trusting *cert* (also used by the account
    profile of ``natsync device profile``)."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    name = _common_name(cert)
    return {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{PROFILE_ID_PREFIX}.root.{fingerprint[:16]}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, "root:" + fingerprint)).upper(),
        "PayloadDisplayName": name,
        "PayloadDescription": f"Trust {name} for the natsync mail server",
        "PayloadCertificateFileName": "natsync-ca.cer",
        "PayloadContent": cert.public_bytes(Encoding.DER),
    }


def mobileconfig(cert: x509.Certificate, *, organization: str = "natsync") -> bytes:
    """An unsigned iOS configuration profile holding *cert* as a trusted root."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    name = _common_name(cert)
    profile_uuid = str(uuid.uuid5(PROFILE_NAMESPACE, "profile:" + fingerprint)).upper()
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{PROFILE_ID_PREFIX}.{fingerprint[:16]}",
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"{name} (natsync)",
        "PayloadDescription": (
            "Installs the natsync private certificate authority so this device trusts the "
            "mail server's certificate. After installing, turn on full trust in Settings > "
            "General > About > Certificate Trust Settings."
        ),
        "PayloadOrganization": organization,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [root_payload(cert)],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
