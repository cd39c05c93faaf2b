"""`natsync run -c FILE`: the whole deployment from one file under one supervisor.

The same checks as `natsync check` run first: a problem is printed with its fix and nothing
starts. Then the supervisor (natsync.run.supervisor) starts every part the file has a table
for, restarts a part that dies, reloads the file on SIGHUP and stops everything on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from natsync.deployment import Deployment, config_option, resolve_config_path
from natsync.errors import ConfigError, NatsyncError
from natsync.logs import log_options, setup_logging


def run_deployment(
    path: Path,
    deployment: Deployment,
    *,
    log_format: str | None,
    log_level: str | None,
    announce: Callable[[dict[str, Any]], None] | None = None,
    self_check_ca: Path | None = None,
) -> None:
    """Run the supervisor until a signal (what `natsync run` and `natsync up` share)."""
    from natsync.run.supervisor import Supervisor
    from natsync.server.app import loop_factory

    fmt = log_format or deployment.run.log_format
    level = log_level or deployment.run.log_level
    setup_logging(fmt, level)
    supervisor = Supervisor(
        path,
        deployment,
        log_format=fmt,
        log_level=level,
        announce=announce,
        self_check_ca=self_check_ca,
    )
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=loop_factory()) as runner,
        ):
            runner.run(supervisor.run())
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def checked(config_path: Path | None, prefix: str) -> tuple[Path, Deployment]:
    """The file and its deployment after `natsync check`'s checks; exit 1 on a problem."""
    from natsync.cli.check import report_problems
    from natsync.run.checks import check_file

    try:
        path = resolve_config_path(config_path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    deployment, problems = check_file(path)
    if report_problems(problems, prefix) or deployment is None:
        click.echo(f"{prefix}: nothing started ({path}); `natsync check -c {path}`", err=True)
        sys.exit(1)
    return path, deployment


@click.command("run")
@config_option()
@log_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line once every part serves.")
def run(
    config_path: Path | None, log_format: str | None, log_level: str | None, as_json: bool
) -> None:
    """Run the whole deployment of the file: server, edge, DNS, router mapping, certificates."""
    path, deployment = checked(config_path, "natsync run")

    def announce(info: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(info, separators=(",", ":")))
            sys.stdout.flush()

    # The self-check trusts what phones trust: natsync's CA for a private-CA certificate,
    # else the system's roots (an ACME certificate).
    ca = deployment.server.data_dir / "ca" / "ca.pem"
    private = deployment.cert is None or deployment.cert.mode == "private-ca"
    run_deployment(
        path,
        deployment,
        log_format=log_format,
        log_level=log_level,
        announce=announce,
        self_check_ca=ca if private and ca.exists() else None,
    )
