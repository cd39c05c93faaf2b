"""The garbage collector's settings for a server process (``natsync server run``, ``natsync up``).

CPython runs a collection of its youngest generation every 700 net allocations of container
objects, and a full one whenever a quarter more objects have survived into the old generation.
A Sync window allocates tens of thousands of short-lived containers (one Element and one child
list per WBXML element, a parsed header set per message), so with the defaults a 10,000-message
initial sync ran about 800 young and several full collections, each full one walking every object
the process holds: a fifth to a quarter of the server's CPU (measured with gc.callbacks during
bench/sync_bench.py). Two settings remove most of it without changing what is collected:

* ``gc.freeze()`` once the server is set up: what exists then (modules, classes, the
  configuration) lives as long as the process and is never walked again;
* a young generation of ``THRESHOLDS[0]`` allocations, and fewer promotions to the older ones:
  at most that many unreachable containers wait for their collection (kilobytes), and objects
  that die young, as nearly all a request makes do, die before any collection sees them.

Memory that is freed by reference counting (nearly all of it) is freed at once either way.
"""

from __future__ import annotations

import gc

#: gc.set_threshold arguments (young allocations, young runs per middle run, middle runs per old
#: run). CPython's defaults are (700, 10, 10); these halve the server's CPU per message of an
#: initial sync spent in the collector (docs/server.md, Performance).
THRESHOLDS = (10_000, 20, 20)


def tune_for_server() -> None:
    """Freeze what the process holds now and set ``THRESHOLDS``; call once, before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
