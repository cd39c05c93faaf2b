"""`natsync doctor`: from the outside, `natsync doctor URL --user U ...`; inside-out,
`natsync doctor --config natsync.toml [--user U ...]`. Thin: options in, natsync.doctor does
the work, a report out (terminal, --json, --html FILE). Exit status 0 all ok, 1 warnings,
2 failures, 3 the doctor itself could not run (a missing URL or config file, a bad option)."""

from __future__ import annotations

import asyncio
import platform
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from natsync.deployment import config_option
from natsync.errors import NatsyncError

#: Exit status when the doctor could not run at all (bad arguments, unreadable config): apart
#: from 1 and 2, which are verdicts about the server.
EXIT_USAGE = 3


class DoctorUsageError(click.UsageError):
    """A usage error of the doctor: exit status 3, not click's 2 (2 means "failures")."""

    exit_code = EXIT_USAGE


class DoctorCommand(click.Command):
    """Parsing errors (an unknown option, a bad value) exit 3 as well."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except DoctorUsageError:
            raise
        except click.UsageError as exc:
            raise DoctorUsageError(exc.format_message(), exc.ctx) from None


def _edge_as_run(config: Path | None) -> Any:
    """The edge's settings as `natsync run` gives them to its edge (backends follow [server]
    when [edge] names none), for a deployment file with [server] and [edge]; None otherwise
    (the doctor then reads [edge] alone)."""
    from natsync.doctor.gather import read_edge_table, read_toml_tables

    if config is None or "server" not in read_toml_tables(config) or not read_edge_table(config):
        return None
    from natsync.deployment import load_deployment
    from natsync.run.derive import edge_for

    return edge_for(load_deployment(config))


def _inside_url(config: Path) -> str:
    """The URL an inside-out run checks: the server's public name or its own listener; for a
    file with an [edge] table and no [server] table, the edge's listener (what phones reach)."""
    from natsync.config import load_config
    from natsync.doctor.gather import read_toml_tables

    tables = read_toml_tables(config)
    if "edge" in tables and "server" not in tables:
        from natsync.edge.config import load_edge_config

        edge = load_edge_config(config)
        host, _, port = edge.listen.rpartition(":")
        host = host.strip("[]")
        everywhere = ("127.0.0.1", "0.0.0.0", "::", "::1", "", "*")  # noqa: S104
        host = "localhost" if host in everywhere else host
        return f"https://{host}:{port}" if port != "443" else f"https://{host}"
    server = load_config(config)
    if server.public_name:
        return f"https://{server.public_name}"
    host = "localhost" if server.host in ("127.0.0.1", "0.0.0.0", "::", "::1") else server.host  # noqa: S104
    scheme = "https" if server.tls_cert else "http"
    return f"{scheme}://{host}:{server.port}"


def parse_resolve(text: str) -> tuple[str, str]:
    """``NAME:ADDR`` (or curl's ``NAME:PORT:ADDR``; IPv6 bare or in brackets) -> (name, addr)."""
    import ipaddress

    from natsync.config import port_of

    name, sep, rest = text.partition(":")
    port, sep2, after = rest.partition(":")
    if sep2 and port_of(port) is not None and not after.startswith(":"):
        rest = after
    address = rest.strip("[]")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise DoctorUsageError(
            f"--resolve {text!r}: give NAME:ADDR, e.g. mail.example.org:192.168.1.10"
        ) from None
    if not sep or not name or ":" in name:
        raise DoctorUsageError(f"--resolve {text!r}: give NAME:ADDR")
    return name.lower().rstrip("."), address


