"""Keep the deployment's port mappings alive: create, renew before expiry, remove on exit.

:class:`PortMapper` is clock-free: :meth:`PortMapper.ensure` takes ``now`` and returns what it
did, so a loop (``natsync portmap hold``) and a test drive it alike. The router is reached
through a :class:`Backend`: UPnP IGD, NAT-PMP or PCP for IPv4 mappings; for IPv6, which the
router does not translate but firewalls, a UPnP IGD:2 pinhole or a PCP MAP sent over IPv6
(``upnp6`` / ``pcp6``) opens the same port of this host's own address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from natsync.portmap.errors import MappingRefused, PortMapError
from natsync.portmap.natpmp import NatPmpClient
from natsync.portmap.pcp import PcpClient
from natsync.portmap.upnp import (
    PINHOLE_GONE,
    IgdClient,
    PinholeClient,
    PinholeError,
    UpnpError,
)

log = logging.getLogger(__name__)

#: Renew when this fraction of the granted lifetime has passed (RFC 6886 section 3.3 advises
#: renewing at half the lifetime), so one lost renewal still leaves time for another.
RENEW_FRACTION = 0.5
#: Lifetime we ask for: an hour keeps a stale mapping from outliving a crashed natsync for long.
DEFAULT_LIFETIME = 3600
#: UPnP lease that means "permanent" (WANIPConnection:2 section 2.3.17).
UPNP_PERMANENT = 0


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """One port the deployment needs reachable from outside (e.g. 443/tcp to the edge)."""

    protocol: str
    internal_port: int
    external_port: int

    @classmethod
    def parse(cls, text: str) -> MappingSpec:
        """``"443/tcp"``, ``"443:8443/tcp"`` (external:internal) or ``"25"`` (tcp)."""
        ports, _, protocol = text.strip().partition("/")
        protocol = (protocol or "tcp").lower()
        external_text, colon, internal_text = ports.partition(":")
        if colon and not internal_text:
            raise PortMapError(f"mapping {text!r} is not PORT[:INTERNAL][/tcp|udp]")
        try:
            external = int(external_text)
            internal = int(internal_text) if internal_text else external
        except ValueError:
            raise PortMapError(f"mapping {text!r} is not PORT[:INTERNAL][/tcp|udp]") from None
        if protocol not in ("tcp", "udp") or not (0 < external < 65536 and 0 < internal < 65536):
            raise PortMapError(f"mapping {text!r} is not PORT[:INTERNAL][/tcp|udp]")
        return cls(protocol, internal, external)

    def __str__(self) -> str:
        return f"{self.external_port}->{self.internal_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class Granted:
    external_port: int
    #: Seconds the router keeps it; 0 means until removed.
    lifetime: int
    #: The method that made it, when a backend chooses among several (ipv6 = "auto").
    method: str = ""
    #: The router's handle of an IGD:2 pinhole (its UniqueID), to renew and query it.
    unique_id: int | None = None
    #: The address the router opens or forwards to, when the backend knows it.
    address: str = ""


class Backend(Protocol):
    name: str

    def map(self, spec: MappingSpec, lifetime: int) -> Granted: ...

    def unmap(self, spec: MappingSpec) -> None: ...


class UpnpBackend:
    name = "upnp"

    def __init__(self, igd: IgdClient, internal_client: str | None = None) -> None:
        self.igd = igd
        self.internal_client = internal_client or igd.local_address()

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        try:
            self.igd.add(
                spec.protocol,
                spec.external_port,
                self.internal_client,
                spec.internal_port,
                lifetime,
            )
        except MappingRefused as exc:
            if exc.code == UpnpError.ACTION_FAILED:
                self._explain_failure(exc)
            if exc.code != UpnpError.ONLY_PERMANENT_LEASES_SUPPORTED:
                raise
            self.igd.add(
                spec.protocol,
                spec.external_port,
                self.internal_client,
                spec.internal_port,
                UPNP_PERMANENT,
            )
            return Granted(spec.external_port, UPNP_PERMANENT)
        return Granted(spec.external_port, lifetime)

    def unmap(self, spec: MappingSpec) -> None:
        self.igd.delete(spec.protocol, spec.external_port)

    def _explain_failure(self, exc: MappingRefused) -> None:
        """A bare "action failed" (501) most often means the router has no public address."""
        from natsync.portmap.netinfo import AddressKind, classify

        try:
            address = self.igd.external_address()
        except PortMapError:
            return
        if address is None or classify(address) != AddressKind.PUBLIC:
            shown = address or "none"
            raise MappingRefused(
                f"{exc.message}: its own external address is {shown}, not a public one "
                "(carrier-grade or double NAT: inbound port forwarding cannot work here)",
                code=exc.code,
            ) from exc


class NatPmpBackend:
    name = "natpmp"

    def __init__(self, client: NatPmpClient) -> None:
        self.client = client

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        granted = self.client.map(spec.protocol, spec.internal_port, spec.external_port, lifetime)
        if granted.external_port != spec.external_port:
            # RFC 6886 section 3.3: the requested port is only a suggestion. Phones and mail
            # servers dial the well-known port, so another port is a refusal in practice.
            self.client.unmap(spec.protocol, spec.internal_port)
            raise MappingRefused(
                f"the router refused external port {spec.external_port} (it offered "
                f"{granted.external_port} instead, which clients would never dial); allow the "
                "port in the router's NAT-PMP settings or forward it by hand"
            )
        return Granted(granted.external_port, granted.lifetime)

    def unmap(self, spec: MappingSpec) -> None:
        self.client.unmap(spec.protocol, spec.internal_port)


class PcpBackend:
    def __init__(self, client: PcpClient) -> None:
        self.client = client
        self.name = "pcp6" if ":" in client.gateway else "pcp"

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        try:
            granted = self.client.map(
                spec.protocol, spec.internal_port, spec.external_port, lifetime
            )
        except MappingRefused as exc:
            self._explain_failure(exc)
            raise
        if granted.external_port != spec.external_port:
            # RFC 6887 section 11.3: without PREFER_FAILURE the port is only a suggestion.
            self.client.unmap(spec.protocol, spec.internal_port)
            raise MappingRefused(
                f"the router refused external port {spec.external_port} (it offered "
                f"{granted.external_port} instead, which clients would never dial); allow the "
                "port in the router's PCP settings or forward it by hand"
            )
        # Over IPv6 the address opened is this host's own: the doctor compares it with the
        # host's current addresses (a new prefix leaves the pinhole on an old one).
        address = self.client.client_address() if self.name == "pcp6" else ""
        return Granted(granted.external_port, granted.lifetime, address=address)

    def unmap(self, spec: MappingSpec) -> None:
        self.client.unmap(spec.protocol, spec.internal_port)

    def _explain_failure(self, exc: MappingRefused) -> None:
        """Some routers (miniupnpd) answer "no resources" when the real reason is that they have
        no public address; the NAT-PMP external-address request on the same port tells."""
        from natsync.portmap.natpmp import ResultCode
        from natsync.portmap.netinfo import AddressKind, classify

        try:
            address = NatPmpClient(self.client.gateway, attempts=2).external_address().address
        except MappingRefused as probe:
            if probe.code != ResultCode.NETWORK_FAILURE:
                return
            address = None
        except PortMapError:
            return
        if address is None or classify(address) != AddressKind.PUBLIC:
            raise MappingRefused(
                f"{exc.message}; the router's own external address is {address or 'none'}, not "
                "a public one (carrier-grade or double NAT: inbound port forwarding cannot work "
                "here)",
                code=exc.code,
            ) from exc


class UpnpPinholeBackend:
    """IPv6 pinholes through WANIPv6FirewallControl: the port is opened, not translated."""

    name = "upnp6"

    def __init__(self, client: PinholeClient, internal_client: str) -> None:
        self.client = client
        self.internal_client = internal_client
        self.ids: dict[MappingSpec, int] = {}

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        _same_port(spec)
        unique_id = self.ids.get(spec)
        if unique_id is not None:
            try:
                self.client.update(unique_id, lifetime)
                return self._granted(spec, unique_id, lifetime)
            except MappingRefused as exc:
                # Gone (the router rebooted, or someone removed it): make it again. IGD:2 says
                # 704; miniupnpd 2.3 answers 402 for a UniqueID it does not know.
                if exc.code not in PINHOLE_GONE:
                    raise
        try:
            self.ids[spec] = self.client.add(
                self.internal_client, spec.internal_port, spec.protocol, lifetime
            )
        except MappingRefused as exc:
            if exc.code == PinholeError.ACTION_NOT_AUTHORIZED and spec.internal_port < 1024:
                raise MappingRefused(
                    f"{exc.message}. IGD:2 recommends that routers refuse UPnP pinholes below "
                    "port 1024 (miniupnpd always does): use --method pcp6, or open the port in "
                    "the router's IPv6 firewall by hand",
                    code=exc.code,
                ) from exc
            raise
        return self._granted(spec, self.ids[spec], lifetime)

    def _granted(self, spec: MappingSpec, unique_id: int, lifetime: int) -> Granted:
        return Granted(
            spec.internal_port,
            _pinhole_lifetime(lifetime),
            unique_id=unique_id,
            address=self.internal_client,
        )

    def unmap(self, spec: MappingSpec) -> None:
        unique_id = self.ids.pop(spec, None)
        if unique_id is None:
            # made by another process: asking again for the same pinhole gives its id back
            unique_id = self.client.add(self.internal_client, spec.internal_port, spec.protocol, 1)
        self.client.delete(unique_id)


def _same_port(spec: MappingSpec) -> None:
    if spec.external_port != spec.internal_port:
        raise PortMapError(
            f"{spec}: an IPv6 pinhole opens this host's own port; external and internal port "
            "are the same (listen on the public port, or map IPv4 only)"
        )


def _pinhole_lifetime(lifetime: int) -> int:
    from natsync.portmap.upnp import PINHOLE_LEASE_MAX, PINHOLE_LEASE_MIN

    return max(PINHOLE_LEASE_MIN, min(PINHOLE_LEASE_MAX, lifetime))


@dataclass(slots=True)
class Lease:
    spec: MappingSpec
    external_port: int
    lifetime: int
    granted_at: float
    method: str = ""
    unique_id: int | None = None
    address: str = ""

    def renew_at(self) -> float | None:
        if self.lifetime == 0:
            return None
        return self.granted_at + self.lifetime * RENEW_FRACTION


@dataclass(frozen=True, slots=True)
class MapResult:
    spec: MappingSpec
    action: str  # "created", "renewed", "removed", "kept", "failed"
    detail: str = ""
    external_port: int | None = None
    #: The method (backend) that made, renewed or failed it: "upnp", "pcp6", ...
    method: str = ""


class Stopper(Protocol):
    """What :meth:`PortMapper.hold` waits on (a threading.Event)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class PortMapper:
    """The mappings one natsync keeps on one router."""

    def __init__(self, backend: Backend, lifetime: int = DEFAULT_LIFETIME) -> None:
        self.backend = backend
        self.lifetime = lifetime
        self.leases: dict[MappingSpec, Lease] = {}

    def ensure(self, specs: list[MappingSpec], now: float) -> list[MapResult]:
        """Create missing mappings and renew those past their renewal time."""
        results: list[MapResult] = []
        for spec in specs:
            lease = self.leases.get(spec)
            due = lease.renew_at() if lease else now
            if lease is not None and (due is None or due > now):
                results.append(
                    MapResult(spec, "kept", external_port=lease.external_port, method=lease.method)
                )
                continue
            try:
                granted = self.backend.map(spec, self.lifetime)
            except PortMapError as exc:
                log.error("port mapping %s via %s failed: %s", spec, self.backend.name, exc.message)
                results.append(MapResult(spec, "failed", exc.message, method=self.backend.name))
                continue
            method = granted.method or self.backend.name
            self.leases[spec] = Lease(
                spec,
                granted.external_port,
                granted.lifetime,
                now,
                method,
                granted.unique_id,
                granted.address,
            )
            action = "renewed" if lease else "created"
            log.info("port mapping %s via %s %s", spec, method, action)
            results.append(
                MapResult(spec, action, external_port=granted.external_port, method=method)
            )
        return results

    def next_due(self) -> float | None:
        times = [t for lease in self.leases.values() if (t := lease.renew_at()) is not None]
        return min(times) if times else None

    def retry_after(self) -> float:
        """Seconds before a failed mapping is asked for again: a quarter lifetime."""
        return self.lifetime / 4 if self.lifetime else 60.0

    def release_all(self) -> list[MapResult]:
        """Remove every mapping this mapper made (on exit)."""
        results: list[MapResult] = []
        for spec in list(self.leases):
            method = self.leases[spec].method or self.backend.name
            try:
                self.backend.unmap(spec)
            except PortMapError as exc:
                results.append(MapResult(spec, "failed", exc.message, method=method))
                continue
            del self.leases[spec]
            results.append(MapResult(spec, "removed", method=method))
        return results


