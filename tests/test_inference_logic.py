"""The inference client's decisions as plain functions: stops, backoff, breaker, parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.client import InvalidOutput, parse_structured
from inference.engine import StopMatcher, grammar_for
from inference.resilience import BreakerState, CircuitBreaker, backoff_s


def run_matcher(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_sequence_split_across_pieces_is_cut_exactly():
    assert run_matcher(["\nUser:"], ["Hello", " there\nUs", "er: more"]) == ("Hello there", True)
    assert run_matcher(["###"], ["a#", "#b"]) == ("a##b", False)  # a near miss is emitted


@given(st.lists(st.text(max_size=5), max_size=12), st.text(min_size=1, max_size=4))
def test_stop_matcher_emits_exactly_the_text_before_the_first_stop(pieces, stop):
    full = "".join(pieces)
    text, stopped = run_matcher([stop], pieces)
    cut = full.find(stop)
    # The earliest occurrence may only be detected once the piece holding its end arrives,
    # but what is emitted is never past it.
    assert stopped == (cut >= 0)
    assert text == (full[:cut] if cut >= 0 else full)


def test_backoff_grows_exponentially_up_to_the_cap():
    assert [backoff_s(a, 0.1, 1.0, rand=lambda: 1.0) for a in (1, 2, 3, 4, 5)] == [
        0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff_s(3, 0.1, 1.0, rand=lambda: 0.5) == pytest.approx(0.2)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_fails_fast_then_probes_once_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, reset_s=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_in_s() == 2.0
    clock.now = 2.5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # a single probe
    breaker.failure()  # the probe failed: open again for a full period
    assert breaker.state is BreakerState.OPEN
    clock.now = 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_breaker_success_resets_the_count_and_a_released_probe_frees_the_slot():
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, reset_s=1.0, clock=clock)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    clock.now = 1.0
    assert breaker.allow()
    breaker.release()  # cancelled probe: nothing learnt, another may try
    assert breaker.allow()


SCHEMA = {"type": "object", "properties": {"reply": {"type": "string", "maxLength": 10}},
          "required": ["reply"], "additionalProperties": False}


def test_parse_structured_accepts_valid_and_names_what_is_wrong():
    assert parse_structured('{"reply": "ok"}', SCHEMA, "stop") == {"reply": "ok"}
    with pytest.raises(InvalidOutput, match="truncated"):
        parse_structured('{"reply": "o', SCHEMA, "length")
    with pytest.raises(InvalidOutput, match="not JSON"):
        parse_structured('{"reply": ', SCHEMA, "stop")
    with pytest.raises(InvalidOutput, match="does not match the schema") as err:
        parse_structured('{"reply": "far too long here"}', SCHEMA, "stop")
    assert err.value.text == '{"reply": "far too long here"}'


def test_grammar_allows_one_space_between_tokens_only():
    import json

    grammar = grammar_for(json.dumps(SCHEMA))
    assert 'space ::= | " "' in grammar.splitlines()
    assert "\\n" not in next(line for line in grammar.splitlines() if line.startswith("space"))


def test_a_schema_too_large_for_a_grammar_is_refused_not_crashed_on():
    # llama.cpp rejects repetitions above 2000 and then dies on the missing sampler.
    with pytest.raises(ValueError, match="at most 2000"):
        grammar_for(json.dumps({"type": "string", "maxLength": 4000}))
    assert grammar_for(json.dumps({"type": "string", "maxLength": 2000}))
