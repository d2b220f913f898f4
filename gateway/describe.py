"""Channel events as text for people following a channel (``agora tail``): one line
per event, and agents' replies written out as they are generated."""

from __future__ import annotations

from collections import deque

from gateway.agora.v1 import chat_pb2, tools_pb2, votes_pb2


def _enum(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)


def _when(event: chat_pb2.ChannelEvent) -> str:
    return event.time.ToDatetime().strftime("%H:%M:%S")


def _header(event: chat_pb2.ChannelEvent, author_id: str, reply_to: str) -> str:
    to = f" ↳{reply_to[:8]}" if reply_to else ""
    return f"{_when(event)} {author_id}{to}: "


def line(event: chat_pb2.ChannelEvent) -> str:
    when = _when(event)
    kind = event.WhichOneof("event")
    if kind == "message":
        m = event.message
        return _header(event, m.author_id, m.reply_to) + m.text
    if kind == "reply_chunk":
        c = event.reply_chunk
        return f"{_header(event, c.agent_id, c.reply_to)}…{c.text}"
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


class Transcript:
    """The text to print for each event: an agent's reply grows on its line chunk by
    chunk, and its finished message ends the line (or is printed whole when another
    event cut in, the generation restarted, or the finished text differs)."""

    def __init__(self) -> None:
        self._open: str | None = None  # message_id of the reply on the current line
        self._from = 0  # the reply's offset where the line's text starts
        self._text = ""  # what the line shows of it
        self._finished: deque[str] = deque(maxlen=256)  # chunks may trail their message

    def feed(self, event: chat_pb2.ChannelEvent) -> str:
        kind = event.WhichOneof("event")
        if kind == "reply_chunk":
            chunk = event.reply_chunk
            if chunk.message_id in self._finished:
                return ""
            out = ""
            if chunk.message_id != self._open or chunk.offset != self._from + len(self._text):
                out = self._close() + _header(event, chunk.agent_id, chunk.reply_to)
                out += "…" if chunk.offset else ""
                self._open, self._from, self._text = chunk.message_id, chunk.offset, ""
            self._text += chunk.text
            return out + chunk.text
        if kind == "message" and event.message.message_id == self._open:
            whole = self._from == 0 and self._text == event.message.text
            self._finished.append(self._open)
            return self._close() + ("" if whole else line(event) + "\n")
        if kind == "message":
            self._finished.append(event.message.message_id)
        return self._close() + line(event) + "\n"

    def _close(self) -> str:
        if self._open is None:
            return ""
        self._open = None
        return "\n"
