"""Incident detection, measured: which messages report an incident, how severe, at what cost.

Its own labelled set (``bench/data/incidents/messages.yaml``): incidents of each
severity in English and French, and ordinary chat that only looks alarming.

1. Quality: the seven template agents (NOX as ``nox``) join a fresh channel; each
   message is posted there through the gateway to a worker running relevance alone,
   which detects (a message that joins an open incident still carries its own
   severity and evidence). Prints the
   confusion table (labelled severity by detected one), then ``RATIO
   incident_detection_f1`` (a message reports an incident, or not) and ``RATIO
   severity_accuracy`` (of the incidents detected, the share with the labelled severity).
2. Cost: a backlog of chat messages (the labelled texts, over and over) drained by
   relevance alone with detection off (``enabled: false`` in a copy of the config), then
   on, in fresh consumer groups; ``RATIO detection_vs_relevance`` is the second rate over
   the first.

    .venv/bin/python bench/incidents.py [--backlog 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import yaml

from common import caught_up, local_stack, post_labelled, rate
from gateway.registry import Registry
from ops.core.config import Settings
from ops.core.kafka import ensure_topics
from ops.devstack import smoke
from ops.devstack.process import start_worker, stop
from schemas.topics import ALL, CHAT_MESSAGES, INCIDENTS, RELEVANCE_DECISIONS
from streams.domain.incidents.detection import DEFAULT_CONFIG_PATH
from streams.domain.registry import templates
from support.kafka import TopicReader, publish_events, start_at_ends

DATA = Path(__file__).resolve().parent / "data" / "incidents" / "messages.yaml"
LABELS = ("SEV1", "SEV2", "SEV3", "none")


def labelled() -> list[tuple[str, str]]:
    data = yaml.safe_load(DATA.read_text())
    assert set(data) == set(LABELS), set(data) ^ set(LABELS)
    return [(text, label) for label, texts in data.items() for text in texts]


def team(settings: Settings, rooms: list[str]) -> None:
    registry = Registry(settings)
    for template in sorted(templates()):
        for room in rooms:
            registry.create(template, room, "nox" if template == "devops-oncall" else template)


def quality(settings: Settings, run: str) -> tuple[float, float, list[str]]:
    messages = labelled()
    room = f"incidents-{run}"
    team(settings, [room])
    found = TopicReader(settings, INCIDENTS.name, keep=lambda name, r: r["channel_id"] == room)
    decided = TopicReader(settings, RELEVANCE_DECISIONS.name,
                          keep=lambda name, r: r["channel_id"] == room)
    worker = start_worker(settings, f"incidents-{run}", AGORA_WORKER_AGENTS="relevance")
    try:
        posted = post_labelled(settings, room, messages)
        decided.wait(lambda name, r: r["message_id"] in posted, count=len(posted),
                     timeout_s=600)
        found.poll(2.0)  # a message's incident is sent with its decision
        detected = {r["message_id"]: r for _, r in found.records}
    finally:
        found.close(), decided.close()
        stop(worker, grace_s=15)

    confusion: Counter = Counter()
    misses = []
    for message_id, (text, label) in posted.items():
        event = detected.get(message_id)
        seen = event["severity"] if event else "none"
        confusion[(label, seen)] += 1
        if seen != label:
            why = "; ".join(f"{s['signal']} {s['value']:.2f} ({s['detail'][:50]})"
                            for s in event["evidence"]) if event else "not detected"
            score = f"score {event['score']:.2f}" if event else ""
            misses.append(f"  {label:<5} -> {seen:<5} {text[:55]!r} {score} {why}")
    tp = sum(confusion[(a, b)] for a in LABELS[:3] for b in LABELS[:3])
    fp = sum(confusion[("none", b)] for b in LABELS[:3])
    fn = sum(confusion[(a, "none")] for a in LABELS[:3])
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    right = sum(confusion[(s, s)] for s in LABELS[:3])
    lines = ["labelled (rows) by detected severity (columns; none: no incident)",
             "  " + " " * 6 + "".join(f"{b:>6}" for b in LABELS)]
    lines += [f"  {a:<6}" + "".join(f"{confusion[(a, b)]:>6}" for b in LABELS) for a in LABELS]
    lines += [f"detection: {tp} true, {fp} false alarms, {fn} missed; "
              f"precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f}",
              f"severity right for {right} of {tp} incidents detected",
              "misclassified (labelled -> detected, message, score, signals):", *misses]
    return f1, right / max(tp, 1), lines


def drain(settings: Settings, rooms: list[str], backlog: int, config: Path, name: str) -> float:
    """Decisions per second of relevance alone (detection per ``config``) on a backlog."""
    group = f"agora-incidents-{name}-{uuid.uuid4().hex[:6]}"
    start_at_ends(settings, group, [t.name for t in ALL])
    worker = start_worker(settings, group, AGORA_WORKER_AGENTS="relevance", AGORA_APP_ID=group,
                          AGORA_INCIDENT_CONFIG=str(config), AGORA_SESSION_TIMEOUT_S="10")
    try:
        caught_up(settings, rooms)
        texts = [text for text, _ in labelled()]
        batch = [smoke.chat_message(rooms[i % len(rooms)], texts[i % len(texts)],
                                    author_id="human:bench") for i in range(backlog)]
        publish_events(settings, CHAT_MESSAGES.name,
                       [("ChatMessage", m["channel_id"], m) for m in batch])
        ids = {m["event_id"] for m in batch}
        per_s = rate(settings, RELEVANCE_DECISIONS.name, len(ids),
                     match=lambda r: r["message_id"] in ids)
        print(f"  detection {name:<3}: {per_s:7.1f} decisions/s ({backlog} messages)", flush=True)
        return per_s
    finally:
        stop(worker, grace_s=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=1000)
    args = parser.parse_args()
    print(f"{len(labelled())} labelled messages", flush=True)
    with local_stack() as settings:
        ensure_topics(settings, ALL)
        run = uuid.uuid4().hex[:6]
        f1, severity, lines = quality(settings, run)
        print("\n".join(lines), flush=True)
        rooms = [f"incidents-load-{run}-{i}" for i in range(4)]
        team(settings, rooms)
        with tempfile.TemporaryDirectory() as tmp:
            off = Path(tmp) / "off.yaml"
            off.write_text(DEFAULT_CONFIG_PATH.read_text().replace("enabled: true",
                                                                   "enabled: false"))
            print("\ncost: relevance alone on a backlog, detection off then on", flush=True)
            without = drain(settings, rooms, args.backlog, off, "off")
            with_detection = drain(settings, rooms, args.backlog, DEFAULT_CONFIG_PATH, "on")
    print(f"\nRATIO incident_detection_f1 {f1:.3f} target 0.9")
    print(f"RATIO severity_accuracy {severity:.3f} target 0.8")
    print(f"RATIO detection_vs_relevance {with_detection / without:.3f} target 0.9")


if __name__ == "__main__":
    main()
