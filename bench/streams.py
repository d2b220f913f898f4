"""Relevance throughput vs the embedder alone and vs a bare Faust agent, side by side.

    .venv/bin/python bench/streams.py [--messages 1500] [--channels 8] [--batch 64]

A backlog of chat messages (six agents in each channel) is produced first; then one
worker decides them all (relevance with its embedding, scoring, memory and sends; a
threshold of 1 keeps the responder idle so relevance alone is measured), a bare
Faust agent forwards the same backlog, and the embedder embeds the same texts in
batches of the relevance batch size. Rates come from the output records' broker
timestamps, first to last, so start-up is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import Settings, local_stack, rate
from gateway.registry import Registry
from inference.client import InferenceClient
from ops.core import kafka
from ops.core.kafka import ensure_topics
from ops.devstack import smoke
from ops.devstack.process import Proc, spawn, start_worker, stop
from schemas import codec
from schemas.topics import ALL, CHAT_MESSAGES, RELEVANCE_DECISIONS, Topic
from streams.domain.relevance.scoring import DEFAULT_CONFIG_PATH

TEAM = ("developer-backend", "developer-frontend", "analyst-data", "moderator-quality",
        "researcher-tech", "creative-writer")
FORWARDED = Topic("agora.bench.forwarded", "channel_id", ("ChatMessage",))


def rate_of(proc: Proc, settings: Settings, topic: str, expected: int) -> float:
    """``rate`` of what the process ``proc`` writes; the process is stopped afterwards."""
    try:
        return rate(settings, topic, expected)
    finally:
        stop(proc, grace_s=15)


async def embedder_rate(address: str, texts: list[str], batch: int) -> float:
    async with InferenceClient(address, embed_batch=batch) as client:
        await client.embed(texts[:batch])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            await client.embed(texts[i:i + batch])
        return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    with local_stack() as settings:
        ensure_topics(settings, topics=(*ALL, FORWARDED))
        rooms = [f"bench-{i}" for i in range(args.channels)]
        print(f"team of {len(TEAM)} agents in {len(rooms)} channels", flush=True)
        registry = Registry(settings)
        for room in rooms:
            for template in TEAM:
                registry.create(template, room)
        topics = ("orders query", "Safari layout", "signup chart", "release notes")
        texts = [f"Message {i}: the {topics[i % 4]} needs a look, case {i}"
                 for i in range(args.messages)]
        producer = kafka.producer(settings, **{"linger.ms": 5})
        for i, text in enumerate(texts):
            message = smoke.chat_message(rooms[i % len(rooms)], text, author_id="human:bench")
            producer.produce(CHAT_MESSAGES.name, key=message["channel_id"].encode(),
                             value=codec.encode("ChatMessage", message))
        producer.flush(30)
        print(f"backlog of {args.messages} messages produced", flush=True)

        config = yaml.safe_load((settings.relevance_config or DEFAULT_CONFIG_PATH).read_text())
        config["threshold"] = 1.0
        path = Path(tempfile.mkdtemp()) / "relevance.yaml"
        path.write_text(yaml.safe_dump(config))
        worker = start_worker(settings, "bench", AGORA_RELEVANCE_CONFIG=str(path))
        relevance = rate_of(worker, settings, RELEVANCE_DECISIONS.name, args.messages)
        print(f"  relevance (embed + score + memory + send): {relevance:8.1f} messages/s",
              flush=True)

        log = settings.stack_dir / "logs" / "bench-forward.log"
        env = {"AGORA_STACK_DIR": str(settings.stack_dir), "PATH": "/usr/bin:/bin"}
        forwarder = spawn([sys.executable, str(Path(__file__).with_name("forward.py")),
                           CHAT_MESSAGES.name, FORWARDED.name, "worker", "-l", "warn"],
                          log=log, env=env)
        forward = rate_of(forwarder, settings, FORWARDED.name, args.messages)
        print(f"  bare Faust agent forwarding              : {forward:8.1f} messages/s",
              flush=True)

        embedder = asyncio.run(embedder_rate(settings.triton_grpc, texts, args.batch))
        print(f"  embedder alone, batches of {args.batch}           : {embedder:8.1f} texts/s",
              flush=True)
    print(f"relevance / bare Faust forward: {relevance / forward:.3f}")
    print(f"RATIO relevance_vs_embedder {relevance / embedder:.3f} target 0.8")


if __name__ == "__main__":
    main()
