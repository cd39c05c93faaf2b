"""The doctor's order of work: gather one link, judge it, go on only where it still means
something. A phone that cannot resolve the name never connects; one that cannot connect never
sees a certificate; one that refuses the certificate never sends a request. When a link fails
so that the later checks could only repeat it, the run stops and says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from natsync.doctor import gather as g
from natsync.doctor.autodiscover import check_autodiscover
from natsync.doctor.device import DOCTOR_DEVICE_ID, DOCTOR_DEVICE_TYPE
from natsync.doctor.evidence import (
    Connect,
    CutEvidence,
    InsideEvidence,
    PushEvidence,
    ReachEvidence,
)
from natsync.doctor.findings import Check, Finding, Report, Severity, blocking, ok, skip
from natsync.doctor.http import check_http
from natsync.doctor.inside import check_inside
from natsync.doctor.ipv6 import check_ipv6
from natsync.doctor.names import check_names
from natsync.doctor.push import CLOSED_PRECISION, check_push
from natsync.doctor.reach import check_reach
from natsync.doctor.relay import check_relay
from natsync.doctor.session import check_session
from natsync.doctor.tls import check_tls

#: The Ping held by default: 5 minutes, longer than the idle timeouts that commonly break
#: Direct Push (cloud load balancers: 4 min; many firewalls and carrier NATs: 1-5 min), without
#: making a default run wait 16 minutes. Phones on good networks ask for up to 15-30 minutes:
#: ``--heartbeat 960`` (``FULL_HEARTBEAT``) tests that length, and the ok finding says so.
DEFAULT_HEARTBEAT = 300
#: The heartbeat a phone on a good network asks for (16 minutes; Exchange's own default for
#: Direct Push sits between 15 and 30): what a real path must hold.
FULL_HEARTBEAT = 960
#: `--quick`: Exchange's smallest heartbeat. It catches only paths that cut idle connections
#: within a minute (web proxies, aggressive firewalls), but it takes a minute, not sixteen.
QUICK_HEARTBEAT = 60


@dataclass(slots=True)
class Options:
    url: str
    user: str = ""
    password: str = ""
    email: str = ""
    ca_file: Path | None = None
    resolver: str | None = None
    authoritative: tuple[str, ...] = ()
    #: Seconds to hold the Ping; 0 skips the Direct Push check.
    heartbeat: int = DEFAULT_HEARTBEAT
    timeout: float = g.DEFAULT_TIMEOUT
    config: Path | None = None
    #: The edge's settings as the deployment's supervisor gives them to its edge
    #: (natsync.run.derive.edge_for: backends follow [server] when [edge] names none), for the
    #: inside-out check of its backends; None: [edge] of *config* read alone.
    edge: Any = None
    #: Port the zone's NS servers are asked on (53; another only in labs and tests).
    ns_port: int = 53
    #: Public addresses known from inside (filled from the ddns verdict on inside-out runs).
    public: tuple[str, ...] = field(default_factory=tuple)
    #: ``--resolve NAME:ADDR``: use these addresses for NAME instead of DNS (as curl does).
    resolve: tuple[tuple[str, str], ...] = ()
    #: ``--relay HOST``: the relay's public name or address, for the relay check of an
    #: outside run (inside-out runs take it from [tunnel] relay_endpoint).
    relay: str = ""
    #: Where it runs and how (natsync version, command line, host), for the report.
    context: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Watcher(Protocol):
    """What a front end (the terminal) is told while the doctor works."""

    def step(self, text: str, seconds: float | None = None) -> None:
        """Now doing *text*; it may take up to *seconds* (None: a few steps' timeouts)."""

    def found(self, findings: list[Finding]) -> None:
        """These findings were just made."""


#: Plain progress: a function of the step's text (the findings come with the report).
Progress = Callable[[str], None]


class _Plain:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def step(self, text: str, seconds: float | None = None) -> None:
        if self.progress is not None:
            self.progress(text)

    def found(self, findings: list[Finding]) -> None:
        return None


async def diagnose(options: Options, progress: Progress | Watcher | None = None) -> Report:
    """Run every check that still means something; the report holds every finding.
    *progress* is told each step (a function of its text, or a :class:`Watcher` that also
    hears of each finding as it is made)."""
    watch: Watcher = _Plain(None)
    if progress is not None:
        watch = progress if isinstance(progress, Watcher) else _Plain(progress)
    started = time.monotonic()
    target = g.parse_target(options.url)
    report = Report(
        target=target.eas_url,
        mode="inside" if options.config else "outside",
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        context=dict(options.context),
        config=str(options.config) if options.config is not None else "",
        on_add=watch.found,
    )
    try:
        await _run(options, target, report, watch)
    finally:
        report.duration = time.monotonic() - started
        report.on_add = None
    return report


def _stop(report: Report, reason: str, remaining: list[Check]) -> None:
    report.stopped = reason
    report.add(
        [
            skip(
                check,
                f"{check} not checked",
                "not run: the run stopped early (the reason is given with the summary)",
            )
            for check in remaining
        ]
    )


def _resolved(options: Options, host: str) -> tuple[str, ...]:
    return tuple(addr for name, addr in options.resolve if name.lower() == host)


async def _run(options: Options, target: g.Target, report: Report, watch: Watcher) -> None:
    progress = watch.step
    public = options.public
    inside: InsideEvidence | None = None
    if options.config is not None:
        progress("inside: public address, router mappings, edge pin")
        inside = await asyncio.to_thread(
            g.gather_inside_sync, options.config, options.timeout, options.edge
        )
        report.add(check_inside(inside))
        if inside.nat is not None and inside.nat.address and not public:
            public = (inside.nat.address,)

    email = options.email or (options.user if "@" in options.user else "")
    forced = _resolved(options, target.host)
    if forced:
        report.add(
            [
                skip(
                    Check.NAMES,
                    f"DNS for {target.host} not checked",
                    f"--resolve {target.host}:{','.join(forced)} given: the doctor connects "
                    "there as a phone would once DNS names it (the names checks run when "
                    "--resolve is left out)",
                )
            ]
        )
    progress(f"names: resolving {target.host}")
    names = await asyncio.to_thread(
        g.gather_names_sync,
        target,
        resolver=options.resolver,
        authoritative=options.authoritative,
        email_domain=email.rpartition("@")[2] if email else "",
        public=public,
        timeout=options.timeout,
        ns_port=options.ns_port,
    )
    if forced:
        names = replace(names, literal=True)
    else:
        report.add(check_names(names))
    later = [Check.REACH, Check.TLS, Check.HTTP, Check.SESSION, Check.PUSH, Check.AUTODISCOVER]
    published = forced or (names.resolver.addresses if names.resolver else ())
    if inside is not None and inside.tunnel is not None:
        progress("relay: DNS, relay, tunnel, home edge, server")
        relay = await g.gather_relay(target.host, published, target.port, inside, options.timeout)
        report.add(check_relay(relay))
    elif options.relay:
        progress("relay: DNS, the relay, and TLS through it")
        relay = await g.gather_relay_outside(
            target, published, options.relay, options.ca_file, options.timeout
        )
        report.add(check_relay(relay))
    if forced:
        addresses: tuple[str, ...] = forced
    elif names.literal:
        addresses = (target.host,)
    else:
        addresses = names.resolver.addresses if names.resolver else ()
    if not addresses:
        _stop(report, f"{target.host} has no address, so a phone cannot connect", later)
        return

    progress(f"reach: connecting to port {target.port}")
    https = await asyncio.gather(*(g.connect(a, target.port, options.timeout) for a in addresses))
    smtp: list[Connect] = []
    if names.mx is not None:
        mx_addresses = [a for _, addrs in names.mx.target_addresses for a in addrs]
        smtp = list(
            await asyncio.gather(
                *(g.connect(a, g.SMTP_PORT, options.timeout) for a in mx_addresses)
            )
        )
    reach = ReachEvidence(
        tuple(https), tuple(smtp), options.config is not None, public, _server_port(options)
    )
    report.add(check_reach(reach))
    progress("ipv6: the IPv6 path on its own")
    ipv6 = await g.gather_ipv6(
        target,
        https,
        options.ca_file,
        inside.host6 if inside is not None else None,
        inside.firewall6 if inside is not None else "",
        options.timeout,
    )
    report.add(check_ipv6(ipv6))
    open_addresses = [c.address for c in https if c.ok]
    later.remove(Check.REACH)
    if not open_addresses:
        _stop(
            report,
            f"nothing accepts connections on port {target.port}; the later checks would only "
            "repeat that",
            later,
        )
        return

    later.remove(Check.TLS)
    if target.scheme == "https":
        progress("tls: handshake and certificate")
        tls = await g.gather_tls(
            open_addresses[0], target.port, target.host, options.ca_file, options.timeout
        )
        found = report.add(check_tls(tls, dt.datetime.now(dt.UTC)))
        if blocking(found):
            _stop(
                report,
                "the phone refuses this certificate, so it never sends a request; HTTP and "
                "ActiveSync checks would only repeat the TLS failure",
                later,
            )
            return
    else:
        report.add(
            [
                Finding(
                    Check.TLS,
                    Severity.WARN,
                    "Plain HTTP: no TLS",
                    (f"the URL is {options.url}",),
                    "Passwords cross the network in the clear (Basic authentication), and "
                    "phones refuse plain HTTP by default.",
                    "Serve HTTPS: set server.tls_cert / server.tls_key, or put the edge in front.",
                )
            ]
        )

    progress("http: OPTIONS and the 401 challenge")
    http = await g.gather_http(
        target, open_addresses, options.ca_file, options.user, options.timeout
    )
    later.remove(Check.HTTP)
    if blocking(report.add(check_http(http))):
        _stop(report, "no ActiveSync server answers at this URL", later)
        return

    if not options.user or not options.password:
        reason = "no credentials given (--user and --password or --password-stdin)"
        report.add([skip(check, f"{check} not checked", reason) for check in later])
        return
    client = g.DoctorClient(
        target,
        open_addresses,
        options.ca_file,
        user=options.user,
        password=options.password,
        timeout=max(options.timeout, 30.0),
    )
    try:
        progress("session: Provision, FolderSync, Sync")
        session, inbox = await g.gather_session(client, options.user)
        found = report.add(check_session(session))
        later.remove(Check.SESSION)
        if inbox is None or blocking(found):
            _stop(
                report,
                "the ActiveSync session fails, so push and Autodiscover cannot work either",
                later,
            )
            return
        # Autodiscover before the held Ping: the Ping takes minutes, and everything else is
        # then already known (and shown, on a terminal) while it waits.
        progress("autodiscover")
        auto = None
        if email:
            auto = await g.gather_autodiscover(
                target,
                open_addresses,
                options.ca_file,
                options.user,
                options.password,
                email,
                options.timeout,
            )
        report.add(check_autodiscover(auto))
        later.remove(Check.PUSH)
        if options.heartbeat > 0:
            progress(
                f"push: holding a Ping for {options.heartbeat} s (the server answers at the "
                "heartbeat, if the path carries it)",
                options.heartbeat + g.ping_grace(options.heartbeat),
            )
            push = await g.gather_push(client, inbox, options.heartbeat)
            push = await _measure(push, client, inbox, target, open_addresses[0], options, watch)
            report.add(check_push(push, full=FULL_HEARTBEAT))
        else:
            report.add([skip(Check.PUSH, "Direct Push path", "not asked for (--heartbeat 0)")])
    finally:
        await client.close()
        await _remove_device(options, report)


async def _measure(
    push: PushEvidence,
    client: g.DoctorClient,
    inbox: str,
    target: g.Target,
    address: str,
    options: Options,
    watch: Watcher,
) -> PushEvidence:
    """Where the path cuts, when the held Ping did not survive: seen directly when the path
    closed the Ping itself, else bracketed with idle probes below the heartbeat, and with
    held Pings where the idle probes cannot reach (the far end closes idle connections)."""
    if push.outcome == "cut":
        cut = CutEvidence(
            max(0.0, push.seconds - CLOSED_PRECISION),
            push.seconds,
            CLOSED_PRECISION,
            seconds=0.0,
            method="closed",
        )
        return replace(push, measured=cut)
    if push.outcome != "silent":
        return push
    watch.step("push: the Ping's answer was lost; measuring where the path cuts idle connections")
    measured = await g.measure_cut(
        target,
        address,
        options.ca_file,
        g.basic_authorization(options.user, options.password),
        float(push.heartbeat),
        options.timeout,
        watch.step,
    )
    if not measured.within:
        measured = await g.ping_bisect(client, inbox, measured, float(push.heartbeat), watch.step)
    return replace(push, measured=measured)


def _server_port(options: Options) -> int | None:
    """Where the router should forward to, from an inside-out run's config: the edge's
    listener when the file has an [edge] (phones reach the edge), else [server] port."""
    if options.config is None:
        return None
    tables = g.read_toml_tables(options.config)
    if "edge" in tables:
        from natsync.edge.config import load_edge_config, split_hostport

        return split_hostport(load_edge_config(options.config).listen, "edge.listen")[1]
    if "server" in tables:
        from natsync.config import load_config

        return load_config(options.config).port
    return None


async def _remove_device(options: Options, report: Report) -> None:
    """Inside-out, with the server's store at hand: the doctor's test device leaves the
    account again (outside runs cannot reach the store; the device is marked as the
    doctor's there, and `natsync device list` leaves it out)."""
    if options.config is None or "server" not in g.read_toml_tables(options.config):
        return
    from natsync.errors import NatsyncError

    try:
        done = await asyncio.to_thread(g.remove_doctor_device, options.config, options.user)
    except (NatsyncError, OSError) as exc:
        report.add(
            [
                Finding(
                    Check.SESSION,
                    Severity.WARN,
                    "The doctor's test device could not be removed again",
                    (str(exc),),
                    "It stays on the account, marked as the doctor's (DeviceType "
                    f"{DOCTOR_DEVICE_TYPE}); `natsync device list` leaves it out.",
                    f"`natsync device remove {DOCTOR_DEVICE_ID} --user {shlex.quote(options.user)}`"
                    " with the server's --store or --data-dir.",
                )
            ]
        )
        return
    if done:
        report.add([ok(Check.SESSION, "The doctor's test device was removed again", done)])
