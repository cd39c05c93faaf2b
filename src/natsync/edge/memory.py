"""The edge process's memory: glibc's mmap threshold fixed, so a held Ping costs what it writes.

Both `natsync edge run` and `natsync run`'s edge part call :func:`tune_malloc` before their event
loop starts.
"""

from __future__ import annotations

#: glibc mallopt() parameter number of M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Allocations at least this large are mmapped. uvloop gives every TLS connection a 256 KiB read
#: buffer of which a held connection touches a page or two; glibc's *dynamic* threshold moves
#: such buffers onto the heap after the first one is freed, where reused pages are resident.
#: A fixed threshold keeps each one mmapped, so only the pages really written count (measured:
#: about 7 KB less per held Ping).
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> None:
    """Fix glibc's mmap threshold (see MMAP_THRESHOLD); a no-op elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        return
