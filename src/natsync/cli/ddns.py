"""`natsync ddns run|update|status` and `natsync portmap add|list|remove|hold`.

Thin: load the ``[ddns]`` / ``[portmap]`` settings, call natsync.ddns / natsync.portmap, render.
``--json`` prints one JSON document for scripts; otherwise plain lines for people.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from natsync.errors import NatsyncError

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NATSYNC_CONFIG",
    help="TOML file with [ddns] / [portmap] tables (env NATSYNC_CONFIG).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_provider_option = click.option(
    "--provider",
    type=click.Choice(["rfc2136", "dyndns2", "duckdns", "cloudflare", "desec", "command"]),
    default=None,
    help="Updater to use instead of ddns.provider (its [ddns.<provider>] table must exist).",
)


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        from natsync.logs import setup_logging

        # The one format of every part (NATSYNC_LOG_FORMAT / NATSYNC_LOG_LEVEL choose).
        setup_logging(
            os.environ.get("NATSYNC_LOG_FORMAT", "text"),
            os.environ.get("NATSYNC_LOG_LEVEL", "info"),
        )


def _fail(exc: NatsyncError) -> click.ClickException:
    return click.ClickException(exc.message)


@click.group()
def ddns() -> None:
    """Keep DNS names on the public address (RFC 2136, dyndns2, Duck DNS, Cloudflare, deSEC or
    a command of yours)."""


def _verdict_json(verdict: Any) -> dict[str, Any]:
    return {
        "family": verdict.family,
        "verdict": str(verdict.kind),
        "address": str(verdict.address) if verdict.address else None,
        "summary": verdict.summary,
        "evidence": list(verdict.evidence),
        "port_forwarding_possible": verdict.port_forwarding_possible,
    }


@ddns.command()
@_config_option
@_json_option
@_provider_option
def update(config_path: Path | None, as_json: bool, provider: str | None) -> None:
    """Look at the public address once and publish it; exit 1 if an update failed."""
    from natsync.ddns.history import History
    from natsync.ddns.runner import DdnsRunner
    from natsync.ddns.settings import load_ddns

    try:
        settings = load_ddns(config_path)
        with History(settings.history_path) as history:
            report = DdnsRunner(settings, history, provider=provider).update_once()
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "verdicts": [_verdict_json(v) for v in report.verdicts],
                    "results": [_result_json(r) for r in report.results],
                },
                indent=2,
            )
        )
    else:
        for verdict in report.verdicts:
            click.echo(f"IPv{verdict.family}: {verdict.summary}")
            for line in verdict.evidence:
                click.echo(f"  - {line}")
        for r in report.results:
            text = f"{r.name} {r.rdtype}: {r.result}"
            if r.result == "updated":
                text += f" {r.old or '(none)'} -> {r.new} (TTL {r.ttl})"
            elif r.result == "unchanged":
                text += f" ({r.new})"
            if r.detail:
                text += f": {r.detail}"
            click.echo(text)
    if not report.ok:
        raise SystemExit(1)


def _result_json(r: Any) -> dict[str, Any]:
    return {
        "name": r.name,
        "type": r.rdtype,
        "result": r.result,
        "old": r.old,
        "new": r.new,
        "detail": r.detail,
        "old_ttl": r.old_ttl,
        "ttl": r.ttl,
    }


@ddns.command()
@_config_option
@_provider_option
@click.option("--interval", type=float, default=None, help="Seconds between checks.")
def run(config_path: Path | None, provider: str | None, interval: float | None) -> None:
    """Follow the public address: check every interval, publish changes, until stopped."""
    from dataclasses import replace

    from natsync.ddns.history import History
    from natsync.ddns.runner import DdnsRunner
    from natsync.ddns.settings import load_ddns

    _setup_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        settings = load_ddns(config_path)
        if interval is not None:
            settings = replace(settings, interval=interval)
        with History(settings.history_path) as history:
            runner = DdnsRunner(settings, history, provider=provider)
            logging.getLogger("natsync.ddns").info(
                "natsync ddns: checking every %.3g s through %s; names: %s",
                settings.interval,
                runner.updater.kind,
                ", ".join(settings.names),
            )
            runner.run(stop.is_set, wait=stop.wait)
    except NatsyncError as exc:
        raise _fail(exc) from exc


def _collect_status(settings: Any, probe: bool, provider: str | None) -> dict[str, Any]:
    from natsync.ddns.agreement import judge
    from natsync.ddns.errors import DnsUpdateError
    from natsync.ddns.history import History
    from natsync.ddns.providers import make_updater
    from natsync.ddns.runner import RDTYPE
    from natsync.ddns.sources import gather

    updater = make_updater(settings, provider)
    verdicts: dict[int, dict[str, Any]] = {}
    with History(settings.history_path) as history:
        if probe:
            observations = gather(settings)
            for family in settings.families:
                verdicts[family] = _verdict_json(judge(observations, family))
                verdicts[family]["checked"] = _when(time.time())
        else:
            for family in settings.families:
                check = history.last_check(family)
                verdicts[family] = {
                    "family": family,
                    "verdict": check.kind if check else "unknown",
                    "address": (check.address or None) if check else None,
                    "summary": check.summary if check else "not checked yet",
                    "evidence": list(check.evidence) if check else [],
                    "checked": _when(check.at if check else None),
                }
        names: list[dict[str, Any]] = []
        for family in settings.families:
            rdtype = RDTYPE[family]
            current = verdicts[family]["address"] or ""
            for name in settings.names:
                try:
                    served = updater.current(name, rdtype)
                    published, ttl, published_error = sorted(served.values), served.ttl, ""
                except DnsUpdateError as exc:
                    published, ttl, published_error = [], None, exc.message
                change = history.last_change(name, rdtype)
                last = history.last_update(name, rdtype)
                names.append(
                    {
                        "name": name,
                        "type": rdtype,
                        "published": published,
                        "ttl": ttl,
                        "published_error": published_error,
                        "current": current,
                        "in_sync": bool(current) and published == [current],
                        "last_update": _when(change.at if change else None),
                        "last_result": change.result if change else "none",
                        "last_detail": change.detail if change else "",
                        "last_checked": _when(last.at if last else None),
                        "last_check_result": last.result if last else "none",
                    }
                )
        blocks = [
            {
                "provider": b.provider,
                "since": _when(b.at),
                "until": _when(b.until) if b.until is not None else "the configuration changes",
                "reason": b.reason,
                "current": b.fingerprint == updater.fingerprint(),
            }
            for b in history.blocks()
            if b.active(time.time())
        ]
    mx = _mx_status(settings, updater)
    return {
        "provider": updater.kind,
        "verdicts": list(verdicts.values()),
        "names": names,
        "blocks": blocks,
        "mx": mx,
    }


def _mx_status(settings: Any, updater: Any) -> dict[str, Any] | None:
    if not settings.mx_domain:
        return None
    from natsync.ddns.errors import DnsUpdateError
    from natsync.ddns.providers import authoritative

    # The MX record as the zone serves it: at the RFC 2136 primary, else at the authoritative
    # servers (an API's view of MX records differs by provider).
    try:
        served = (
            updater.current(settings.mx_domain, "MX")
            if updater.kind == "rfc2136"
            else authoritative(settings).read(settings.mx_domain, "MX")
        )
        targets = sorted(v.split()[-1].rstrip(".").lower() for v in served.values)
    except DnsUpdateError as exc:
        return {
            "domain": settings.mx_domain,
            "targets": [],
            "followed": False,
            "error": exc.message,
        }
    ours = {n.rstrip(".").lower() for n in settings.names}
    return {
        "domain": settings.mx_domain,
        "targets": targets,
        "followed": bool(targets) and all(t in ours for t in targets),
        "error": "",
    }


@ddns.command()
@_config_option
@_json_option
@click.option(
    "--no-probe",
    is_flag=True,
    help="Show the last recorded check instead of asking the sources now.",
)
@_provider_option
def status(config_path: Path | None, as_json: bool, no_probe: bool, provider: str | None) -> None:
    """Each name: published and current address, last update and its result, and the verdict."""
    from natsync.ddns.settings import load_ddns

    try:
        settings = load_ddns(config_path)
        state = _collect_status(settings, probe=not no_probe, provider=provider)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    for v in state["verdicts"]:
        click.echo(f"IPv{v['family']}: {v['summary']} (checked {v['checked']})")
        for line in v["evidence"]:
            click.echo(f"  - {line}")
    click.echo(f"provider: {state['provider']}")
    for b in state["blocks"]:
        which = "" if b["current"] else " (an earlier configuration)"
        click.echo(f"{b['provider']}{which}: STOPPED until {b['until']}: {b['reason']}")
    for n in state["names"]:
        published = ", ".join(n["published"]) or n["published_error"] or "(none)"
        if n["ttl"] is not None:
            published += f" (TTL {n['ttl']} s)"
        mark = "ok" if n["in_sync"] else "OUT OF DATE" if n["current"] else "unknown"
        click.echo(
            f"{n['name']} {n['type']}: published {published}; current {n['current'] or '?'} "
            f"[{mark}]; last update {n['last_update']}: {n['last_result']}"
            + (f" ({n['last_detail']})" if n["last_detail"] else "")
        )
    mx = state["mx"]
    if mx:
        if mx["error"]:
            click.echo(f"MX of {mx['domain']}: cannot read ({mx['error']})")
        elif mx["followed"]:
            click.echo(f"MX of {mx['domain']}: {', '.join(mx['targets'])} (kept up to date)")
        else:
            click.echo(
                f"MX of {mx['domain']}: {', '.join(mx['targets']) or '(none)'} is NOT one of the "
                "names natsync updates: mail will go to an address nobody keeps current"
            )


@ddns.command("txt")
@_config_option
@_provider_option
@click.option("--remove", is_flag=True, help="Remove the value instead of adding it.")
@click.argument("owner")
@click.argument("value")
def txt(
    config_path: Path | None, provider: str | None, remove: bool, owner: str, value: str
) -> None:
    """Add (or --remove) the TXT VALUE at OWNER as DNS-01 does; add returns once it is served."""
    from natsync.ddns.providers import txt_publisher
    from natsync.ddns.settings import load_ddns

    try:
        publisher = txt_publisher(load_ddns(config_path), provider)
        if remove:
            publisher.remove_txt(owner, value)
        else:
            publisher.add_txt(owner, value)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    click.echo(f"TXT {owner}: {'removed' if remove else 'served'} {value}")


@click.group()
def portmap() -> None:
    """Ask the router to forward ports to this host (UPnP IGD, NAT-PMP, PCP), or to open its
    IPv6 firewall for them (--method upnp6 / pcp6)."""


def _backend(config_path: Path | None, method: str | None) -> tuple[Any, Any]:
    from natsync.ddns.settings import load_portmap
    from natsync.portmap.manager import open_backend

    settings = load_portmap(config_path)
    chosen = method or settings.method
    return settings, open_backend(chosen, settings.router or None, settings.upnp_location or None)


_method_option = click.option(
    "--method",
    type=click.Choice(["auto", "upnp", "pcp", "natpmp", "upnp6", "pcp6"]),
    default=None,
    help="Router protocol (upnp6 / pcp6: open this host's IPv6 port in the router's firewall).",
)


@portmap.command("add")
@_config_option
@_method_option
@click.option("--lifetime", type=int, default=None, help="Seconds (0: until removed).")
@click.option(
    "--internal-client",
    default=None,
    help="LAN address to forward to (UPnP only; default: this host).",
)
@click.argument("spec")
def add_mapping(
    config_path: Path | None,
    method: str | None,
    lifetime: int | None,
    internal_client: str | None,
    spec: str,
) -> None:
    """Map SPEC = EXTERNAL[:INTERNAL][/tcp|udp], e.g. 443:8443/tcp."""
    from natsync.portmap.manager import MappingSpec, PortMapper, UpnpBackend

    try:
        settings, backend = _backend(config_path, method)
        if internal_client:
            if not isinstance(backend, UpnpBackend):
                raise click.UsageError("--internal-client needs --method upnp")
            backend.internal_client = internal_client
        mapper = PortMapper(backend, settings.lifetime if lifetime is None else lifetime)
        (result,) = mapper.ensure([MappingSpec.parse(spec)], time.time())
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if result.action == "failed":
        raise click.ClickException(f"{result.spec} via {backend.name}: {result.detail}")
    click.echo(
        f"{result.spec} via {backend.name}: {result.action}, external port {result.external_port}"
    )


@portmap.command("remove")
@_config_option
@_method_option
@click.argument("spec")
def remove_mapping(config_path: Path | None, method: str | None, spec: str) -> None:
    """Remove the mapping SPEC."""
    from natsync.portmap.manager import MappingSpec

    try:
        _, backend = _backend(config_path, method)
        parsed = MappingSpec.parse(spec)
        backend.unmap(parsed)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    click.echo(f"{parsed} via {backend.name}: removed")


@portmap.command("list")
@_config_option
@_json_option
def list_mappings(config_path: Path | None, as_json: bool) -> None:
    """The router's port mappings (UPnP only: NAT-PMP cannot list)."""
    from natsync.ddns.settings import load_portmap
    from natsync.portmap.upnp import IgdClient

    try:
        settings = load_portmap(config_path)
        mappings = IgdClient.find(settings.upnp_location or None).mappings()
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps([_mapping_json(m) for m in mappings]))
        return
    if not mappings:
        click.echo("the router has no port mappings")
    for m in mappings:
        click.echo(
            f"{m.external_port}/{m.protocol} -> {m.internal_client}:{m.internal_port} "
            f"lease {m.lease or 'permanent'} s  {m.description}"
        )


