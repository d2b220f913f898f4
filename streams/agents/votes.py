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
from typing import Any

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


class Votes:
    """What the votes agent holds: its topics, the worker's services, the votes table,
    and when each due vote's deadline was last noticed."""

    def __init__(self, app: faust.App, services: Services, table: faust.types.TableT):
        self.app, self.services, self.table = app, services, table
        self.records = topic(app, VOTES)
        results, chat = topic(app, VOTE_RESULTS), topic(app, CHAT_MESSAGES)
        self.routes = {"VoteResult": (results, "vote_id"),
                       "BallotRejected": (results, "vote_id"),
                       "ChatMessage": (chat, "channel_id"),
                       "ToolRequest": (topic(app, TOOL_APPROVED), "channel_id"),
                       "ToolResult": (topic(app, TOOL_RESULTS), "channel_id"),
                       "AgentFeedback": (topic(app, AGENT_FEEDBACK), "agent_id")}
        self.deadletter = topic(app, DEADLETTER)
        self.noticed: dict[str, float] = {}

    def voters(self, channel_id: str) -> tuple[list[str], set[str]]:
        """The channel's agents allowed to vote, and those able to answer now."""
        members = {a: p for a, p in self.services.registry.data.items()
                   if channel_id in p["channels"] and "vote:cast" in p["permissions"]}
        return sorted(members), {a for a, p in members.items() if p["state"] in VOTING_STATES}

    def apply(self, name: str, record: Any, state: dict, now: datetime) -> tuple[dict, list]:
        """``record`` is the ``name`` event of the votes topic."""
        if name == "ToolRequest":
            return ledger.gate(state, record), []
        if name == "VoteProposal":
            return ledger.open_vote(state, record, *self.voters(record["channel_id"]),
                                    self.services.registry.data, now)
        if name == "Ballot":
            return ledger.cast(state, record, now)
        if ledger.due(state, max(now, record["noticed_at"])):  # VoteDeadline
            return ledger.close(state, now)
        return state, []

    async def handle(self, message: faust.types.Message) -> None:
        name, record = codec.decode(message.value)
        if name not in VOTES.events:
            raise codec.WrongEventType(" or ".join(VOTES.events), name)
        vote_id = record.get("vote_id") or (message.key or b"").decode()
        before = self.table.get(vote_id)
        state, produced = self.apply(name, record,
                                     before or ledger.new(vote_id, message.partition),
                                     datetime.now(timezone.utc))
        produced += [("AgentFeedback", found) for found in
                     feedback.vote_outcomes(state, produced, self.services.registry.data)]
        # Durable before the vote's new state and offset are; a result before the rest,
        # so that the tools agent finds it when the approved request arrives.
        send = [(self.routes[n][0], out[self.routes[n][1]], n, out) for n, out in produced]
        await send_all(r for r in send if r[2] == "VoteResult")
        await send_all(r for r in send if r[2] != "VoteResult")
        if state != before and (state["proposal"] or state["request"]):
            self.table[vote_id] = state
        RECORDS.labels(name, produced[0][0] if produced else "none").inc()
        if state["closed"] and not (before or {}).get("closed"):
            log.info("votes.closed", vote_id=vote_id, outcome=state["outcome"])

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent."""
        await self.services.ready()
        async for event in stream.events():
            async with dead_letter_on_failure(self.deadletter, event.message, "votes"):
                await self.handle(event.message)

    async def notice_deadlines(self) -> None:
        """Notice deadlines of the votes in this worker's active partitions (a timer)."""
        now, actives = datetime.now(timezone.utc), self.app.assignor.assigned_actives()
        for vote_id, state in list(self.table.items()):
            if not ledger.due(state, now) or TP(VOTES.name, state["partition"]) not in actives:
                continue
            if time.monotonic() - self.noticed.get(vote_id, -RENOTICE_S) < RENOTICE_S:
                continue
            self.noticed[vote_id] = time.monotonic()
            await self.records.send(key=vote_id.encode(), value=codec.encode("VoteDeadline", {
                "event_id": str(uuid.uuid4()), "vote_id": vote_id,
                "deadline_at": state["proposal"]["deadline_at"], "noticed_at": now}))


def register(app: faust.App, services: Services, table: faust.types.TableT) -> faust.types.AgentT:
    agent = Votes(app, services, table)
    app.timer(interval=1.0)(agent.notice_deadlines)
    return app.agent(agent.records, name="votes")(agent.consume)
