"""The router opened both ways at once: the IPv4 port mapping and the IPv6 pinholes.

A home router with IPv6 needs both. Phones on IPv4 networks come in through the IPv4 mapping
(UPnP IGD, NAT-PMP or PCP: ``[portmap] method``); phones with IPv6 dial this host's own address
(the AAAA record) and come in through a pinhole in the router's IPv6 firewall (``[portmap]
ipv6``: an IGD:2 pinhole or a PCP MAP over IPv6). :class:`PortMapSet` holds one
:class:`~natsync.portmap.manager.PortMapper` per family, renews each on its own schedule,
removes them together at stop, and describes both in one status document, which `natsync run`'s
portmap part writes to ``DATA_DIR/portmap/status.json`` after every round (its ``/healthz`` and
the doctor read it). Like the mapper, the set is clock-free: ``now`` is passed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from natsync.portmap.errors import PortMapError, RouterUnreachable
from natsync.portmap.manager import (
    Backend,
    Granted,
    MappingSpec,
    MapResult,
    PortMapper,
    Stopper,
    open_backend,
)

#: ``[portmap] ipv6``: no pinholes; "auto" (an IGD:2 pinhole where the router allows it, else
#: PCP over IPv6); or one of the two.
IPV6_WAYS = ("off", "auto", "upnp6", "pcp6")
#: ``[portmap] method`` values that open the IPv6 firewall instead of mapping IPv4.
IPV6_METHODS = ("upnp6", "pcp6")
#: Where the portmap part writes its status, under the deployment's data directory.
STATUS_DIR = "portmap"
STATUS_FILE = "status.json"
#: The name ipv6 = "auto" reports while no pinhole was made yet.
AUTO6 = "upnp6|pcp6"

T = TypeVar("T")


def family_of(method: str) -> int:
    """6 for the methods that open the IPv6 firewall, else 4."""
    return 6 if method in (*IPV6_METHODS, AUTO6) else 4


class Deferred:
    """A backend opened when first needed, and opened again after opening failed: a router
    that is not found (no IGD answers, no IPv6 route yet) is a failed round, retried at the
    next, not a dead part, and one family's trouble does not stop the other's mappings."""

    def __init__(self, name: str, opener: Callable[[], Backend]) -> None:
        self.name = name
        self._opener = opener
        self.backend: Backend | None = None

    def _open(self) -> Backend:
        if self.backend is None:
            self.backend = self._opener()
        return self.backend

    def _call(self, action: Callable[[Backend], T]) -> T:
        """*action* on the backend; when a router found before does not answer, find it again
        and try once more: a router that restarted serves UPnP on another port (miniupnpd
        picks a new one) and has forgotten its pinhole handles."""
        fresh = self.backend is None
        try:
            return action(self._open())
        except RouterUnreachable:
            self.backend = None
            if fresh:
                raise
            return action(self._open())

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        granted = self._call(lambda backend: backend.map(spec, lifetime))
        return granted if granted.method else replace(granted, method=self._open().name)

    def unmap(self, spec: MappingSpec) -> None:
        self._call(lambda backend: backend.unmap(spec))


class PinholeFallback:
    """``ipv6 = "auto"``: for each port, a UPnP IGD:2 pinhole first, PCP over IPv6 if the
    router refuses it or has no IGD:2 firewall service. IGD:2 recommends that routers refuse
    UPnP pinholes below port 1024 (miniupnpd always does), so 443 and 25 usually end up on PCP
    while a high port stays on UPnP. A pinhole is renewed and removed by the method that made it."""

    name = AUTO6

    def __init__(self, ways: Sequence[Deferred]) -> None:
        self.ways = list(ways)
        self.holder: dict[MappingSpec, Deferred] = {}

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        held = self.holder.get(spec)
        if held is not None:
            try:
                return held.map(spec, lifetime)
            except PortMapError:
                del self.holder[spec]  # the next round asks every way again
                raise
        errors: dict[str, str] = {}  # message -> the ways that said it (no IPv6 route: both)
        for way in self.ways:
            try:
                granted = way.map(spec, lifetime)
            except PortMapError as exc:
                errors[exc.message] = "/".join(filter(None, (errors.get(exc.message), way.name)))
                continue
            self.holder[spec] = way
            return granted
        raise PortMapError("; ".join(f"{ways}: {message}" for message, ways in errors.items()))

    def unmap(self, spec: MappingSpec) -> None:
        way = self.holder.pop(spec, None)
        if way is not None:
            way.unmap(spec)


@dataclass(slots=True)
class Member:
    """One family's mapper and the mappings it holds."""

    family: int
    mapper: PortMapper
    specs: list[MappingSpec]
    #: Mappings this family cannot hold, with the reason (an IPv6 pinhole translates no port).
    skipped: list[tuple[MappingSpec, str]] = field(default_factory=list)


