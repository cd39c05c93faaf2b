"""A child process ends with its parent, even when the parent is killed without a word.

`natsync run` (and `natsync up`) supervise their parts as child processes, and the edge forks its
workers. If the parent is SIGKILLed (the OOM killer, `kill -9`), children would live on as
orphans holding the ports, and the next start would fail with "address in use". Linux's
``prctl(PR_SET_PDEATHSIG)`` has the kernel signal the child when its parent thread exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

#: prctl() option that sends a signal when the parent process ends (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel to send *sig* to this process when its parent ends (Linux; a no-op
    elsewhere). If the parent is already gone (we were re-parented), end now."""
    parent = os.getppid()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent ended between fork and prctl
        os.kill(os.getpid(), sig)
