"""Vote events as records: a proposal and a ballot, as the CLI, the gateway, the
responder and the tools agent make them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from schemas.events import Ballot, VoteProposal, VoteStrategy, VoteType


def new_proposal(channel_id: str, proposer_id: str, title: str, *, vote_type: VoteType,
                 deadline_s: float, strategy: VoteStrategy = "SIMPLE_MAJORITY",
                 description: str = "",
                 options: list[str] | None = None, eligible_voters: list[str] | None = None,
                 weights: dict[str, float] | None = None, quorum: float = 0.5,
                 vote_id: str | None = None, event_id: str | None = None,
                 tool_request_id: str | None = None) -> VoteProposal:
    """A VoteProposal; no eligible voters means the channel's agents allowed to vote."""
    now = datetime.now(timezone.utc)
    vote_id = vote_id or str(uuid.uuid4())
    return {"event_id": event_id or vote_id, "vote_id": vote_id, "channel_id": channel_id,
            "proposer_id": proposer_id, "vote_type": vote_type, "strategy": strategy,
            "title": title, "description": description, "options": options or ["yes", "no"],
            "eligible_voters": eligible_voters or [], "weights": weights or {},
            "quorum": quorum, "deadline_at": now + timedelta(seconds=deadline_s),
            "created_at": now, "tool_request_id": tool_request_id}


def new_ballot(vote_id: str, channel_id: str, voter_id: str, choice: str, rationale: str = "",
               event_id: str | None = None) -> Ballot:
    return {"event_id": event_id or str(uuid.uuid4()), "vote_id": vote_id,
            "channel_id": channel_id, "voter_id": voter_id, "choice": choice,
            "rationale": rationale, "cast_at": datetime.now(timezone.utc)}
