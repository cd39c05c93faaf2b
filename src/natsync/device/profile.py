"""``natsync device profile USER``: an iOS/iPadOS configuration profile with the Exchange
account (and the private CA, when the deployment uses one), and the few settings an Android
client needs.

The profile follows Apple's Device Management reference: a top-level ``Configuration`` holding
a ``com.apple.eas.account`` payload (keys ``Host``, ``SSL``, ``UserName``, ``EmailAddress``) and,
for a private CA, a ``com.apple.security.root`` payload (:func:`natsync.cert.export.root_payload`).
The password is left out on purpose: Apple allows ``Password`` only in encrypted profiles, and
without it the phone asks for it while installing. macOS Mail has no Exchange ActiveSync (the
payload is iOS, iPadOS and visionOS only), so on a Mac the profile installs the CA alone.

Identifiers are derived from the host and the user (uuid5), so a profile made again replaces
the installed one instead of adding a second account (Apple: payloads with the same
PayloadIdentifier and PayloadUUID are updated on replacement).
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass

from cryptography import x509

from natsync.cert.export import root_payload

#: Namespace of the profile's UUIDs (uuid5 of host and user): stable across runs.
PROFILE_NAMESPACE = uuid.UUID("0f4d1f0e-8a7c-4b7e-9a51-6e6174737964")
#: The port phones reach ActiveSync on unless told: HTTPS.
HTTPS_PORT = 443


@dataclass(frozen=True, slots=True)
class Account:
    """One user's account as the phone sees it."""

    user: str  # the login name (natsync user add NAME)
    email: str
    display_name: str
    host: str  # the public name phones connect to
    port: int = HTTPS_PORT

    @property
    def server(self) -> str:
        """What goes in the phone's "Server" field: the name, with the port if not 443."""
        return self.host if self.port == HTTPS_PORT else f"{self.host}:{self.port}"


def _reverse_dns(host: str) -> str:
    return ".".join(reversed(host.rstrip(".").lower().split(".")))


def account_payload(account: Account) -> dict[str, object]:
    """The ``com.apple.eas.account`` payload for *account* (no password: asked at install)."""
    seed = f"eas:{account.host.lower()}:{account.user}"
    return {
        "PayloadType": "com.apple.eas.account",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse_dns(account.host)}.natsync.eas.{account.user}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, seed)).upper(),
        "PayloadDisplayName": f"{account.display_name} ({account.host})",
        "PayloadDescription": f"Mail, calendar and contacts of {account.email}",
        "Host": account.server,
        "SSL": True,
        "UserName": account.user,
        "EmailAddress": account.email,
    }


def profile(account: Account, ca: x509.Certificate | None = None) -> bytes:
    """The .mobileconfig (XML property list, unsigned) for *account*, trusting *ca* if given."""
    payloads: list[dict[str, object]] = []
    if ca is not None:  # first: the account's TLS connection needs the trust in place
        payloads.append(root_payload(ca))
    payloads.append(account_payload(account))
    seed = f"profile:{account.host.lower()}:{account.user}"
    top = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse_dns(account.host)}.natsync.{account.user}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, seed)).upper(),
        "PayloadDisplayName": f"{account.email} on {account.host}",
        "PayloadDescription": (
            f"Sets up the Exchange account of {account.email} (mail, calendar, contacts, "
            "reminders, notes) with push. The password is asked while installing."
            + (
                " It also installs the server's private certificate authority: turn on full "
                "trust for it in Settings > General > About > Certificate Trust Settings."
                if ca is not None
                else ""
            )
        ),
        "PayloadOrganization": account.host,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(top, fmt=plistlib.FMT_XML, sort_keys=True)


def android_settings(account: Account, ca_export: str | None) -> list[tuple[str, str]]:
    """(field, value) pairs for an Android Exchange client (Gmail, Samsung Email, Outlook...);
    *ca_export* is the command that writes the private CA as DER (None: a public CA)."""
    settings = [
        ("Account type", "Exchange (Exchange and Office 365 / Microsoft Exchange ActiveSync)"),
        ("Email address", account.email),
        ("Username", account.user),
        ("Password", "the user's natsync password"),
        ("Server", account.host),
        ("Port", str(account.port)),
        ("Security type", "SSL/TLS (never 'accept all certificates')"),
        ("Client certificate", "none"),
    ]
    if ca_export is not None:
        settings.insert(
            0,
            (
                "First",
                f"install the CA: {ca_export}, copy the file to the phone, Settings > Security > "
                "Encryption & credentials > Install a certificate > CA certificate",
            ),
        )
    return settings
