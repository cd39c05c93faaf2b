"""bench/soak_bench.py itself: its quick mode end to end (a real server, edge, phones, SMTP,
hostile clients and the public-address change in a network namespace of its own), and the
RSS growth figure it judges flatness by."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import soak_bench  # type: ignore[import-not-found]  # noqa: E402  (bench/ is not a package)

#: The quick run takes ~45 s here; setup, settle and teardown limits bound it well below this.
QUICK_LIMIT = 300


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith("nssoak-")}


def test_growth_is_the_fitted_slope_over_the_span() -> None:
    mib = 2**20
    flat = [(t * 60.0, 100 * mib) for t in range(10)]
    assert soak_bench.growth(flat) == (0.0, 0.0)
    # 1 MiB a minute: 60 MiB/h, 9 MiB over the 9 minutes spanned, 9% of the first 100 MiB.
    leaking = [(t * 60.0, 100 * mib + t * mib) for t in range(10)]
    slope, share = soak_bench.growth(leaking)
    assert slope == pytest.approx(60.0)
    assert share == pytest.approx(0.09)
    # Noise around a flat line stays well inside the limit.
    noisy = [(t * 60.0, 100 * mib + (mib // 4 if t % 2 else 0)) for t in range(20)]
    assert abs(soak_bench.growth(noisy)[1]) < soak_bench.RSS_GROWTH_LIMIT / 4


@pytest.mark.root
@pytest.mark.slow
def test_quick_soak_passes_and_prints_what_the_issue_asks() -> None:
    if os.geteuid() != 0:  # CI runs as root: there this never skips
        if os.environ.get("CI"):
            pytest.fail("the soak's address change needs root, and CI runs as root")
        pytest.skip("the soak's address change needs a network namespace (root)")
    before = _namespaces()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak_bench.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=QUICK_LIMIT,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-2000:]
    assert "result: PASS" in out
    assert "5xx: 0  (must be 0)" in out
    accepted = re.search(r"mails accepted \(250\): ([\d,]+)  delivered to a phone: ([\d,]+)  "
                         r"duplicates: (\d+)", out)  # fmt: skip
    assert accepted is not None
    assert accepted.group(1) == accepted.group(2) != "0"
    assert accepted.group(3) == "0"
    # The public address changed; every phone was cut and came back on the new address.
    change = re.search(r"public address change 192\.0\.3\.10 -> 192\.0\.3\.11: (\d+) phone "
                       r"connections cut, (\d+) of (\d+) phones back", out)  # fmt: skip
    assert change is not None
    assert change.group(1) == change.group(2) == change.group(3) == "40"
    assert re.search(
        r"edge SIGHUP: held Pings \d+ -> \d+ 2 s later; phone connections it cut: 0", out
    )
    # Hostile clients got what they should.
    assert re.search(r"trickled head: 408: [1-9]", out)
    assert re.search(r"stalled body: 408: [1-9]", out)
    assert "SMTP flood: 421: 20" in out
    assert re.search(r"wrong password: 429: [1-9]", out)
    # RSS and descriptors at intervals, the fitted growth with its limit, the probe by phase.
    rows = re.findall(r"^\s*\d+\s+[\d.]+ /\s*\d+\s+[\d.]+ /\s*\d+\s+[\d.]+ /\s*\d+$", out, re.M)
    assert len(rows) >= 8
    for name in ("edge", "server"):
        assert re.search(rf"RSS {name}: .* fitted growth [+-][\d.]+% \(limit 2%\)", out)
    for phase in ("setup", "steady", "address change", "after change"):
        assert re.search(rf"^  {phase} +\d+ probes", out, re.M)
    assert _namespaces() == before  # the bench's namespace is gone
