"""Check 1, name resolution: does the name the phone types lead to the server, today?

The article's first failure: the ISP changes the public address, DNS (or the phone's resolver,
which caches answers for the record's TTL) falls behind, and the phone dials an address that is
no longer ours. So the resolver's answer is compared with the zone's authoritative servers and,
on an inside-out run, with the public address the ddns sources see now.
"""

from __future__ import annotations

import ipaddress

from natsync.doctor.evidence import DnsAnswer, NamesEvidence
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity, ok, skip
from natsync.portmap.netinfo import AddressKind, classify

#: Longest TTL that suits an address the ISP may change: a phone that cached the record just
#: before a change keeps dialling the old address this long (natsync ddns publishes 60 s).
DYNAMIC_TTL_MAX = 300

_UPDATE = f"`natsync ddns update {CONFIG_ARG}`"
_NOT_ROUTABLE = {
    AddressKind.PRIVATE,
    AddressKind.SHARED,
    AddressKind.UNIQUE_LOCAL,
    AddressKind.LINK_LOCAL,
    AddressKind.RESERVED,
}


def _kind(address: str) -> AddressKind | None:
    try:
        return classify(ipaddress.ip_address(address))
    except ValueError:
        return None


def _list(items: tuple[str, ...] | list[str] | set[str]) -> str:
    return ", ".join(sorted(items)) if items else "nothing"


def _usable(answers: tuple[DnsAnswer, ...]) -> list[DnsAnswer]:
    return [a for a in answers if not a.error]


def check_names(ev: NamesEvidence) -> list[Finding]:
    """All findings about name resolution, in the order a phone meets them."""
    if ev.literal:
        return [
            ok(
                Check.NAMES,
                f"The URL names the address {ev.name}: no DNS involved",
                "a phone given an address never asks DNS; the certificate must then carry "
                "that address (checked under tls)",
            )
        ]
    resolver = ev.resolver
    if resolver is None:
        return [skip(Check.NAMES, "Name resolution", "the name was not looked up")]
    findings: list[Finding] = []
    auth = _usable(ev.authoritative)
    auth_addresses = {a for ans in auth for a in ans.addresses}
    if not resolver.addresses:
        findings.append(_no_address(ev.name, resolver, auth_addresses))
        findings.extend(_mx(ev))
        return findings
    findings.extend(_kinds(ev.name, resolver))
    findings.extend(_stale(ev, resolver, auth, auth_addresses))
    findings.extend(_public(ev, resolver, auth_addresses))
    findings.extend(_ttl(ev, resolver, auth))
    findings.extend(_families(ev.name, resolver))
    findings.extend(_mx(ev))
    return findings


def _no_address(name: str, resolver: DnsAnswer, auth_addresses: set[str]) -> Finding:
    what = "no such name (NXDOMAIN)" if resolver.nxdomain else "no A or AAAA record"
    seen = f"{resolver.server}: {resolver.error or what}"
    evidence = [seen]
    if auth_addresses:
        evidence.append(f"the zone's authoritative servers answer {_list(auth_addresses)}")
        cause = (
            f"The authoritative servers know {name}, but the resolver the phone uses does not: "
            "it cached an earlier 'no such name' (negative caching, RFC 2308) or cannot reach "
            "them. Until that cache entry runs out, the phone cannot even start to connect."
        )
        fix = (
            "Wait for the negative cache to expire (the zone's SOA minimum), or flush the "
            "resolver's cache; keep the SOA minimum short in zones with dynamic names."
        )
    else:
        cause = (
            f"The phone asks its resolver for {name} and gets no address, so it cannot even "
            "start to connect."
        )
        fix = (
            f"Publish the record: list {name} in [ddns] names and run {_UPDATE} (or add an "
            "A record at your DNS provider), then check the URL the phone uses for typos."
        )
    return Finding(
        Check.NAMES,
        Severity.FAIL,
        f"{name} does not resolve",
        tuple(evidence),
        cause,
        fix,
    )


