"""The doctor's order of work: gather one link, judge it, go on only where it still means
something. A phone that cannot resolve the name never connects; one that cannot connect never
sees a certificate; one that refuses the certificate never sends a request. When a link fails
so that the later checks could only repeat it, the run stops and says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from natsync.doctor import gather as g
from natsync.doctor.autodiscover import check_autodiscover
from natsync.doctor.evidence import Connect, ReachEvidence
from natsync.doctor.findings import Check, Finding, Report, Severity, blocking, skip
from natsync.doctor.http import check_http
from natsync.doctor.inside import check_inside
from natsync.doctor.names import check_names
from natsync.doctor.push import check_push
from natsync.doctor.reach import check_reach
from natsync.doctor.session import check_session
from natsync.doctor.tls import check_tls

#: The heartbeat a phone on a good network asks for (16 minutes; Exchange's own default for
#: Direct Push sits between 15 and 30): what a real path must hold.
DEFAULT_HEARTBEAT = 960
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
    #: Port the zone's NS servers are asked on (53; another only in labs and tests).
    ns_port: int = 53
    #: Public addresses known from inside (filled from the ddns verdict on inside-out runs).
    public: tuple[str, ...] = field(default_factory=tuple)


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


async def diagnose(options: Options, progress: Progress = _quiet) -> Report:
    """Run every check that still means something; the report holds every finding."""
    started = time.monotonic()
    target = g.parse_target(options.url)
    report = Report(
        target=target.eas_url,
        mode="inside" if options.config else "outside",
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    try:
        await _run(options, target, report, progress)
    finally:
        report.duration = time.monotonic() - started
    return report


def _stop(report: Report, reason: str, remaining: list[Check]) -> None:
    report.stopped = reason
    for check in remaining:
        report.findings.append(
            skip(
                check,
                f"{check} not checked",
                "not run: the run stopped early (the reason is given with the summary)",
            )
        )


async def _run(options: Options, target: g.Target, report: Report, progress: Progress) -> None:
    public = options.public
    if options.config is not None:
        progress("inside: public address, router mappings, edge pin")
        inside = await asyncio.to_thread(g.gather_inside_sync, options.config, options.timeout)
        report.add(check_inside(inside))
        if inside.nat is not None and inside.nat.address and not public:
            public = (inside.nat.address,)

    progress(f"names: resolving {target.host}")
    email = options.email or (options.user if "@" in options.user else "")
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
    report.add(check_names(names))
    later = [Check.REACH, Check.TLS, Check.HTTP, Check.SESSION, Check.PUSH, Check.AUTODISCOVER]
    if names.literal:
        addresses: tuple[str, ...] = (target.host,)
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
    reach = ReachEvidence(tuple(https), tuple(smtp), options.config is not None, public)
    report.add(check_reach(reach))
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
        for check in later:
            report.findings.append(skip(check, f"{check} not checked", reason))
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
        later.remove(Check.PUSH)
        if options.heartbeat > 0:
            progress(f"push: holding a Ping for {options.heartbeat} s")
            push = await g.gather_push(client, inbox, options.heartbeat)
            report.add(check_push(push))
        else:
            report.findings.append(
                skip(Check.PUSH, "Direct Push path", "not asked for (--heartbeat 0)")
            )
    finally:
        await client.close()
    progress("autodiscover")
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
    else:
        report.add(check_autodiscover(None))
