"""`natsync doctor`: from the outside, `natsync doctor URL --user U ...`; inside-out,
`natsync doctor --config natsync.toml [--user U ...]`. Thin: options in, natsync.doctor does
the work, a report out (terminal, --json, --html FILE). Exit status 0 all ok, 1 warnings,
2 failures (3: the doctor itself could not run)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from natsync.errors import NatsyncError

#: Exit status when the doctor could not run at all (bad arguments, unreadable config).
EXIT_USAGE = 3


def _inside_url(config: Path) -> str:
    from natsync.config import load_config

    server = load_config(config)
    if server.public_name:
        return f"https://{server.public_name}"
    host = "localhost" if server.host in ("127.0.0.1", "0.0.0.0", "::", "::1") else server.host  # noqa: S104
    scheme = "https" if server.tls_cert else "http"
    return f"{scheme}://{host}:{server.port}"


@click.command()
@click.argument("url", required=False)
@click.option("--user", default="", help="User name the phone logs in with.")
@click.option("--password", default=None, help="Its password (or --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--email", default="", help="The user's address (Autodiscover, MX).")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Trust this CA (what the phone has installed) instead of the system store.",
)
@click.option("--resolver", default=None, help="The phone's DNS resolver, IP[:PORT].")
@click.option(
    "--authoritative",
    multiple=True,
    help="Ask this server as the zone's authoritative one, IP[:PORT] (repeatable; default: "
    "the zone's NS servers).",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(0, 3540),
    default=None,
    help="Seconds to hold a Ping (0: skip) [default: 960].",
)
@click.option("--quick", is_flag=True, help="Hold the Ping for 60 s instead of 16 minutes.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per step.")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The deployment's natsync.toml: adds the inside-out checks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML report to FILE.",
)
def doctor(
    url: str | None,
    user: str,
    password: str | None,
    password_stdin: bool,
    email: str,
    ca_file: Path | None,
    resolver: str | None,
    authoritative: tuple[str, ...],
    heartbeat: int | None,
    quick: bool,
    timeout: float,
    config: Path | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Say exactly why a phone cannot sync with URL, and what to change."""
    from rich.console import Console

    from natsync.doctor import DEFAULT_HEARTBEAT, QUICK_HEARTBEAT, Options, diagnose
    from natsync.doctor.report import render_html, render_terminal, to_json

    if password_stdin:
        if password is not None:
            raise click.UsageError("give --password or --password-stdin, not both")
        password = sys.stdin.readline().rstrip("\r\n")
    if heartbeat is not None and quick:
        raise click.UsageError("give --heartbeat or --quick, not both")
    try:
        if url is None:
            if config is None:
                raise click.UsageError("give the URL phones use, or --config natsync.toml")
            url = _inside_url(config)
        options = Options(
            url=url,
            user=user,
            password=password or "",
            email=email,
            ca_file=ca_file,
            resolver=resolver,
            authoritative=authoritative,
            heartbeat=heartbeat
            if heartbeat is not None
            else (QUICK_HEARTBEAT if quick else DEFAULT_HEARTBEAT),
            timeout=timeout,
            config=config,
        )
        err = Console(stderr=True)

        def progress(text: str) -> None:
            if not as_json and err.is_terminal:
                err.print(f"[dim]… {text}[/dim]")

        report = asyncio.run(diagnose(options, progress))
    except NatsyncError as exc:
        click.echo(f"natsync doctor: {exc.message}", err=True)
        sys.exit(EXIT_USAGE)
    if html_file is not None:
        html_file.write_text(render_html(report), encoding="utf-8")
    if as_json:
        click.echo(to_json(report))
    else:
        render_terminal(report, Console())
        if html_file is not None:
            click.echo(f"HTML report: {html_file}")
    sys.exit(report.exit_status)
