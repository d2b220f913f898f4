"""Feedback about agents as plain functions: the Bayesian score, ratings and their
refusals, and the outcomes that count against an agent."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ops.core.errors import Invalid
from streams.domain import feedback

NOW = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)
REPLY = {"event_id": "m1", "channel_id": "ops", "author_id": "nox", "author_kind": "AGENT"}
AGENTS = {"nox": {}, "dev": {}}


def test_the_score_is_a_bayesian_average_with_the_template_as_prior():
    assert feedback.score(0.7, []) == 0.7
    assert feedback.score(0.7, [("RATING", 1, 3)]) == round(10 / 13, 4)  # 0.7692
    assert feedback.score(0.7, [("RATING", -1, 3)]) == round(7 / 13, 4)  # 0.5385
    assert feedback.score(0.7, [("RATING", 1, 30)]) == 0.925
    # Outcomes weigh less than a person's judgement; unknown kinds not at all.
    assert feedback.score(0.7, [("TOOL_FAILED", -1, 2)]) == round(7 / 11, 4)
    assert feedback.score(0.7, [("UNKNOWN", -1, 50)]) == 0.7
    mixed = [("RATING", 1, 4), ("RATING", -1, 1), ("BALLOT_LATE", -1, 4)]
    assert feedback.score(0.7, mixed) == round((7 + 4) / (10 + 5 + 1), 4)


def test_a_rating_is_one_per_person_per_reply():
    first = feedback.rating(REPLY, "human:maya", 1, "right runbook", NOW)
    again = feedback.rating(REPLY, "human:maya", -1, "", NOW)
    other = feedback.rating(REPLY, "human:lea", 1, "", NOW)
    assert first["event_id"] == again["event_id"] != other["event_id"]
    assert (first["agent_id"], first["kind"], first["value"], first["ref_id"]) == (
        "nox", "RATING", 1, "m1")
    assert again["comment"] is None


@pytest.mark.parametrize("message, rater, value, comment, reason", [
    (REPLY, "human:maya", 2, "", r"\+1 or -1"),
    (REPLY, "human:maya", 0, "", r"\+1 or -1"),
    ({**REPLY, "author_kind": "HUMAN", "author_id": "human:lea"}, "human:maya", 1, "",
     "not an agent's reply"),
    ({**REPLY, "author_kind": "SYSTEM"}, "human:maya", 1, "", "not an agent's reply"),
    (REPLY, "nox", 1, "", "its own replies"),
    (REPLY, "human:maya", 1, "x" * 1001, "over 1000 characters"),
])
def test_bad_ratings_are_refused(message, rater, value, comment, reason):
    with pytest.raises(Invalid, match=reason):
        feedback.rating(message, rater, value, comment, NOW)


def test_failed_tool_runs_count_against_the_agent_that_asked():
    result = {"request_id": "r1", "channel_id": "ops", "agent_id": "dev", "status": "FAILED",
              "error": "exit 1", "finished_at": NOW}
    [found] = feedback.tool_failed(result, AGENTS)
    assert (found["agent_id"], found["kind"], found["value"], found["ref_id"]) == (
        "dev", "TOOL_FAILED", -1, "r1")
    assert feedback.tool_failed({**result, "status": "TIMEOUT"}, AGENTS)
    assert not feedback.tool_failed({**result, "status": "OK"}, AGENTS)
    assert not feedback.tool_failed({**result, "agent_id": "human:maya"}, AGENTS)
    assert feedback.tool_failed(result, AGENTS) == [found]  # a replay: the same event


def test_lost_votes_and_late_ballots_count_against_their_agents():
    result = {"vote_id": "v1", "channel_id": "ops", "outcome": "FAILED", "reason": "2 no",
              "closed_at": NOW}
    late = {"ballot_event_id": "b1", "vote_id": "v1", "voter_id": "nox", "reason": "LATE",
            "detail": "after the deadline", "rejected_at": NOW, "channel_id": None}
    proposal = {"proposer_id": "tools", "channel_id": "ops"}
    state = {"proposal": proposal, "request": {"agent_id": "dev"}}
    found = feedback.vote_outcomes(state, [("VoteResult", result), ("BallotRejected", late)],
                                   AGENTS)
    assert [(f["agent_id"], f["kind"], f["channel_id"]) for f in found] == [
        ("dev", "PROPOSAL_LOST", "ops"), ("nox", "BALLOT_LATE", "ops")]
    passed = {**result, "outcome": "PASSED"}
    assert not feedback.vote_outcomes(state, [("VoteResult", passed)], AGENTS)
    by_person = {"proposal": {"proposer_id": "human:maya"}, "request": None}
    assert not feedback.vote_outcomes(by_person, [("VoteResult", result)], AGENTS)
    duplicate = {**late, "reason": "DUPLICATE"}
    assert not feedback.vote_outcomes(state, [("BallotRejected", duplicate)], AGENTS)
