"""ActiveSync protocol versions as values (MS-ASHTTP 2.2.1.1.2.6): what a data class's codec
is told to write and read, and what natsync.eas.versions chooses for each request.

They live with the data classes, the lowest package that needs them: the class codecs write
per version (MS-ASCAL, MS-ASCNTC, ...), and natsync.eas depends on the classes, never the
other way (tests/test_imports.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from natsync.errors import NatsyncError


class VersionError(NatsyncError):
    """The text is not a protocol version ("MAJOR.MINOR", e.g. "16.1")."""


@dataclass(frozen=True, order=True, slots=True)
class Version:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """ "MAJOR.MINOR", or VersionError."""
        major, _, minor = text.strip().partition(".")
        if not (major + minor).isascii() or not major.isdigit() or not minor.isdigit():
            raise VersionError(f"not a protocol version: {text!r}")
        if len(major) > 3 or len(minor) > 3:
            raise VersionError(f"not a protocol version: {text[:20]!r}")
        return cls(int(major), int(minor))


V12_1 = Version(12, 1)
V14_0 = Version(14, 0)
V14_1 = Version(14, 1)
V16_0 = Version(16, 0)
V16_1 = Version(16, 1)
