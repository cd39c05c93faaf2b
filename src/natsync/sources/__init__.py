"""Where mailboxes come from: natsync's own store (the default), a mirror of an IMAP account, and
calendars, contacts and tasks from a CalDAV/CardDAV server (:mod:`natsync.sources.dav`).

The EAS core always syncs from the store; an IMAP user's mailbox is kept there by a mirror
worker (:mod:`natsync.sources.worker`) that follows the IMAP server (RFC 7162 QRESYNC, IDLE /
NOTIFY, RFC 6154 SPECIAL-USE) and writes the phone's changes back. Users of an IMAP domain log in
with their IMAP credentials. Configuration: the ``[sources]`` table (:mod:`.config`).

To enable it in a server process::

    manager = natsync.sources.install(running_server.eas, sources_from_dict(table), store)
    ...
    await manager.aclose()
"""

from __future__ import annotations

from typing import Any

from natsync.sources.bodies import SourceHook
from natsync.sources.config import (
    ImapServer,
    SourcesConfig,
    TlsMode,
    load_sources,
    sources_from_dict,
)
from natsync.sources.worker import MirrorManager
from natsync.store.api import Store


class _Kick:
    """Stands in for the server's relay: mail queued by SendMail also wakes the mirrors (an
    IMAP user's mail leaves through their submission service, sent by their mirror)."""

    def __init__(self, relay: Any, manager: MirrorManager) -> None:
        self.relay = relay
        self.manager = manager

    def kick(self) -> None:
        if self.relay is not None:
            self.relay.kick()
        for mirror in self.manager.mirrors.values():
            mirror.wake.set()


def install(eas: Any, config: SourcesConfig, store: Store) -> MirrorManager:
    """Let *eas* (a ``natsync.server.app.EasApp``) log IMAP users in and mirror them."""
    manager = MirrorManager(config, store)
    eas.auth.delegate = manager
    eas.relay = _Kick(eas.relay, manager)
    eas.command_hook = SourceHook(manager)  # lazy bodies, refusals answered with statuses
    return manager


__all__ = [
    "ImapServer",
    "MirrorManager",
    "SourcesConfig",
    "TlsMode",
    "install",
    "load_sources",
    "sources_from_dict",
]
