"""natsync.server.gcpolicy: a server process runs with the frozen start-up heap and the
thresholds it names (checked in a fresh interpreter: the settings are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

from natsync.server.gcpolicy import THRESHOLDS


def test_tune_for_server_freezes_and_sets_the_thresholds() -> None:
    code = (
        "import gc, json; from natsync.server.gcpolicy import tune_for_server; "
        "before = gc.get_freeze_count(); tune_for_server(); "
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, frozen, thresholds = json.loads(out.stdout)
    assert before == 0
    assert frozen > 1000  # the modules and classes imported so far
    assert tuple(thresholds) == THRESHOLDS


def test_garbage_cycles_are_still_collected_after_tuning() -> None:
    code = (
        "import gc, weakref; from natsync.server.gcpolicy import tune_for_server; "
        "tune_for_server()\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; probe = weakref.ref(a); del a, b\n"
        "keep = [[] for _ in range(30_000)]\n"  # live allocations alone trigger the collector
        "print(probe() is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
