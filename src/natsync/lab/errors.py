"""Errors of natsync.lab."""

from __future__ import annotations

from natsync.errors import NatsyncError


class LabError(NatsyncError):
    """The lab could not be built or a part of it did not start; `natsync lab down` removes
    what was built."""


class NotRoot(LabError):
    """The lab builds network namespaces and needs root: run `sudo natsync lab ...`."""
