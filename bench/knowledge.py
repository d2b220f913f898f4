"""The knowledge base, measured: retrieval, grounded answers, ingestion speed.

Its own labelled set (``bench/data/knowledge``): ten documents (Markdown, text, HTML,
PDF) written for the bench, and questions whose answer is one fact in one document,
asked as people ask in chat.

1. Ingestion: the documents go in through the gateway (KnowledgeService) to a worker
   (extract, chunk, embed on Triton, store); then one long document alone, timed from
   AddDocument to searchable, against the embedder alone embedding the same passages in
   the same batches (``RATIO ingest_vs_embedder``).
2. Retrieval: for each question, is its document among the top 3 passages that the
   responder would search (KnowledgeService.Search, hybrid)? (``retrieval_recall_at_3``)
3. Grounded answers: each question is posted to an agent through the gateway and
   answered by the real responder on Triton, once per grounding mode (quote, choose,
   free: ``AGORA_RESPONDER_GROUNDING``), each in a channel of its own; a reply is right
   when it contains the expected fact. ``grounded_answer_accuracy`` is the configured
   default mode's.

    .venv/bin/python bench/knowledge.py [MODES]     (e.g. quote,free; default all three)
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml

from common import connect, local_stack
from gateway.client import Client
from gateway.registry import Registry
from inference.client import InferenceClient
from ops.core.config import Settings
from ops.core.kafka import ensure_topics
from ops.devstack.process import start_worker, stop
from schemas.agora.v1 import knowledge_pb2
from schemas.topics import ALL, CHAT_MESSAGES
from streams.agents.knowledge import EMBED_BATCH
from streams.domain.knowledge.chunks import chunk
from streams.domain.knowledge.documents import document_id
from streams.domain.knowledge.extract import extract
from support.kafka import TopicReader

DATA = Path(__file__).resolve().parent / "data" / "knowledge"
AGENT = "researcher-tech"
MODES = ("quote", "choose", "free")


def documents() -> list[Path]:
    return sorted(p for p in DATA.iterdir() if p.suffix != ".yaml")


def questions() -> list[dict]:
    return yaml.safe_load((DATA / "questions.yaml").read_text())


def ingest(client: Client, channel: str) -> dict[str, knowledge_pb2.Document]:
    added = {p.name: client.add_document(p.read_bytes(), p.name, channel)
             for p in documents()}
    done = {name: client.ingested(doc, 600, interval_s=0.05) for name, doc in added.items()}
    failed = {n: d.error for n, d in done.items() if d.state != knowledge_pb2.DOCUMENT_STATE_ACTIVE}
    assert not failed, failed
    return done


def long_document(sections: int = 120) -> bytes:
    """A runbook-like Markdown document of some hundreds of passages."""
    lines = ["# Operations handbook", ""]
    for s in range(sections):
        lines += [f"## Procedure {s}: service {s % 17} in region {s % 5}", ""]
        for p in range(4):
            lines.append(" ".join(
                f"Step {p}.{k} of procedure {s} checks metric m{(s * 7 + k) % 101} against "
                f"threshold {(s * 13 + p * 3 + k) % 97} and records the result." for k in range(4)))
            lines.append("")
    return "\n".join(lines).encode()


def ingestion(settings: Settings, client: Client, channel: str) -> tuple[float, float, int]:
    """(our chunks/s, the embedder's chunks/s, chunks) for one long document."""
    data = long_document()
    source = f"handbook-{uuid.uuid4().hex[:6]}.md"
    started = time.perf_counter()
    doc = client.ingested(client.add_document(data, source, channel), 600, interval_s=0.05)
    ours_s = time.perf_counter() - started
    extracted = extract(data, source)
    passages = chunk(document_id(channel, source), extracted.text)
    assert doc.chunks == len(passages), (doc.chunks, len(passages))
    texts = [p.embedded_text(extracted.title) for p in passages]

    async def embed_alone() -> float:
        async with InferenceClient(settings.triton_grpc) as inference:
            await inference.embed(texts[:EMBED_BATCH])  # warm, as the worker is
            begun = time.perf_counter()
            for start in range(0, len(texts), EMBED_BATCH):
                await inference.embed(texts[start:start + EMBED_BATCH])
            return time.perf_counter() - begun

    raw_s = asyncio.run(embed_alone())
    return len(passages) / ours_s, len(passages) / raw_s, len(passages)


def recall(client: Client, channel: str, docs: dict[str, knowledge_pb2.Document]
           ) -> tuple[float, list[str]]:
    by_id = {d.document_id: name for name, d in docs.items()}
    per_doc: dict[str, Counter] = {name: Counter() for name in docs}
    lines, hits = [], 0
    for q in questions():
        found = client.knowledge.Search(knowledge_pb2.SearchRequest(
            channel_id=channel, query=q["question"], limit=3)).passages
        names = [by_id.get(p.document_id, "?") for p in found]
        rank = names.index(q["source"]) + 1 if q["source"] in names else 0
        hits += bool(rank)
        per_doc[q["source"]].update(asked=1, at1=rank == 1, at3=bool(rank))
        if not rank:
            lines.append(f"  miss: {q['question']!r} -> {names}")
    table = [f"  {'document':<24} {'asked':>5} {'@1':>4} {'@3':>4}"] + [
        f"  {name:<24} {c['asked']:>5} {c['at1']:>4} {c['at3']:>4}"
        for name, c in per_doc.items()]
    return hits / len(questions()), table + lines


def normalized(text: str) -> str:
    return " ".join(text.lower().replace("`", "").split())


def answers(settings: Settings, client: Client, channel: str, mode: str
            ) -> tuple[float, list[str]]:
    """Ask every question in ``channel``, answered by a worker in grounding ``mode``."""
    worker = start_worker(settings, f"kb-{mode}", AGORA_RESPONDER_GROUNDING=mode)
    chat = TopicReader(settings, CHAT_MESSAGES.name,
                       keep=lambda name, r: r["channel_id"] == channel)
    outcome: Counter = Counter()
    lines, seconds = [], []
    try:
        docs = ingest(client, channel)
        by_id = {d.document_id: name for name, d in docs.items()}
        for q in questions():
            asked = time.perf_counter()
            posted = client.post(channel, q["question"], mentions=[AGENT])
            try:
                [reply] = chat.wait(lambda name, r: r["reply_to"] == posted.message_id,
                                    timeout_s=180)
            except TimeoutError:  # the task failed (its dead letter says why)
                outcome[("no fact", "no reply")] += 1
                lines.append(f"  no reply: {q['question']!r}")
                continue
            seconds.append(time.perf_counter() - asked)
            right = normalized(q["fact"]) in normalized(reply["text"])
            cited = [by_id.get(s["document_id"], "?") for s in reply["sources"] or ()]
            source = ("no sources" if not cited else "right source" if q["source"] in cited
                      else "wrong source")
            outcome[("fact" if right else "no fact", source)] += 1
            if not right:
                lines.append(f"  wrong: {q['question']!r} ({q['source']}) -> "
                             f"{reply['text'][:140]!r}")
    finally:
        chat.close()
        stop(worker, grace_s=15)
    seconds = sorted(seconds) or [float("nan")]
    table = [f"  {mode}: replies in {seconds[len(seconds) // 2]:.1f} s (p50), "
             f"{seconds[-1]:.1f} s (max), posted to stored",
             f"  {'':<10} {'right source':>13} {'wrong source':>13} {'no sources':>11} "
             f"{'no reply':>9}"] + [
        f"  {fact:<10} " + " ".join(f"{outcome[(fact, s)]:>{w}}" for s, w in (
            ("right source", 13), ("wrong source", 13), ("no sources", 11), ("no reply", 9)))
        for fact in ("fact", "no fact")]
    return sum(v for (fact, _), v in outcome.items() if fact == "fact") / len(questions()), \
        table + lines


def main(modes: tuple[str, ...] = MODES) -> None:
    print(f"{len(documents())} documents, {len(questions())} questions", flush=True)
    with local_stack() as settings:
        ensure_topics(settings, ALL)
        run = uuid.uuid4().hex[:6]
        registry = Registry(settings)
        for mode in modes:
            registry.create(AGENT, f"kb-{mode}-{run}")
        with connect(settings) as client:
            worker = start_worker(settings, "kb-ingest")
            try:
                channel = f"kb-recall-{run}"
                docs = ingest(client, channel)
                print(f"ingested: {sum(d.chunks for d in docs.values())} passages", flush=True)
                share, table = recall(client, channel, docs)
                print("retrieval (top 3 passages of KnowledgeService.Search):", *table,
                      sep="\n", flush=True)
                ours, raw, chunks = ingestion(settings, client, channel)
                print(f"ingestion of one document of {chunks} passages: {ours:.1f} chunks/s "
                      f"(AddDocument to searchable); the embedder alone {raw:.1f} chunks/s "
                      f"(batches of {EMBED_BATCH})", flush=True)
            finally:
                stop(worker, grace_s=15)
        accuracy = {}
        for mode in modes:
            with connect(settings) as client:
                accuracy[mode], table = answers(settings, client, f"kb-{mode}-{run}", mode)
            print(f"grounded answers, {mode}: {accuracy[mode]:.2f}", *table, sep="\n",
                  flush=True)
    print("accuracy by mode: " + ", ".join(f"{m} {a:.2f}" for m, a in accuracy.items()))
    default = Settings().responder_grounding
    print(f"RATIO retrieval_recall_at_3 {share:.3f} target 0.9")
    if default in accuracy:
        print(f"RATIO grounded_answer_accuracy {accuracy[default]:.3f} target 0.7")
    print(f"RATIO ingest_vs_embedder {ours / raw:.3f} target 0.8")


if __name__ == "__main__":
    main(tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else MODES)
