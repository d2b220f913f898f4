"""Routing, measured: does relevance pick the agent a person would have asked?

Its own labelled set (``bench/data/routing/messages.yaml``): messages as people write
them, some short, misspelt or in French, each labelled with the one template that
should answer it, over the seven templates. One agent of each template joins a fresh
channel; a worker running relevance alone (``AGORA_WORKER_AGENTS=relevance``, so no
agent replies and the workload, timing and social factors stay those of a quiet
channel) decides each message posted through the gateway, with the shipped config.

    .venv/bin/python bench/routing.py

Prints the confusion table (labelled template by top-scored one, and how often the
labelled agent was selected), then ``RATIO routing_top1`` (the top-scored agent is the
labelled one) and ``RATIO routing_recall`` (the labelled agent is among those selected).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import yaml

from common import local_stack, post_labelled
from gateway.registry import Registry
from inference.client import InferenceClient
from ops.core.kafka import ensure_topics
from ops.devstack.process import start_worker, stop
from schemas.topics import ALL, RELEVANCE_DECISIONS
from streams.domain.registry import templates
from streams.domain.relevance.records import expertise_of, expertise_texts
from streams.domain.relevance.scoring import (
    Candidate,
    Message,
    expertise_factor,
    load_config,
    words,
)
from support.kafka import TopicReader

DATA = Path(__file__).resolve().parent / "data" / "routing" / "messages.yaml"


def labelled() -> list[tuple[str, str]]:
    """(text, template) pairs of the bench set, checked against the shipped templates."""
    data = yaml.safe_load(DATA.read_text())
    unknown = set(data) - set(templates())
    assert not unknown, f"labels without a template: {unknown}"
    return [(text, template) for template, texts in data.items() for text in texts]


def held_out(settings) -> list[str]:
    """Calibration on the templates' own examples (not the bench set): each example left
    out in turn is scored against every template's remaining texts, as relevance scores
    a message; returns the figures the shipped config's threshold rests on."""
    names = sorted(templates())
    texts = {n: expertise_texts({"expertise": templates()[n]["expertise"], "template": n})
             for n in names}

    async def embed() -> list:
        async with InferenceClient(settings.triton_grpc) as inference:
            return list(await inference.embed([x for n in names for x in texts[n]]))

    flat = iter(asyncio.run(embed()))
    vectors = {n: [next(flat) for _ in texts[n]] for n in names}
    config = load_config()
    right, own, other = 0, [], []
    for label in names:
        for i in range(1, len(texts[label])):  # the examples, not the expertise sentence
            message = Message(message_id="m", channel_id="c", author_id="human:x",
                              author_kind="HUMAN", mentions=(), reply_to_author=None,
                              thread_depth=0, created_ms=0, embedding=vectors[label][i],
                              words=words(texts[label][i]))
            pool = []
            for n in names:
                keep = [j for j in range(len(texts[n])) if (n, j) != (label, i)]
                found = expertise_of([texts[n][j] for j in keep], [vectors[n][j] for j in keep])
                pool.append(Candidate(agent_id=n, state="ACTIVE", channels=("c",),
                                      expertise=found.vector, keywords=found.keywords,
                                      performance_score=0.7, open_tasks=0, last_spoke_ms=None,
                                      last_exchange_with_author_ms=None))
            frequency = Counter(w for c in pool for w in c.keywords & message.words)
            factor = {c.agent_id: expertise_factor(message, c, config, frequency, len(pool))
                      for c in pool}
            right += max(factor, key=factor.get) == label
            own.append(factor[label])
            other.append(max(v for n, v in factor.items() if n != label))
    own.sort(), other.sort()
    return [f"  {right}/{len(own)} examples find their own template first; expertise factor "
            f"of the right agent >= {own[len(own) // 10]:.2f} for 90%, of the best wrong "
            f"agent <= {other[len(other) * 9 // 10]:.2f} for 90%"]


def main() -> None:
    messages = labelled()
    names = sorted(templates())
    print(f"{len(messages)} labelled messages over {len(names)} templates", flush=True)
    with local_stack() as settings:
        ensure_topics(settings, ALL)
        run = uuid.uuid4().hex[:6]
        channel = f"routing-{run}"
        registry = Registry(settings)
        agent_of = {f"{t}-{run}": t for t in names}
        for agent_id, template in agent_of.items():
            registry.create(template, channel, agent_id)
        decisions = TopicReader(settings, RELEVANCE_DECISIONS.name,
                                keep=lambda name, r: r["channel_id"] == channel)
        worker = start_worker(settings, f"routing-{run}", AGORA_WORKER_AGENTS="relevance")
        try:
            posted = post_labelled(settings, channel, messages)
            found = {r["message_id"]: r for r in decisions.wait(
                lambda name, r: r["message_id"] in posted, count=len(posted), timeout_s=600)}
        finally:
            decisions.close()
            stop(worker, grace_s=15)

        print("\ncalibration: the templates' examples, each left out in turn")
        print("\n".join(held_out(settings)))

    confusion: Counter = Counter()
    recalled: Counter = Counter()
    selected_count: Counter = Counter()
    misses = []
    for message_id, (text, label) in posted.items():
        decision = found[message_id]
        top = agent_of[decision["scores"][0]["agent_id"]] if decision["scores"] else "-"
        chosen = [agent_of[a] for a in decision["selected"]]
        confusion[(label, top)] += 1
        recalled[label] += label in chosen
        selected_count[len(chosen)] += 1
        if top != label or label not in chosen:
            ranked = ", ".join(f"{agent_of[s['agent_id']]} {s['expertise']:.2f}"
                               for s in decision["scores"][:3])
            misses.append(f"  {label:<19} {'selected' if label in chosen else 'missed':<8} "
                          f"{text[:60]!r} -> {ranked}")

    short = {n: n.split("-")[-1][:7] for n in names}
    print("\nconfusion: labelled template (rows) by top-scored agent (columns)")
    print(f"  {'':<19} " + " ".join(f"{short[n]:>7}" for n in names) + "  selected")
    for label in names:
        asked = sum(confusion[(label, n)] for n in [*names, "-"])
        print(f"  {label:<19} " + " ".join(f"{confusion[(label, n)]:>7}" for n in names)
              + f"  {recalled[label]:>4}/{asked}")
    print("agents selected per message: " + ", ".join(
        f"{k}: {v}" for k, v in sorted(selected_count.items())))
    print("\nmisses (labelled, whether selected, message -> top 3 by score, with expertise):")
    print("\n".join(misses) or "  none")
    top1 = sum(confusion[(n, n)] for n in names) / len(posted)
    recall = sum(recalled.values()) / len(posted)
    print(f"\ntop-scored agent is the labelled one: {top1:.3f}; "
          f"labelled agent selected: {recall:.3f} ({len(posted)} messages)")
    print(f"RATIO routing_top1 {top1:.3f} target 0.85")
    print(f"RATIO routing_recall {recall:.3f} target 0.9")


if __name__ == "__main__":
    main()
