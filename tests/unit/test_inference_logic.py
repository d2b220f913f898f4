"""Inference decisions as plain functions: stops, backoff, breaker, parsing, the prefix
cache's sequence table, the model path check and chat templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.client import InvalidOutput, parse_structured
from inference.engine import StopMatcher, check_model, render_chat
from inference.kvcache import SequenceTable, common_prefix
from inference.resilience import BreakerState, CircuitBreaker
from ops.core.retry import backoff_s
from support.clock import Clock
from support.samples import CHAT_TEMPLATE


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


def test_common_prefix_finds_the_first_difference():
    assert common_prefix([1, 2, 3, 4], [1, 2, 3, 4, 5]) == 4
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([7], [8]) == 0


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_common_prefix_agrees_with_a_plain_scan(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix(a, b) == n


def test_requests_take_low_slots_and_finished_ones_move_to_cache_entries():
    table = SequenceTable(slots=2, entries=2)
    a = table.take()
    table.extend(a, [1, 2, 3, 4, 5])
    entry, cleared = table.keep(a)
    assert entry >= 2 and cleared == [] and list(table.idle) == [entry]
    assert a not in table.tokens and table.take() == a  # the slot is free again
    assert table.longest_prefix([1, 2, 3, 9]) == (entry, 3)
    table.copy(entry, a, 3)
    assert table.tokens[a] == [1, 2, 3]
    table.extend(a, [7, 7])
    second, _ = table.keep(a)
    assert second not in (entry, a) and list(table.idle) == [entry, second]
    b = table.take()
    table.extend(b, [5, 5, 5])
    # every entry taken: the least recently used one is cleared for it
    third, cleared = table.keep(b)
    assert cleared == [entry] and third == entry and list(table.idle) == [second, third]
    assert table.longest_prefix([1, 2, 3, 7, 7, 8]) == (second, 5)


def test_an_entry_that_another_one_contains_is_dropped():
    table = SequenceTable(slots=1, entries=3)
    s = table.take()
    table.extend(s, [1, 2, 3])
    short, _ = table.keep(s)
    s = table.take()
    table.copy(short, s, 3)
    table.extend(s, [4, 5])
    longer, cleared = table.keep(s)
    assert cleared == [short] and list(table.idle) == [longer]
    s = table.take()
    table.extend(s, [1, 2])  # ``longer`` holds it already: not kept twice
    assert table.keep(s) == (None, []) and list(table.idle) == [longer]


def test_an_engine_without_cache_entries_keeps_nothing():
    table = SequenceTable(slots=2, entries=0)
    s = table.take()
    table.extend(s, [1, 2])
    assert table.keep(s) == (None, []) and not table.tokens and len(table.free_slots) == 2


def test_a_failed_request_frees_its_slot():
    table = SequenceTable(slots=1, entries=1)
    s = table.take()
    table.extend(s, [1])
    table.drop(s)
    assert table.take() == s


def test_a_model_path_that_is_not_a_gguf_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(ValueError, match="AGORA_GENERATOR_MODEL=.*cannot read"):
        check_model(tmp_path / "missing.gguf")
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04not a model")
    with pytest.raises(ValueError, match="AGORA_GENERATOR_MODEL=.*not a GGUF"):
        check_model(tmp_path / "model.bin")


def test_a_chat_template_formats_the_messages_with_the_generation_prompt():
    text = render_chat(CHAT_TEMPLATE, [{"role": "user", "content": " hi "},
                                        {"role": "assistant", "content": "hello"}],
                       "<bos>", "<eos>")
    assert text == ("<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nhello"
                    "<end_of_turn>\n<start_of_turn>model\n")


def test_a_chat_template_cannot_escape_its_sandbox_and_its_errors_are_invalid_input():
    with pytest.raises(ValueError, match="chat template"):
        render_chat("{{ raise_exception('no system role') }}", [], "", "")
    with pytest.raises(ValueError, match="chat template"):
        render_chat("{{ messages.__class__.__mro__[1].__subclasses__() }}", [], "", "")
