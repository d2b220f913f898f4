"""VoteService: open a vote and cast ballots (as ``agora vote``), read a vote's state.

Proposals and ballots go to agora.votes keyed by the vote, like the CLI's; the votes
worker judges ballots in the vote's order and answers a rejected one with a
BallotRejected on the stream, so CastBallot only checks what it can know at once.
GetVote reads the Postgres state the sink keeps.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from gateway import validation
from gateway.auth import Role
from gateway.guard import caller, require_channel
from gateway.publish import Recent, publish
from ops.core.config import Settings
from ops.core.errors import NotFound, Unavailable
from ops.core.kafka import AsyncProducer
from schemas.agora.v1 import votes_pb2, votes_pb2_grpc
from schemas.convert import enum, symbol, timestamp
from schemas.ids import derived_id
from schemas.topics import VOTES
from streams.domain.votes.records import new_ballot, new_proposal
from streams.domain.votes.tally import ABSTAIN, STRATEGIES

MAX_TITLE = 200
MAX_DEADLINE = timedelta(days=30)
DEFAULT_QUORUM = 0.5
VOTE_COLUMNS = ("vote_id, event_id, channel_id, proposer_id, vote_type, strategy, title, "
                "description, options, eligible_voters, weights, quorum, deadline_at, "
                "created_at, tool_request_id, status")
BALLOT_COLUMNS = "event_id, vote_id, channel_id, voter_id, choice, rationale, cast_at"
REJECTION_COLUMNS = ("event_id, vote_id, voter_id, ballot_event_id, reason, detail, "
                     "rejected_at, channel_id")
RESULT_COLUMNS = ("event_id, vote_id, channel_id, vote_type, strategy, outcome, "
                  "winning_option, tally, ballots_counted, eligible_count, reason, closed_at, "
                  "tool_request_id")


@asynccontextmanager
async def postgres_errors() -> AsyncIterator[None]:
    """Turns a Postgres failure (pool timeouts included) into Unavailable: the caller
    may retry. Here rather than in chat.py, which imports this module."""
    try:
        yield
    except psycopg.Error as exc:
        raise Unavailable(f"Postgres: {str(exc).strip()}") from exc


def vote(record: dict) -> votes_pb2.Vote:
    """A VoteProposal event, or a row of the votes table (which adds its status)."""
    return votes_pb2.Vote(
        vote_id=record["vote_id"], channel_id=record["channel_id"],
        proposer_id=record["proposer_id"], vote_type=enum(votes_pb2.VoteType, record["vote_type"]),
        strategy=enum(votes_pb2.VoteStrategy, record["strategy"]), title=record["title"],
        description=record["description"], options=record["options"],
        eligible_voters=record["eligible_voters"],
        # The sink stores a NaN weight (the CLI accepts one) as JSON null.
        weights={k: w for k, w in record["weights"].items() if w is not None},
        quorum=record["quorum"], deadline_at=timestamp(record["deadline_at"]),
        created_at=timestamp(record["created_at"]),
        tool_request_id=record["tool_request_id"] or "",
        status=enum(votes_pb2.VoteStatus, record.get("status", "OPEN")))


def ballot(record: dict) -> votes_pb2.Ballot:
    return votes_pb2.Ballot(
        ballot_id=record["event_id"], vote_id=record["vote_id"], channel_id=record["channel_id"],
        voter_id=record["voter_id"], choice=record["choice"], rationale=record["rationale"],
        cast_at=timestamp(record["cast_at"]))


def rejection(record: dict) -> votes_pb2.BallotRejected:
    return votes_pb2.BallotRejected(
        rejection_id=record["event_id"], vote_id=record["vote_id"], voter_id=record["voter_id"],
        ballot_id=record["ballot_event_id"],
        reason=enum(votes_pb2.BallotRejectReason, record["reason"]), detail=record["detail"],
        rejected_at=timestamp(record["rejected_at"]), channel_id=record["channel_id"] or "")


def result(record: dict) -> votes_pb2.VoteResult:
    return votes_pb2.VoteResult(
        result_id=record["event_id"], vote_id=record["vote_id"], channel_id=record["channel_id"],
        vote_type=enum(votes_pb2.VoteType, record["vote_type"]),
        strategy=enum(votes_pb2.VoteStrategy, record["strategy"]),
        outcome=enum(votes_pb2.VoteOutcome, record["outcome"]),
        winning_option=record["winning_option"] or "", tally=record["tally"],
        ballots_counted=record["ballots_counted"], eligible_count=record["eligible_count"],
        reason=record["reason"], closed_at=timestamp(record["closed_at"]),
        tool_request_id=record["tool_request_id"] or "")


def vote_update(name: str, record: dict) -> votes_pb2.VoteUpdate | None:
    """The stream's form of an event of agora.votes or agora.vote.results; None for the
    records a channel does not show (deadline notices, gated tool requests)."""
    if name == "VoteProposal":
        return votes_pb2.VoteUpdate(opened=vote(record))
    if name == "Ballot":
        return votes_pb2.VoteUpdate(ballot_cast=ballot(record))
    if name == "BallotRejected":
        return votes_pb2.VoteUpdate(ballot_rejected=rejection(record))
    if name == "VoteResult":
        return votes_pb2.VoteUpdate(closed=result(record))
    return None


def _vote_type(value: int) -> str:
    if value == votes_pb2.VOTE_TYPE_UNSPECIFIED:
        return "PROJECT_DECISION"
    found = symbol(votes_pb2.VoteType, value)
    if found is None:
        raise validation.InvalidField("vote_type", f"unknown vote type {value}")
    if found == "TOOL_USAGE":
        raise validation.InvalidField("vote_type", "tool-usage votes are opened by tool "
                                                   "requests (ToolService.RequestTool)")
    return found


def _strategy(value: int) -> str:
    found = ("SIMPLE_MAJORITY" if value == votes_pb2.VOTE_STRATEGY_UNSPECIFIED
             else symbol(votes_pb2.VoteStrategy, value))
    if found not in STRATEGIES:
        raise validation.InvalidField("strategy", f"unknown strategy {value}; strategies: "
                                                  f"{', '.join(STRATEGIES)}")
    return found


def _options(values) -> list[str]:
    values = list(values)
    if len(values) == 1:
        raise validation.InvalidField("options", "at least two, or none for yes and no")
    for i, value in enumerate(values):
        field = f"options[{i}]"
        if not value or value.isspace():
            raise validation.InvalidField(field, "must not be blank")
        if value == ABSTAIN:
            raise validation.InvalidField(field, f"{ABSTAIN!r} is always allowed besides "
                                                 "the options; it is not one")
        if value in values[:i]:
            raise validation.InvalidField(field, f"{value!r} is listed twice")
    return values


def _weights(values) -> dict[str, float]:
    for voter, weight in values.items():
        validation.identifier(voter, f"weights[{voter[:40]}]")
        if not (math.isfinite(weight) and weight >= 0):
            raise validation.InvalidField(f"weights[{voter}]", f"must be a finite number >= 0, "
                                                               f"not {weight}")
    return dict(values)


class VoteService(votes_pb2_grpc.VoteServiceServicer):
    def __init__(self, settings: Settings, producer: AsyncProducer, pool: AsyncConnectionPool):
        self.deadline_s = settings.vote_deadline_s
        self.producer = producer
        self.pool = pool
        self.recent = Recent()

    async def StartVote(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel, Role.MEMBER)
        if not request.title or request.title.isspace():
            raise validation.InvalidField("title", "must not be blank")
        if len(request.title) > MAX_TITLE:
            raise validation.InvalidField("title", f"at most {MAX_TITLE} characters")
        vote_type, strategy = _vote_type(request.vote_type), _strategy(request.strategy)
        options = _options(request.options)
        voters = [validation.identifier(v, f"eligible_voters[{i}]")
                  for i, v in enumerate(request.eligible_voters)]
        weights = _weights(request.weights)
        quorum = request.quorum if request.HasField("quorum") else DEFAULT_QUORUM
        if not 0 <= quorum <= 1:  # NaN fails too
            raise validation.InvalidField("quorum", f"must be in [0, 1], not {quorum}")
        deadline_s = self.deadline_s
        if request.HasField("deadline"):
            deadline = request.deadline.ToTimedelta()
            if not timedelta(0) < deadline <= MAX_DEADLINE:
                raise validation.InvalidField("deadline", f"must be positive and at most "
                                                          f"{MAX_DEADLINE.days} days")
            deadline_s = deadline.total_seconds()
        key = validation.idempotency_key(request.idempotency_key)
        proposer = caller().subject
        vote_id = derived_id("gateway", proposer, key, "vote")
        if (earlier := self.recent.get(vote_id, request)) is not None:
            return earlier
        proposal = new_proposal(
            channel, proposer, request.title, vote_type=vote_type, strategy=strategy,
            description=request.description, options=options,
            eligible_voters=list(dict.fromkeys(voters)), weights=weights, quorum=quorum,
            deadline_s=deadline_s, vote_id=vote_id)
        return await publish(self.producer, self.recent, request, vote_id, VOTES.name, vote_id,
                             "VoteProposal", proposal, vote(proposal))

    async def CastBallot(self, request, context):
        vote_id = validation.identifier(request.vote_id, "vote_id")
        channel = validation.channel_id(request.channel_id)
        require_channel(channel, Role.MEMBER)
        if not request.choice:
            raise validation.InvalidField("choice", "is required: an option of the vote, "
                                                    f"or {ABSTAIN!r}")
        key = validation.idempotency_key(request.idempotency_key)
        voter = caller().subject
        ballot_id = derived_id("gateway", voter, key, "ballot")
        if (earlier := self.recent.get(ballot_id, request)) is not None:
            return earlier
        record = new_ballot(vote_id, channel, voter, request.choice, request.rationale,
                            event_id=ballot_id)
        return await publish(self.producer, self.recent, request, ballot_id, VOTES.name, vote_id,
                             "Ballot", record, ballot(record))

    async def GetVote(self, request, context):
        vote_id = validation.identifier(request.vote_id, "vote_id")
        async with postgres_errors(), self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {VOTE_COLUMNS} FROM votes WHERE vote_id = %s",
                              (vote_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no vote {vote_id!r} (one opened a moment ago may not "
                               "be stored yet)")
            require_channel(row["channel_id"])
            await cur.execute(f"SELECT {BALLOT_COLUMNS} FROM ballots WHERE vote_id = %s "
                              "AND counted ORDER BY cast_at, event_id", (vote_id,))
            ballots = await cur.fetchall()
            await cur.execute(f"SELECT {REJECTION_COLUMNS} FROM ballot_rejections "
                              "WHERE vote_id = %s ORDER BY rejected_at, event_id",
                              (vote_id,))
            rejections = await cur.fetchall()
            await cur.execute(f"SELECT {RESULT_COLUMNS} FROM vote_results "
                              "WHERE vote_id = %s", (vote_id,))
            closed = await cur.fetchone()
        found = vote(row)
        found.ballots.extend(ballot(b) for b in ballots)
        found.rejections.extend(rejection(r) for r in rejections)
        if closed is not None:
            found.result.CopyFrom(result(closed))
        return found
