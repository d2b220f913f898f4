"""Agora's one retry policy: full-jitter exponential backoff and a named stop rule.

Every loop that waits out an outage (the inference client, relevance and the responder
waiting for Triton, the sinks waiting for their store) takes its delays and its stop
from a ``Retry``; async callers run through ``retrying``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

T = TypeVar("T")
Stop = Callable[[int], bool]  # given the failed attempts so far: give up now?
log = structlog.get_logger("agora.retry")


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
              ) -> float:
    """Delay before retry number ``attempt`` (1-based): full-jitter exponential backoff."""
    return rand() * min(cap_s, base_s * 2 ** (attempt - 1))


def forever() -> Stop:
    """Never give up: the caller's source waits for it (its offsets stay uncommitted)."""
    return lambda attempt: False


def after(attempts: int) -> Stop:
    """Give up once ``attempts`` attempts have failed."""
    return lambda attempt: attempt >= attempts


def until(deadline, clock: Callable[[], object] = time.monotonic) -> Stop:
    """Give up once ``clock()`` has reached ``deadline`` (a monotonic time by default; a
    task's wall-clock deadline with ``clock`` returning the current datetime)."""
    return lambda attempt: clock() >= deadline


@dataclass(frozen=True)
class Retry:
    base_s: float = 0.5
    cap_s: float = 5.0
    stop: Stop = field(default_factory=forever)

    def delay_s(self, attempt: int) -> float:
        return backoff_s(attempt, self.base_s, self.cap_s)

    def gives_up(self, attempt: int) -> bool:
        return self.stop(attempt)


async def retrying(call: Callable[[], Awaitable[T]], policy: Retry,
                   on: tuple[type[BaseException], ...], event: str, **context) -> T:
    """``await call()`` until it returns, retrying after errors of types ``on`` as
    ``policy`` says; the last error is raised once the policy gives up. Each retry is
    logged as ``event`` with ``context``."""
    attempt = 0
    while True:
        try:
            return await call()
        except on as exc:
            attempt += 1
            if policy.gives_up(attempt):
                raise
            delay = policy.delay_s(attempt)
            log.warning(event, attempt=attempt, retry_in_s=round(delay, 2), error=str(exc),
                        **context)
            await asyncio.sleep(delay)
