"""The inference client against the real Triton of the local stack."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import numpy as np
import pytest
from prometheus_client import REGISTRY

from inference.client import CircuitOpen, InferenceClient, InferenceError, InferenceUnavailable
from inference.resilience import BreakerState, CircuitBreaker
from ops import stack
from ops.stack.services import Record, Triton

pytestmark = pytest.mark.stack

# An agent's action: a reply and, when needed, a tool call or a ballot (bounded sizes, so
# every generation ends well inside max_tokens).
ACTION = {
    "type": "object",
    "properties": {
        "reply": {"type": "string", "minLength": 1, "maxLength": 160},
        "tool_call": {"anyOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False, "required": ["tool", "arguments"],
            "properties": {"tool": {"enum": ["calculator", "csv_processor", "code_analyzer",
                                             "chart"]},
                           "arguments": {"type": "string", "maxLength": 80}}}]},
        "ballot": {"anyOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False, "required": ["choice", "rationale"],
            "properties": {"choice": {"enum": ["yes", "no", "abstain"]},
                           "rationale": {"type": "string", "maxLength": 80}}}]},
    },
    "required": ["reply", "tool_call", "ballot"],
    "additionalProperties": False,
}
FEW_SHOT = """Agents in a team chat answer each message with one JSON object: a short reply, and \
a tool call or a ballot when one is needed.

Message: Can someone compute 17 percent of 2340?
JSON: {"reply": "Sure, let me calculate that.", "tool_call": {"tool": "calculator", \
"arguments": "0.17 * 2340"}, "ballot": null}

Message: Vote: should we upgrade to PostgreSQL 17 this sprint?
JSON: {"reply": "Yes from me, the upgrade path is tested.", "tool_call": null, \
"ballot": {"choice": "yes", "rationale": "tested upgrade path"}}

Message: Good morning everyone!
JSON: {"reply": "Good morning! Ready when you are.", "tool_call": null, "ballot": null}

Message: MESSAGE
JSON: """
MESSAGES = [
    "The API server returns 502 since the last deploy, any idea?",
    "Please sum the revenue column of sales.csv",
    "Vote: should we adopt Rust for the new parser?",
    "Write a haiku about databases",
    "What is 12 squared?",
    "Can you lint this function: def f(x): return x+1",
    "Plot weekly signups as a bar chart",
    "Vote: move the standup to 10am?",
    "Our Postgres query on orders takes 4 seconds, why?",
    "Who owns the billing service?",
    "Summarize yesterday's incident in one line",
    "Vote: freeze deploys during the holidays?",
    "Convert 72 Fahrenheit to Celsius",
    "Is Kafka better than RabbitMQ for event sourcing?",
    "The login page is blank on Safari",
    "Thanks for the quick fix!",
    "Vote: allocate two more GPUs to the inference team?",
    "How many rows does the users table have?",
    "Draft a friendly reminder about code reviews",
    "Review the CSV export: columns are shifted by one",
]


def run(coro):
    return asyncio.run(coro)


def metric(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_embeddings_are_deterministic_sensible_and_coalesced(settings):
    texts = ["How do I speed up a slow PostgreSQL query?",
             "Adding an index made the SQL query much faster",
             "A watercolour painting of a sunset over the sea"]

    async def scenario():
        async with InferenceClient(settings.triton_grpc, embed_batch=32) as client:
            together = await client.embed(texts)
            requests_before = metric("agora_inference_embed_batch_size_count")
            # 64 callers at once, one text each: coalesced into two full batches.
            alone = await asyncio.gather(*(client.embed([texts[i % 3]]) for i in range(64)))
            requests = metric("agora_inference_embed_batch_size_count") - requests_before
            return together, np.concatenate(alone), requests

    vectors, singles, requests = run(scenario())
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    np.testing.assert_allclose(singles, vectors[np.arange(64) % 3], atol=1e-5)
    assert requests == 2


def test_long_completion_streams_many_chunks(settings):
    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            generation = client.generate("The history of databases began", max_tokens=48)
            chunks = [piece async for piece in generation]
            return chunks, generation.result

    chunks, result = run(scenario())
    assert len(chunks) > 10 and "".join(chunks) == result.text
    assert result.completion_tokens == 48 and result.finish_reason == "length"
    assert result.prompt_tokens > 3 and 0 < result.first_token_s < result.latency_s


def test_structured_actions_for_twenty_prompts_all_parse_and_validate(settings):
    async def scenario():
        async with InferenceClient(settings.triton_grpc, timeout_s=120) as client:
            return [await client.complete(FEW_SHOT.replace("MESSAGE", m), json_schema=ACTION,
                                          max_tokens=320, temperature=0.7,
                                          repetition_penalty=1.1, seed=i)
                    for i, m in enumerate(MESSAGES)]

    results = run(scenario())
    assert len(results) == 20
    for result in results:
        assert result.finish_reason == "stop"
        assert result.parsed == json.loads(result.text)
        jsonschema.validate(result.parsed, ACTION)


def test_invalid_request_is_rejected_with_the_reason(settings):
    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            await client.complete("hi", max_tokens=100_000)

    with pytest.raises(InferenceError, match="max_tokens must be in 1..1024") as err:
        run(scenario())
    assert not isinstance(err.value, InferenceUnavailable)


def test_cancelled_stream_stops_decoding_on_the_server(settings):
    log = settings.stack_dir / "logs" / "triton.log"

    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            async with client.generate("Write a very long story about a lighthouse:",
                                       max_tokens=900) as generation:
                async for _ in generation:
                    break  # leave after the first piece
            # The server is free again: a new request is served right away.
            return await client.complete("Hello", max_tokens=4)

    assert run(scenario()).completion_tokens == 4
    cancelled = [int(m.group(1)) for m in
                 re.finditer(r"cancelled after (\d+) of 900 tokens", log.read_text())]
    assert cancelled and cancelled[-1] < 900


def test_triton_outage_opens_the_breaker_and_recovery_closes_it(settings):
    state = stack.read_state(settings.stack_dir)
    triton = Record.from_json(state["services"]["triton"])

    async def scenario():
        breaker = CircuitBreaker(threshold=2, reset_s=0.5)
        async with InferenceClient(settings.triton_grpc, breaker=breaker, retries=1,
                                   timeout_s=10) as client:
            before = await client.embed(["the same sentence"])
            Triton().stop(triton)  # an outage: the process is gone, the record stays
            with pytest.raises(InferenceUnavailable, match="UNAVAILABLE"):
                await client.embed(["the same sentence"])
            assert breaker.state is BreakerState.OPEN
            with pytest.raises(CircuitOpen, match=f"Triton at {settings.triton_grpc}.*circuit open"):
                await client.embed(["the same sentence"])
            # `stack up` repairs the stale service on the same port; the same client
            # notices through the breaker's probe, without being recreated.
            await asyncio.to_thread(stack.up, settings.stack_dir, lambda line: None)
            assert stack.env(settings.stack_dir)["AGORA_TRITON_GRPC"] == settings.triton_grpc
            for _ in range(100):
                try:
                    after = await client.embed(["the same sentence"])
                    break
                except InferenceUnavailable:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("the client did not recover after Triton came back")
            assert breaker.state is BreakerState.CLOSED
            return before, after

    try:
        before, after = run(scenario())
    finally:
        stack.up(settings.stack_dir, progress=lambda line: None)  # others need Triton
    np.testing.assert_allclose(before, after, atol=1e-5)
