"""`natsync check -c FILE`: validate a deployment without starting it (like ``nginx -t``).

Prints every problem with its fix and exits 1, or says the file is ready and exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from natsync.deployment import config_option, resolve_config_path
from natsync.errors import ConfigError


def report_problems(problems: list, prefix: str) -> bool:  # type: ignore[type-arg]
    """Print each problem on stderr (one line, then its fix); True when one is fatal."""
    for problem in problems:
        kind = "error" if problem.fatal else "notice"
        click.echo(f"{prefix}: {kind}: {problem.where}: {problem.what}", err=True)
        click.echo(f"{' ' * len(prefix)}  fix: {problem.fix}", err=True)
    return any(p.fatal for p in problems)


@click.command("check")
@config_option()
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def check(config_path: Path | None, as_json: bool) -> None:
    """Check a deployment file: types, names, files, certificates, ports, store (exit 0/1)."""
    from natsync.run.checks import check_file
    from natsync.run.supervisor import part_counts

    try:
        path = resolve_config_path(config_path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    deployment, problems = check_file(path)
    fatal = any(p.fatal for p in problems)
    if as_json:
        doc = {
            "file": str(path),
            "ok": not fatal,
            "problems": [
                {"where": p.where, "what": p.what, "fix": p.fix, "fatal": p.fatal} for p in problems
            ],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        report_problems(problems, "natsync check")
        if not fatal and deployment is not None:
            parts = ", ".join(f"{k} x{n}" for k, n in part_counts(deployment).items())
            click.echo(f"natsync check: {path} is ready to run ({parts})")
    if fatal:
        if not as_json:
            click.echo(
                f"natsync check: {path}: {sum(p.fatal for p in problems)} problem(s)", err=True
            )
        sys.exit(1)