def _mapping_json(m: Any) -> dict[str, Any]:
    return {
        "external_port": m.external_port,
        "protocol": m.protocol,
        "internal_client": m.internal_client,
        "internal_port": m.internal_port,
        "lease": m.lease,
        "description": m.description,
    }


#: Shortest sleep of the hold loop, so a router granting tiny lifetimes cannot make us spin.
MIN_HOLD_SLEEP = 1.0


@portmap.command("hold")
@_config_option
@_method_option
def hold(config_path: Path | None, method: str | None) -> None:
    """Create the configured mappings, renew them before they expire, remove them on exit.
    Without --method: [portmap] method for IPv4 and [portmap] ipv6 for the pinholes, both held
    as under `natsync run` (and recorded for `natsync portmap status` and the doctor)."""
    from natsync.portmap.manager import MappingSpec, PortMapper

    _setup_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if method is None:
        _hold_both(config_path, stop)
        return
    try:
        settings, backend = _backend(config_path, method)
        specs = [MappingSpec.parse(s) for s in settings.mappings]
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if not specs:
        raise click.ClickException("portmap.mappings is empty: nothing to hold")
    from natsync.portmap.holder import hold_one

    hold_one(
        PortMapper(backend, settings.lifetime),
        specs,
        stop,
        lambda r: click.echo(f"{r.spec}: {r.action} {r.detail}".rstrip()),
        time.time,
        MIN_HOLD_SLEEP,
    )


