"""Which natsync process mirrors a user's source account: a lease in the store.

Several server processes share one store (``natsync run`` with ``server.processes``, or
servers on several machines on PostgreSQL); a phone's requests may reach any of them, and each
starts the user's mirror on login. Two mirrors of one IMAP account would fetch everything twice
and race on the write-back, so each mirror first takes the lease on (user, source) in the store
(``Txn.take_source_lease``: one atomic statement on both drivers), renews it every third of its
length, and gives it up when it stops. The others wait and take it over when it runs out (a
process that died or hangs), within :attr:`SourcesConfig.lease` seconds.

Sans-I/O: the owner name and the decisions; the callers run them in a store transaction.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from natsync.store.api import Txn

#: Seconds a lease holds without renewal by default: how long the others wait before they
#: take over the account of a process that died.
DEFAULT_LEASE = 30.0
#: The shortest lease allowed (renewed every third of it: a store write per account).
MIN_LEASE = 1.0


def owner_name() -> str:
    """A name unique to this process (and this start of it) across machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Lease:
    user_id: int
    source: str  # "imap" or "dav"
    owner: str
    seconds: float = DEFAULT_LEASE

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: two may fail (a slow store) before the lease runs out."""
        return self.seconds / 3

    def take(self, txn: Txn, now: datetime) -> bool:
        """Take or renew the lease; False while another process holds it."""
        until = now + timedelta(seconds=self.seconds)
        return txn.take_source_lease(self.user_id, self.source, self.owner, now, until)

    def release(self, txn: Txn) -> None:
        txn.release_source_lease(self.user_id, self.source, self.owner)

    def holder(self, txn: Txn) -> str:
        """Who holds it now, for the log ("" when nobody)."""
        found = txn.source_lease(self.user_id, self.source)
        return "" if found is None else found[0]
