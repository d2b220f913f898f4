"""``agora demo``: start the embedded stack and exercise each service once.

Later issues grow this into the scripted workspace scenario; today it proves the
stack: an Avro chat message through the broker, embeddings from Triton, memory in
Qdrant, state in Postgres, metrics in ClickHouse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from inference.client import InferenceClient
from ops import smoke, stack
from ops.config import Settings
from ops.topics import ensure_topics

Echo = Callable[[str], None]

SENTENCES = [
    "The API server returns 502 since the last deploy",
    "Nginx upstream errors after the new release went out",
    "Let's write a poem about autumn leaves",
]
PROMPT = "Incident report: the API server returns 502 since the last deploy. First step:"


async def _infer(settings: Settings):
    async with InferenceClient(settings.triton_grpc) as client:
        vectors, [query] = await asyncio.gather(
            client.embed(SENTENCES), client.embed(["why do we get bad gateway errors?"]))
        story = await client.complete(PROMPT, max_tokens=24, stop=["\n"])
    return vectors, query, story


def run(settings: Settings, echo: Echo, keep: bool) -> None:
    already_up = all(s.state == "up" for s in stack.status(settings.stack_dir))
    echo("== starting the embedded stack")
    stack.up(settings.stack_dir, progress=echo)
    settings = Settings()  # now resolves to the running stack's addresses
    try:
        _exercise(settings, echo)
    finally:
        if keep or already_up:
            echo("\n== the stack stays up; connect with:")
            echo('   eval "$(agora stack env)"   # then: agora stack status, agora stack down')
        else:
            echo("\n== stopping the stack")
            stack.down(settings.stack_dir, progress=echo)


def _exercise(settings: Settings, echo: Echo) -> None:
    echo("\n== topics")
    for t in ensure_topics(settings):
        echo(f"   {t.name:<28} {t.partitions} partitions  ({t.action})")

    echo("\n== broker: an Avro ChatMessage through agora.chat.messages")
    started = time.monotonic()
    message = smoke.chat_message("incidents", SENTENCES[0])
    got, partition = smoke.kafka_roundtrip(settings, message, group="agora-demo")
    echo(f"   produced and consumed in group agora-demo from partition {partition} "
         f"in {time.monotonic() - started:.2f}s: {got['author_id']}: {got['text']!r}")

    echo("\n== triton: embeddings from the embedder model over gRPC")
    vectors, query, story = asyncio.run(_infer(settings))
    echo(f"   {vectors.shape[0]} x {vectors.shape[1]} fp32, norms "
         f"{', '.join(f'{n:.3f}' for n in np.linalg.norm(vectors, axis=1))}")
    for i, text in enumerate(SENTENCES[1:], 1):
        echo(f"   cosine({SENTENCES[0][:24]!r}..., {text[:32]!r}...) = "
             f"{float(vectors[0] @ vectors[i]):.3f}")

    echo("\n== triton: streamed generation from the generator model (Gemma 3 270M)")
    echo(f"   {PROMPT!r} ->{story.text!r}")
    echo(f"   {story.completion_tokens} tokens, first after {story.first_token_s * 1000:.0f} ms, "
         f"{story.tokens_per_s:.0f} tokens/s, finish: {story.finish_reason}")

    echo("\n== qdrant: the sentences as memory points, searched with a new question")
    ranked = smoke.qdrant_roundtrip(settings, vectors, query)
    echo(f"   nearest memory: {SENTENCES[ranked[0]]!r}")

    echo("\n== postgres: a row written and read back")
    echo(f"   read back: {smoke.postgres_roundtrip(settings, message['text'])!r}")

    echo("\n== clickhouse (chdb): a MergeTree table filled and counted")
    version, count = smoke.clickhouse_roundtrip(settings, rows=10_000)
    echo(f"   ClickHouse {version}: inserted and counted {count} rows")