def _kinds(name: str, resolver: DnsAnswer) -> list[Finding]:
    out: list[Finding] = []
    for address in resolver.addresses:
        kind = _kind(address)
        if kind in _NOT_ROUTABLE:
            out.append(
                Finding(
                    Check.NAMES,
                    Severity.WARN,
                    f"{name} resolves to {address}, a {kind} address",
                    (f"{resolver.server} answers {address} ({kind})",),
                    f"{address} exists only inside a private network: a phone on mobile data "
                    "or someone else's Wi-Fi cannot reach it. Inside your own network that is "
                    "split-horizon DNS and fine; published to the internet it is the server's "
                    "own address where the router's public one belongs.",
                    "Publish the router's public address: run "
                    f"{_UPDATE} with [ddns] sources that see the outside (stun, echo, upnp, "
                    "natpmp) rather than interface.",
                )
            )
    return out


def _stale(
    ev: NamesEvidence, resolver: DnsAnswer, auth: list[DnsAnswer], auth_addresses: set[str]
) -> list[Finding]:
    if not ev.authoritative:
        reason = ev.authoritative_skipped or "no authoritative server was found"
        return [skip(Check.NAMES, "Resolver against the authoritative servers", reason)]
    if not auth:
        errors = tuple(f"{a.server}: {a.error}" for a in ev.authoritative)
        return [
            Finding(
                Check.NAMES,
                Severity.WARN,
                f"The authoritative servers of {ev.zone or ev.name} did not answer",
                errors,
                "Without them the doctor cannot tell a fresh answer from a cached one; "
                "resolvers that cannot reach them either will fail once their cache runs out.",
                "Check that the zone's NS servers answer on port 53 (TCP and UDP) from the "
                "internet.",
            )
        ]
    out: list[Finding] = []
    sets = {ans.server: set(ans.addresses) for ans in auth}
    if len({frozenset(s) for s in sets.values()}) > 1:
        out.append(
            Finding(
                Check.NAMES,
                Severity.WARN,
                f"The authoritative servers of {ev.zone} disagree about {ev.name}",
                tuple(f"{server} answers {_list(addrs)}" for server, addrs in sets.items()),
                "A secondary server has not taken the change from the primary yet (zone "
                "transfer or NOTIFY not working), so resolvers get the old or the new address "
                "depending on which server they ask.",
                "Make the primary send NOTIFY and allow zone transfers to the secondaries, or "
                "send the ddns update to every server that is authoritative.",
            )
        )
    seen = set(resolver.addresses)
    if seen != auth_addresses:
        ttl = resolver.ttl
        left = f"{ttl} s" if ttl is not None else "the record's TTL"
        evidence = (
            f"{resolver.server} (what the phone asks) answers {_list(seen)}"
            + (f", cached for {ttl} s more" if ttl is not None else ""),
            *(f"authoritative {a.server} answers {_list(set(a.addresses))}" for a in auth),
        )
        out.append(
            Finding(
                Check.NAMES,
                Severity.FAIL,
                "Stale DNS: the phone's resolver still hands out "
                + _list(seen - auth_addresses or seen),
                evidence,
                f"The zone now says {_list(auth_addresses)}, but the resolver the phone uses "
                "still hands out the answer it cached before the address changed. DNS caches "
                "sit behind a changed address: the phone keeps dialling the old address until "
                f"the cached record expires ({left} from now).",
                f"Wait {left}, or flush the resolver's cache. Keep the window small with a "
                "short TTL: [ddns] ttl = 60, then "
                f"{_UPDATE}; keep `natsync ddns run {CONFIG_ARG}` running so changes are "
                "published at once.",
            )
        )
    else:
        out.append(
            ok(
                Check.NAMES,
                f"{ev.name}: the resolver agrees with the authoritative servers",
                f"{resolver.server} answers {_list(seen)}",
                *(f"authoritative {a.server} answers {_list(set(a.addresses))}" for a in auth),
            )
        )
    return out


