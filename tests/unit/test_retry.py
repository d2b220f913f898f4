"""The one retry policy: its stop rules, and ``retrying`` as every outage loop runs it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from ops.core.errors import Invalid, Unavailable
from ops.core.retry import Retry, after, forever, retrying, until

FAST = dict(base_s=0.001, cap_s=0.002)


def flaky(failures: list[BaseException], value: str = "done"):
    """A call failing with ``failures`` in turn, then returning ``value``; counts calls."""
    calls = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return value

    return call, calls


def test_stop_rules():
    assert not any(forever()(n) for n in (1, 10, 10_000))
    assert [after(3)(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    deadline = until(now + timedelta(seconds=1), clock=lambda: now)
    assert not deadline(1)
    assert until(now, clock=lambda: now)(1)


def test_retrying_waits_out_the_named_errors():
    call, calls = flaky([Unavailable("down"), TimeoutError("slow"), Unavailable("down")])
    got = asyncio.run(retrying(call, Retry(**FAST), (Unavailable, TimeoutError), "test.retry"))
    assert got == "done" and len(calls) == 4


def test_retrying_gives_up_with_the_last_error():
    call, calls = flaky([Unavailable("first"), Unavailable("second"), Unavailable("third")])
    with pytest.raises(Unavailable, match="second"):
        asyncio.run(retrying(call, Retry(**FAST, stop=after(2)), (Unavailable,), "test.retry"))
    assert len(calls) == 2


def test_other_errors_are_not_retried():
    call, calls = flaky([Invalid("bad input")])
    with pytest.raises(Invalid):
        asyncio.run(retrying(call, Retry(**FAST), (Unavailable,), "test.retry"))
    assert len(calls) == 1


def test_delays_stay_under_the_cap():
    policy = Retry(base_s=0.1, cap_s=0.4)
    assert all(0 <= policy.delay_s(n) <= 0.4 for n in range(1, 50))
