"""One item never breaks a folder (issue 19): the last line of defence around rendering items.

Text is made sendable by the encoder (natsync.wbxml.chars: what XML 1.0 forbids is dropped,
invalid UTF-8 replaced), so an ordinary mail, event or contact always renders. What can still
go wrong with one item is a record its class codec cannot render (a stored value of the wrong
type from an old import, a codec bug on odd data) or a tree the encoder refuses (a value that
is neither text nor bytes). Such an item must cost only itself, never the folder: before this,
one of them made every Sync of its folder answer HTTP 500, and the phone never got past it.

So each command renders items one by one through :func:`build`, and encodes its answer through
:func:`encode_isolated`, which, only when the whole answer does not encode, tries each item's
element alone and puts a stand-in in place of those that fail (the normal answer is encoded
once, as before). What the stand-in is belongs to the command:

* Sync: the item is left out of the window and remembered in the collection's state (ServerId
  → modseq, ``natsync.eas.sync_window``), so it is neither sent nor reported again until it
  changes or natsync is upgraded;
  the rest of the window and every later item are delivered, estimates and held Syncs count it
  as delivered, and SyncKeys and retransmission work as for any answer. A client's Fetch of it
  is answered Status 6 (conversion error).
* ItemOperations Fetch: Status 14 (conversion failed) for that Fetch, the others as usual.
* Search, Find: the result is left out (Find's ``Range`` then names what was sent). (GAL
  entries are built from text, which is always sendable; an own card's picture that does not
  decode is answered as no picture, ``search.PictureBudget``.)

Each item left out is reported once per answer: a warning of the ``natsync.eas.isolation``
logger with the item's id and why (the request's user, device and command come with it), and
its id in the request's access-log line (``"skipped"``), counted on the server's /metrics
(natsync.server.health).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from natsync.wbxml import Element, WBXMLError, encode

log = logging.getLogger("natsync.eas.isolation")


@dataclass(slots=True)
class Isolated:
    """One item's element inside an answer, and what takes its place when it cannot be sent."""

    item_id: str
    element: Element
    #: The element whose children hold *element*.
    parent: Element
    #: What replaces it (a Status-only answer), or None to leave it out.
    stand_in: Element | None = None
    #: Called once when the item is left out (Sync moves it from sent to skipped).
    on_skip: Callable[[], None] | None = None


def report(skipped: list[str], item_id: str, reason: str) -> None:
    """Log that *item_id* was left out of an answer and add it to *skipped* (the request's)."""
    skipped.append(item_id)
    log.warning("item %s left out of the answer: %s", item_id, reason)


def build(
    skipped: list[str], item_id: str, make: Callable[..., Element], *args: object
) -> Element | None:
    """``make(*args)``, or None (reported) when rendering the item fails in any way.

    *make* only renders: everything it needs is read from the store before (a store failure
    must fail the request, to be retried, not leave the item out as if it were the item's)."""
    try:
        return make(*args)
    except Exception as exc:  # the last line of defence: a failure costs this item only
        report(skipped, item_id, f"it cannot be rendered ({type(exc).__name__}: {exc})")
        return None


def encode_isolated(root: Element, items: Iterable[Isolated], skipped: list[str]) -> bytes:
    """``encode(root)``; when that fails, every item of *items* (only then looked at) that does
    not encode alone is replaced by its stand-in (reported), and *root* is encoded again. An
    answer that still fails has a fault outside its items, and raises as before."""
    try:
        return encode(root)
    except WBXMLError:
        candidates = list(items)
        if not candidates:
            raise
    for item in candidates:
        try:
            encode(item.element)
        except WBXMLError as exc:
            children = item.parent.children
            at = next(i for i, child in enumerate(children) if child is item.element)
            if item.stand_in is None:
                del children[at]
            else:
                children[at] = item.stand_in
            if item.on_skip is not None:
                item.on_skip()
            report(skipped, item.item_id, f"it cannot be encoded ({exc.message})")
    return encode(root)
