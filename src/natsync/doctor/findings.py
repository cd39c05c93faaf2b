"""What the doctor says: findings and the report that holds them.

A :class:`Finding` is one statement about one link of the picture (DNS, the port, the
certificate ...): how bad it is, what was seen, why that breaks a phone in plain words, and what
to change. Findings are made only by the pure check functions; gathering never makes them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How a finding counts. SKIP is a check that was not run, with the reason; it counts as
    ok for the exit status (nothing was found wrong), but the report shows it apart."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


#: How the checks' commands name the deployment's file; a run with --config FILE shows FILE
#: (:meth:`Finding.for_config`), so every command works as printed.
CONFIG_ARG = "--config natsync.toml"

#: Exit statuses of `natsync doctor`: scripts tell "all good" from "look at this" from "broken".
EXIT_OK = 0
EXIT_WARN = 1
EXIT_FAIL = 2
#: The doctor itself could not run (no URL or config, a missing file, a bad option).
EXIT_CANNOT_RUN = 3


class Check(StrEnum):
    """The check families, in the order a phone meets them."""

    NAMES = "names"
    REACH = "reach"
    #: The relay path hop by hop (inside-out runs with a [tunnel] table).
    RELAY = "relay"
    #: The IPv6 path on its own, and which phones can reach the server.
    IPV6 = "ipv6"
    TLS = "tls"
    HTTP = "http"
    SESSION = "session"
    PUSH = "push"
    AUTODISCOVER = "autodiscover"
    INSIDE = "inside"


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    severity: Severity
    #: One line: what this finding is about ("Certificate names", "Port 443 at 192.0.2.7").
    title: str
    #: What was seen, each item a plain fact.
    evidence: tuple[str, ...] = ()
    #: Why it matters, in the article's terms ("" for an ok finding that needs no explaining).
    cause: str = ""
    #: What to change: a natsync command or setting ("" when nothing needs changing).
    fix: str = ""
    #: Figures and advised settings for scripts and the lab (``--json``): e.g. the measured
    #: idle cut and ``{"server.max_idle_path_seconds": 7}``. Empty for most findings.
    data: Mapping[str, Any] = field(default_factory=dict)

    def for_config(self, config: str) -> Finding:
        """This finding with its commands naming the user's config file instead of
        natsync.toml (quoted for the shell)."""
        given = f"--config {shlex.quote(config)}"
        if given == CONFIG_ARG:
            return self
        return replace(
            self,
            cause=self.cause.replace(CONFIG_ARG, given),
            fix=self.fix.replace(CONFIG_ARG, given),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "check": str(self.check),
            "severity": str(self.severity),
            "title": self.title,
            "evidence": list(self.evidence),
            "cause": self.cause,
            "fix": self.fix,
            "data": dict(self.data),
        }


def ok(check: Check, title: str, *evidence: str) -> Finding:
    return Finding(check, Severity.OK, title, tuple(evidence))


def skip(check: Check, title: str, reason: str) -> Finding:
    return Finding(check, Severity.SKIP, title, (), cause=reason)


@dataclass(slots=True)
class Report:
    """Everything one doctor run found, in order."""

    target: str
    mode: str  # "outside" or "inside"
    findings: list[Finding] = field(default_factory=list)
    #: Why the run stopped before the last check ("" when it ran to the end).
    stopped: str = ""
    started_at: str = ""
    duration: float = 0.0
    #: Where it ran and how: natsync version, command line, host (the HTML page shows them).
    context: dict[str, str] = field(default_factory=dict)
    #: The config file the user gave (``--config``): the commands in findings name it.
    config: str = ""
    #: Called with each batch of findings as it is added (a terminal shows them at once).
    on_add: Callable[[list[Finding]], None] | None = field(default=None, repr=False)

    def add(self, findings: list[Finding]) -> list[Finding]:
        if self.config:
            findings = [f.for_config(self.config) for f in findings]
        self.findings.extend(findings)
        if self.on_add is not None and findings:
            self.on_add(findings)
        return findings

    @property
    def worst(self) -> Severity:
        severities = {f.severity for f in self.findings}
        if Severity.FAIL in severities:
            return Severity.FAIL
        if Severity.WARN in severities:
            return Severity.WARN
        return Severity.OK

    @property
    def exit_status(self) -> int:
        return {Severity.FAIL: EXIT_FAIL, Severity.WARN: EXIT_WARN}.get(self.worst, EXIT_OK)

    def counts(self) -> dict[str, int]:
        out = {str(s): 0 for s in Severity}
        for finding in self.findings:
            out[str(finding.severity)] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "started_at": self.started_at,
            "duration": round(self.duration, 3),
            "worst": str(self.worst),
            "exit_status": self.exit_status,
            "counts": self.counts(),
            "stopped": self.stopped,
            "context": dict(self.context),
            "findings": [f.to_json() for f in self.findings],
        }


def blocking(findings: list[Finding]) -> bool:
    """Whether any of *findings* is a failure (later checks that depend on it are meaningless)."""
    return any(f.severity == Severity.FAIL for f in findings)
