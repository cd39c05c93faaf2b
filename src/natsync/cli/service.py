"""`natsync install-service`: install the systemd unit shipped with natsync (thin: the steps are
:mod:`natsync.service`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from natsync import service
from natsync.errors import NatsyncError


def _this_natsync() -> Path:
    """The natsync executable this command runs from (the unit's ExecStart)."""
    beside = Path(sys.executable).parent / "natsync"
    if beside.exists():
        return beside
    found = shutil.which("natsync")
    if found is None:
        raise click.ClickException("cannot find the natsync executable: give --binary PATH")
    return Path(found).resolve()


@click.command("install-service")
@click.option("--dry-run", is_flag=True, help="Print what would be done, change nothing.")
@click.option("--print-unit", is_flag=True, help="Print the unit file and stop.")
@click.option("--user", default=service.SERVICE_USER, show_default=True, help="The service user.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/") / service.CONFIG_FILE,
    show_default=True,
    help="The deployment file natsync run reads (absolute).",
)
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The natsync executable for ExecStart (default: the one running this command).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("/"),
    help="Install into this directory instead of / (an image being built; tests).",
)
@click.option("--start", is_flag=True, help="Also start the service now (systemctl --now).")
def install_service(
    dry_run: bool,
    print_unit: bool,
    user: str,
    config: Path,
    binary: Path | None,
    root: Path,
    start: bool,
) -> None:
    """Install natsync.service: the user, the unit, /var/lib/natsync, /etc/natsync; enable it."""
    if not config.is_absolute():
        raise click.BadParameter("give an absolute path", param_hint="--config")
    executable = (binary or _this_natsync()).absolute()
    try:
        if print_unit:
            click.echo(service.unit_text(executable, config), nl=False)
            return
        steps = service.plan(
            binary=executable,
            root=root.absolute(),
            user=user,
            config=config,
            systemd_running=service.systemd_running(),
            start=start,
        )
        for step in steps:
            click.echo(("would " if dry_run else "") + step.what)
        if dry_run:
            return
        service.apply(steps, root.absolute())
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc
    if not (root.absolute() / config.relative_to("/")).exists():
        click.echo(
            f"next: write {config} with natsync init, then run natsync install-service again"
        )
    elif not service.systemd_running():
        click.echo(
            "systemd is not running on this machine: start natsync with "
            f"natsync run -c {config} (as {user}) instead"
        )
    elif not start:
        click.echo("start it with: systemctl start natsync; logs: journalctl -u natsync")
