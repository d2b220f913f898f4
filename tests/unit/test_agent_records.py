"""The records the runtimes write, built by plain functions: what relevance makes of a
message, what a responder answers with, the vote a gated tool request opens, the new
versions of an agent's profile."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from ops.core.errors import Invalid
from schemas import codec
from streams.domain import channels
from streams.domain.registry import (
    AgentExists,
    UnknownAgent,
    created,
    templates,
    updated,
    with_permissions,
)
from streams.domain.relevance.records import (
    TASK_DEADLINE,
    candidates,
    decision_records,
    expertise_of,
    expertise_texts,
    scored_message,
)
from streams.domain.relevance.scoring import decide, load_config
from streams.domain.responder.tasks import TaskFailed, status_record, task_inputs
from streams.domain.tools import catalog
from streams.domain.tools.records import request_digest, usage_proposal, vote_id_of
from support.samples import at, sample, uid

_, MESSAGE = sample("m1")  # mentions developer-backend, in general
_, REPLY = sample("m2")  # developer-backend answering it
_, PROFILE = sample("profile-new")
UNIT = np.eye(4, dtype=np.float32)


def channel_after(*messages: dict) -> dict:
    state = channels.empty()
    for message in messages:
        state = channels.remember(state, message, 50)
    return state


def decided(message: dict, channel: dict):
    profiles = {"developer-backend": PROFILE,
                "analyst-data": {**PROFILE, "agent_id": "analyst-data", "state": "PAUSED"}}
    config = load_config()
    decision = decide(scored_message(message, channel, UNIT[0]),
                      candidates(profiles, channel, message,
                                 {"developer-backend": expertise_of(["x"], [UNIT[0]])},
                                 {"developer-backend": 2}), config)
    return decision, config


def test_the_scorer_sees_the_message_with_the_channels_context():
    channel = channel_after(MESSAGE)
    seen = scored_message(REPLY, channel, UNIT[1])
    assert (seen.message_id, seen.author_kind, seen.thread_depth) == (uid("m2"), "AGENT", 1)
    assert seen.reply_to_author == "human:maya"  # found in the channel's history
    assert seen.created_ms == codec.epoch_ms(REPLY["created_at"]) and not seen.vote_call
    assert scored_message({**MESSAGE, "metadata": {"kind": "vote_call"}}, channel,
                          UNIT[0]).vote_call


def test_candidates_carry_workload_social_and_expertise():
    channel = channel_after(MESSAGE, REPLY)
    [candidate] = candidates({"developer-backend": PROFILE}, channel,
                             {**MESSAGE, "author_id": "human:maya"},
                             {"developer-backend": expertise_of(["indexes", "queries"],
                                                                [UNIT[2], UNIT[2]])},
                             {"developer-backend": 3})
    assert candidate.open_tasks == 3 and candidate.channels == ("general",)
    assert candidate.last_spoke_ms == codec.epoch_ms(REPLY["created_at"])
    assert candidate.last_exchange_with_author_ms == codec.epoch_ms(REPLY["created_at"])
    assert np.allclose(candidate.expertise, UNIT[2])
    assert candidate.keywords == {"indexe", "querie"}
    [unknown] = candidates({"x": PROFILE}, channels.empty(), MESSAGE, {}, {})
    assert unknown.expertise is None and unknown.open_tasks == 0 and unknown.last_spoke_ms is None


def test_an_agents_expertise_is_the_mean_of_its_texts():
    found = expertise_of(["Backend: SQL", "Slow query?"], [UNIT[0], UNIT[1]])
    assert np.allclose(found.vector, (UNIT[0] + UNIT[1]) / np.sqrt(2))
    assert found.vector.dtype == np.float32 and found.keywords == {"backend", "sql", "slow",
                                                                   "query"}


def test_an_agent_is_matched_on_its_expertise_and_its_templates_examples():
    texts = expertise_texts(PROFILE)
    assert texts[0] == PROFILE["expertise"] and len(texts) > 8
    assert texts[1:] == tuple(templates()[PROFILE["template"]]["examples"])
    # An agent whose template is gone keeps its own expertise sentence.
    assert expertise_texts({**PROFILE, "template": "retired"}) == (PROFILE["expertise"],)


def test_a_decision_makes_the_same_records_when_replayed():
    channel = channel_after(MESSAGE)
    decision, config = decided(MESSAGE, channel)
    assert decision.selected == ("developer-backend",)  # mentioned; analyst-data is paused
    history = [{"id": f"h{i}"} for i in range(30)]
    record, tasks = decision_records(MESSAGE, decision, history, at(12), config.version, 10)
    again = decision_records(MESSAGE, decision, history, at(13), config.version, 10)
    assert record["event_id"] == again[0]["event_id"] != MESSAGE["event_id"]
    assert [t["event_id"] for t in tasks] == [t["event_id"] for t in again[1]]
    [task] = tasks
    assert task["decision_id"] == record["event_id"] and task["agent_id"] == "developer-backend"
    assert task["context_message_ids"] == [f"h{i}" for i in range(20, 30)]
    assert task["deadline_at"] == at(12) + TASK_DEADLINE
    assert record["config_version"] == config.version
    assert {s["agent_id"] for s in record["scores"]} == {"developer-backend"}
    codec.encode("RelevanceDecision", record)  # valid for the contract
    codec.encode("InferenceTask", task)


def _task(**changes) -> dict:
    return {"event_id": uid("task-x"), "agent_id": "developer-backend", "channel_id": "general",
            "message_id": uid("m1"), "thread_depth": 0, "context_message_ids": [uid("m1")],
            "deadline_at": at(100), **changes}


def test_a_task_is_answered_with_its_message_and_the_context_it_was_decided_with():
    history = channel_after(MESSAGE, REPLY)["history"]
    message, context, posted_ms = task_inputs(_task(), PROFILE, history, at(30), 5)
    assert message["text"] == MESSAGE["text"] and message["author_id"] == "human:maya"
    assert [h["id"] for h in context] == [uid("m1")]
    assert posted_ms == codec.epoch_ms(MESSAGE["created_at"])
    # Context messages gone from the channel: the channel's latest instead.
    _, context, _ = task_inputs(_task(context_message_ids=["gone"]), PROFILE, history,
                                at(30), 1)
    assert [h["id"] for h in context] == [uid("m2")]


@pytest.mark.parametrize("task, agent, now, reason", [
    (_task(agent_id="ghost"), None, at(30), "unknown agent 'ghost'"),
    (_task(), {**PROFILE, "state": "PAUSED"}, at(30), "is PAUSED"),
    (_task(), PROFILE, at(100), "deadline"),
    (_task(message_id="forgotten"), PROFILE, at(30), "no longer in the channel history"),
])
def test_a_task_that_cannot_be_answered_fails_with_its_reason(task, agent, now, reason):
    history = channel_after(MESSAGE)["history"]
    with pytest.raises(TaskFailed, match=reason):
        task_inputs(task, agent, history, now, 5)


def test_an_agents_status_says_what_it_is_doing():
    states = [status_record("a", "w1", busy, 4, error, at(0))["state"]
              for busy, error in ((0, None), (2, None), (0, "timeout"))]
    assert states == ["IDLE", "WORKING", "ERROR"]
    codec.encode("AgentStatus", status_record("a", "w1", 1, 2**40, None, at(0)))


def test_a_gated_tool_request_opens_its_own_vote():
    _, request = sample("req-ok")
    tool = catalog.load()["shell"]
    proposal = usage_proposal(request, tool, deadline_s=60)
    assert proposal["vote_id"] == vote_id_of(request["event_id"])
    assert proposal["tool_request_id"] == request["event_id"]
    assert proposal["vote_type"] == "TOOL_USAGE" and proposal["strategy"] == tool.vote_strategy
    assert usage_proposal(request, tool, 60)["event_id"] == proposal["event_id"]
    assert proposal["deadline_at"] - proposal["created_at"] == timedelta(seconds=60)
    assert request["arguments_json"] in proposal["description"]
    assert request_digest(request) == request_digest(dict(request))
    codec.encode("VoteProposal", proposal)


def test_creating_an_agent_creates_joins_or_changes_nothing():
    profile, action = created(None, "developer-backend", "ops", "dev-1", "Dev")
    assert action == "created" and profile["channels"] == ["ops"] and profile["name"] == "Dev"
    joined, action = created(profile, "developer-backend", "general", "dev-1")
    assert action == "joined" and joined["channels"] == ["general", "ops"]
    assert joined["event_id"] != profile["event_id"]
    assert joined["created_at"] == profile["created_at"]
    assert created(joined, "developer-backend", "ops", "dev-1") == (joined, "unchanged")
    with pytest.raises(AgentExists, match="from template 'developer-backend'"):
        created(profile, "creative-writer", "ops", "dev-1")
    with pytest.raises(Invalid, match="unknown template 'wizard'"):
        created(None, "wizard", "ops", "w")


def test_an_update_makes_a_new_version_or_refuses():
    profile, _ = created(None, "developer-backend", "ops", "dev-1")
    paused = updated(profile, "dev-1", lambda p: {"state": "PAUSED", "state_reason": "lunch"})
    assert (paused["state"], paused["state_reason"]) == ("PAUSED", "lunch")
    assert paused["event_id"] != profile["event_id"] and profile["state"] == "ACTIVE"
    with pytest.raises(UnknownAgent, match="unknown agent 'ghost'"):
        updated(None, "ghost", lambda p: {})
    with pytest.raises(Invalid, match="unknown state 'ASLEEP'"):
        updated(profile, "dev-1", lambda p: {"state": "ASLEEP"})
    granted = updated(profile, "dev-1", lambda p: with_permissions(p, grant=["tool:shell"]))
    assert "shell" in granted["tools"] and "tool:shell" in granted["permissions"]
