"""The security policy we hand devices: the EASProvisionDoc of MS-ASPROV 2.2.2.27.

Settings are data — (name, default, first version that knows it) — not code, so the config file
can override any of them by name and the document is built in one loop. The defaults ask for
nothing a personal phone would refuse: no PIN required, attachments allowed, HTML mail allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from natsync.eas.versions import V12_1, V14_0, Version
from natsync.errors import ConfigError
from natsync.wbxml.tree import Element

NS = "Provision"

#: MS-ASPROV 2.2.2.27 child elements of EASProvisionDoc, in schema order, with our defaults
#: and the version that introduced each (older clients are not sent settings they don't know).
SETTINGS: tuple[tuple[str, int | str, Version], ...] = (
    ("DevicePasswordEnabled", 0, V12_1),
    ("AlphanumericDevicePasswordRequired", 0, V12_1),
    ("PasswordRecoveryEnabled", 0, V12_1),
    ("RequireStorageCardEncryption", 0, V12_1),
    ("AttachmentsEnabled", 1, V12_1),
    ("MinDevicePasswordLength", 4, V12_1),
    ("MaxInactivityTimeDeviceLock", 900, V12_1),
    ("MaxDevicePasswordFailedAttempts", 8, V12_1),
    ("MaxAttachmentSize", "", V12_1),
    ("AllowSimpleDevicePassword", 1, V12_1),
    ("DevicePasswordExpiration", "", V12_1),
    ("DevicePasswordHistory", 0, V12_1),
    ("AllowStorageCard", 1, V12_1),
    ("AllowCamera", 1, V12_1),
    ("RequireDeviceEncryption", 0, V12_1),
    ("AllowUnsignedApplications", 1, V12_1),
    ("AllowUnsignedInstallationPackages", 1, V12_1),
    ("MinDevicePasswordComplexCharacters", 1, V12_1),
    ("AllowWiFi", 1, V12_1),
    ("AllowTextMessaging", 1, V12_1),
    ("AllowPOPIMAPEmail", 1, V12_1),
    ("AllowBluetooth", 2, V12_1),
    ("AllowIrDA", 1, V12_1),
    ("RequireManualSyncWhenRoaming", 0, V12_1),
    ("AllowDesktopSync", 1, V12_1),
    ("MaxCalendarAgeFilter", 0, V12_1),
    ("AllowHTMLEmail", 1, V12_1),
    ("MaxEmailAgeFilter", 0, V12_1),
    ("MaxEmailBodyTruncationSize", -1, V12_1),
    ("MaxEmailHTMLBodyTruncationSize", -1, V12_1),
    ("RequireSignedSMIMEMessages", 0, V12_1),
    ("RequireEncryptedSMIMEMessages", 0, V12_1),
    ("RequireSignedSMIMEAlgorithm", 0, V12_1),
    ("RequireEncryptionSMIMEAlgorithm", 0, V12_1),
    ("AllowSMIMEEncryptionAlgorithmNegotiation", 2, V12_1),
    ("AllowSMIMESoftCerts", 1, V12_1),
    ("AllowBrowser", 1, V12_1),
    ("AllowConsumerEmail", 1, V12_1),
    ("AllowRemoteDesktop", 1, V12_1),
    ("AllowInternetSharing", 1, V12_1),
    ("UnapprovedInROMApplicationList", "", V14_0),
    ("ApprovedApplicationList", "", V14_0),
)

_NAMES = {name for name, _, _ in SETTINGS}
_LIST_SETTINGS = {"UnapprovedInROMApplicationList", "ApprovedApplicationList"}

#: The PolicyType every version since 12.0 uses (MS-ASPROV 2.2.2.45).
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"


def check_overrides(overrides: Mapping[str, object]) -> None:
    """ConfigError for a policy override that names no setting or has the wrong type."""
    for name, value in overrides.items():
        if name not in _NAMES or name in _LIST_SETTINGS:
            raise ConfigError(f"server.policy.{name} is not a policy setting we can set")
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise ConfigError(f"server.policy.{name} must be an integer or a string")


def provision_doc(version: Version, overrides: Mapping[str, int | str] | None = None) -> Element:
    """The EASProvisionDoc element for a client speaking *version*."""
    doc = Element(NS, "EASProvisionDoc")
    merged = dict(overrides or {})
    for name, default, since in SETTINGS:
        if version < since:
            continue
        value = merged.get(name, default)
        if name in _LIST_SETTINGS or value == "":
            doc.append(Element(NS, name))
        else:
            doc.add(NS, name, value)
    return doc


#: Device setting holding the fingerprint of the policy the device acknowledged.
ACKED_POLICY_SETTING = "policy.fingerprint"


def fingerprint(overrides: Mapping[str, int | str] | None) -> str:
    """Identifies the policy in force: when the configuration changes it, devices that
    acknowledged an older one are asked to provision again (MS-ASCMD 2.2.2 code 143)."""
    text = json.dumps(sorted((overrides or {}).items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
