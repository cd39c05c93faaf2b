"""What a command handler gets (Context) and gives back (Response).

A handler is plain synchronous code: it runs inside one store transaction (``store.run``), reads
and writes through ``ctx.txn``, and returns a Response whose body is already encoded. Nothing
here does I/O; time is ``ctx.now`` and randomness ``ctx.rng`` (SyncKeys, policy keys, the UID of
a calendar item the phone sent without one, the Message-ID and MIME boundaries of a draft, a
SendMail, SmartReply/SmartForward or an iTIP invitation or reply), both passed in by the
adapter, so that a command's answer is reproducible byte for byte with a seeded
``random.Random`` (the server passes ``secrets.SystemRandom()``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from natsync.eas.request import EasRequest
from natsync.eas.versions import Version
from natsync.store.api import Device, Folder, Txn, User
from natsync.wbxml import Element, encode

if TYPE_CHECKING:
    from natsync.config import ServerConfig

WBXML_CONTENT_TYPE = "application/vnd.ms-sync.wbxml"


# -- what a command asks of the adapter, by name (frozen; the adapter acts after commit)

V = TypeVar("V")


class FolderValues(Mapping[int, V]):
    """A read-only mapping folder id -> value over two tuples, the ids shared with the hold's
    ``folder_ids``. A held request keeps two for its whole heartbeat: as dicts of one folder
    they cost ~440 bytes per held Ping, as this ~160 (issue 27). Lookups scan the ids (a Ping
    names a few folders)."""

    __slots__ = ("_ids", "_values")

    def __init__(self, ids: tuple[int, ...], values: tuple[V, ...]) -> None:
        self._ids = ids
        self._values = values

    def __getitem__(self, key: int) -> V:
        try:
            return self._values[self._ids.index(key)]
        except ValueError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"FolderValues({dict(self)!r})"


@dataclass(frozen=True, slots=True)
class HoldUntilChange:
    """Hold the request until one of these folders changes or *heartbeat* seconds pass."""

    folder_ids: tuple[int, ...]
    #: store folder id -> the folder's ServerId, to name changed folders in the answer
    server_ids: Mapping[int, str]
    heartbeat: int
    user_id: int
    #: store folder id -> its modseq when the Ping was accepted (changes after it count)
    baseline: Mapping[int, int]
    #: A held Sync (Wait / HeartbeatInterval): on a change, run the same request again (without
    #: holding); when the time is up, answer with an empty body (MS-ASCMD 2.2.3.195).
    rerun: bool = False


def hold_on(
    folders: Sequence[Folder], heartbeat: int, user_id: int, *, rerun: bool = False
) -> HoldUntilChange:
    """Hold until one of *folders* changes past its modseq now (compact: :class:`FolderValues`)."""
    ids = tuple(f.id for f in folders)
    return HoldUntilChange(
        folder_ids=ids,
        server_ids=FolderValues(ids, tuple(f.server_id for f in folders)),
        heartbeat=heartbeat,
        user_id=user_id,
        baseline=FolderValues(ids, tuple(f.modseq for f in folders)),
        rerun=rerun,
    )


@dataclass(frozen=True, slots=True)
class KickRelay:
    """Outbound mail was queued: kick the relay after the transaction commits."""


#: Everything a command may ask of the adapter.
Effect = HoldUntilChange | KickRelay


def kick_relay(queued: bool) -> tuple[Effect, ...]:
    """The effects of a command that *queued* outbound mail (or not)."""
    return (KickRelay(),) if queued else ()


@dataclass(slots=True)
class Response:
    """The answer to one request: HTTP status, headers, body, and what the adapter must do."""

    body: bytes = b""
    content_type: str = WBXML_CONTENT_TYPE
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: EAS Status of the command (for the access log), when there is one.
    status: int | None = None
    #: What the adapter must do besides sending the answer, each by name (HoldUntilChange: a
    #: Ping or held Sync waits outside the transaction, and then asks for nothing else;
    #: KickRelay: outbound mail was queued).
    effects: tuple[Effect, ...] = ()
    #: Items left out of the answer because they could not be sent (natsync.eas.isolation).
    skipped: tuple[str, ...] = ()

    @classmethod
    def of(cls, root: Element, status: int | None = None, **kw: Any) -> Response:
        return cls(body=encode(root), status=status, **kw)


def new_uid(rng: random.Random) -> str:
    """A new globally unique id for an item the phone sent without one (a calendar UID, RFC 5545
    3.8.4.7): 128 bits of *rng* as 32 upper-case hex digits (the form ``uuid4().hex.upper()``
    gave)."""
    return rng.randbytes(16).hex().upper()


@dataclass(slots=True)
class Context:
    txn: Txn
    request: EasRequest
    user: User
    device: Device
    now: datetime
    config: ServerConfig
    #: The decoded WBXML body, or None when the body was empty or not WBXML.
    body: Element | None
    raw_body: bytes
    content_type: str = ""
    #: False when the request is being re-run after a held Sync: answer, don't hold again.
    may_hold: bool = True
    #: Ids of the items the handler left out of its answer (natsync.eas.isolation).
    skipped: list[str] = field(default_factory=list)
    #: Where new keys come from: the OS's (``secrets.SystemRandom``) in the server, a seeded
    #: ``random.Random`` in a test that compares answers byte for byte.
    rng: random.Random = field(kw_only=True)

    @property
    def version(self) -> Version:
        return self.request.version


Handler = Callable[[Context], Response]
