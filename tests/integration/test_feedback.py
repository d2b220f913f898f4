"""Feedback on the real stack: ChatService.RateReply's refusals and the rating it
publishes (on a migrated Postgres schema of its own), and a worker's feedback agent
moving a poorly rated agent below an equally relevant well-rated one."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from test_gateway_services import as_caller, refused_async, suffix, who
from test_incident_service import store
from test_streams import decision_for, post

from gateway.chat import ChatService
from gateway.registry import Registry
from ops.core.errors import AlreadyExists, Denied, Invalid, NotFound
from ops.core.kafka import AsyncProducer, ensure_topics
from ops.devstack import smoke
from schemas.agora.v1 import chat_pb2
from schemas.topics import AGENT_FEEDBACK, ALL, RELEVANCE_DECISIONS
from streams.domain import feedback
from support.kafka import publish_events, start_at_ends

pytestmark = pytest.mark.stack


def message(room: str, author: str, kind: str) -> tuple[str, dict]:
    return "ChatMessage", {**smoke.chat_message(room, "Roll back first, then check the pool",
                                                author_id=author), "author_kind": kind}


def test_a_reply_is_rated_once_by_each_person_and_bad_ratings_are_refused(own_postgres,
                                                                         reader):
    own = own_postgres
    ensure_topics(own, ALL)
    room, other = f"rate-{suffix()}", f"rate-{suffix()}"
    (_, reply), (_, said) = message(room, "nox", "AGENT"), message(room, "human:lea", "HUMAN")
    store(own, ("ChatMessage", reply), ("ChatMessage", said))
    maya, lea = who("human:maya", room, role="member"), who("human:lea", room, role="member")
    nox, viewer = who("nox", room, role="member"), who("human:vi", room, role="viewer")
    stranger = who("human:eve", other, role="member")
    published = reader(AGENT_FEEDBACK.name)

    def rate(message_id: str, value: int, comment: str = "") -> chat_pb2.RateReplyRequest:
        return chat_pb2.RateReplyRequest(message_id=message_id, rating=value, comment=comment)

    async def main():
        async with AsyncConnectionPool(own.postgres_dsn, min_size=0, max_size=2) as pool:
            producer = AsyncProducer(own)
            service = ChatService(producer, None, pool)
            try:
                up = await as_caller(service.RateReply, rate(reply["event_id"], 1, "it helped"),
                                     maya)
                down = await as_caller(service.RateReply, rate(reply["event_id"], -1), lea)
                refusals = {
                    "double": await refused_async(AlreadyExists, service.RateReply,
                                                  rate(reply["event_id"], -1), maya),
                    "range": await refused_async(Invalid, service.RateReply,
                                                 rate(reply["event_id"], 5), maya),
                    "unknown": await refused_async(NotFound, service.RateReply,
                                                   rate(str(uuid.uuid4()), 1), maya),
                    "person's": await refused_async(Invalid, service.RateReply,
                                                    rate(said["event_id"], 1), maya),
                    "own": await refused_async(Invalid, service.RateReply,
                                               rate(reply["event_id"], 1), nox),
                    "viewer": await refused_async(Denied, service.RateReply,
                                                  rate(reply["event_id"], 1), viewer),
                    "stranger": await refused_async(Denied, service.RateReply,
                                                    rate(reply["event_id"], 1), stranger)}
            finally:
                await asyncio.to_thread(producer.close)
            return up, down, refusals

    up, down, refusals = asyncio.run(main())
    assert (up.agent_id, up.rater_id, up.rating, up.comment) == ("nox", "human:maya", 1,
                                                                 "it helped")
    assert down.rating == -1 and down.rating_id != up.rating_id
    assert "human:maya rated" in str(refusals["double"])
    assert "+1 or -1" in str(refusals["range"]) and "own replies" in str(refusals["own"])
    assert "not an agent's reply" in str(refusals["person's"])
    sent = published.wait(lambda name, r: r["ref_id"] == reply["event_id"], count=2)
    assert sorted((r["rater_id"], r["value"]) for r in sent) == [("human:lea", -1),
                                                                ("human:maya", 1)]
    published.poll(1.0)
    assert len([r for _, r in published.records if r["ref_id"] == reply["event_id"]]) == 2
    with psycopg.connect(own.postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM agent_feedback").fetchone()[0] == 2


def test_feedback_moves_a_poorly_rated_agent_below_an_equally_relevant_one(settings, workers,
                                                                          reader):
    ensure_topics(settings, ALL)
    room = f"fb-{suffix()}"
    good, bad = f"{room}-good", f"{room}-bad"
    registry = Registry(settings)
    for agent in (good, bad):  # the same template: equally relevant to any message
        registry.create("developer-backend", room, agent)
    group = f"agora-feedback-{suffix()}"
    start_at_ends(settings, group, [t.name for t in ALL])
    workers(f"feedback-{room}", AGORA_APP_ID=group, AGORA_WORKER_AGENTS="relevance,feedback")
    decisions = reader(RELEVANCE_DECISIONS.name)
    now = datetime.now(timezone.utc)
    events = []
    for agent, value in ((good, 1), (bad, -1)):
        for i in range(8):
            reply = {"event_id": str(uuid.uuid4()), "channel_id": room, "author_id": agent,
                     "author_kind": "AGENT"}
            events.append(("AgentFeedback", agent,
                           feedback.rating(reply, f"human:p{i}", value, "", now)))
    publish_events(settings, AGENT_FEEDBACK.name, events)
    publish_events(settings, AGENT_FEEDBACK.name, events)  # replayed: counted once
    want = {good: feedback.score(0.7, [("RATING", 1, 8)]),
            bad: feedback.score(0.7, [("RATING", -1, 8)])}
    deadline = time.monotonic() + 90
    while {a: registry.load()[a]["performance_score"] for a in want} != want:
        assert time.monotonic() < deadline, {a: registry.load()[a]["performance_score"]
                                             for a in want}
        time.sleep(1)
    time.sleep(2)  # relevance's registry view follows the topic
    asked = post(settings, smoke.chat_message(
        room, "The orders API times out on the database query, how should we index it?",
        author_id="human:maya"))
    decision = decision_for(decisions, asked)
    scores = {s["agent_id"]: s for s in decision["scores"]}
    assert scores[good]["expertise"] == pytest.approx(scores[bad]["expertise"])
    assert scores[good]["quality"] > scores[bad]["quality"]
    assert scores[good]["score"] > scores[bad]["score"]
    assert decision["selected"][0] == good