class PortMapSet:
    """The mappers one natsync keeps on one router, held as one."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.last: dict[tuple[int, MappingSpec], MapResult] = {}

    def ensure(self, now: float) -> list[MapResult]:
        """One round: create what is missing, renew what is due, in every family."""
        results: list[MapResult] = []
        for member in self.members:
            for result in member.mapper.ensure(member.specs, now):
                self.last[(member.family, result.spec)] = result
                results.append(result)
        return results

    def wait(self, now: float) -> float:
        """Seconds until the next renewal, or until a failed mapping is asked for again."""
        waits: list[float] = []
        for member in self.members:
            mapper = member.mapper
            due = mapper.next_due()
            wait = (due - now) if due is not None else mapper.retry_after()
            if due is not None and due <= now:
                # A renewal the router refused: again after a quarter lifetime, or half the
                # time its lease has left, whichever is sooner (not every few seconds).
                expiry = min(
                    lease.granted_at + lease.lifetime
                    for lease in mapper.leases.values()
                    if (renew := lease.renew_at()) is not None and renew <= now
                )
                wait = min(mapper.retry_after(), (expiry - now) / 2)
            if len(mapper.leases) < len(member.specs):
                wait = min(wait, mapper.retry_after())
            waits.append(wait)
        return min(waits, default=60.0)

    def release_all(self) -> list[MapResult]:
        results: list[MapResult] = []
        for member in self.members:
            for result in member.mapper.release_all():
                self.last[(member.family, result.spec)] = result
                results.append(result)
        return results

    def hold(
        self,
        stop: Stopper,
        report: Callable[[MapResult], object],
        clock: Callable[[], float],
        min_sleep: float,
        on_round: Callable[[list[MapResult]], object] | None = None,
    ) -> None:
        """Keep every family's mappings until *stop* is set, then remove them all. *report*
        hears every action but "kept"; *on_round* every round's whole list (after the removal
        at stop too)."""
        try:
            while not stop.is_set():
                results = self.ensure(clock())
                for result in results:
                    if result.action != "kept":
                        report(result)
                if on_round is not None:
                    on_round(results)
                stop.wait(max(min_sleep, self.wait(clock())))
        finally:
            results = self.release_all()
            for result in results:
                report(result)
            if on_round is not None:
                on_round(results)

    @property
    def methods(self) -> list[str]:
        return [m.mapper.backend.name for m in self.members]

    def status(self, now: float) -> dict[str, Any]:
        """Every mapping of every family: its state ("open", "renew-failing", "failed",
        "pending", "removed", "skipped"), the method that holds it, when it expires."""
        entries: list[dict[str, Any]] = []
        for member in self.members:
            for spec in member.specs:
                entries.append(self._entry(member, spec))
            for spec, reason in member.skipped:
                entries.append(
                    {
                        "family": member.family,
                        "mapping": str(spec),
                        "method": member.mapper.backend.name,
                        "state": "skipped",
                        "detail": reason,
                    }
                )
        healthy = all(e["state"] in ("open", "skipped", "removed") for e in entries)
        return {"updated": now, "healthy": healthy, "mappings": entries}

    def _entry(self, member: Member, spec: MappingSpec) -> dict[str, Any]:
        lease = member.mapper.leases.get(spec)
        last = self.last.get((member.family, spec))
        entry: dict[str, Any] = {
            "family": member.family,
            "mapping": str(spec),
            "method": (last.method if last else "") or member.mapper.backend.name,
        }
        if lease is not None:
            failing = last is not None and last.action == "failed"
            entry |= {
                "state": "renew-failing" if failing else "open",
                "detail": last.detail if failing and last else "",
                "method": lease.method or entry["method"],
                "external_port": lease.external_port,
                "lifetime": lease.lifetime,
                "granted_at": lease.granted_at,
                "expires_at": lease.granted_at + lease.lifetime if lease.lifetime else None,
                "renew_at": lease.renew_at(),
            }
            if lease.unique_id is not None:
                entry["unique_id"] = lease.unique_id
            if lease.address:
                entry["address"] = lease.address
            return entry
        if last is None:
            return entry | {"state": "pending", "detail": "not asked yet"}
        state = {"removed": "removed", "failed": "failed"}.get(last.action, "pending")
        return entry | {"state": state, "detail": last.detail}


def hold_one(
    mapper: PortMapper,
    specs: list[MappingSpec],
    stop: Stopper,
    report: Callable[[MapResult], object],
    clock: Callable[[], float],
    min_sleep: float,
) -> None:
    """Keep *specs* mapped by one *mapper* until *stop* is set (renewing when due, retrying what
    failed every quarter lifetime), then remove them; *report* hears every action but "kept"."""
    member = Member(family_of(mapper.backend.name), mapper, specs)
    PortMapSet([member]).hold(stop, report, clock, min_sleep)


def _split_router(router: str) -> tuple[str | None, str | None]:
    """``[portmap] router``: an IPv4 address is the IPv4 gateway, an IPv6 one the IPv6 router
    (each family's own default route gives the other)."""
    if not router:
        return None, None
    return (None, router) if ":" in router else (router, None)


def open_set(
    method: str,
    ipv6: str,
    mappings: Sequence[str],
    lifetime: int,
    router: str = "",
    upnp_location: str = "",
) -> PortMapSet:
    """The set ``[portmap]`` asks for: the IPv4 mapping by *method* and, unless *ipv6* is
    "off", the IPv6 pinholes by *ipv6*. A *method* of "upnp6" / "pcp6" alone holds IPv6
    pinholes only (then *ipv6* must be "off")."""
    if ipv6 not in IPV6_WAYS:
        raise PortMapError(f"portmap.ipv6 must be one of {', '.join(IPV6_WAYS)}, not {ipv6!r}")
    specs = [MappingSpec.parse(text) for text in mappings]
    router4, router6 = _split_router(router)
    location = upnp_location or None
    members: list[Member] = []
    v4: str | None
    v6: str | None
    if method in IPV6_METHODS:
        if ipv6 != "off":
            raise PortMapError(
                f'portmap.method = "{method}" already opens IPv6 only; for IPv4 and IPv6 '
                f'together set method to the IPv4 way ("auto", "upnp", "pcp", "natpmp") '
                f'and ipv6 = "{method}"'
            )
        v4, v6 = None, method
        router6 = router or None
    else:
        v4, v6 = method, (None if ipv6 == "off" else ipv6)
    if v4 is not None:
        backend = Deferred(v4, lambda: open_backend(v4, router4, location))
        members.append(Member(4, PortMapper(backend, lifetime), list(specs)))
    if v6 is not None:

        def way(name: str) -> Deferred:
            return Deferred(name, lambda: open_backend(name, router6, location))

        chosen: Backend = way(v6)
        if v6 == "auto":
            chosen = PinholeFallback([way("upnp6"), way("pcp6")])
        same = [s for s in specs if s.external_port == s.internal_port]
        skipped = [
            (
                s,
                f"IPv6 is not translated: phones dial [AAAA]:{s.external_port}, so this host "
                f"must listen on {s.external_port} itself (it listens on {s.internal_port}); "
                "a pinhole opens the host's own port",
            )
            for s in specs
            if s.external_port != s.internal_port
        ]
        members.append(Member(6, PortMapper(chosen, lifetime), same, skipped))
    return PortMapSet(members)


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_DIR / STATUS_FILE


def write_status(data_dir: Path, doc: dict[str, Any]) -> None:
    """Replace the status file whole (a reader never sees half of it)."""
    path = status_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """What the portmap part last wrote, or None (never ran, or unreadable)."""
    try:
        doc = json.loads(status_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
