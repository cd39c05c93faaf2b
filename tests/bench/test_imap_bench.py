"""bench/imap_bench.py itself: its quick run against a real Dovecot prints every figure issue 25
asks (each beside natsync's own store, with its load) and leaves nothing behind; and the file
names it gives a copied-in maildir spread over Dovecot's file name hash as real ones do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.sources.dovecot import available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import imap_bench  # type: ignore[import-not-found]  # noqa: E402  (bench/ is not a package)

#: The quick run takes ~15 s here; its steps are bounded well below this.
QUICK_LIMIT = 240


def dovecot_name_hash(name: str) -> int:
    """The 32-bit shift-and-fold string hash (Aho, Sethi, Ullman) that Dovecot 2.3 keys its
    maildir file names by (src/lib-storage/index/maildir/maildir-filename.c,
    maildir_filename_base_hash): over the name up to its ':' info part."""
    value = 0
    for char in name.partition(":")[0]:
        value = ((value << 4) + ord(char)) & 0xFFFFFFFF
        top = value & 0xF0000000
        if top:
            value ^= top >> 24
            value ^= top
    return value


def mean_chain(names: list[str]) -> float:
    """Names compared per lookup of a name, on average, when they are keyed by that hash."""
    counts = Counter(dovecot_name_hash(n) for n in names)
    return sum(c * c for c in counts.values()) / len(names)


def test_copied_names_spread_over_dovecots_hash_and_the_old_ones_do_not() -> None:
    count = 20_000
    rng = imap_bench.random.Random(25)
    copied = [imap_bench.maildir_name(n, 160, "S", rng) for n in range(count)]
    assert len(set(copied)) == count
    assert mean_chain(copied) < 1.1
    # The earlier bench's names: long chains (its 11.3 s for the newest 100 of 100,000).
    colliding = [imap_bench.colliding_name(n) for n in range(count)]
    assert mean_chain(colliding) > 20


def test_a_figure_above_load_1_is_marked_noisy() -> None:
    assert str(imap_bench.Measured(0.42)) == "[load 0.42]"
    assert str(imap_bench.Measured(1.5)) == "[load 1.50: noisy]"


def test_a_message_is_dated_when_it_arrived() -> None:
    assert imap_bench.when(1) > imap_bench.when(0)
    assert b"Subject: message 7\r\n" in imap_bench.mail(7)
    assert b"Date: Tue, 14 Nov 2023 22:13:20 -0000\r\n" in imap_bench.mail(0)


@pytest.mark.slow
@pytest.mark.skipif(not available(), reason="dovecot-imapd is not installed (apt)")
def test_quick_run_prints_every_figure_beside_the_own_store() -> None:
    if os.geteuid() != 0:  # CI runs as root: there this never skips
        if os.environ.get("CI"):
            pytest.fail("the bench's maildirs belong to Dovecot's user: it runs as root")
        pytest.skip("the bench's maildirs belong to Dovecot's user (chown needs root)")
    # Mailboxes in a directory of this test's, which Dovecot's user can reach; the bench's
    # other files in a temporary directory of this test's (a short path: Dovecot's sockets
    # are in it, and a Unix socket's path has at most 107 bytes).
    scratch = Path(tempfile.mkdtemp(prefix="imap-bench-test-", dir="/dev/shm"))
    scratch.chmod(0o755)
    temp = Path(tempfile.mkdtemp(prefix="ib-"))
    try:
        run = _quick_run(scratch, temp)
        left = sorted(p.name for p in scratch.iterdir()) + sorted(p.name for p in temp.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    # Every mailbox and mbox file, the stores, Dovecot's configuration and logs: removed.
    assert not left, left
    load = r"\[load \d+\.\d\d(: noisy)?\]"
    ms = r"p50 +\d+ ms, p99 +\d+ ms"
    # 1. push, both sides
    assert re.search(rf"natsync store \(direct delivery\): +{ms} {load}", out)
    assert re.search(rf"IMAP \(Dovecot maildir, LMTP, NOTIFY\+IDLE\): {ms} {load}", out)
    # 2. newest 100, the own store and each fill, named, with Dovecot's share apart
    steps = r"\(Provision \d+\.\d\d s, FolderSync \d+\.\d\d s, Syncs -?\d+\.\d\d s\)"
    assert "newest 100 of a 300-message mailbox on a phone" in out
    assert re.search(rf"natsync store: \d+\.\d\d s {steps} {load}", out)
    for fill in ("mdbox", "maildir-delivered", "maildir-copied"):
        assert f"IMAP, {imap_bench.FILLS[fill]}:" in out
    assert len(re.findall(rf"natsync: \d+\.\d\d s {steps} {load}", out)) == 3
    assert len(re.findall(r"the mirror's first pass over INBOX: select \d+\.\d\d s", out)) == 3
    assert len(re.findall(r"Dovecot alone \(later, a new session\): login \+ SELECT", out)) == 2
    assert "Dovecot alone (first session, on an identical never-indexed copy)" in out
    assert "Dovecot alone (later, a new session on that copy)" in out
    assert re.search(r"doveadm index of another identical copy: \d+\.\d\d s", out)
    # 3. initial sync, both sides, and the mirror alone
    for side in ("natsync store", r"IMAP \(Dovecot maildir\)", "IMAP, the mirror's pass alone"):
        assert re.search(rf"{side}[^\n]*: +\d+ messages/s {load}", out), side
    assert re.search(r"load average \(1 min\) at the end: \d+\.\d\d", out)


def _quick_run(scratch: Path, temp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "imap_bench.py"),
            "--big=300",
            "--pushes=3",
            "--initial=120",
            "--fills=mdbox,maildir-delivered,maildir-copied",
            f"--scratch={scratch}",
        ],
        capture_output=True,
        text=True,
        timeout=QUICK_LIMIT,
        check=False,
        env={**os.environ, "TMPDIR": str(temp)},
    )
