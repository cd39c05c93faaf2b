"""Reasoning over the observations: which address to publish, and whether inbound connections
can work at all. Pure: observations in, a :class:`Verdict` with evidence in plain words out.

The router sources (NAT-PMP, UPnP IGD, PCP) are judged alike. The rule that matters most: when
the router's own external address is private or shared
(RFC 1918, RFC 6598 100.64.0.0/10), or the router reports no public address while the internet
sees us, or the router's address differs from what a STUN/echo server sees, there is another
NAT beyond the router (carrier-grade or double NAT) and **inbound port forwarding cannot work
here**, whatever the router is told.

Behind a relay (the ``relay`` source, docs/relay.md) the relay's address is the one phones must
dial: for a family the relay has, it is published whatever the home's own sources say; when the
relay's address cannot be found, nothing is (the home's address is the wrong one to publish).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from natsync.ddns.sources import (
    NO_PUBLIC_ADDRESS,
    OUTSIDE_SOURCES,
    RELAY_LACKS_FAMILY,
    ROUTER_SOURCES,
    Observation,
    Source,
)
from natsync.portmap.netinfo import AddressKind, IPAddress, classify

CGNAT_WORDS = "carrier-grade or double NAT: inbound port forwarding cannot work here"


class VerdictKind(StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    CGNAT = "cgnat"
    NO_ADDRESS = "no-address"


@dataclass(frozen=True, slots=True)
class Verdict:
    family: int
    kind: VerdictKind
    #: The address to publish, or None when none can be trusted.
    address: IPAddress | None
    summary: str
    evidence: tuple[str, ...]

    @property
    def port_forwarding_possible(self) -> bool:
        return self.kind != VerdictKind.CGNAT and self.address is not None


def judge(observations: list[Observation], family: int) -> Verdict:
    """The verdict for one address family."""
    relay = [o for o in observations if o.family == family and o.source == Source.RELAY]
    if relay and any(o.refusal != RELAY_LACKS_FAMILY for o in relay):
        return _relay_verdict(relay, family, observations)
    mine = [o for o in observations if o.family == family and o.source != Source.RELAY]
    seen = [o for o in mine if o.address is not None]
    router = [o for o in seen if o.source in ROUTER_SOURCES]
    outside = [o for o in seen if o.source in OUTSIDE_SOURCES]
    interface = [o for o in seen if o.source == Source.INTERFACE]
    evidence = [o.describe() for o in mine]
    cgnat: list[str] = []

    for o in router:
        assert o.address is not None
        kind = classify(o.address)
        if kind != AddressKind.PUBLIC:
            cgnat.append(
                f"the router's own external address {o.address} (from {o.source}) is {kind}, "
                "so another NAT sits between the router and the internet"
            )
    refused = [o for o in mine if o.refusal == NO_PUBLIC_ADDRESS]
    if refused and not router:
        cgnat.extend(
            f"the router ({o.source}) says it has no usable public address: {o.error}"
            for o in refused
        )
    for o in outside:
        assert o.address is not None
        kind = classify(o.address)
        if kind != AddressKind.PUBLIC:
            cgnat.append(f"{o.source} server {o.via} sees us as {o.address}, which is {kind}")
    router_public = {
        o.address for o in router if o.address and classify(o.address) == AddressKind.PUBLIC
    }
    outside_public = [o for o in outside if o.address and classify(o.address) == AddressKind.PUBLIC]
    for r in router_public:
        for o in outside_public:
            if o.address != r:
                cgnat.append(
                    f"the router says its external address is {r}, but {o.source} server {o.via} "
                    f"sees us as {o.address}"
                )

    # The address to publish: what the internet sees, by majority, first listed on a tie.
    counts = Counter(o.address for o in outside_public)
    chosen: IPAddress | None = None
    disagreement = ""
    if counts:
        best = max(counts.values())
        chosen = next(o.address for o in outside_public if counts[o.address] == best)
        if len(counts) > 1:
            others = ", ".join(
                f"{o.source} {o.via} says {o.address}"
                for o in outside_public
                if o.address != chosen
            )
            disagreement = f"sources disagree: {others}; publishing {chosen}, seen by {best}"
    elif router_public:
        chosen = next(o.address for o in router if o.address in router_public)
    else:
        public_iface = [o.address for o in interface if o.address and o.address.is_global]
        chosen = public_iface[0] if public_iface else None

    if cgnat:
        return Verdict(
            family,
            VerdictKind.CGNAT,
            chosen if counts else None,
            CGNAT_WORDS,
            tuple(cgnat + evidence),
        )
    if chosen is None:
        return Verdict(
            family,
            VerdictKind.NO_ADDRESS,
            None,
            f"no source could tell the public IPv{family} address",
            tuple(evidence),
        )
    if disagreement:
        return Verdict(family, VerdictKind.DISAGREE, chosen, disagreement, tuple(evidence))
    if any(o.address == chosen for o in interface):
        summary = f"public address {chosen}; this host holds it itself (no NAT)"
    else:
        summary = f"public address {chosen}; sources agree"
    return Verdict(family, VerdictKind.AGREE, chosen, summary, tuple(evidence))


def _relay_verdict(relay: list[Observation], family: int, all_: list[Observation]) -> Verdict:
    """Phones reach the home through the relay: its address, or none (never the home's)."""
    evidence = tuple(o.describe() for o in all_ if o.family == family)
    for o in relay:
        if o.address is not None:
            return Verdict(
                family,
                VerdictKind.AGREE,
                o.address,
                f"the relay's public address {o.address}: phones reach the home through the "
                "relay (docs/relay.md)",
                evidence,
            )
    return Verdict(
        family,
        VerdictKind.NO_ADDRESS,
        None,
        f"the relay's IPv{family} address could not be found, so nothing is published (the "
        "home's own address is not where phones should go)",
        evidence,
    )
