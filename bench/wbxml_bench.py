#!/usr/bin/env python3
"""WBXML codec throughput, and the same work through libwbxml's tools in the same run.

Documents (built by natsync.wbxml.samples, realistic Email/AirSyncBase fields):
  sync-100k  a ~100 KB Sync response delivering 100 emails
  itemops-1m a ~1 MB ItemOperations Fetch response with an opaque attachment

natsync: decode and encode in process, best of several rounds (other work shares the CPU).
libwbxml: `wbxml2xml -l ACTIVESYNC` and `xml2wbxml -n -v 1.3 -a`, whole process, over --files
copies run back to back from one shell loop, so process start-up counts little per document.
Goal (issue 2): >= 40 MB/s decode and encode for sync-100k, and faster per document than libwbxml.

    python bench/wbxml_bench.py [--files 50] [--rounds 7]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from natsync.wbxml import Element, decode, encode, samples, to_xml


def best_seconds(work: Callable[[], object], rounds: int, inner: int) -> float:
    """Best per-call time over *rounds* rounds of *inner* calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(inner):
            work()
        best = min(best, (time.perf_counter() - started) / inner)
    return best


def shell_loop_seconds(command: str, files: list[Path]) -> float:
    """Per-file wall time of running *command* ({in} {out}) over *files* from one shell."""
    lines = [command.format(src=f, out=f.with_suffix(f.suffix + ".out")) for f in files]
    script = "set -e\n" + "\n".join(f"{line} >/dev/null 2>&1" for line in lines) + "\n"
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return (time.perf_counter() - started) / len(files)


def bench(name: str, tree: Element, files: int, rounds: int, workdir: Path) -> None:
    wire = encode(tree)
    assert decode(wire) == tree
    size = len(wire)
    inner = max(3, int(2_000_000 / size))
    dec = best_seconds(lambda: decode(wire), rounds, inner)
    enc = best_seconds(lambda: encode(tree), rounds, inner)
    print(f"\n{name}: {size:,} bytes of WBXML, {sum(1 for _ in tree.iter()):,} elements")
    print(f"  natsync  decode {dec * 1e3:8.3f} ms/doc  {size / dec / 1e6:7.1f} MB/s")
    print(f"  natsync  encode {enc * 1e3:8.3f} ms/doc  {size / enc / 1e6:7.1f} MB/s")
    if shutil.which("wbxml2xml") is None or shutil.which("xml2wbxml") is None:
        print("  libwbxml tools not installed (apt-get install libwbxml2-utils): skipped")
        return
    xml = to_xml(tree, doctype=True, indent=None)
    wb_files, xml_files = [], []
    for index in range(files):
        wb = workdir / f"{name}-{index}.wbxml"
        wb.write_bytes(wire)
        wb_files.append(wb)
        xf = workdir / f"{name}-{index}.xml"
        xf.write_text(xml, "utf-8")
        xml_files.append(xf)
    lib_dec = shell_loop_seconds("wbxml2xml -l ACTIVESYNC -o {out} {src}", wb_files)
    lib_enc = shell_loop_seconds("xml2wbxml -n -v 1.3 -a -o {out} {src}", xml_files)
    same = xml_files[0].with_suffix(".xml.out").read_bytes() == wire
    print(f"  libwbxml decode {lib_dec * 1e3:8.3f} ms/doc  {size / lib_dec / 1e6:7.1f} MB/s")
    print(f"  libwbxml encode {lib_enc * 1e3:8.3f} ms/doc  {size / lib_enc / 1e6:7.1f} MB/s")
    print(
        f"  natsync vs libwbxml per document: decode {lib_dec / dec:.1f}x faster, "
        f"encode {lib_enc / enc:.1f}x faster; libwbxml bytes identical: {'yes' if same else 'no'}"
    )
    if not same and name.startswith("itemops"):
        print("  (libwbxml writes ItemOperations Data as text, not OPAQUE: a different encoding)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50, help="libwbxml runs per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="natsync rounds (best is kept)")
    args = parser.parse_args()
    documents = [
        ("sync-100k", samples.sync_response(emails=100, body_chars=630)),
        ("itemops-1m", samples.item_operations_response(attachment_bytes=1_000_000)),
    ]
    with tempfile.TemporaryDirectory(prefix="wbxml-bench-") as tmp:
        for name, tree in documents:
            bench(name, tree, args.files, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
