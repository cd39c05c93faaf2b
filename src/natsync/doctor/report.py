"""The doctor's report for people (terminal via rich, a self-contained HTML page) and for
scripts (JSON). Rendering only: every word of a finding comes from the checks.

The HTML page is meant to be sent to someone: one file, inline CSS, no scripts, no external
assets, every finding shown (nothing folded away), every string escaped.
"""

from __future__ import annotations

import json
from html import escape

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.text import Text

from natsync.doctor.findings import Finding, Report, Severity

_STYLE = {
    Severity.OK: "green",
    Severity.WARN: "yellow",
    Severity.FAIL: "bold red",
    Severity.SKIP: "dim",
}
_MARK = {Severity.OK: "OK", Severity.WARN: "WARN", Severity.FAIL: "FAIL", Severity.SKIP: "SKIP"}


def to_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)


def _summary(report: Report) -> str:
    counts = report.counts()
    return (
        f"{counts['fail']} failure(s), {counts['warn']} warning(s), {counts['ok']} ok, "
        f"{counts['skip']} not checked, in {report.duration:.1f} s"
    )


def render_terminal(report: Report, console: Console) -> None:
    console.print(
        Text.assemble(
            ("natsync doctor ", "bold"), (report.target, "cyan"), f"  ({report.mode} view)"
        )
    )
    for finding in report.findings:
        _finding_terminal(finding, console)
    if report.stopped:
        console.print(f"[bold]Stopped early:[/bold] {rich_escape(report.stopped)}")
    verdict = {
        Severity.OK: "[green]All checks passed.[/green]",
        Severity.WARN: "[yellow]Works, with warnings.[/yellow]",
        Severity.FAIL: "[bold red]A phone cannot sync: see the failures.[/bold red]",
    }[report.worst]
    console.print(f"{verdict} {_summary(report)}")


def _finding_terminal(finding: Finding, console: Console) -> None:
    style = _STYLE[finding.severity]
    if finding.severity == Severity.SKIP:
        console.print(
            Text.assemble(
                (f"{_MARK[finding.severity]:<4} ", style),
                (f"[{finding.check}] ", "dim"),
                (f"{finding.title}: {finding.cause}", "dim"),
            )
        )
        return
    head = Text.assemble(
        (f"{_MARK[finding.severity]:<4} ", style), (f"[{finding.check}] ", "dim"), finding.title
    )
    if finding.severity == Severity.OK and not finding.cause:
        console.print(head)
        for line in finding.evidence:
            console.print(Text(f"       {line}", style="dim"))
        return
    body = Text()
    for line in finding.evidence:
        body.append(f"• {line}\n", style="dim")
    if finding.cause:
        body.append("Why: ", style="bold")
        body.append(finding.cause + "\n")
    if finding.fix:
        body.append("Fix: ", style="bold")
        body.append(finding.fix)
    body.rstrip()
    console.print(Panel(body, title=head, title_align="left", border_style=style))


_CSS = """
body{
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  margin:0;
  background:#f4f5f7;
  color:#1d2330;
}
main{
  max-width:60rem;
  margin:0 auto;
  padding:1.5rem;
}
h1{
  font-size:1.4rem;
  margin:0 0 .25rem;
}
.target{
  font-family:ui-monospace,Menlo,Consolas,monospace;
  word-break:break-all;
}
.summary{
  margin:.75rem 0 1.25rem;
  padding:.75rem 1rem;
  border-radius:.5rem;
  font-weight:600;
}
.summary.ok{
  background:#e3f6e8;
  color:#14532d;
}
.summary.warn{
  background:#fff4d6;
  color:#713f12;
}
.summary.fail{
  background:#fde2e2;
  color:#7f1d1d;
}
.stopped{
  margin:0 0 1rem;
  padding:.6rem 1rem;
  border-left:4px solid #64748b;
  background:#fff;
}
.finding{
  background:#fff;
  border-radius:.5rem;
  margin:0 0 .75rem;
  padding:.75rem 1rem;
  border-left:6px solid #94a3b8;
  box-shadow:0 1px 2px rgba(0,0,0,.06);
}
.finding.ok{
  border-color:#16a34a;
}
.finding.warn{
  border-color:#d97706;
}
.finding.fail{
  border-color:#dc2626;
}
.finding.skip{
  border-color:#cbd5e1;
  color:#475569;
}
.finding h2{
  font-size:1rem;
  margin:0;
  display:flex;
  gap:.5rem;
  align-items:baseline;
  flex-wrap:wrap;
}
.badge{
  font-size:.75rem;
  font-weight:700;
  padding:.1rem .45rem;
  border-radius:.25rem;
  color:#fff;
  background:#94a3b8;
}
.ok .badge{
  background:#16a34a;
}
.warn .badge{
  background:#d97706;
}
.fail .badge{
  background:#dc2626;
}
.check{
  font-size:.8rem;
  color:#64748b;
  font-weight:400;
}
ul.evidence{
  margin:.4rem 0;
  padding-left:1.2rem;
  color:#334155;
  font-size:.9rem;
}
ul.evidence li{
  word-break:break-word;
}
p{
  margin:.35rem 0;
}
.label{
  font-weight:700;
}
footer{
  color:#64748b;
  font-size:.8rem;
  margin-top:1.5rem;
}
"""


def render_html(report: Report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>natsync doctor: {escape(report.target)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>natsync doctor</h1>",
        f'<div class="target">{escape(report.target)} ({escape(report.mode)} view'
        + (f", {escape(report.started_at)}" if report.started_at else "")
        + ")</div>",
        f'<div class="summary {escape(str(report.worst))}">{escape(_verdict(report))} '
        f"{escape(_summary(report))}</div>",
    ]
    if report.stopped:
        parts.append(
            f'<p class="stopped"><span class="label">Stopped early:</span> '
            f"{escape(report.stopped)}</p>"
        )
    for finding in report.findings:
        parts.append(_finding_html(finding))
    parts.append(
        "<footer>Made by natsync doctor. Exit status "
        f"{report.exit_status} (0 all ok, 1 warnings, 2 failures).</footer>"
    )
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _verdict(report: Report) -> str:
    return {
        Severity.OK: "All checks passed.",
        Severity.WARN: "Works, with warnings.",
        Severity.FAIL: "A phone cannot sync: see the failures.",
    }[report.worst]


def _finding_html(finding: Finding) -> str:
    sev = escape(str(finding.severity))
    out = [
        f'<section class="finding {sev}">',
        f'<h2><span class="badge">{escape(_MARK[finding.severity])}</span>'
        f"<span>{escape(finding.title)}</span>"
        f'<span class="check">{escape(str(finding.check))}</span></h2>',
    ]
    if finding.evidence:
        out.append('<ul class="evidence">')
        out.extend(f"<li>{escape(line)}</li>" for line in finding.evidence)
        out.append("</ul>")
    if finding.cause:
        label = "Why" if finding.severity != Severity.SKIP else "Reason"
        out.append(
            f'<p class="cause"><span class="label">{label}:</span> {escape(finding.cause)}</p>'
        )
    if finding.fix:
        out.append(f'<p class="fix"><span class="label">Fix:</span> {escape(finding.fix)}</p>')
    out.append("</section>")
    return "\n".join(out)
