#!/usr/bin/env python3
"""WBXML codec throughput, and the same work through libwbxml's tools in the same run.

Documents (built by natsync.wbxml.samples, realistic Email/AirSyncBase fields):
  sync-100k  a ~100 KB Sync response delivering 100 emails
  itemops-1m a ~1 MB ItemOperations Fetch response with an attachment (base64 Data, per spec)

In process, interleaved (issue 27, goal 3: at least as fast as libwbxml in process):
  natsync     decode / encode as the server runs them (the C common case when it is built)
  python      natsync's Python codec alone (the reference; what NATSYNC_PURE_PYTHON=1 runs)
  libwbxml    libwbxml's tree API (wbxml_tree_from_wbxml / wbxml_tree_to_wbxml) called in
              process through a small C harness this bench builds with gcc in a temp dir
              (libwbxml2-dev); it times each call with clock_gettime, the tree is freed after.
Each round runs every contestant --inner times per document, in an order that alternates from
round to round; the figure is the median over --rounds rounds of the per-document time. The load
average is printed; above 1 the run is marked noisy (read the ratios).

Whole process, best of several rounds (the earlier comparison, kept): natsync as above, and
libwbxml's tools `wbxml2xml -l ACTIVESYNC` and `xml2wbxml -n -v 1.3 -a` over --files copies run
back to back from one shell loop, so process start-up counts little per document.
Goal (issue 2): >= 40 MB/s decode and encode for sync-100k, and faster per document than libwbxml.

    python bench/wbxml_bench.py [--files 50] [--rounds 7] [--inner 20]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from natsync.wbxml import Element, decode, encode, samples, speedups, to_xml
from natsync.wbxml.decoder import python_decode
from natsync.wbxml.encoder import python_encode

#: The in-process libwbxml harness. libwbxml2-dev ships no header for the tree API, so its
#: functions are declared here as libwbxml 0.11 defines them (src/wbxml_tree.h).
LIBWBXML_HARNESS = r"""
#include <time.h>
#include <wbxml/wbxml.h>
typedef struct WBXMLTree_s WBXMLTree;
WBXMLError wbxml_tree_from_wbxml(WB_UTINY *wbxml, WB_ULONG len, WBXMLLanguage lang,
                                 WBXMLCharsetMIBEnum charset, WBXMLTree **tree);
WBXMLError wbxml_tree_to_wbxml(WBXMLTree *tree, WB_UTINY **wbxml, WB_ULONG *len,
                               WBXMLGenWBXMLParams *params);
void wbxml_tree_destroy(WBXMLTree *tree);
void wbxml_free(void *memblock);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Seconds to decode *data* into a tree (freed after the clock stops); -1 on an error. */
double decode_seconds(unsigned char *data, unsigned long len) {
    WBXMLTree *tree = NULL;
    double start = now();
    WBXMLError rc = wbxml_tree_from_wbxml(data, len, WBXML_LANG_ACTIVESYNC,
                                          WBXML_CHARSET_UTF_8, &tree);
    double took = now() - start;
    if (tree != NULL) wbxml_tree_destroy(tree);
    return rc == WBXML_OK ? took : -1.0;
}

void *tree_of(unsigned char *data, unsigned long len) {
    WBXMLTree *tree = NULL;
    if (wbxml_tree_from_wbxml(data, len, WBXML_LANG_ACTIVESYNC, WBXML_CHARSET_UTF_8, &tree)
        != WBXML_OK) return NULL;
    return tree;
}

/* Seconds to encode *tree* as `xml2wbxml -n -v 1.3 -a` would; the bytes go to *out*. */
double encode_seconds(void *tree, unsigned char *out, unsigned long cap, unsigned long *out_len) {
    WBXMLGenWBXMLParams params = {WBXML_VERSION_13, FALSE, FALSE, TRUE};
    WB_UTINY *wbxml = NULL;
    WB_ULONG len = 0;
    double start = now();
    WBXMLError rc = wbxml_tree_to_wbxml((WBXMLTree *)tree, &wbxml, &len, &params);
    double took = now() - start;
    *out_len = len;
    if (wbxml != NULL) {
        if (len <= cap) for (WB_ULONG i = 0; i < len; i++) out[i] = wbxml[i];
        wbxml_free(wbxml);
    }
    return rc == WBXML_OK ? took : -1.0;
}

