"""Calendars, contacts and tasks from a CalDAV/CardDAV server (RFC 4791, RFC 6352), mirrored
into natsync's store with sync-collection (RFC 6578); see docs/dav.md.

``xml`` (WebDAV bodies and the multistatus parser, sans-I/O), ``convert`` (resources ⇄ class
records), ``http`` (the aiohttp adapter), ``mirror`` (one account's pull and push), ``worker``
(the per-user tasks, started by logins), ``settings`` (the ``[sources.dav]`` table).
"""

from natsync.sources.dav.settings import DavSettings, dav_settings
from natsync.sources.dav.worker import DavSource

__all__ = ["DavSettings", "DavSource", "dav_settings"]