METHODS = ("auto", "upnp", "pcp", "natpmp", "upnp6", "pcp6")


def open_backend(method: str, gateway: str | None, upnp_location: str | None = None) -> Backend:
    """The backend for *method*: "upnp", "pcp", "natpmp", or "auto" (UPnP if an IGD answers
    discovery, else NAT-PMP, which every PCP router also speaks) for IPv4; "upnp6" (an IGD:2
    pinhole) or "pcp6" (PCP over IPv6) for this host's IPv6 address. For the IPv6 methods
    *gateway* is the router's IPv6 address (default: the IPv6 default route's next hop)."""
    from natsync.portmap.errors import RouterUnreachable

    if method in ("upnp6", "pcp6"):
        from natsync.portmap.ipv6 import default_gateway6, source_address6

        router6 = gateway or default_gateway6()
        if not router6:
            raise PortMapError(
                f"no IPv6 default route to send {method} to: this host has no IPv6 from its "
                "router, or set portmap.router to the router's IPv6 address"
            )
        if method == "pcp6":
            return PcpBackend(PcpClient(router6))
        return UpnpPinholeBackend(
            PinholeClient.find(upnp_location, router6), source_address6(router6)
        )

    if method in ("upnp", "auto"):
        try:
            return UpnpBackend(IgdClient.find(upnp_location))
        except RouterUnreachable:
            if method == "upnp":
                raise
    if method in ("natpmp", "pcp", "auto"):
        if not gateway:
            from natsync.portmap.netinfo import default_gateway

            gateway = default_gateway()
        if not gateway:
            raise PortMapError(f"no default gateway to send {method} to; set portmap.router")
        if method == "pcp":
            return PcpBackend(PcpClient(gateway))
        return NatPmpBackend(NatPmpClient(gateway))
    raise PortMapError(f"portmap.method must be one of {', '.join(METHODS)}, not {method!r}")
