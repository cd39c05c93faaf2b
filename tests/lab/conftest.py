from __future__ import annotations

import os
import shutil

import pytest

from natsync.lab.runner import NEEDED
from tests.ddns.conftest import _remove_leftover_lab_namespaces


def require_lab() -> None:
    """The lab needs root and the real parts; CI runs as root with them installed, so there
    this never skips."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the namespace lab needs root, and CI runs as root")
        pytest.skip("the namespace lab needs root (network namespaces); CI runs it as root")
    missing = [tool for tool in (*NEEDED, "pebble") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make apt-test`")


# Runs of a crashed earlier session are taken down before and after the session (the ddns
# tests' fixture: the same lab runner).
__all__ = ["_remove_leftover_lab_namespaces", "require_lab"]
