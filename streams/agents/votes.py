"""The votes Faust agent: open votes live in a table keyed by vote id.

Every record of a vote (the gated tool request, the proposal, ballots, deadline
notices) is keyed by the vote id, so one worker sees them in order. A timer notices
deadlines and writes a VoteDeadline into the vote's partition: the vote then closes
after every ballot written before it, and a replay closes it at the same place.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import faust
import structlog
from faust.types import TP
from prometheus_client import Counter

from schemas import codec
from schemas.topics import (
    AGENT_FEEDBACK,
    CHAT_MESSAGES,
    DEADLETTER,
    TOOL_APPROVED,
    TOOL_RESULTS,
    VOTE_RESULTS,
    VOTES,
)
from streams.app import send_all, topic
from streams.deadletter import dead_letter_on_failure
from streams.domain import feedback
from streams.domain.votes import ledger
from streams.services import Services

log = structlog.get_logger("agora.votes")
RECORDS = Counter("agora_votes_records_total", "Vote records handled", ["event", "outcome"])
VOTING_STATES = ("ACTIVE", "WORKING")
RENOTICE_S = 10.0  # a deadline notice still unanswered is written again after this


def register(app: faust.App, services: Services, table: faust.TableT) -> faust.types.AgentT:
    records = topic(app, VOTES)
    results, chat = topic(app, VOTE_RESULTS), topic(app, CHAT_MESSAGES)
    routes = {"VoteResult": (results, "vote_id"), "BallotRejected": (results, "vote_id"),
              "ChatMessage": (chat, "channel_id"),
              "ToolRequest": (topic(app, TOOL_APPROVED), "channel_id"),
              "ToolResult": (topic(app, TOOL_RESULTS), "channel_id"),
              "AgentFeedback": (topic(app, AGENT_FEEDBACK), "agent_id")}
    deadletter = topic(app, DEADLETTER)
    noticed: dict[str, float] = {}

    def voters(channel_id: str) -> tuple[list[str], set[str]]:
        """The channel's agents allowed to vote, and those able to answer now."""
        members = {a: p for a, p in services.registry.data.items()
                   if channel_id in p["channels"] and "vote:cast" in p["permissions"]}
        return sorted(members), {a for a, p in members.items() if p["state"] in VOTING_STATES}

    def apply(name: str, record: dict, state: dict, now: datetime) -> tuple[dict, list]:
        if name == "ToolRequest":
            return ledger.gate(state, record), []
        if name == "VoteProposal":
            return ledger.open_vote(state, record, *voters(record["channel_id"]),
                                    services.registry.data, now)
        if name == "Ballot":
            return ledger.cast(state, record, now)
        if ledger.due(state, max(now, record["noticed_at"])):  # VoteDeadline
            return ledger.close(state, now)
        return state, []

    @app.agent(records, name="votes")
    async def votes(stream):
        await services.ready()
        async for event in stream.events():
            async with dead_letter_on_failure(deadletter, event.message, "votes"):
                await handle(event.message)

    async def handle(message) -> None:
        name, record = codec.decode(message.value)
        if name not in VOTES.events:
            raise codec.WrongEventType(" or ".join(VOTES.events), name)
        vote_id = record.get("vote_id") or (message.key or b"").decode()
        before = table.get(vote_id)
        state, produced = apply(name, record, before or ledger.new(vote_id, message.partition),
                                datetime.now(timezone.utc))
        produced += [("AgentFeedback", found) for found in
                     feedback.vote_outcomes(state, produced, services.registry.data)]
        # Durable before the vote's new state and offset are; a result before the rest,
        # so that the tools agent finds it when the approved request arrives.
        send = [(routes[n][0], out[routes[n][1]], n, out) for n, out in produced]
        await send_all(r for r in send if r[2] == "VoteResult")
        await send_all(r for r in send if r[2] != "VoteResult")
        if state != before and (state["proposal"] or state["request"]):
            table[vote_id] = state
        RECORDS.labels(name, produced[0][0] if produced else "none").inc()
        if state["closed"] and not (before or {}).get("closed"):
            log.info("votes.closed", vote_id=vote_id, outcome=state["outcome"])

    @app.timer(interval=1.0)
    async def deadlines() -> None:
        """Notice deadlines of the votes in this worker's active partitions."""
        now, actives = datetime.now(timezone.utc), app.assignor.assigned_actives()
        for vote_id, state in list(table.items()):
            if not ledger.due(state, now) or TP(VOTES.name, state["partition"]) not in actives:
                continue
            if time.monotonic() - noticed.get(vote_id, -RENOTICE_S) < RENOTICE_S:
                continue
            noticed[vote_id] = time.monotonic()
            await records.send(key=vote_id.encode(), value=codec.encode("VoteDeadline", {
                "event_id": str(uuid.uuid4()), "vote_id": vote_id,
                "deadline_at": state["proposal"]["deadline_at"], "noticed_at": now}))

    return votes
