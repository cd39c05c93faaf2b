"""`natsync lab`: the article's network in network namespaces (root only).

natsync lab up [--tag T]          build a run and leave it up (BIND, STUN, server, phone)
natsync lab status [--json]       the runs on this machine, their namespaces and processes
natsync lab down [TAG | --all]    remove a run: processes, namespaces, veths, files
natsync lab scenario NAME | all   build a run, show each failure and its fix, take it down
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import click

from natsync.errors import NatsyncError


def _root() -> None:
    from natsync.lab.runner import require_root

    try:
        require_root()
    except NatsyncError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def lab() -> None:
    """The article's network rebuilt in Linux network namespaces (needs root)."""


def _build(tag: str | None, owner_pid: int | None) -> Any:
    import secrets

    from natsync.lab.runner import STATE_ROOT, Lab
    from natsync.lab.world import World

    tag = tag or secrets.token_hex(2)
    run = Lab(STATE_ROOT / tag / "files", tag=tag, owner_pid=owner_pid)
    world = World(run)
    try:
        run.build()
        world.start()
    except BaseException:
        run.close()
        raise
    return world


@lab.command()
@click.option("--tag", help="Run tag (2-6 lowercase letters/digits; default: random).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def up(tag: str | None, as_json: bool) -> None:
    """Build a run and leave it up until `natsync lab down TAG`."""
    _root()
    try:
        world = _build(tag, owner_pid=0)
    except (NatsyncError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    run = world.lab
    info = {"tag": run.tag, "namespaces": list(run.names.namespaces), "directory": str(run.dir)}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"lab {run.tag} is up; files in {run.dir}")
    for ns in run.names.namespaces:
        click.echo(f"  {ns}")
    click.echo(f"  enter one with: ip netns exec {run.phone} bash")
    click.echo(f"  take it down with: natsync lab down {run.tag}")


@lab.command()
@click.argument("tag", required=False)
@click.option("--all", "everything", is_flag=True, help="Every run on this machine.")
def down(tag: str | None, everything: bool) -> None:
    """Remove a run: its processes, namespaces (and veths), phone files and state."""
    _root()
    from natsync.lab.runner import STATE_ROOT, RunState, lab_namespaces
    from natsync.lab.runner import down as take_down

    known = set(lab_namespaces())
    if STATE_ROOT.is_dir():
        known |= {p.name for p in STATE_ROOT.iterdir() if RunState.load(p.name) is not None}
    if everything:
        tags = sorted(known)
    elif tag:
        tags = [tag]
    elif len(known) == 1:
        tags = sorted(known)
    elif not known:
        click.echo("no lab run on this machine")
        return
    else:
        raise click.UsageError(f"several runs: name one of {', '.join(sorted(known))} or --all")
    for t in tags:
        try:
            removed = take_down(t)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"lab {t}: removed {', '.join(removed) or 'nothing (already gone)'}")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(as_json: bool) -> None:
    """The runs on this machine: namespaces, processes, WAN address, owner."""
    _root()
    from natsync.lab.runner import list_runs, namespace_pids

    runs: list[dict[str, Any]] = []
    for tag, state, namespaces in list_runs():
        runs.append(
            {
                "tag": tag,
                "wan_address": state.wan_address if state else "",
                "owner_pid": state.owner_pid if state else None,
                "directory": state.directory if state else "",
                "namespaces": {ns: len(namespace_pids(ns)) for ns in namespaces},
            }
        )
    if as_json:
        click.echo(json.dumps(runs))
        return
    if not runs:
        click.echo("no lab run on this machine")
    for r in runs:
        owner = "left up" if r["owner_pid"] == 0 else f"owned by PID {r['owner_pid']}"
        click.echo(f"lab {r['tag']} ({owner}), WAN address {r['wan_address'] or '?'}")
        for ns, count in r["namespaces"].items():
            click.echo(f"  {ns}: {count} processes")


@lab.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def scenario(name: str, as_json: bool) -> None:
    """Run scenario NAME (or `all`): the failure first, then the fix working."""
    _root()
    from rich.console import Console

    from natsync.lab.narrate import Narration, Step
    from natsync.lab.scenarios import registry

    scenarios = registry()
    if name != "all" and name not in scenarios:
        raise click.UsageError(f"no scenario {name!r}; choose from: all, {', '.join(scenarios)}")
    chosen = list(scenarios) if name == "all" else [name]
    console = Console(stderr=as_json, highlight=False)

    def show(step: Step) -> None:
        mark = "[green]✓[/]" if step.passed else "[red]✗[/]"
        kind = "works" if step.seen_ok else "fails"
        console.print(f"  {mark} {step.title} [dim]({kind})[/]")
        if step.detail:
            console.print(f"      [dim]{step.detail[:400]}[/]")

    def note(text: str) -> None:
        console.print(f"  [cyan]·[/] {text}")

    results: list[Narration] = []
    started = time.monotonic()
    with console.status("building the lab (namespaces, router, BIND, STUN, server, phone)"):
        try:
            world = _build(None, owner_pid=None)
        except NatsyncError as exc:
            raise click.ClickException(exc.message) from exc
    try:
        for index, scenario_name in enumerate(chosen):
            doc, run = scenarios[scenario_name]
            console.rule(f"[bold]{scenario_name}[/]")
            console.print(doc.strip(), style="italic")
            narr = Narration(scenario_name, on_step=show, on_note=note)
            t0 = time.monotonic()
            try:
                run(world, narr)
            except NatsyncError as exc:
                narr.expect(f"the scenario ran to the end: {exc.message}", expect_ok=True,
                            seen_ok=False)  # fmt: skip
            except (OSError, subprocess.SubprocessError) as exc:  # a tool hung or went missing
                narr.expect(f"the scenario ran to the end: {type(exc).__name__}: {exc}",
                            expect_ok=True, seen_ok=False)  # fmt: skip
            verdict = "[green]PASS[/]" if narr.passed else "[red]FAIL[/]"
            console.print(f"{verdict} {scenario_name} in {time.monotonic() - t0:.1f} s")
            results.append(narr)
            if index + 1 < len(chosen):
                world.reset()
    finally:
        world.lab.close()
    console.rule()
    passed = sum(r.passed for r in results)
    console.print(
        f"{passed}/{len(results)} scenarios passed in {time.monotonic() - started:.1f} s; "
        "the lab is down again"
    )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results]))
    if passed != len(results):
        raise SystemExit(1)
