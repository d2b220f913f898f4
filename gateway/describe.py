"""One line per channel event, for people following a channel (``agora tail``)."""

from __future__ import annotations

from gateway.agora.v1 import chat_pb2, tools_pb2, votes_pb2


def _enum(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)


def line(event: chat_pb2.ChannelEvent) -> str:
    when = event.time.ToDatetime().strftime("%H:%M:%S")
    kind = event.WhichOneof("event")
    if kind == "message":
        m = event.message
        to = f" ↳{m.reply_to[:8]}" if m.reply_to else ""
        return f"{when} {m.author_id}{to}: {m.text}"
    if kind == "relevance":
        r = event.relevance
        chosen = ", ".join(f"{s.agent_id} {s.score:.2f} ({s.reason})"
                           for s in r.scores if s.selected)
        return (f"{when} relevance {r.message_id[:8]}: "
                f"{chosen or 'nobody: ' + (r.skip_reason or 'no agent above the threshold')}")
    if kind == "tool_result":
        t = event.tool_result
        status = _enum(tools_pb2.ToolStatus, t.status, "TOOL_STATUS_")
        return f"{when} tool {t.tool} for {t.agent_id}: {status} {t.output or t.error}".rstrip()
    update = event.vote_update
    change = update.WhichOneof("update")
    if change == "opened":
        v = update.opened
        return f"{when} vote opened {v.vote_id[:8]}: {v.title} ({', '.join(v.options)})"
    if change == "ballot_cast":
        b = update.ballot_cast
        return f"{when} ballot {b.vote_id[:8]} {b.voter_id}: {b.choice}"
    if change == "ballot_rejected":
        b = update.ballot_rejected
        reason = _enum(votes_pb2.BallotRejectReason, b.reason, "BALLOT_REJECT_REASON_")
        return f"{when} ballot rejected {b.vote_id[:8]} {b.voter_id}: {reason} {b.detail}"
    c = update.closed
    outcome = _enum(votes_pb2.VoteOutcome, c.outcome, "VOTE_OUTCOME_")
    return (f"{when} vote closed {c.vote_id[:8]}: {outcome} {c.winning_option} "
            f"({c.ballots_counted}/{c.eligible_count} counted)").rstrip()
