"""Protocol versions we speak and how a request's version is chosen (MS-ASHTTP 2.2.1.1.2.6).

The client names one version per request (``MS-ASProtocolVersion`` header, or the first byte
of the base64 query form); it picks from what OPTIONS advertised. We never guess: a version we
do not serve is refused with 400 and the list we do serve.
"""

from __future__ import annotations

from natsync.classes.versions import V12_1, V14_0, V14_1, V16_0, V16_1, Version, VersionError
from natsync.eas.errors import HttpError

# The version values live with the data classes (natsync.classes.versions); the protocol layer
# names them from here, beside what it serves.
__all__ = [
    "PRIMARY",
    "SERVER_VERSION",
    "SUPPORTED",
    "V12_1",
    "V14_0",
    "V14_1",
    "V16_0",
    "V16_1",
    "Version",
    "negotiate",
    "supported_header",
]


#: What we serve, oldest first (the order OPTIONS lists them). 16.1 is the primary version;
#: 12.1 is the oldest real phones still speak. 2.5 and 12.0 are not served.
SUPPORTED: tuple[Version, ...] = (V12_1, V14_0, V14_1, V16_0, V16_1)
PRIMARY = V16_1

#: Value of the MS-Server-ActiveSync header: the Exchange build whose behaviour we follow.
SERVER_VERSION = "15.20"


def supported_header() -> str:
    """Value of the MS-ASProtocolVersions header."""
    return ",".join(str(v) for v in SUPPORTED)


def negotiate(requested: str | None) -> Version:
    """The version a request is served in, or HttpError(400) naming the versions we serve."""
    headers = {"MS-ASProtocolVersions": supported_header()}
    if not requested:
        raise HttpError(400, "the MS-ASProtocolVersion header is missing", headers)
    try:
        version = Version.parse(requested)
    except VersionError as exc:
        raise HttpError(400, f"unparseable MS-ASProtocolVersion {requested!r}", headers) from exc
    if version not in SUPPORTED:
        raise HttpError(400, f"protocol version {version} is not served", headers)
    return version