def _command_line(argv: list[str]) -> str:
    """The command as typed, with any --password value hidden."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
        elif arg == "--password":
            out.append(arg)
            hide = True
        elif arg.startswith("--password="):
            out.append("--password=***")
        else:
            out.append(arg)
    return shlex.join(["natsync", *out])


def _context() -> dict[str, str]:
    from natsync import __version__

    return {
        "natsync": __version__,
        "command": _command_line(sys.argv[1:]),
        "host": socket.gethostname(),
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
    }


class _Waiting:
    """The status line: what the doctor waits for, for how long so far, and at most."""

    def __init__(self, text: str, seconds: float | None) -> None:
        self.text = text
        self.seconds = seconds
        self.since = time.monotonic()

    def __rich__(self) -> str:
        from rich.markup import escape

        waited = time.monotonic() - self.since
        limit = f" of at most {self.seconds:.0f} s" if self.seconds else ""
        return f"{escape(self.text)}  [dim]{waited:.0f} s{limit}[/dim]"


class TerminalWatch:
    """On a terminal: each finding as soon as it is made, and a status line below them."""

    def __init__(self, console: Any, *, findings: bool = True) -> None:
        from natsync.doctor.report import render_header

        self.console = console
        self.findings = findings
        self.status = console.status("starting")
        self.header = render_header
        self.status.start()

    def step(self, text: str, seconds: float | None = None) -> None:
        self.status.update(_Waiting(text, seconds))

    def found(self, findings: list[Any]) -> None:
        from natsync.doctor.report import render_finding

        if not self.findings:  # they go with the report, to where it is piped
            return
        for finding in findings:
            render_finding(finding, self.console)

    def close(self) -> None:
        self.status.stop()


def _fail(message: str) -> None:
    click.echo(f"natsync doctor: {message}", err=True)
    sys.exit(EXIT_USAGE)


@click.command(cls=DoctorCommand)
@click.argument("url", required=False)
@click.option("--user", default="", help="User name the phone logs in with.")
@click.option("--password", default=None, help="Its password (or --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--email", default="", help="The user's address (Autodiscover, MX).")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
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
    "--resolve",
    "resolve",
    multiple=True,
    metavar="NAME:ADDR",
    help="Connect to ADDR for NAME instead of asking DNS (as curl's --resolve): check the "
    "public name against a LAN address before DNS names it (repeatable).",
)
@click.option(
    "--relay",
    "relay",
    default="",
    metavar="HOST",
    help="The relay's public name or address (docs/relay.md): check that DNS names it and "
    "that the path through it answers TLS (inside-out, [tunnel] tells it).",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(0, 3540),
    default=None,
    help="Seconds to hold a Ping (0: skip) [default: 300; phones ask up to 960 and more].",
)
@click.option("--quick", is_flag=True, help="Hold the Ping for 60 s instead of 5 minutes.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per step.")
@config_option(
    "The deployment's natsync.toml (env NATSYNC_CONFIG): adds the inside-out checks.", "config"
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
    resolve: tuple[str, ...],
    relay: str,
    heartbeat: int | None,
    quick: bool,
    timeout: float,
    config: Path | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Say exactly why a phone cannot sync with URL, and what to change.

    Exit status: 0 all ok, 1 warnings, 2 failures, 3 the doctor could not run."""
    from rich.console import Console

    from natsync.doctor import DEFAULT_HEARTBEAT, QUICK_HEARTBEAT, Options, diagnose
    from natsync.doctor.report import render_summary, render_terminal, to_json, write_html

    if password_stdin:
        if password is not None:
            raise DoctorUsageError("give --password or --password-stdin, not both")
        password = sys.stdin.readline().rstrip("\r\n")
    if heartbeat is not None and quick:
        raise DoctorUsageError("give --heartbeat or --quick, not both")
    for name, path in (("--config", config), ("--ca-file", ca_file)):
        if path is not None and not path.is_file():
            _fail(f"{name} {path}: no such file")
    if url is None and config is None:
        _fail("give the URL phones use, or --config natsync.toml (see natsync doctor --help)")
    forced = tuple(parse_resolve(r) for r in resolve)
    out = Console(soft_wrap=not sys.stdout.isatty())
    watch: TerminalWatch | None = None
    try:
        if url is None:
            assert config is not None
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
            edge=_edge_as_run(config),
            resolve=forced,
            relay=relay,
            context=_context(),
        )
        err = Console(stderr=True)
        if not as_json and out.is_terminal:
            watch = TerminalWatch(out)
            watch.header(options.url, "inside" if config else "outside", out)
        elif err.is_terminal:  # the report is piped: the status line alone, on the terminal
            watch = TerminalWatch(err, findings=False)
        report = asyncio.run(diagnose(options, watch))
    except NatsyncError as exc:
        _fail(exc.message)
    finally:
        if watch is not None:
            watch.close()
    if html_file is not None:
        try:
            write_html(report, html_file)
        except OSError as exc:
            _fail(f"--html {html_file}: {exc.strerror or exc}")
    if as_json:
        click.echo(to_json(report))
    else:
        if watch is not None and watch.findings:
            render_summary(report, out)
        else:
            render_terminal(report, out)
        if html_file is not None:
            click.echo(f"HTML report: {html_file}")
    sys.exit(report.exit_status)
