"""A vote's life as plain functions: open it, admit or reject ballots, close it.

The state of one vote is a JSON dict (the votes table keeps one per vote id, in the
partition of the vote's records). Each function returns the new state and the events
to publish as ``(event name, record)``. Timestamps in the state are epoch
milliseconds, as the events carry them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from ops.core.errors import Invalid
from schemas.codec import epoch_ms, from_epoch_ms
from schemas.events import Event, ToolRequest, VoteResult
from schemas.ids import derived_id
from streams.domain.notices import system_message
from streams.domain.tools.records import request_digest, result_events, vote_id_of
from streams.domain.votes.tally import Outcome, doomed, judge_ballot, options_of, settled, tally

AUTHOR = "agora.votes"
Events = list[tuple[str, Event]]
MAX_VOTERS = 200
MAX_OPTIONS = 20


class Refused(Invalid):
    """A record that would change a vote it has no right to change; dead-lettered."""


def new(vote_id: str, partition: int) -> dict:
    return {"vote_id": vote_id, "partition": partition, "request": None, "proposal": None,
            "ballots": {}, "closed": False}


def _ms(record: Mapping[str, Any], *fields: str) -> dict:
    return {**record, **{f: epoch_ms(record[f]) for f in fields if isinstance(record[f], datetime)}}


def _proposal_view(state: dict) -> dict:
    """The stored proposal with datetimes, as the tally functions take it."""
    p = state["proposal"]
    return {**p, "deadline_at": from_epoch_ms(p["deadline_at"]),
            "created_at": from_epoch_ms(p["created_at"])}


def gate(state: dict, request: ToolRequest) -> dict:
    """Keep the tool request a TOOL_USAGE vote gates (it precedes the proposal). The
    first one stays: a different request for the same vote (voters saw ``ls``, the
    record now says ``rm -rf ~``) is refused, the same one again changes nothing."""
    if vote_id_of(request["event_id"]) != state["vote_id"]:
        raise Refused(f"tool request {request['event_id']} does not belong to vote "
                      f"{state['vote_id']}")
    if state["request"] is not None:
        if request_digest(state["request"]) != request_digest(request):
            raise Refused(f"a different tool request for vote {state['vote_id']}: the request "
                          "a vote gates cannot change once it is recorded")
        return state
    if state["proposal"] is not None:
        raise Refused(f"vote {state['vote_id']} already opened without a tool request")
    return {**state, "request": _ms(request, "requested_at")}


def open_vote(state: dict, proposal: dict, members: list[str], active: set[str],
              known: Collection[str], now: datetime) -> tuple[dict, Events]:
    """Open a vote; ``members`` are the channel's agents allowed to vote, used when the
    proposal names no voters (a tool's requester never votes on its own request);
    ``active`` agents are asked for a ballot by a vote call. Named voters must be
    ``known`` agents or ``human:`` ids, at most MAX_VOTERS; a proposal that names
    others fails at once (it is never waited on)."""
    if state["proposal"] is not None:
        return state, []  # a replayed or repeated proposal opens nothing twice
    named = list(dict.fromkeys(proposal["eligible_voters"]))
    unknown = [v for v in named if not v.startswith("human:") and v not in known]
    problem = (f"{len(named)} voters named, over the limit of {MAX_VOTERS}"
               if len(named) > MAX_VOTERS else
               f"{len(proposal['options'] or [])} options, over the limit of {MAX_OPTIONS}"
               if len(proposal["options"] or []) > MAX_OPTIONS else
               f"unknown voters: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}"
               if unknown else None)
    if problem is not None:
        stored = _ms({**proposal, "eligible_voters": named[:MAX_VOTERS],
                      "options": (proposal["options"] or [])[:MAX_OPTIONS]},
                     "deadline_at", "created_at")
        return close({**state, "proposal": stored}, now,
                     Outcome("FAILED", None, {}, 0, len(named), f"failed: {problem}"))
    voters = named or [
        m for m in members
        if not (proposal["vote_type"] == "TOOL_USAGE" and m == proposal["proposer_id"])]
    stored = _ms({**proposal, "eligible_voters": voters}, "deadline_at", "created_at")
    state = {**state, "proposal": stored}
    if not voters:
        return close(state, now, Outcome("FAILED", None, {}, 0, 0,
                                         "failed: nobody is eligible to vote"))
    called = [v for v in voters if v in active]
    lines = [f"Vote opened: {proposal['title']}"]
    if state["request"] is not None:
        req = state["request"]
        lines.append(f"{req['agent_id']} asks to run {req['tool']} with "
                     f"{req['arguments_json'][:300]}. Reason: {req['reason'][:300]}")
    lines.append(
        f"{proposal['vote_type'].replace('_', ' ').lower()}, {proposal['strategy'].replace('_', ' ').lower()}, "
        f"quorum {proposal['quorum']:.0%}, closes {from_epoch_ms(stored['deadline_at']):%H:%M:%S} UTC. "
        f"Options: {', '.join(options_of(proposal))} or abstain. Voters: {', '.join(voters)}.")
    notice = system_message(
        derived_id(proposal["vote_id"], "call"), proposal["channel_id"], AUTHOR,
        "\n".join(lines), now,
        {"kind": "vote_call", "vote_id": proposal["vote_id"],
         "options": ",".join(options_of(proposal))}, mentions=called)
    return state, [("ChatMessage", notice)]


def cast(state: dict, ballot: dict, now: datetime) -> tuple[dict, Events]:
    """Count a ballot, or reject it with the reason; closes the vote once its result
    can no longer change."""
    counted = {v: b["choice"] for v, b in state["ballots"].items()}
    if any(b["event_id"] == ballot["event_id"] for b in state["ballots"].values()):
        return state, []  # the same ballot delivered again
    proposal = _proposal_view(state) if state["proposal"] else None
    # A ballot counts from when it is handled, whatever time its record claims: a
    # producer cannot backdate one into a vote whose deadline has passed.
    ballot = {**ballot, "cast_at": max(ballot["cast_at"], now)}
    verdict = judge_ballot(proposal, counted, state["closed"], ballot)
    if verdict is not None:
        reason, detail = verdict
        return state, [("BallotRejected", {
            "event_id": derived_id(ballot["event_id"], "rejected"), "vote_id": ballot["vote_id"],
            "voter_id": ballot["voter_id"], "ballot_event_id": ballot["event_id"],
            "reason": reason, "detail": detail, "rejected_at": now,
            "channel_id": ballot["channel_id"]})]
    ballots = {**state["ballots"], ballot["voter_id"]: {
        "choice": ballot["choice"], "event_id": ballot["event_id"],
        "cast_at": epoch_ms(ballot["cast_at"])}}
    state = {**state, "ballots": ballots}
    assert proposal is not None  # judge_ballot refuses a ballot without an open vote
    choices = {v: b["choice"] for v, b in ballots.items()}
    early = settled(proposal, choices) or doomed(proposal, choices)
    if early is not None:
        return close(state, now, early)
    return state, []


def due(state: dict, now: datetime) -> bool:
    """Open with its deadline passed: the timer should notice it."""
    return (not state["closed"] and state["proposal"] is not None
            and state["proposal"]["deadline_at"] <= epoch_ms(now))


def close(state: dict, now: datetime, outcome: Outcome | None = None) -> tuple[dict, Events]:
    """Publish the result (``outcome``, or the count of the ballots); a TOOL_USAGE vote
    also decides its request: approved to run, or rejected with the vote's reason."""
    if state["closed"] or state["proposal"] is None:
        return state, []
    proposal = _proposal_view(state)
    outcome = outcome or tally(proposal, {v: b["choice"] for v, b in state["ballots"].items()})
    vote_id, channel = proposal["vote_id"], proposal["channel_id"]
    result: VoteResult = {
        "event_id": derived_id(vote_id, "result"), "vote_id": vote_id, "channel_id": channel,
        "vote_type": proposal["vote_type"], "strategy": proposal["strategy"],
        "outcome": outcome.outcome, "winning_option": outcome.winning_option,
        "tally": outcome.tally, "ballots_counted": outcome.ballots_counted,
        "eligible_count": outcome.eligible_count, "reason": outcome.reason,
        "closed_at": min(now, proposal["deadline_at"]),
        "tool_request_id": proposal.get("tool_request_id"),
        "request_sha256": (request_digest(state["request"])
                           if state["request"] is not None else None)}
    counts = ", ".join(f"{k} {v:g}" for k, v in outcome.tally.items())
    events: Events = [("VoteResult", result), ("ChatMessage", system_message(
        derived_id(vote_id, "closed"), channel, AUTHOR,
        f"Vote closed: {proposal['title']}: {outcome.outcome} ({counts}). {outcome.reason}",
        now, {"kind": "vote_result", "vote_id": vote_id, "outcome": outcome.outcome}))]
    request = state["request"]
    if proposal["vote_type"] == "TOOL_USAGE" and request is not None:
        approved = request | {"requested_at": from_epoch_ms(request["requested_at"])}
        if outcome.outcome == "PASSED" and outcome.winning_option == "yes":
            events.append(("ToolRequest", approved))
        else:
            events += result_events(approved, "REJECTED", now, vote_id=vote_id,
                                    error=f"the tool-usage vote ended {outcome.outcome}: "
                                          f"{outcome.reason}")
    return {**state, "closed": True, "outcome": outcome.outcome}, events
