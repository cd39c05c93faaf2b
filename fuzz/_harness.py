"""What every harness in fuzz/ shares: seeding an empty corpus directory, then atheris.

A harness runs as a script (``python fuzz/fuzz_x.py [libFuzzer flags] CORPUS_DIR``), so this
module is imported from the script's own folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import atheris


def write_seeds(directory: Path, seeds: Sequence[bytes], suffix: str) -> None:
    """Write *seeds* into *directory* when it is empty, so the fuzzer starts from real input."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    for index, seed in enumerate(seeds):
        (directory / f"seed-{index:02d}{suffix}").write_bytes(seed)


def fuzz_main(test_one_input: Callable[[bytes], None], seeds: Sequence[bytes], suffix: str) -> None:
    """Seed every corpus directory named on the command line, then fuzz *test_one_input*."""
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            write_seeds(Path(arg), seeds, suffix)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
