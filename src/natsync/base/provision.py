"""The EAS security policy's settings as plain data: the table ``[server.policy]`` may override.

MS-ASPROV 2.2.2.27 names the child elements of EASProvisionDoc. The table (name, our default,
the protocol version that introduced it as ``(major, minor)``) lives here, below both its
readers, so that each checks it without importing the other (issue #21, knot 3):
natsync.config refuses a ``[server.policy]`` override that names no setting when the file is
loaded (:func:`check_overrides`), and natsync.eas.policy builds the document from the same
table. It imports nothing of natsync but the error base.
"""

from __future__ import annotations

from collections.abc import Mapping

from natsync.errors import ConfigError

#: MS-ASPROV 2.2.2.27 child elements of EASProvisionDoc, in schema order, with our defaults
#: and the version that introduced each (older clients are not sent settings they don't know).
SETTINGS: tuple[tuple[str, int | str, tuple[int, int]], ...] = (
    ("DevicePasswordEnabled", 0, (12, 1)),
    ("AlphanumericDevicePasswordRequired", 0, (12, 1)),
    ("PasswordRecoveryEnabled", 0, (12, 1)),
    ("RequireStorageCardEncryption", 0, (12, 1)),
    ("AttachmentsEnabled", 1, (12, 1)),
    ("MinDevicePasswordLength", 4, (12, 1)),
    ("MaxInactivityTimeDeviceLock", 900, (12, 1)),
    ("MaxDevicePasswordFailedAttempts", 8, (12, 1)),
    ("MaxAttachmentSize", "", (12, 1)),
    ("AllowSimpleDevicePassword", 1, (12, 1)),
    ("DevicePasswordExpiration", "", (12, 1)),
    ("DevicePasswordHistory", 0, (12, 1)),
    ("AllowStorageCard", 1, (12, 1)),
    ("AllowCamera", 1, (12, 1)),
    ("RequireDeviceEncryption", 0, (12, 1)),
    ("AllowUnsignedApplications", 1, (12, 1)),
    ("AllowUnsignedInstallationPackages", 1, (12, 1)),
    ("MinDevicePasswordComplexCharacters", 1, (12, 1)),
    ("AllowWiFi", 1, (12, 1)),
    ("AllowTextMessaging", 1, (12, 1)),
    ("AllowPOPIMAPEmail", 1, (12, 1)),
    ("AllowBluetooth", 2, (12, 1)),
    ("AllowIrDA", 1, (12, 1)),
    ("RequireManualSyncWhenRoaming", 0, (12, 1)),
    ("AllowDesktopSync", 1, (12, 1)),
    ("MaxCalendarAgeFilter", 0, (12, 1)),
    ("AllowHTMLEmail", 1, (12, 1)),
    ("MaxEmailAgeFilter", 0, (12, 1)),
    ("MaxEmailBodyTruncationSize", -1, (12, 1)),
    ("MaxEmailHTMLBodyTruncationSize", -1, (12, 1)),
    ("RequireSignedSMIMEMessages", 0, (12, 1)),
    ("RequireEncryptedSMIMEMessages", 0, (12, 1)),
    ("RequireSignedSMIMEAlgorithm", 0, (12, 1)),
    ("RequireEncryptionSMIMEAlgorithm", 0, (12, 1)),
    ("AllowSMIMEEncryptionAlgorithmNegotiation", 2, (12, 1)),
    ("AllowSMIMESoftCerts", 1, (12, 1)),
    ("AllowBrowser", 1, (12, 1)),
    ("AllowConsumerEmail", 1, (12, 1)),
    ("AllowRemoteDesktop", 1, (12, 1)),
    ("AllowInternetSharing", 1, (12, 1)),
    ("UnapprovedInROMApplicationList", "", (14, 0)),
    ("ApprovedApplicationList", "", (14, 0)),
)

#: Settings that are lists of applications (ApprovedApplicationList, UnapprovedInROMApplicationList
#: in MS-ASPROV 2.2.2.27): always sent empty, so not settable by name.
LIST_SETTINGS = frozenset({"UnapprovedInROMApplicationList", "ApprovedApplicationList"})

_NAMES = frozenset(name for name, _, _ in SETTINGS)


def check_overrides(overrides: Mapping[str, object]) -> None:
    """ConfigError for a policy override that names no setting or has the wrong type."""
    for name, value in overrides.items():
        if name not in _NAMES or name in LIST_SETTINGS:
            raise ConfigError(f"server.policy.{name} is not a policy setting we can set")
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise ConfigError(f"server.policy.{name} must be an integer or a string")
