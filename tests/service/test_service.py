"""natsync.service: the shipped unit passes systemd's own checks (systemd-analyze verify and
its offline security audit) and install-service sets up a real (scratch) root: the user made by
useradd, the unit, the directories with their owners and modes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync import service
from natsync.cli import main

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing: apt-get install systemd (make test installs it)",
)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="chown to the service user needs root (CI runs as root)"
)
#: The natsync executable of this environment: systemd-analyze checks ExecStart exists.
NATSYNC = Path(sys.executable).parent / "natsync"
#: The highest exposure accepted from `systemd-analyze security` (0 safe .. 10 unsafe; below 2
#: is the "OK" band). The shipped unit scores 1.5.
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def rendered(tmp_path: Path) -> Path:
    unit = tmp_path / service.UNIT_NAME
    unit.write_text(service.unit_text(NATSYNC, Path("/etc/natsync/natsync.toml")))
    return unit


def test_the_unit_runs_natsync_run_unprivileged_with_its_directories() -> None:
    found = directives(service.shipped_unit())
    assert found["ExecStart"] == ["/opt/natsync/bin/natsync run -c /etc/natsync/natsync.toml"]
    assert found["User"] == ["natsync"]
    assert found["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert found["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert found["StateDirectory"] == ["natsync"]
    assert found["ConfigurationDirectory"] == ["natsync"]
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert found[key] in (["strict"], ["yes"]), key
    assert found["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


@needs_systemd_analyze
def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(rendered(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # unknown keys are only warned about: none allowed


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelled key and a missing binary are both reported."""
    unit = rendered(tmp_path)
    unit.write_text(
        unit.read_text()
        .replace("PrivateTmp=", "PrivateTmpp=")
        .replace(str(NATSYNC), "/nonexistent/natsync")
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Unknown key 'PrivateTmpp'" in done.stderr
    assert "/nonexistent/natsync is not executable" in done.stderr


@needs_systemd_analyze
def test_the_offline_security_audit_rates_the_unit_ok(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(rendered(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for natsync\.service: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE


def scratch_root(tmp_path: Path) -> Path:
    """A root with this machine's account files (useradd --prefix edits these copies)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    return root


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = CliRunner().invoke(
        main, ["install-service", "--dry-run", "--root", str(root), "--binary", str(NATSYNC)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "would create the system user natsync (no login, home /var/lib/natsync)"
    assert any(
        line.startswith(f"would write {root}/etc/systemd/system/natsync.service") for line in lines
    )
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


@needs_root
def test_install_service_sets_up_user_unit_and_directories(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    args = ["install-service", "--root", str(root), "--binary", str(NATSYNC)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "natsync init" in first.output  # no config file yet: says what comes next
    entry = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("natsync:")
    )
    assert entry[5:] == ["/var/lib/natsync", "/usr/sbin/nologin"]
    assert "natsync:" not in Path("/etc/passwd").read_text()  # the machine's own is untouched
    uid = int(entry[2])
    unit = (root / "etc/systemd/system/natsync.service").read_text()
    assert f"ExecStart={NATSYNC} run -c /etc/natsync/natsync.toml" in unit
    state = (root / "var/lib/natsync").stat()
    assert (state.st_uid, state.st_mode & 0o777) == (uid, 0o700)
    conf_dir = (root / "etc/natsync").stat()
    assert (conf_dir.st_uid, conf_dir.st_mode & 0o777) == (0, 0o750)
    # Again, now with the deployment file (as after natsync init): no second user, the file
    # becomes readable by the service's group only.
    (root / "etc/natsync/natsync.toml").write_text("[server]\n")
    (root / "etc/natsync/ddns.key").write_text("secret")  # named by the file: readable too
    (root / "etc/natsync/ddns.key").chmod(0o600)
    # natsync init, run as root, leaves root's files in the state directory (CA, certificates)
    (root / "var/lib/natsync/ca").mkdir()
    (root / "var/lib/natsync/ca/ca.key").write_text("key")
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "create the system user" not in second.output
    for inner in ("ca", "ca/ca.key"):
        assert (root / "var/lib/natsync" / inner).stat().st_uid == uid
    conf = (root / "etc/natsync/natsync.toml").stat()
    assert (conf.st_uid, conf.st_mode & 0o777) == (0, 0o640)
    assert conf.st_gid == conf_dir.st_gid != 0
    key = (root / "etc/natsync/ddns.key").stat()
    assert (key.st_mode & 0o777, key.st_gid) == (0o640, conf.st_gid)


def test_print_unit_and_relative_config_refused(tmp_path: Path) -> None:
    printed = CliRunner().invoke(
        main, ["install-service", "--print-unit", "--binary", str(NATSYNC)]
    )
    assert printed.exit_code == 0
    assert f"ExecStart={NATSYNC} run -c /etc/natsync/natsync.toml" in printed.output
    relative = CliRunner().invoke(main, ["install-service", "--config", "natsync.toml"])
    assert relative.exit_code == 2
    assert "absolute" in relative.output