void free_tree(void *tree) { wbxml_tree_destroy((WBXMLTree *)tree); }
"""


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


def build_libwbxml(workdir: Path) -> ctypes.CDLL | None:
    """Compile the in-process harness against libwbxml; None (said why) when it cannot be."""
    if shutil.which("gcc") is None or not Path("/usr/include/libwbxml-1.0").is_dir():
        print("libwbxml in process: needs gcc and libwbxml2-dev (apt-get install): skipped")
        return None
    source, library = workdir / "libwbxml_harness.c", workdir / "libwbxml_harness.so"
    source.write_text(LIBWBXML_HARNESS, "utf-8")
    command = ["gcc", "-O2", "-shared", "-fPIC", "-I/usr/include/libwbxml-1.0", "-o"]
    subprocess.run([*command, str(library), str(source), "-lwbxml2"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.decode_seconds.restype = ctypes.c_double
    lib.decode_seconds.argtypes = [ctypes.c_char_p, ctypes.c_ulong]
    lib.tree_of.restype = ctypes.c_void_p
    lib.tree_of.argtypes = [ctypes.c_char_p, ctypes.c_ulong]
    lib.encode_seconds.restype = ctypes.c_double
    lib.encode_seconds.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.POINTER(ctypes.c_ulong),
    ]
    lib.free_tree.argtypes = [ctypes.c_void_p]
    return lib


def timed(work: Callable[[], object]) -> float:
    """Seconds one call of *work* takes; its result is dropped after the clock stops."""
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    del result
    return took


def in_process(name: str, tree: Element, rounds: int, inner: int, lib: ctypes.CDLL | None) -> None:
    """natsync (as run), its Python reference and libwbxml's tree API, interleaved rounds."""
    wire = encode(tree)
    size = len(wire)
    work: dict[str, Callable[[], float]] = {
        "natsync decode": lambda: timed(lambda: decode(wire)),
        "natsync encode": lambda: timed(lambda: encode(tree)),
        "python decode": lambda: timed(lambda: python_decode(wire)),
        "python encode": lambda: timed(lambda: python_encode(tree)),
    }
    same = "n/a"
    lib_tree = None
    if lib is not None:
        lib_tree = lib.tree_of(wire, size)
        out = ctypes.create_string_buffer(size * 2 + 1024)
        out_len = ctypes.c_ulong()
        if lib_tree is None or lib.encode_seconds(lib_tree, out, len(out), out_len) < 0:
            raise SystemExit(f"libwbxml could not decode or encode {name}")
        same = "yes" if out.raw[: out_len.value] == wire else "no"
        work["libwbxml decode"] = lambda: lib.decode_seconds(wire, size)
        work["libwbxml encode"] = lambda: lib.encode_seconds(lib_tree, out, len(out), out_len)
    samples_of: dict[str, list[float]] = {key: [] for key in work}
    order = list(work)
    for round_no in range(rounds):
        for key in order if round_no % 2 == 0 else reversed(order):
            times = [work[key]() for _ in range(inner)]
            if min(times) < 0:
                raise SystemExit(f"{key} failed on {name}")
            samples_of[key].append(statistics.median(times))
    if lib is not None and lib_tree is not None:
        lib.free_tree(lib_tree)
    median = {key: statistics.median(values) for key, values in samples_of.items()}
    print(f"\n{name}: {size:,} bytes of WBXML, in process, median of {rounds} interleaved rounds")
    for key, seconds in median.items():
        spread = f"{min(samples_of[key]) * 1e3:.3f}-{max(samples_of[key]) * 1e3:.3f}"
        print(
            f"  {key:16s} {seconds * 1e3:8.3f} ms/doc {size / seconds / 1e6:8.1f} MB/s"
            f"   (rounds {spread} ms)"
        )
    if lib is not None:
        for verb in ("decode", "encode"):
            ratio = median[f"libwbxml {verb}"] / median[f"natsync {verb}"]
            print(f"  natsync {verb} vs libwbxml in process: {ratio:.2f}x as fast")
        print(f"  libwbxml tree API bytes identical to natsync's: {same}")


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
    parser.add_argument("--rounds", type=int, default=7, help="rounds (interleaved: median)")
    parser.add_argument("--inner", type=int, default=20, help="documents per contestant per round")
    args = parser.parse_args()
    documents = [
        ("sync-100k", samples.sync_response(emails=100, body_chars=630)),
        ("itemops-1m", samples.item_operations_response(document_bytes=1_000_000)),
    ]
    load_before = os.getloadavg()
    codec = "C common case + Python" if speedups.speedups is not None else "Python only"
    print(f"natsync codec: {codec}; load average {load_before[0]:.2f} (1 min) before")
    with tempfile.TemporaryDirectory(prefix="wbxml-bench-") as tmp:
        lib = build_libwbxml(Path(tmp))
        for name, tree in documents:
            in_process(name, tree, args.rounds, args.inner, lib)
        print("\nWhole process (libwbxml's command-line tools):")
        for name, tree in documents:
            bench(name, tree, args.files, args.rounds, Path(tmp))
    load_after = os.getloadavg()
    noisy = " - noisy (above 1: read the ratios)" if max(load_before[0], load_after[0]) > 1 else ""
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min){noisy}")


if __name__ == "__main__":
    main()
