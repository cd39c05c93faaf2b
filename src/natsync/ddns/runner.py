"""The DDNS loop: observe, judge, publish, record — once (``update``) or every interval (``run``).

Clock, sleep and the observation function are injected, so a test can run cycles back to back
against a real DNS server and a lab router without waiting on wall-clock time it doesn't need.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from natsync.ddns.agreement import Verdict, VerdictKind, judge
from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import CheckEntry, History, UpdateEntry
from natsync.ddns.settings import DdnsSettings
from natsync.ddns.sources import Observation, gather
from natsync.ddns.update import BACKOFF_BASE, MAX_ATTEMPTS, DnsServer, load_key, publish

log = logging.getLogger(__name__)

RDTYPE = {4: "A", 6: "AAAA"}


@dataclass(frozen=True, slots=True)
class NameResult:
    name: str
    rdtype: str
    #: "updated", "unchanged", "error" or "skipped" (no trustworthy address).
    result: str
    old: str
    new: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CycleReport:
    at: float
    verdicts: tuple[Verdict, ...]
    results: tuple[NameResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.result != "error" for r in self.results)


def dns_server(settings: DdnsSettings) -> DnsServer:
    settings.require_dns()
    key = load_key(settings.key_file) if settings.key_file else None
    return DnsServer(
        settings.server_host, settings.server_port, settings.zone, key, settings.timeout
    )


class DdnsRunner:
    def __init__(
        self,
        settings: DdnsSettings,
        history: History,
        *,
        observe: Callable[[DdnsSettings], list[Observation]] = gather,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        self.settings = settings
        self.history = history
        self.server = dns_server(settings)
        self.observe = observe
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.attempts = attempts
        self.backoff_base = backoff_base

    def update_once(self) -> CycleReport:
        now = self.clock()
        observations = self.observe(self.settings)
        verdicts = tuple(judge(observations, f) for f in self.settings.families)
        results: list[NameResult] = []
        for verdict in verdicts:
            self.history.record_check(
                CheckEntry(
                    verdict.family,
                    now,
                    verdict.kind.value,
                    str(verdict.address or ""),
                    verdict.summary,
                    verdict.evidence,
                )
            )
            if verdict.kind == VerdictKind.CGNAT:
                log.error(
                    "IPv%d: %s", verdict.family, "; ".join((verdict.summary, *verdict.evidence))
                )
            rdtype = RDTYPE[verdict.family]
            for name in self.settings.names:
                results.append(self._publish(name, rdtype, verdict))
        return CycleReport(now, verdicts, tuple(results))

    def _publish(self, name: str, rdtype: str, verdict: Verdict) -> NameResult:
        if verdict.address is None:
            return NameResult(name, rdtype, "skipped", "", "", verdict.summary)
        address = str(verdict.address)
        try:
            outcome = publish(
                self.server,
                name,
                rdtype,
                address,
                self.settings.ttl,
                sleep=self.sleep,
                rng=self.rng,
                attempts=self.attempts,
                base=self.backoff_base,
            )
        except DnsUpdateError as exc:
            result = NameResult(name, rdtype, "error", "", address, exc.message)
        else:
            old = ",".join(sorted(outcome.old))
            if outcome.changed:
                log.info("%s %s: %s -> %s", name, rdtype, old or "(none)", address)
            result = NameResult(
                name, rdtype, "updated" if outcome.changed else "unchanged", old, address
            )
        self.history.record_update(
            UpdateEntry(
                self.clock(), name, rdtype, result.old, result.new, result.result, result.detail
            )
        )
        return result

    def run(
        self,
        should_stop: Callable[[], bool],
        wait: Callable[[float], object] | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        """Check every ``settings.interval`` seconds until *should_stop*; *wait* sleeps and may
        return early (a threading.Event's wait) so a stop request ends the loop at once."""
        wait = wait or self.sleep
        while not should_stop():
            started = self.clock()
            report = self.update_once()
            if on_cycle:
                on_cycle(report)
            elapsed = self.clock() - started
            wait(max(0.0, self.settings.interval - elapsed))
