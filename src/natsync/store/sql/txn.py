"""The SQL transaction both store drivers run, joined from one mixin per area of the store.

Each area owns its tables' statements: users, devices (and their sync state), folders,
messages, items of the other data classes, the outbound queue, and the IMAP mirror's mapping.
The SQL is SQLite's; the PostgreSQL driver runs the same code through a connection that
rewrites placeholders, and overrides only the statements whose meaning differs there
(natsync.store.postgres).
"""

from __future__ import annotations

from natsync.store.sql.devices import DevicesMixin
from natsync.store.sql.folders import FoldersMixin
from natsync.store.sql.items import ItemsMixin
from natsync.store.sql.messages import MessagesMixin
from natsync.store.sql.mirror import MirrorMixin
from natsync.store.sql.outbound import OutboundMixin
from natsync.store.sql.users import UsersMixin


class SqliteTxn(
    UsersMixin,
    DevicesMixin,
    FoldersMixin,
    MessagesMixin,
    ItemsMixin,
    OutboundMixin,
    MirrorMixin,
):
    """One open transaction on the worker's connection; valid only inside ``Store.run``."""
