"""Per-device request budgets, as Exchange throttles ActiveSync devices (MS-ASHTTP 2.2.2.1.2.13
X-MS-ASThrottle; 503 with Retry-After, MS-ASHTTP 3.2.5.1).

A phone that loops (a Sync or Ping storm after a bug, a broken state it keeps retrying) costs the
server as much as hundreds of well-behaved ones. Each device (user, DeviceId) gets a token bucket:
``requests`` commands, refilled evenly over ``window`` seconds. A request that finds the bucket
empty is answered 503 with ``X-MS-ASThrottle: CommandFrequency`` and ``Retry-After`` (the seconds
until one token is back), and the server logs one line naming the device when throttling starts
(not one per refused request). Users and devices on the admin's allowlist are never throttled.

Sans-I/O: :meth:`Budgets.take` gets ``now`` (monotonic seconds) from the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Value of X-MS-ASThrottle: the device sent too many commands in a period (MS-ASHTTP 2.2.2.1.2.13).
THROTTLE_REASON = "CommandFrequency"
#: Devices tracked at once; past it, the bucket untouched the longest is forgotten (a device
#: forgotten starts again with a full bucket, which errs on the phone's side).
MAX_TRACKED_DEVICES = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    throttled: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Budgets.take` decided."""

    allowed: bool
    #: Seconds until the device may send again (Retry-After), when refused.
    retry_after: int = 0
    #: This refusal starts a throttling episode (log it); later ones in it do not.
    first: bool = False


class Budgets:
    """Token buckets per device key; ``requests`` <= 0 turns throttling off."""

    __slots__ = ("_buckets", "_exempt", "_rate", "_requests")

    def __init__(self, requests: int, window: float, exempt: frozenset[str] = frozenset()) -> None:
        self._requests = requests
        self._rate = requests / window if requests > 0 and window > 0 else 0.0
        self._exempt = frozenset(e.lower() for e in exempt)
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, user: str, device: str, now: float) -> Verdict:
        """Spend one request of (*user*, *device*)'s budget at *now*."""
        if not self.enabled or user.lower() in self._exempt or device.lower() in self._exempt:
            return Verdict(True)
        key = (user.lower(), device.lower())
        bucket = self._buckets.pop(key, None)  # re-inserted last: the dict stays in LRU order
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_DEVICES:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = _Bucket(float(self._requests), now)
        bucket.tokens = min(float(self._requests), bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.throttled = False
            return Verdict(True)
        first = not bucket.throttled
        bucket.throttled = True
        return Verdict(False, max(1, math.ceil((1.0 - bucket.tokens) / self._rate)), first)
