#!/usr/bin/env python3
"""Run every atheris harness in fuzz/ (fuzz/fuzz_*.py) for a bounded time; fail if any crashes.

`make test` runs it briefly (`--seconds 20` per harness); run it longer on demand, e.g.
`make fuzz FUZZ_SECONDS=600`. Each harness runs in its own process with libFuzzer's
``-max_total_time``; its corpus lives in fuzz/corpus-<harness>/ (gitignored) and grows across runs,
and the harness may seed it itself when empty (see fuzz_wbxml_decode.py). A crash, an uncaught
exception, a hang over ``--timeout`` seconds on one input, or memory over ``--rss-mb`` makes the
harness exit non-zero; the reproducer is kept in fuzz/corpus-artifacts/ and this script exits 1.
Harnesses added later are picked up automatically. They run ``--jobs`` at a time (default: one
per CPU), so the suite's fuzzing time stays bounded as harnesses are added.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def harnesses(directory: Path = HERE) -> list[Path]:
    return sorted(directory.glob("fuzz_*.py"))


def run(harness: Path, seconds: int, timeout: int, rss_mb: int) -> int:
    corpus = HERE / f"corpus-{harness.stem}"
    artifacts = HERE / "corpus-artifacts"
    corpus.mkdir(exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    command = [
        sys.executable,
        str(harness),
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        "-max_len=4096",
        f"-artifact_prefix={artifacts}/{harness.stem}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    started = time.monotonic()
    # The harness's own output (libFuzzer's progress lines) goes to a log; shown on failure.
    log = HERE / "corpus-artifacts" / f"{harness.stem}.log"
    with log.open("wb") as out:
        # Hard stop well after the fuzzer's own deadline, so a wedged process cannot hang CI.
        try:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 120, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    elapsed = time.monotonic() - started
    text = log.read_text("utf-8", errors="replace")
    runs = [line for line in text.splitlines() if line.startswith("stat::number_of_executed_units")]
    summary = runs[-1].split(":")[-1].strip() if runs else "?"
    status = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"{harness.name}: {status}, {summary} inputs in {elapsed:.0f} s, corpus {corpus.name}")
    if code != 0:
        print(text[-6000:])
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="fuzzing time per harness")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit per harness")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="harnesses run at once"
    )
    parser.add_argument("only", nargs="*", help="harness names to run (default: all)")
    args = parser.parse_args()
    found = [h for h in harnesses() if not args.only or h.stem in args.only or h.name in args.only]
    if not found:
        print("no fuzz harnesses found")
        return 1 if args.only else 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = list(pool.map(lambda h: run(h, args.seconds, args.timeout, args.rss_mb), found))
    failed = [h.name for h, code in zip(found, codes, strict=True) if code != 0]
    if failed:
        print(f"fuzzing found problems in: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
