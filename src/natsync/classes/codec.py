"""The contract between the Sync command and each non-email data class (MS-ASCAL, MS-ASCNTC,
MS-ASTASK, MS-ASNOTE).

A class codec turns one item's ``AirSync:ApplicationData`` into a *record* and back. A record is
a plain JSON-able ``dict`` (str keys; values str, int, bool, None, lists and dicts of those;
binary such as contact pictures as base64 text); the store keeps it as JSON and never looks
inside, so each class module owns its record's keys and documents them in its docstring. The
codecs are pure: no store, no clock, no I/O — the Sync adapter in ``natsync.eas`` does the rest.

Every hook a class can have is a member of :class:`ClassCodec`; the optional ones default to
None (no filtering, no occurrence deletes, nothing done after a client's write).

Errors: a codec raises :class:`PimError` for an ApplicationData it cannot take; the Sync command
answers that one item with its ``eas_status`` (6, "error in client/server conversion", MS-ASCMD
2.2.3.177.17) and goes on with the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from natsync.classes.body import BodyPreference
from natsync.classes.versions import Version
from natsync.errors import NatsyncError
from natsync.store.api import FolderType, Item, Txn, User
from natsync.wbxml import Element

#: A class record, as the store keeps it (JSON).
Record = dict[str, Any]

#: ``(txn, user, old item or None, new item or None, now, rng) -> queued outbound mail?``
AfterClientWrite = Callable[[Txn, User, Item | None, Item | None, datetime, random.Random], bool]
#: ``(record, cutoff) -> in the window?`` (the FilterType's start, or None; see ClassCodec).
InWindow = Callable[[Mapping[str, Any], datetime | None], bool]
#: ``(record, instance_id) -> the series without that occurrence``.
DeleteOccurrence = Callable[[Mapping[str, Any], str], Record]


class PimError(NatsyncError):
    """An item's ApplicationData could not be converted; the Sync answers it with Status 6."""

    eas_status = 6


@dataclass(frozen=True, slots=True)
class ClassCodec:
    """How one data class crosses the wire.

    * ``decode(application_data, version)``: a client's Add → a whole record.
    * ``apply_change(old, application_data, version)``: a client's Change → the new whole
      record. Each class decides what an absent element means (MS-ASCMD 2.2.3.11 ghosting:
      Contacts and Calendar keep absent properties the client does not support; Tasks and
      Notes replace the item).
    * ``encode(record, version, body_preferences)``: a record → the ApplicationData children
      sent to the device, honouring the client's BodyPreference for the body.
    * ``after_client_write(txn, user, old, new, now, rng)``, optional: called inside the Sync
      transaction after a client Add (``None, new``), Change (``old, new``) or Delete
      (``old, None``) of an item of this class, so a class can act on the phone's write
      (Calendar sends iMIP invitations; *now* and *rng* are the command's time and randomness,
      for the invitation's Date, Message-ID and boundary). It returns True when it queued
      outbound mail: the Sync response then kicks the relay. An exception rolls the whole Sync
      back (it is a bug or a store failure, not a client error: raise PimError before writing
      for those).
      The class module leaves it out; where mail and classes meet (natsync.eas.registry) the
      Calendar gets natsync.mail.itip's, so a class never imports mail.
    * ``in_window(record, cutoff)``, optional: whether a record belongs in a Sync collection
      with a FilterType (MS-ASCMD 2.2.3.69.2). Calendar (FilterType 4-7): the item or an
      occurrence ends after *cutoff*; Tasks (FilterType 8, no time window: *cutoff* is
      None): the task is incomplete. Without it, every FilterType keeps everything.
    * ``delete_occurrence(record, instance_id)``, optional: the record after a 16.x Sync
      Delete naming one occurrence by ``AirSyncBase:InstanceId``; without it such a Delete
      answers Status 6.
    """

    #: The AirSync:Class value ("Calendar", "Contacts", "Tasks", "Notes").
    eas_class: str
    #: Folder types that hold this class (the default folder and the user-created type).
    folder_types: frozenset[FolderType]
    decode: Callable[[Element, Version], Record]
    apply_change: Callable[[Mapping[str, Any], Element, Version], Record]
    encode: Callable[[Mapping[str, Any], Version, Sequence[BodyPreference]], list[Element]]
    after_client_write: AfterClientWrite | None = None
    in_window: InWindow | None = None
    delete_occurrence: DeleteOccurrence | None = None
