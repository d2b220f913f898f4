"""Per-caller rate limit of the gateway: one token bucket per caller.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a request takes
one token or, when none is left, takes nothing and learns how long to wait (the
gateway answers RESOURCE_EXHAUSTED with that delay). Memory stays bounded: a
bucket that has refilled completely is forgotten, since a fresh one is the same, and
beyond ``max_callers`` the least recently seen caller is forgotten too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_callers: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0 or burst < 1 or max_callers < 1:
            raise ValueError("rate_per_s must be positive, burst and max_callers at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._full_after_s = burst / rate_per_s  # an idle bucket is full again by then
        # caller -> (tokens, when counted), least recently seen first. No lock: the
        # gateway (grpc.aio) calls take on its event loop's thread only, and take never
        # awaits, so two calls cannot interleave.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, caller: str) -> float:
        """0 when ``caller`` may go ahead (a token is spent), otherwise the seconds until
        it may (nothing is spent)."""
        now = self._clock()
        self._forget_idle(now)
        tokens, then = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate_per_s)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate_per_s
        self._buckets[caller] = (tokens - 1 if not wait else tokens, now)
        if len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            _, then = next(iter(self._buckets.values()))
            if now - then < self._full_after_s:
                return
            self._buckets.popitem(last=False)
