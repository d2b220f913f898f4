"""Feedback about agents, and the performance score it gives them (the relevance
engine's quality factor).

Evidence is a rating of a reply (+1 or -1, one per person per reply) or an outcome that
went against the agent: a tool run it asked for failed or timed out, a vote it asked
for did not pass, its ballot came after the deadline. Each counts with a weight
(``WEIGHTS``): a person's judgement fully, an outcome half or less, since a failed run
or a lost vote is often not the agent's fault.

The score is a Bayesian average: the template's score as a prior worth ``PRIOR_WEIGHT``
pieces of evidence, then every piece as 1 (+1) or 0 (-1), weighted::

    score = (PRIOR_WEIGHT * prior + sum(weight * good)) / (PRIOR_WEIGHT + sum(weight))

so three ratings move a 0.70 agent to 0.77 (all good) or 0.54 (all bad), and thirty
to 0.93 or 0.18: an agent earns its place by many answers, not a lucky few.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from ops.core.errors import Invalid
from schemas.events import AgentFeedback, BallotRejected, ToolResult, VoteResult
from schemas.ids import derived_id

PRIOR_WEIGHT = 10.0
WEIGHTS = {"RATING": 1.0, "TOOL_FAILED": 0.5, "PROPOSAL_LOST": 0.5, "BALLOT_LATE": 0.25,
           "UNKNOWN": 0.0}
MAX_COMMENT = 1000


def score(prior: float, counts: list[tuple[str, int, int]]) -> float:
    """The performance score from the prior and the agent's evidence as (kind, value,
    how many) counts (see the module's formula)."""
    weight = sum(WEIGHTS.get(kind, 0.0) * n for kind, _, n in counts)
    good = sum(WEIGHTS.get(kind, 0.0) * n for kind, value, n in counts if value > 0)
    return round((PRIOR_WEIGHT * prior + good) / (PRIOR_WEIGHT + weight), 4)


def rating(message: Mapping, rater: str, value: int, comment: str, now: datetime
           ) -> AgentFeedback:
    """A person's rating of an agent's reply (``message``: its stored row or event);
    Invalid for anything but +1/-1 on another's agent reply."""
    if value not in (1, -1):
        raise Invalid(f"a rating is +1 or -1, not {value}")
    if message["author_kind"] != "AGENT":
        raise Invalid(f"message {message['event_id']} is not an agent's reply")
    if message["author_id"] == rater:
        raise Invalid("an agent does not rate its own replies")
    if len(comment) > MAX_COMMENT:
        raise Invalid(f"the comment is over {MAX_COMMENT} characters")
    return {"event_id": derived_id(message["event_id"], rater, "rating"),
            "agent_id": message["author_id"], "channel_id": message["channel_id"],
            "kind": "RATING", "value": value, "rater_id": rater,
            "ref_id": message["event_id"], "comment": comment or None, "created_at": now}


Outcome = Literal["TOOL_FAILED", "PROPOSAL_LOST", "BALLOT_LATE"]


def _outcome(agent: str, channel: str, kind: Outcome, ref: str, reason: str, at: datetime
             ) -> AgentFeedback:
    return {"event_id": derived_id(ref, kind), "agent_id": agent, "channel_id": channel,
            "kind": kind, "value": -1, "rater_id": None, "ref_id": ref,
            "comment": reason[:MAX_COMMENT], "created_at": at}


def tool_failed(result: ToolResult, agents: Mapping) -> list[AgentFeedback]:
    """Feedback for the agent whose tool run failed or timed out."""
    if result.get("status") not in ("FAILED", "TIMEOUT") or result["agent_id"] not in agents:
        return []
    return [_outcome(result["agent_id"], result["channel_id"], "TOOL_FAILED",
                     result["request_id"], result.get("error") or result["status"],
                     result["finished_at"])]


def vote_outcomes(state: Mapping, produced: list[tuple[str, dict]], agents: Mapping
                  ) -> list[AgentFeedback]:
    """Feedback from what the votes agent produced for a vote (its ``state``): the
    asking agent of a vote that did not pass (the requester of a gated tool run, else
    the proposer), the voter of a ballot rejected as late."""
    found: list[AgentFeedback] = []
    proposal, request = state.get("proposal") or {}, state.get("request") or {}
    for name, record in produced:
        if name == "VoteResult":
            result: VoteResult = record  # type: ignore[assignment]
            asker = request.get("agent_id") or proposal.get("proposer_id")
            if result["outcome"] != "PASSED" and asker is not None and asker in agents:
                found.append(_outcome(asker, result["channel_id"], "PROPOSAL_LOST",
                                      result["vote_id"], result["reason"],
                                      result["closed_at"]))
        elif name == "BallotRejected":
            rejected: BallotRejected = record  # type: ignore[assignment]
            if rejected["reason"] == "LATE" and rejected["voter_id"] in agents:
                found.append(_outcome(rejected["voter_id"],
                                      rejected.get("channel_id") or proposal.get("channel_id")
                                      or "", "BALLOT_LATE", rejected["ballot_event_id"],
                                      rejected["detail"], rejected["rejected_at"]))
    return found