def _hold_both(config_path: Path | None, stop: threading.Event) -> None:
    from natsync.ddns.settings import load_portmap
    from natsync.portmap.holder import open_set, write_status

    try:
        settings = load_portmap(config_path)
        held = open_set(
            settings.method, settings.ipv6, settings.mappings, settings.lifetime,
            settings.router, settings.upnp_location,
        )  # fmt: skip
    except NatsyncError as exc:
        raise _fail(exc) from exc
    if not settings.mappings:
        raise click.ClickException("portmap.mappings is empty: nothing to hold")
    held.hold(
        stop,
        lambda r: click.echo(f"{r.spec}: {r.action} via {r.method} {r.detail}".rstrip()),
        time.time,
        MIN_HOLD_SLEEP,
        on_round=lambda _: write_status(settings.data_dir, held.status(time.time())),
    )


@portmap.command("status")
@_config_option
@_json_option
def portmap_status(config_path: Path | None, as_json: bool) -> None:
    """What the running holder (natsync run's portmap part, or portmap hold) last recorded:
    every mapping of both families, its method, state and expiry."""
    from natsync.ddns.settings import load_portmap
    from natsync.portmap.holder import read_status, status_path

    try:
        settings = load_portmap(config_path)
    except NatsyncError as exc:
        raise _fail(exc) from exc
    doc = read_status(settings.data_dir)
    if doc is None:
        raise click.ClickException(
            f"no status at {status_path(settings.data_dir)}: nothing holds the mappings "
            "(start `natsync run` or `natsync portmap hold`)"
        )
    if as_json:
        click.echo(json.dumps(doc))
        return
    now = time.time()
    for m in doc.get("mappings", []):
        expires = m.get("expires_at")
        when = f", expires in {expires - now:.0f} s" if isinstance(expires, int | float) else ""
        where = f" [{m['address']}]" if m.get("address") else ""
        detail = f": {m['detail']}" if m.get("detail") else ""
        click.echo(
            f"IPv{m.get('family')} {m.get('mapping')} via {m.get('method')}{where}: "
            f"{m.get('state')}{when}{detail}"
        )
