"""Channel events as text for people following a channel (``agora tail``): one line
per event, and agents' replies written out as they are generated; incidents in a line
(``agora incident``)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from schemas.agora.v1 import chat_pb2, incidents_pb2, tools_pb2, votes_pb2
from schemas.convert import symbol
from streams.domain.knowledge.chunks import location

# The factors a reason ends with, which explain() shows in columns already.
_FACTORS = re.compile(r" \((score [\d.]+; )?expertise [\d.]+, workload [^)]*\)$")


def _enum(kind, value: int) -> str:
    return symbol(kind, value) or "UNSPECIFIED"


def _when(event: chat_pb2.ChannelEvent) -> str:
    return event.time.ToDatetime().strftime("%H:%M:%S")


def _header(event: chat_pb2.ChannelEvent, author_id: str, reply_to: str) -> str:
    to = f" ↳{reply_to[:8]}" if reply_to else ""
    return f"{_when(event)} {author_id}{to}: "


def cited(message: chat_pb2.ChatMessage) -> str:
    """The line under a reply naming the knowledge-base passages it was answered from."""
    if not message.sources:
        return ""
    return "\n    sources: " + "; ".join(
        f"[{i}] {location(s.title, s.heading)} ({s.chunk_id[:8]})"
        for i, s in enumerate(message.sources, 1))


def line(event: chat_pb2.ChannelEvent) -> str:
    when = _when(event)
    kind = event.WhichOneof("event")
    if kind == "message":
        m = event.message
        return _header(event, m.author_id, m.reply_to) + m.text + cited(m)
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
        status = _enum(tools_pb2.ToolStatus, t.status)
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
        reason = _enum(votes_pb2.BallotRejectReason, b.reason)
        return f"{when} ballot rejected {b.vote_id[:8]} {b.voter_id}: {reason} {b.detail}"
    c = update.closed
    outcome = _enum(votes_pb2.VoteOutcome, c.outcome)
    return (f"{when} vote closed {c.vote_id[:8]}: {outcome} {c.winning_option} "
            f"({c.ballots_counted}/{c.eligible_count} counted)").rstrip()


def explain(event: chat_pb2.ChannelEvent, shown: int = 4) -> str:
    """A relevance decision over several lines: who was chosen, and each of the top
    ``shown`` agents' score with its factors and reason."""
    r = event.relevance
    head = (f"{_when(event)} relevance {r.message_id[:8]}: "
            f"{', '.join(r.selected) or 'nobody'} selected"
            + (f" ({r.skip_reason})" if r.skip_reason else ""))
    rows = [f"  {'*' if s.selected else ' '} {s.agent_id:<19} {s.score:.2f}  "
            f"expertise {s.expertise:.2f} workload {s.workload:.2f} social {s.social:.2f} "
            f"timing {s.timing:.2f} quality {s.quality:.2f}  {_FACTORS.sub('', s.reason)}"
            for s in r.scores[:shown]]
    return "\n".join([head, *rows])


class Transcript:
    """The text to print for each event: an agent's reply grows on its line chunk by
    chunk (on a new line, marked …, when another event cut in), and its finished
    message ends the line, or is printed whole when it differs from what streamed."""

    KEPT = 256  # replies remembered: chunks may trail their message, or have none

    def __init__(self, explain: Callable[[chat_pb2.RelevanceSummary], bool] | None = None
                 ) -> None:
        self._explain = explain  # which relevance decisions to show with every factor
        self._open: str | None = None  # message_id of the reply on the current line
        self._streamed: dict[str, str] = {}  # message_id -> its text shown so far
        self._finished: deque[str] = deque(maxlen=self.KEPT)

    def feed(self, event: chat_pb2.ChannelEvent) -> str:
        kind = event.WhichOneof("event")
        if kind == "reply_chunk":
            chunk = event.reply_chunk
            if chunk.message_id in self._finished:
                return ""
            before = self._streamed.pop(chunk.message_id, "")
            out = ""
            if chunk.message_id != self._open or chunk.offset != len(before):
                # Another event cut in, or the generation restarted (offset 0 again).
                out = self._close() + _header(event, chunk.agent_id, chunk.reply_to)
                out += "…" if chunk.offset else ""
                self._open = chunk.message_id
            self._streamed[chunk.message_id] = before[:chunk.offset] + chunk.text
            if len(self._streamed) > self.KEPT:
                del self._streamed[next(iter(self._streamed))]
            return out + chunk.text
        if kind == "message":
            message = event.message
            self._finished.append(message.message_id)
            if self._streamed.pop(message.message_id, None) == message.text:
                sources = cited(message)
                if message.message_id == self._open:
                    return self._close() + (sources.lstrip("\n") + "\n" if sources else "")
                return sources.lstrip("\n") + "\n" if sources else ""
        detailed = kind == "relevance" and self._explain and self._explain(event.relevance)
        text = explain(event) if detailed else line(event)
        return self._close() + text + "\n"

    def _close(self) -> str:
        if self._open is None:
            return ""
        self._open = None
        return "\n"


def _duration(value) -> str:
    seconds = int(value.ToTimedelta().total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def incident_line(found: incidents_pb2.Incident) -> str:
    """An incident in a line: id, severity, status, channel, ticket, when it opened, its
    title, and how long it took to acknowledge and resolve."""
    severity = symbol(incidents_pb2.IncidentSeverity, found.severity) or "SEV?"
    status = symbol(incidents_pb2.IncidentStatus, found.status) or "?"
    times = [f"{name} in {_duration(getattr(found, field))}"
             for name, field in (("acknowledged", "time_to_acknowledge"),
                                 ("resolved", "time_to_resolve")) if found.HasField(field)]
    return (f"{found.incident_id}  {severity} {status:<12} #{found.channel_id} "
            f"{found.ticket or '-'} {found.opened_at.ToDatetime():%Y-%m-%d %H:%M} "
            f"\"{found.title}\"" + (f" ({', '.join(times)})" if times else ""))
