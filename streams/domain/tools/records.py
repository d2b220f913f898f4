"""Tool events as records: a request, the vote that gates it, and its outcome (the
ToolResult and the channel's notice)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone

from schemas.codec import safe_text
from schemas.events import Event, ToolRequest, ToolResult, ToolStatus, VoteProposal
from schemas.ids import derived_id
from streams.domain.notices import system_message
from streams.domain.tools.catalog import Tool
from streams.domain.votes.records import new_proposal

AUTHOR = "agora.tools"
SHOWN = {"OK": "ran", "DENIED": "was denied", "REJECTED": "was rejected by vote",
         "FAILED": "failed", "TIMEOUT": "timed out"}


def request_digest(request: ToolRequest) -> str:
    """SHA-256 of what a tool-usage vote approves: who runs which tool with what."""
    fields = [request["event_id"], request["channel_id"], request["agent_id"], request["tool"],
              request["arguments_json"]]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def vote_id_of(request_id: str) -> str:
    """The tool-usage vote that gates a request (one per request, replay-safe)."""
    return derived_id(request_id, "vote")


def new_request(agent_id: str, channel_id: str, tool: str, arguments: dict, reason: str,
                source_message_id: str | None = None, event_id: str | None = None
                ) -> ToolRequest:
    """A ToolRequest made by a person or program on an agent's behalf (CLI, gateway)."""
    return {"event_id": event_id or str(uuid.uuid4()), "channel_id": channel_id,
            "agent_id": agent_id, "tool": tool, "arguments_json": json.dumps(arguments),
            "reason": reason, "source_message_id": source_message_id,
            "requested_at": datetime.now(timezone.utc)}


def usage_proposal(request: ToolRequest, tool: Tool, deadline_s: float) -> VoteProposal:
    """The TOOL_USAGE vote a request of a tool that needs one opens (its ids derive
    from the request's)."""
    return new_proposal(
        request["channel_id"], request["agent_id"],
        f"Allow {request['agent_id']} to run {tool.name}?", vote_type="TOOL_USAGE",
        strategy=tool.vote_strategy, quorum=tool.vote_quorum, deadline_s=deadline_s,
        description=f"{request['reason']}\n\nArguments: {request['arguments_json']}",
        vote_id=vote_id_of(request["event_id"]),
        event_id=derived_id(request["event_id"], "proposal"),
        tool_request_id=request["event_id"])


def result_events(request: ToolRequest, status: ToolStatus, now: datetime, *, output: str = "",
                  error: str | None = None, artifacts: list[str] | None = None,
                  vote_id: str | None = None, started_at: datetime | None = None,
                  duration_ms: int = 0) -> list[tuple[str, Event]]:
    """[("ToolResult", record), ("ChatMessage", notice)], both keyed by the channel.
    Text from the tool is made valid UTF-8 (undecodable bytes replaced)."""
    output, error = safe_text(output), error and safe_text(error)
    artifacts = [safe_text(a) for a in artifacts or []]
    request_id, channel = request["event_id"], request["channel_id"]
    result: ToolResult = {"event_id": derived_id(request_id, "result"), "request_id": request_id,
                          "channel_id": channel, "agent_id": request["agent_id"],
                          "tool": request["tool"], "status": status, "output": output,
                          "error": error, "artifacts": list(artifacts or []),
                          "vote_id": vote_id, "started_at": started_at, "finished_at": now,
                          "duration_ms": duration_ms}
    arguments = request["arguments_json"]
    lines = [f"Tool {request['tool']} for {request['agent_id']} {SHOWN[status]}: "
             f"{arguments[:300]}{'…' if len(arguments) > 300 else ''}"]
    if error:
        lines.append(f"Reason: {error}")
    if output:
        lines.append(output)
    lines += [f"Artifact: {path}" for path in artifacts or []]
    notice = system_message(
        derived_id(request_id, "notice"), channel, AUTHOR, "\n".join(lines), now,
        {"kind": "tool_result", "tool_request_id": request_id, "tool": request["tool"],
         "status": status, **({"vote_id": vote_id} if vote_id else {})})
    return [("ToolResult", result), ("ChatMessage", notice)]

