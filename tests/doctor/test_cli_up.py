"""`natsync doctor` as a user runs it: against `natsync up` (a separate process, stopped by
PID), with --json and --html; the HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsync.doctor.findings import Check, Finding, Report, Severity
from natsync.doctor.report import render_html

NATSYNC = [sys.executable, "-c", "from natsync.cli import main; main()"]
UP_START_TIMEOUT = 30.0
CHROMIUM = shutil.which("chromium")
#: `natsync up --heartbeat-min`: low enough that the all-green run holds a real Ping briefly.
UP_HEARTBEAT_MIN = 2
#: The heartbeat the all-green run holds (seconds): above the minimum, short enough for CI.
GREEN_HEARTBEAT = 3


@pytest.fixture(scope="module")
def natsync_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("up")
    proc = subprocess.Popen(
        [
            *NATSYNC,
            "up",
            "--json",
            "--data-dir",
            str(data),
            "--https-port",
            "0",
            "--smtp-port",
            "0",
            "--edge-port",
            "0",
            "--heartbeat-min",
            str(UP_HEARTBEAT_MIN),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "natsync up exited before announcing itself"
        info: dict[str, Any] = json.loads(line)
        yield info
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def doctor(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NATSYNC, "doctor", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_all_green_against_natsync_up(natsync_up: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = doctor(
        natsync_up["url"],
        "--user",
        natsync_up["user"],
        "--password-stdin",
        "--email",
        natsync_up["email"],
        "--ca-file",
        natsync_up["ca_file"],
        "--heartbeat",
        str(GREEN_HEARTBEAT),
        "--timeout",
        "3",
        "--json",
        "--html",
        str(page),
        stdin=natsync_up["password"] + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["worst"] == "ok"
    assert report["exit_status"] == 0
    assert report["counts"]["fail"] == report["counts"]["warn"] == 0
    by_check = {f["check"] for f in report["findings"] if f["severity"] == "ok"}
    assert {"names", "reach", "tls", "http", "session", "push", "autodiscover"} <= by_check
    push = next(f for f in report["findings"] if f["check"] == "push")
    assert push["title"] == f"A waiting Ping survived its whole heartbeat ({GREEN_HEARTBEAT} s)"
    assert f"asked a Ping with a heartbeat of {GREEN_HEARTBEAT} s" in push["evidence"]
    answered = re.search(r"'no changes' after ([0-9.]+) s", " ".join(push["evidence"]))
    assert answered is not None, push
    held = float(answered[1])
    assert GREEN_HEARTBEAT - 0.5 <= held < GREEN_HEARTBEAT + 2  # really held, not answered early
    assert natsync_up["password"] not in done.stdout
    assert natsync_up["password"] not in page.read_text()


def test_wrong_password_exits_2_and_says_why(natsync_up: dict[str, Any]) -> None:
    done = doctor(
        natsync_up["url"],
        "--user",
        natsync_up["user"],
        "--password",
        "wrong",
        "--ca-file",
        natsync_up["ca_file"],
        "--heartbeat",
        "0",
    )
    assert done.returncode == 2
    assert "Authentication failed for demo" in done.stdout
    assert "natsync user passwd demo" in done.stdout


def test_untrusted_in_terminal_exits_2(natsync_up: dict[str, Any]) -> None:
    done = doctor(natsync_up["url"], "--heartbeat", "0")
    assert done.returncode == 2
    assert "not trusted by the system trust store" in done.stdout
    assert "Stopped early" in done.stdout


def test_exit_status_3_when_the_doctor_cannot_run(tmp_path: Path) -> None:
    """docs/doctor.md: 3 is "the doctor itself could not run", never click's 2 (= failures)."""
    cases = [
        ((), "give the URL phones use, or --config"),
        (("ftp://x",), "is not an https:// URL"),
        (("--config", str(tmp_path / "missing.toml")), "missing.toml: no such file"),
        (("https://x", "--ca-file", str(tmp_path / "no.pem")), "no.pem: no such file"),
        (("https://x", "--no-such-option"), "No such option"),
        (("https://x", "--heartbeat", "-1"), "Invalid value"),
        (("https://x", "--resolve", "x:not-an-address"), "give NAME:ADDR"),
        (("https://x", "--heartbeat", "5", "--quick"), "not both"),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    cases.append((("--config", str(bad)), "bad.toml is not valid TOML"))
    from click.testing import CliRunner

    from natsync.cli import main

    for args, message in cases:
        done = CliRunner().invoke(main, ["doctor", *args])
        assert done.exit_code == 3, (args, done.output)
        assert message in done.stderr, (args, done.stderr)
        assert done.exception is None or isinstance(done.exception, SystemExit)
    # and as a process: no traceback, status 3
    done = doctor()
    assert done.returncode == 3
    assert "Traceback" not in done.stderr


def test_exit_status_0_1_2_are_the_verdict(natsync_up: dict[str, Any], tmp_path: Path) -> None:
    common = ("--ca-file", natsync_up["ca_file"], "--heartbeat", "0", "--timeout", "3")
    ok = doctor(natsync_up["url"], "--user", natsync_up["user"], "--password-stdin", *common,
                stdin=natsync_up["password"] + "\n")  # fmt: skip
    assert ok.returncode == 0, ok.stdout
    # an [edge] that pins nothing and has no CA for its backend: a warning, nothing fails
    config = tmp_path / "home.toml"
    backend = natsync_up["url"].removeprefix("https://").replace("localhost", "127.0.0.1")
    config.write_text(f'[edge]\nbackend = "{backend}"\ninsecure_backend = true\n')
    warned = doctor(natsync_up["url"], "--config", str(config), *common, "--json")
    assert warned.returncode == 1, warned.stdout
    assert json.loads(warned.stdout)["worst"] == "warn"
    failed = doctor(natsync_up["url"], "--user", natsync_up["user"], "--password", "wrong", *common)
    assert failed.returncode == 2


def test_piped_output_is_not_wrapped(natsync_up: dict[str, Any]) -> None:
    done = doctor(natsync_up["url"], "--user", natsync_up["user"], "--password", "wrong",
                  "--ca-file", natsync_up["ca_file"], "--heartbeat", "0")  # fmt: skip
    assert done.returncode == 2
    fix = next(line for line in done.stdout.splitlines() if line.strip().startswith("Fix:"))
    assert len(fix) > 80, "a long fix is one line, not cut at 80 columns"
    assert fix.rstrip().endswith("then enter it on the phone again.")
    assert "╭" not in done.stdout  # no boxes in a pipe


def in_terminal(args: list[str], *, stdout_piped: bool = False) -> tuple[int, str, str]:
    """Run natsync in a real pseudo-terminal (stdout piped instead when asked): exit status,
    what the terminal showed (escape sequences dropped), what went to the pipe."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*NATSYNC, *args],
        stdin=child,
        stdout=subprocess.PIPE if stdout_piped else child,
        stderr=child,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        piped = proc.stdout.read().decode() if proc.stdout is not None else ""
        status = proc.wait(timeout=60)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    return status, screen, piped


def test_terminal_shows_what_it_waits_for_with_the_findings_so_far(
    natsync_up: dict[str, Any],
) -> None:
    """In a real pseudo-terminal: each finding as soon as it is made, and while the Ping is
    held a status line saying so, for how long so far and at most."""
    args = ["doctor", natsync_up["url"], "--user", natsync_up["user"], "--password",
            natsync_up["password"], "--ca-file", natsync_up["ca_file"], "--heartbeat",
            str(GREEN_HEARTBEAT), "--timeout", "3"]  # fmt: skip
    status, screen, _ = in_terminal(args)
    assert status == 0, screen
    waiting = screen.index(f"push: holding a Ping for {GREEN_HEARTBEAT} s")
    assert screen.index("[session]") < waiting, "the findings so far come before the wait"
    assert screen.index("[autodiscover]") < waiting
    assert re.search(r"holding a Ping for 3 s.*?\d+ s of at most 8 s", screen, re.S)
    assert screen.index("[push]") > waiting
    assert "All checks passed." in screen
    # the report piped elsewhere: the terminal still shows the status line, the pipe the report
    status, screen, piped = in_terminal(args, stdout_piped=True)
    assert status == 0
    assert "holding a Ping for 3 s" in screen
    assert "[session]" not in screen
    assert "[session]" in piped
    assert "holding a Ping" not in piped
    assert "All checks passed." in piped


HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def sample_report() -> Report:
    report = Report(target=f"https://mail.example.test/{HOSTILE}", mode="outside")
    report.findings = [
        Finding(Check.NAMES, Severity.OK, "mail.example.test has an IPv4 address", ("A: 1.2.3.4",)),
        Finding(
            Check.TLS,
            Severity.FAIL,
            f"The certificate does not cover {HOSTILE}",
            ("subjectAltName entries: exchange.corp.local", HOSTILE),
            f"The certificate names what the server is, not {HOSTILE}.",
            "Issue a certificate whose subjectAltName lists mail.example.test.",
        ),
        Finding(
            Check.PUSH,
            Severity.WARN,
            "Something cuts idle connections",
            ("cut after 120 s",),
            "NAT idle timeouts cut Direct Push.",
            "Set `max_idle_path_seconds = 96` under [server], or run "
            f"`natsync portmap list --config '{HOSTILE}'`.",
        ),
        Finding(Check.SESSION, Severity.SKIP, "session not checked", (), "stopped early: TLS"),
    ]
    report.stopped = "the phone refuses this certificate"
    report.context = {
        "natsync": "0.1.0",
        "command": f"natsync doctor https://mail.example.test --user {HOSTILE}",
        "host": "laptop-7",
        "system": "Linux 6.1, Python 3.11.7",
    }
    return report


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def visible_text(dom: str) -> str:
    """The DOM's text as a reader sees it: tags dropped (inline code without a gap), entities
    decoded, spaces folded."""
    body = re.sub(r"<style.*?</style>|<title>.*?</title>|</?code>", "", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: make apt-test")
def test_html_report_renders_every_finding_in_chromium(tmp_path: Path) -> None:
    report = sample_report()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    text = page.read_text()
    assert "<script>" not in text  # escaped, never markup
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # no external assets
    done = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<script>" not in dom  # the hostile string never became an element
    seen = visible_text(dom)
    for finding in report.findings:
        for part in (finding.title, *finding.evidence, finding.cause, finding.fix):
            assert " ".join(part.replace("`", "").split()) in seen, part
    assert "Stopped early: the phone refuses this certificate" in seen
    assert "A phone cannot sync" in seen
    # where and how it ran, the commands as code, the checks not run folded away
    for label, value in report.context.items():
        assert value in seen, label
    assert "natsync version 0.1.0" in seen
    assert "ran on laptop-7" in seen
    assert "<code>max_idle_path_seconds = 96</code>" in dom
    assert "<code>natsync portmap list --config '&lt;script&gt;" in dom
    assert re.search(r'<details class="skipped"><summary>1 check\(s\) not run</summary>', dom)
    folded = dom[dom.index('<details class="skipped">') :]
    assert "session not checked" in folded
    assert folded.index("session not checked") < folded.index("</details>")
    assert "session not checked" not in dom[: dom.index('<details class="skipped">')]
    shot = tmp_path / "report.png"
    done = chromium(
        f"--screenshot={shot}", "--window-size=1000,900", page.as_uri(), profile=tmp_path / "p2"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    if os.environ.get("NATSYNC_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["NATSYNC_KEEP_SCREENSHOT"])


def test_inside_url_from_the_config(tmp_path: Path) -> None:
    from natsync.cli.doctor import _inside_url

    config = tmp_path / "natsync.toml"
    config.write_text('[server]\nport = 9443\ntls_cert = "a.pem"\ntls_key = "a.key"\n')
    assert _inside_url(config) == "https://localhost:9443"
    config.write_text('[server]\npublic_name = "mail.example.org"\n')
    assert _inside_url(config) == "https://mail.example.org"
    config.write_text('[server]\nhost = "192.168.1.10"\nport = 8080\n')
    assert _inside_url(config) == "http://192.168.1.10:8080"