def _public(ev: NamesEvidence, resolver: DnsAnswer, auth_addresses: set[str]) -> list[Finding]:
    if not ev.public:
        return []
    published = auth_addresses or set(resolver.addresses)
    public = set(ev.public)
    if public <= published:
        return [
            ok(
                Check.NAMES,
                f"{ev.name} points at the current public address",
                f"public address now: {_list(public)}; DNS: {_list(published)}",
            )
        ]
    return [
        Finding(
            Check.NAMES,
            Severity.FAIL,
            f"DNS does not point at the current public address {_list(public - published)}",
            (f"public address now: {_list(public)}", f"DNS publishes {_list(published)}"),
            "The ISP changed the router's public address and nobody told DNS: every phone "
            "dials the old address, which now belongs to someone else or to no one.",
            f"Publish it now with {_UPDATE}, and keep `natsync ddns run {CONFIG_ARG}` "
            "running so the next change is published within [ddns] interval.",
        )
    ]


def _ttl(ev: NamesEvidence, resolver: DnsAnswer, auth: list[DnsAnswer]) -> list[Finding]:
    ttls = [a.ttl for a in auth if a.ttl is not None]
    ttl = max(ttls) if ttls else None
    if ttl is None:
        return []
    if ttl <= DYNAMIC_TTL_MAX:
        return [ok(Check.NAMES, f"TTL {ttl} s suits an address that can change")]
    return [
        Finding(
            Check.NAMES,
            Severity.WARN,
            f"TTL {ttl} s is too long for an address that can change",
            (f"the authoritative servers give {ev.name} a TTL of {ttl} s",),
            "Resolvers (and phones) keep an answer for its TTL. When the ISP changes the "
            f"public address, phones keep dialling the old one for up to {ttl} s after DNS "
            "was updated.",
            f"Publish with a short TTL: [ddns] ttl = 60 (at most {DYNAMIC_TTL_MAX}), then "
            f"{_UPDATE}.",
        )
    ]


def _families(name: str, resolver: DnsAnswer) -> list[Finding]:
    if resolver.a:
        note = (
            f"AAAA: {_list(resolver.aaaa)}"
            if resolver.aaaa
            else "no AAAA record: IPv6-only networks reach it only through NAT64"
        )
        return [ok(Check.NAMES, f"{name} has an IPv4 address", f"A: {_list(resolver.a)}", note)]
    return [
        Finding(
            Check.NAMES,
            Severity.WARN,
            f"{name} has no IPv4 address (no A record)",
            (f"AAAA: {_list(resolver.aaaa)}",),
            "Phones on IPv4-only networks (many mobile and Wi-Fi networks still are) "
            "cannot connect to an IPv6-only name.",
            "Publish an A record too: [ddns] families = [4, 6], then " + _UPDATE + ".",
        )
    ]


def _mx(ev: NamesEvidence) -> list[Finding]:
    mx = ev.mx
    if mx is None:
        return []
    if not mx.records:
        return [
            Finding(
                Check.NAMES,
                Severity.WARN,
                f"No MX record for {mx.domain}",
                (mx.error or f"the resolver has no MX record for {mx.domain}",),
                f"Other mail servers look up the MX record of {mx.domain} to deliver mail "
                "to it; without one, mail for the user never reaches SMTP port 25, so there "
                "is nothing to sync.",
                f"Add an MX record for {mx.domain} pointing at a name in [ddns] names, and set "
                f"[ddns] mx_domain so `natsync ddns status {CONFIG_ARG}` watches it.",
            )
        ]
    targets = dict(mx.target_addresses)
    dead = [t for _, t in mx.records if not targets.get(t)]
    if dead:
        return [
            Finding(
                Check.NAMES,
                Severity.FAIL,
                f"The MX target {_list(dead)} of {mx.domain} has no address",
                tuple(f"MX {pref} {target}" for pref, target in mx.records),
                "Mail servers find the MX record but cannot resolve the host it names, so "
                "they cannot deliver.",
                f"Publish an A record for {dead[0]}: add it to [ddns] names and run {_UPDATE}.",
            )
        ]
    return [
        ok(
            Check.NAMES,
            f"MX of {mx.domain} resolves",
            *(f"MX {pref} {t} → {_list(set(targets.get(t, ())))}" for pref, t in mx.records),
        )
    ]
