"""The DDNS loop: observe, judge, publish, record — once (``update``) or every interval (``run``).

Publishing goes through the configured provider's updater (natsync.ddns.providers). The runner
keeps the rules every provider shares, with the history as memory:

* a provider that said "stop" (a wrong password, an unknown name, abuse) gets nothing more until
  the configuration changes; one that said "wait" (dyndns2 911, HTTP 429) gets nothing before
  the time it gave;
* an address already sent and accepted is not sent again while the provider has not served it
  yet (within the updater's ``resend_after``): repeated updates get clients blocked.

Clock, sleep and the observation function are injected, so a test can run cycles back to back
against real servers without waiting on wall-clock time it doesn't need.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from natsync.ddns.agreement import Verdict, VerdictKind, judge
from natsync.ddns.errors import DnsUpdateError, Unconfirmed
from natsync.ddns.history import Block, CheckEntry, History, UpdateEntry
from natsync.ddns.settings import DdnsSettings
from natsync.ddns.sources import Observation, gather
from natsync.ddns.update import BACKOFF_BASE, MAX_ATTEMPTS
from natsync.errors import ConfigError

log = logging.getLogger(__name__)

RDTYPE = {4: "A", 6: "AAAA"}


@dataclass(frozen=True, slots=True)
class NameResult:
    name: str
    rdtype: str
    #: "updated", "unchanged", "pending" (sent, not served yet), "unconfirmed" (accepted, not
    #: served within confirm_timeout), "blocked" (the provider said stop or wait), "error" or
    #: "skipped" (no trustworthy address).
    result: str
    old: str
    new: str
    detail: str = ""
    #: TTL the old record had: phones and resolvers may hold the old address this long.
    old_ttl: int | None = None
    #: TTL of the record as served now.
    ttl: int | None = None

    @property
    def failed(self) -> bool:
        return self.result in ("error", "unconfirmed", "blocked")


@dataclass(frozen=True, slots=True)
class CycleReport:
    at: float
    verdicts: tuple[Verdict, ...]
    results: tuple[NameResult, ...]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)


def stale_words(old: str, old_ttl: int | None) -> str:
    """What a person needs to know after a change: how long the old address may linger."""
    if not old:
        return "the name had no such record before"
    if old_ttl is None:
        return f"caches may still hold {old} for as long as its TTL was"
    return f"phones and resolvers that looked it up before may keep {old} for up to {old_ttl} s"


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
        provider: str | None = None,
        confirm_timeout: float | None = None,
    ) -> None:
        from natsync.ddns.providers import make_updater

        self.settings = settings
        self.history = history
        self.observe = observe
        self.clock = clock
        self.sleep = sleep
        self.updater = make_updater(
            settings,
            provider,
            sleep=sleep,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not security
            attempts=attempts,
            backoff_base=backoff_base,
            confirm_timeout=confirm_timeout or settings.confirm_timeout,
        )
        if not settings.names:
            raise ConfigError("ddns.names is empty: nothing to update")
        self._told: set[float] = set()

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

    def _blocked(self, now: float) -> Block | None:
        block = self.history.block(self.updater.fingerprint())
        if block is None:
            return None
        if block.active(now):
            return block
        self.history.clear_block(block.fingerprint)
        return None

    def _publish(self, name: str, rdtype: str, verdict: Verdict) -> NameResult:
        if verdict.address is None:
            return NameResult(name, rdtype, "skipped", "", "", verdict.summary)
        address = str(verdict.address)
        now = self.clock()
        block = self._blocked(now)
        if block is not None:
            when = (
                "until the configuration changes"
                if block.until is None
                else f"for {block.until - now:.0f} s more"
            )
            result = NameResult(
                name, rdtype, "blocked", "", address, f"not sent {when}: {block.reason}"
            )
            if block.at not in self._told:  # once per stop, not at every check
                self._told.add(block.at)
                log.warning("%s: nothing is sent %s: %s", block.provider, when, block.reason)
            self._record(result)
            return result
        sent = self.history.last_sent(name, rdtype)
        sent_recently = (
            sent is not None and sent.new == address and now - sent.at < self.updater.resend_after
        )
        try:
            outcome = self.updater.publish(
                name, rdtype, address, self.settings.ttl, sent_recently=sent_recently
            )
        except Unconfirmed as exc:
            result = NameResult(name, rdtype, "unconfirmed", "", address, exc.message)
        except DnsUpdateError as exc:
            log.error("%s: %s %s: %s", self.updater.kind, name, rdtype, exc.message)
            if exc.fatal or exc.retry_after:
                until = None if exc.fatal else now + float(exc.retry_after or 0)
                self.history.set_block(
                    Block(self.updater.fingerprint(), self.updater.kind, now, until, exc.message)
                )
            result = NameResult(name, rdtype, "error", "", address, exc.message)
        else:
            old = ",".join(sorted(outcome.old))
            detail = outcome.note
            if outcome.result == "updated":
                detail = stale_words(old, outcome.old_ttl)
                log.info("%s %s: %s -> %s; %s", name, rdtype, old or "(none)", address, detail)
            result = NameResult(
                name, rdtype, outcome.result, old, address, detail, outcome.old_ttl, outcome.ttl
            )
        self._record(result)
        return result

    def _record(self, result: NameResult) -> None:
        self.history.record_update(
            UpdateEntry(
                self.clock(),
                result.name,
                result.rdtype,
                result.old,
                result.new,
                result.result,
                result.detail,
            )
        )

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
