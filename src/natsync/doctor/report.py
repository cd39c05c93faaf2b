"""The doctor's report for people (terminal via rich, a self-contained HTML page) and for
scripts (JSON). Rendering only: every word of a finding comes from the checks.

The HTML page is meant to be sent to someone: one file, inline CSS, no scripts, no external
assets, every string escaped; commands (written `like this` in a finding) shown as code; the
checks that did not run folded into one <details>; the natsync version, command line and host
at the foot.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

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


def render_header(target: str, mode: str, console: Console) -> None:
    console.print(Text.assemble(("natsync doctor ", "bold"), (target, "cyan"), f"  ({mode} view)"))


def render_summary(report: Report, console: Console) -> None:
    if report.stopped:
        console.print(f"[bold]Stopped early:[/bold] {rich_escape(report.stopped)}")
    verdict = {
        Severity.OK: "[green]All checks passed.[/green]",
        Severity.WARN: "[yellow]Works, with warnings.[/yellow]",
        Severity.FAIL: "[bold red]A phone cannot sync: see the failures.[/bold red]",
    }[report.worst]
    console.print(f"{verdict} {_summary(report)}")


def render_terminal(report: Report, console: Console) -> None:
    """The whole report: boxed findings on a terminal; on a pipe or file one line per fact,
    never wrapped (the console should be made with ``soft_wrap=True`` there)."""
    render_header(report.target, report.mode, console)
    for finding in report.findings:
        render_finding(finding, console)
    render_summary(report, console)


def _marked(text: str) -> Text:
    """*text* with its `commands` shown as code."""
    out = Text()
    for i, part in enumerate(text.split("`")):
        out.append(part, style="bold cyan" if i % 2 else "")
    return out


def render_finding(finding: Finding, console: Console) -> None:
    style = _STYLE[finding.severity]
    head = Text.assemble(
        (f"{_MARK[finding.severity]:<4} ", style), (f"[{finding.check}] ", "dim"), finding.title
    )
    if finding.severity == Severity.SKIP:
        console.print(
            Text.assemble(
                (f"{_MARK[finding.severity]:<4} ", style),
                (f"[{finding.check}] ", "dim"),
                (f"{finding.title}: {finding.cause}", "dim"),
            )
        )
        return
    if finding.severity == Severity.OK and not finding.cause:
        console.print(head)
        for line in finding.evidence:
            console.print(Text(f"       {line}", style="dim"))
        return
    if not console.is_terminal:  # piped: plain lines, no box to wrap them into
        console.print(head)
        for line in finding.evidence:
            console.print(Text(f"     • {line}", style="dim"))
        if finding.cause:
            console.print(Text.assemble("     Why: ", finding.cause))
        if finding.fix:
            console.print(Text.assemble("     Fix: ", _marked(finding.fix)))
        return
    body = Text()
    for line in finding.evidence:
        body.append(f"• {line}\n", style="dim")
    if finding.cause:
        body.append("Why: ", style="bold")
        body.append(finding.cause + "\n")
    if finding.fix:
        body.append("Fix: ", style="bold")
        body.append_text(_marked(finding.fix))
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
footer dl{
  display:grid;
  grid-template-columns:max-content 1fr;
  gap:.15rem .75rem;
  margin:0 0 .5rem;
}
footer dt{
  font-weight:700;
}
footer dd{
  margin:0;
  word-break:break-all;
}
code{
  font-family:ui-monospace,Menlo,Consolas,monospace;
  font-size:.88em;
  background:#eef1f5;
  border-radius:.25rem;
  padding:.05rem .3rem;
  word-break:break-all;
}
details.skipped{
  margin:0 0 .75rem;
}
details.skipped summary{
  cursor:pointer;
  color:#475569;
  padding:.4rem 0;
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
    run = [f for f in report.findings if f.severity != Severity.SKIP]
    skipped = [f for f in report.findings if f.severity == Severity.SKIP]
    parts.extend(_finding_html(f) for f in run)
    if skipped:
        parts.append(f'<details class="skipped"><summary>{len(skipped)} check(s) not run</summary>')
        parts.extend(_finding_html(f) for f in skipped)
        parts.append("</details>")
    parts.append(_context_html(report))
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def write_html(report: Report, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")


#: What the footer says about the run, in this order.
_CONTEXT_LABELS = (
    ("natsync", "natsync version"),
    ("command", "command line"),
    ("host", "ran on"),
    ("system", "system"),
)


def _context_html(report: Report) -> str:
    rows = []
    for key, label in _CONTEXT_LABELS:
        value = report.context.get(key, "")
        if value:
            shown = f"<code>{escape(value)}</code>" if key == "command" else escape(value)
            rows.append(f"<dt>{escape(label)}</dt><dd>{shown}</dd>")
    started = f", started {escape(report.started_at)}" if report.started_at else ""
    return (
        f"<footer><dl>{''.join(rows)}</dl>"
        f"<p>Made by natsync doctor in {report.duration:.1f} s{started}. Exit status "
        f"{report.exit_status} (0 all ok, 1 warnings, 2 failures, 3 the doctor could not "
        "run).</p></footer>"
    )


def _code(text: str) -> str:
    """*text* escaped, its `commands` as <code>."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd backtick: show it as typed
        return escape(text)
    return "".join(
        f"<code>{escape(part)}</code>" if i % 2 else escape(part) for i, part in enumerate(parts)
    )


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
            f'<p class="cause"><span class="label">{label}:</span> {_code(finding.cause)}</p>'
        )
    if finding.fix:
        out.append(f'<p class="fix"><span class="label">Fix:</span> {_code(finding.fix)}</p>')
    out.append("</section>")
    return "\n".join(out)
