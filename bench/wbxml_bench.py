#!/usr/bin/env python3
"""WBXML codec throughput, and the same work through libwbxml's tools in the same run.

Documents (built by natsync.wbxml.samples, realistic Email/AirSyncBase fields):
  sync-100k  a ~100 KB Sync response delivering 100 emails
  itemops-1m a ~1 MB ItemOperations Fetch response with an attachment (base64 Data, per spec)

natsync: decode and encode in process, best of several rounds (other work shares the CPU).
libwbxml: `wbxml2xml -l ACTIVESYNC` and `xml2wbxml -n -v 1.3 -a`, whole process, over --files
copies run back to back from one shell loop, so process start-up counts little per document.
Wall time and CPU time are both printed: on a shared machine CPU time is the steadier figure.
Goal (issue 2): >= 40 MB/s decode and encode for sync-100k, and faster per document than libwbxml.

    python bench/wbxml_bench.py [--files 50] [--rounds 7]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from natsync.wbxml import Element, decode, encode, samples, to_xml


def best_seconds(work: Callable[[], object], rounds: int, inner: int) -> tuple[float, float]:
    """Best per-call (wall, CPU) time over *rounds* rounds of *inner* calls."""
    wall = cpu = float("inf")
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        for _ in range(inner):
            work()
        wall = min(wall, (time.perf_counter() - started) / inner)
        cpu = min(cpu, (time.process_time() - started_cpu) / inner)
    return wall, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def shell_loop_seconds(command: str, files: list[Path]) -> tuple[float, float]:
    """Per-file (wall, CPU) time of running *command* over *files* from one shell loop."""
    lines = [command.format(src=f, out=f.with_suffix(f.suffix + ".out")) for f in files]
    script = "set -e\n" + "\n".join(f"{line} >/dev/null 2>&1" for line in lines) + "\n"
    started, started_cpu = time.perf_counter(), _children_cpu()
    subprocess.run(["bash", "-c", script], check=True)
    wall = (time.perf_counter() - started) / len(files)
    return wall, (_children_cpu() - started_cpu) / len(files)


def line(who: str, work: str, size: int, times: tuple[float, float]) -> str:
    wall, cpu = times
    return (
        f"  {who:8s} {work} {wall * 1e3:8.3f} ms/doc {size / wall / 1e6:9.1f} MB/s"
        f"   (CPU {cpu * 1e3:8.3f} ms, {size / cpu / 1e6:9.1f} MB/s)"
    )


def bench(name: str, tree: Element, files: int, rounds: int, workdir: Path) -> None:
    wire = encode(tree)
    assert decode(wire) == tree
    size = len(wire)
    inner = max(3, int(2_000_000 / size))
    dec = best_seconds(lambda: decode(wire), rounds, inner)
    enc = best_seconds(lambda: encode(tree), rounds, inner)
    print(f"\n{name}: {size:,} bytes of WBXML, {sum(1 for _ in tree.iter()):,} elements")
    print(line("natsync", "decode", size, dec))
    print(line("natsync", "encode", size, enc))
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
    print(line("libwbxml", "decode", size, lib_dec))
    print(line("libwbxml", "encode", size, lib_enc))
    print(
        f"  natsync vs libwbxml per document (wall): decode {lib_dec[0] / dec[0]:.1f}x faster, "
        f"encode {lib_enc[0] / enc[0]:.1f}x faster; libwbxml bytes identical: "
        f"{'yes' if same else 'no'}"
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
        ("itemops-1m", samples.item_operations_response(document_bytes=1_000_000)),
    ]
    with tempfile.TemporaryDirectory(prefix="wbxml-bench-") as tmp:
        for name, tree in documents:
            bench(name, tree, args.files, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
