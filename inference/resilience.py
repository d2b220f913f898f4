"""Decisions the inference client makes about failures, as plain logic.

Which gRPC codes are worth a retry and when to stop calling a server that is down (a
circuit breaker), without I/O so they test in ms; how long to back off is the one retry
policy's (``ops.core.retry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

# Codes that say "the server could not take this now", not "this request is wrong".
TRANSIENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"})
# Codes that mean the server is unreachable or unresponsive: they trip the breaker.
OUTAGE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after ``threshold`` consecutive outage failures; while open, calls fail at
    once. After ``reset_s`` one probe call is let through (half-open): its success
    closes the breaker, its failure opens it again for another ``reset_s``."""

    def __init__(self, threshold: int = 3, reset_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold, self.reset_s, self.clock = threshold, reset_s, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go out now (claims the single probe when half-open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in_s(self) -> float:
        return 0.0 if self.opened_at is None else max(
            0.0, self.reset_s - (self.clock() - self.opened_at))

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at, self.probing = self.clock(), False

    def release(self) -> None:
        """A call that ended without telling whether the server is up (e.g. cancelled)."""
        self.probing = False
