"""Relevance and responder as Faust agents on the real broker, Triton and Qdrant."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from conftest import metric, run_agora
from gateway.registry import Registry
from ops.core import kafka
from ops.core.kafka import ensure_topics
from ops.core.net import free_port
from ops.devstack import smoke
from ops.devstack.process import wait_until
from schemas import codec
from schemas.topics import (
    AGENTS,
    ALL,
    CHAT_MESSAGES,
    DEADLETTER,
    INCIDENTS,
    INFERENCE_TASKS,
    RELEVANCE_DECISIONS,
)
from streams.domain.registry import created, new_profile, templates
from streams.domain.relevance.scoring import DEFAULT_CONFIG_PATH, load_config
from support.kafka import publish_events, start_at_ends

pytestmark = pytest.mark.stack
TEAM = ("developer-backend", "developer-frontend", "analyst-data", "moderator-quality",
        "researcher-tech", "creative-writer")


@pytest.fixture(scope="module")
def channel(settings):
    """A channel of its own with the six template agents in it."""
    ensure_topics(settings, ALL)
    name = f"team-{uuid.uuid4().hex[:6]}"
    registry = Registry(settings)
    for template in TEAM:
        registry.create(template, name)
    assert set(TEAM) <= set(templates())
    return name


def post(settings, message: dict, value: bytes | None = None) -> dict:
    producer = kafka.producer(settings)
    producer.produce(CHAT_MESSAGES.name, key=message["channel_id"].encode(),
                     value=value if value is not None else codec.encode("ChatMessage", message))
    assert producer.flush(10) == 0
    return message


def decision_for(reader, message: dict, timeout_s: float = 90) -> dict:
    [found] = reader.wait(lambda name, r: r["message_id"] == message["event_id"],
                          timeout_s=timeout_s)
    return found


def reply_of(reader, message: dict, agent_id: str) -> dict:
    [reply] = reader.wait(lambda name, r: r["reply_to"] == message["event_id"]
                          and r["author_id"] == agent_id, timeout_s=120)
    return reply


def score_of(decision: dict, agent_id: str) -> dict:
    return next(s for s in decision["scores"] if s["agent_id"] == agent_id)


def test_a_conversation(settings, channel, workers, reader):
    port = free_port()
    workers("conversation", AGORA_METRICS_PORT=str(port))
    decisions, chat = reader(RELEVANCE_DECISIONS.name), reader(CHAT_MESSAGES.name)
    config = load_config(settings.relevance_config)

    # Expertise decides: a database-performance question goes to the backend developer.
    question = post(settings, smoke.chat_message(
        channel, "Our PostgreSQL query listing orders takes 4 seconds since the last deploy. "
                 "Which index is missing?", author_id="human:alice"))
    decision = decision_for(decisions, question)
    assert "developer-backend" in decision["selected"]
    assert "creative-writer" not in decision["selected"]
    assert score_of(decision, "developer-backend")["expertise"] > \
        score_of(decision, "creative-writer")["expertise"]
    assert {s["agent_id"] for s in decision["scores"]} == set(TEAM)  # all scored, with reasons
    assert all(s["reason"] for s in decision["scores"])
    reply = reply_of(chat, question, "developer-backend")
    assert reply["author_kind"] == "AGENT" and reply["text"]
    assert reply["thread_id"] == question["thread_id"] and reply["thread_depth"] == 1
    assert reply["task_id"]

    # The backend developer just spoke: a second database question holds it back.
    again = post(settings, smoke.chat_message(
        channel, "And the PostgreSQL index on payments, is it still used by the slow query?",
        author_id="human:bob"))
    held = score_of(decision_for(decisions, again), "developer-backend")
    assert not held["selected"] and held["reason"].startswith("cool-down"), held

    # A mention selects the mentioned agent whatever its score.
    mention = smoke.chat_message(channel, "What do you think about the slow orders query?",
                                 author_id="human:alice")
    mention["mentions"] = ["creative-writer"]
    chosen = score_of(decision_for(decisions, post(settings, mention)), "creative-writer")
    assert chosen["selected"] and chosen["reason"].startswith("mentioned")
    answer = reply_of(chat, mention, "creative-writer")
    assert answer["author_kind"] == "AGENT" and answer["thread_depth"] == 1

    # Agent to agent: one turn short of the budget, an agent asks another, which answers;
    # that answer is at the budget, so nobody answers it and the thread ends.
    ask = smoke.chat_message(channel, "Can you pull last week's signup numbers for this?",
                             author_id="developer-frontend")
    ask.update(author_kind="AGENT", thread_depth=config.max_thread_turns - 1,
               mentions=["analyst-data"])
    post(settings, ask)
    last = reply_of(chat, ask, "analyst-data")
    assert last["thread_depth"] == config.max_thread_turns
    assert last["thread_id"] == ask["thread_id"]
    end = decision_for(decisions, last)
    assert end["selected"] == [] and "turn budget" in end["skip_reason"]

    # Lifecycle through the CLI: a paused agent is not even eligible, mention or not.
    def agents(*args: str) -> str:
        done = run_agora(settings.stack_dir, "agents", *args, timeout_s=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "creative-writer is PAUSED" in agents("pause", "creative-writer", "--reason", "demo")
    assert "creative-writer        PAUSED" in agents("list")
    paused = smoke.chat_message(channel, "Any last words on the incident?", "human:alice")
    paused["mentions"] = ["creative-writer"]
    skipped = decision_for(decisions, post(settings, paused))
    assert "creative-writer" not in {s["agent_id"] for s in skipped["scores"]}
    assert "creative-writer is ACTIVE" in agents("resume", "creative-writer")

    # The worker's metrics: what it decided and answered, and its consumer lag (a
    # 10-second timer) on the chat topic it reads.
    assert metric(port, "agora_relevance_messages_total", outcome="selected") >= 3
    assert metric(port, "agora_responder_tasks_total", outcome="answered") >= 3
    wait_until(lambda: metric(port, "agora_consumer_lag", group=settings.app_id,
                              topic=CHAT_MESSAGES.name) is not None,
               timeout_s=30, what="the worker's consumer lag gauge")


def test_garbage_is_dead_lettered_and_the_next_message_still_answered(settings, channel,
                                                                      workers, reader):
    workers("deadletter")
    deadletters, decisions = reader(DEADLETTER.name), reader(RELEVANCE_DECISIONS.name)
    garbage = smoke.chat_message(channel, "unused")
    post(settings, garbage, value=b"\x00\x01 definitely not avro")
    empty = post(settings, smoke.chat_message(channel, "   "))
    good = post(settings, smoke.chat_message(
        channel, "Please review the Kafka consumer lag alert", author_id="human:carol"))
    assert decision_for(decisions, good)["message_id"] == good["event_id"]
    letters = deadletters.wait(lambda name, r: r["stage"] == "relevance"
                               and r["key"] == channel.encode(), count=2)
    reasons = sorted(letter["reason"] for letter in letters)
    assert any("marker" in r or "bytes" in r for r in reasons), reasons  # the codec's reason
    assert any("empty text" in r for r in reasons), reasons
    assert all(letter["source_topic"] == CHAT_MESSAGES.name and letter["offset"] >= 0
               for letter in letters)
    assert {letter["value"] for letter in letters} >= {b"\x00\x01 definitely not avro"}
    assert not [r for _, r in decisions.records if r["message_id"] == empty["event_id"]]


def test_tasks_the_responder_cannot_answer_are_dead_lettered_with_their_reason(
        settings, channel, workers, reader):
    # A group of its own that starts at the topics' ends: no generation queued ahead.
    group = f"agora-letters-{uuid.uuid4().hex[:6]}"
    start_at_ends(settings, group, [t.name for t in ALL])
    workers("responder-letters", AGORA_APP_ID=group)
    deadletters = reader(DEADLETTER.name)
    # One past its deadline, one whose message the channel never had: each is
    # dead-lettered with its reason, without a generation.
    now = datetime.now(timezone.utc)
    task = {"decision_id": str(uuid.uuid4()), "channel_id": channel, "thread_depth": 0,
            "thread_id": str(uuid.uuid4()), "agent_id": "developer-backend",
            "context_message_ids": []}
    late = {**task, "event_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()),
            "created_at": now - timedelta(minutes=6), "deadline_at": now - timedelta(minutes=1)}
    unknown = {**task, "event_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()),
               "created_at": now, "deadline_at": now + timedelta(minutes=5)}
    publish_events(settings, INFERENCE_TASKS.name,
                  [("InferenceTask", channel, late), ("InferenceTask", channel, unknown)])
    sent = {codec.encode("InferenceTask", late): "late",
            codec.encode("InferenceTask", unknown): "unknown"}
    letters = {sent[r["value"]]: r for r in deadletters.wait(
        lambda name, r: r["stage"] == "responder" and r["value"] in sent, count=2)}
    assert "passed before the task's turn" in letters["late"]["reason"], letters
    assert letters["unknown"]["reason"] == (
        f"message {unknown['message_id']} is no longer in the channel history")
    assert all(letter["source_topic"] == INFERENCE_TASKS.name for letter in letters.values())


def test_two_workers_decide_every_message_exactly_once(settings, channel, workers, reader,
                                                         tmp_path):
    # Scores for every agent but nobody selected (threshold 1): this is about delivery.
    config = yaml.safe_load((settings.relevance_config or DEFAULT_CONFIG_PATH).read_text())
    config["threshold"] = 1.0
    path = tmp_path / "relevance.yaml"
    path.write_text(yaml.safe_dump(config))
    rooms = [f"{channel}-{i}" for i in range(8)]
    registry = Registry(settings)
    current = registry.load()  # once: the registry holds every earlier test's agents
    for template in TEAM:
        profile = current.get(template)
        action = "joined" if profile else "created"
        for room in rooms:
            profile, _ = created(profile, template, room, template)
        registry.save(profile, action)
    # A consumer group of their own: no member of the earlier tests' group in the way.
    group = {"AGORA_RELEVANCE_CONFIG": str(path), "AGORA_APP_ID": "agora-pair"}
    workers("pair-a", **group)
    workers("pair-b", **group)
    decisions = reader(RELEVANCE_DECISIONS.name)

    producer = kafka.producer(settings)
    sent = set()
    for i in range(200):
        message = smoke.chat_message(rooms[i % len(rooms)], f"status update {i} on the rollout")
        producer.produce(CHAT_MESSAGES.name, key=message["channel_id"].encode(),
                         value=codec.encode("ChatMessage", message))
        sent.add(message["event_id"])
    assert producer.flush(10) == 0

    found = decisions.wait(lambda name, r: r["message_id"] in sent, count=200, timeout_s=180)
    decisions.poll(3)  # late copies, if any, would show up now
    ours = [r for _, r in decisions.records if r["message_id"] in sent]
    ids_per_message: dict[str, set[str]] = {}
    for decision in ours:
        ids_per_message.setdefault(decision["message_id"], set()).add(decision["event_id"])
    assert set(ids_per_message) == sent  # none lost
    assert all(len(ids) == 1 for ids in ids_per_message.values())  # none duplicated
    assert len({d["event_id"] for d in ours}) == 200
    assert all(len(d["scores"]) == len(TEAM) and d["selected"] == [] for d in found)


def test_the_registry_reads_profiles_published_in_one_batch(settings, channel):
    # Tansu's end offsets count batches: a reader that trusted them would stop early.

    ids = [f"batched-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    publish_events(settings, AGENTS.name, [
        ("AgentProfile", agent_id, new_profile("creative-writer", [f"{channel}-quiet"], agent_id))
        for agent_id in ids])
    assert set(ids) <= set(Registry(settings).load())


def test_incident_reports_are_detected_and_join_the_open_incident(settings, workers, reader):
    ensure_topics(settings, ALL)
    room = f"ops-{uuid.uuid4().hex[:6]}"
    registry = Registry(settings)
    registry.create("devops-oncall", room, "nox")
    registry.create("developer-backend", room)
    workers("incidents", AGORA_WORKER_AGENTS="relevance")
    incidents, decisions = reader(INCIDENTS.name), reader(RELEVANCE_DECISIONS.name)
    first = post(settings, smoke.chat_message(
        room, "The API server returns 502 since the last deploy", author_id="human:maya"))
    [opened] = incidents.wait(lambda name, r: r.get("message_id") == first["event_id"])
    assert opened["opened"] and opened["channel_id"] == room and opened["service"] == "api"
    assert opened["severity"] in ("SEV1", "SEV2") and opened["score"] >= 0.5
    assert "502" in next(s["detail"] for s in opened["evidence"] if s["signal"] == "words")
    second = post(settings, {**smoke.chat_message(room, "@nox the API is still down for "
                                                        "everyone", author_id="human:lea"),
                             "mentions": ["nox"]})
    [joined] = incidents.wait(lambda name, r: r.get("message_id") == second["event_id"])
    assert joined["incident_id"] == opened["incident_id"] and not joined["opened"]
    assert {"signal": "mention", "value": 1.0, "detail": "nox"} in joined["evidence"]
    calm = post(settings, smoke.chat_message(room, "I'm down for lunch at noon, who's "
                                                   "coming?", author_id="human:maya"))
    agent = post(settings, {**smoke.chat_message(room, "The API returns 502, roll back first",
                                                 author_id="nox"), "author_kind": "AGENT"})
    for message in (calm, agent):
        decision_for(decisions, message)  # decided, and its incident (if any) sent with it
    incidents.poll(1.0)
    assert not [r for _, r in incidents.records
                if r.get("message_id") in (calm["event_id"], agent["event_id"])]
