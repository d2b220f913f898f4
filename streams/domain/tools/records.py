"""Tool events as records: a request, and its outcome (the ToolResult and the
channel's notice)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone

from schemas.codec import safe_text
from schemas.ids import derived_id
from streams.domain.notices import system_message

AUTHOR = "agora.tools"
SHOWN = {"OK": "ran", "DENIED": "was denied", "REJECTED": "was rejected by vote",
         "FAILED": "failed", "TIMEOUT": "timed out"}


def request_digest(request: dict) -> str:
    """SHA-256 of what a tool-usage vote approves: who runs which tool with what."""
    fields = [request[k] for k in ("event_id", "channel_id", "agent_id", "tool", "arguments_json")]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def vote_id_of(request_id: str) -> str:
    """The tool-usage vote that gates a request (one per request, replay-safe)."""
    return derived_id(request_id, "vote")


def new_request(agent_id: str, channel_id: str, tool: str, arguments: dict, reason: str,
                source_message_id: str | None = None, event_id: str | None = None) -> dict:
    """A ToolRequest made by a person or program on an agent's behalf (CLI, gateway)."""
    return {"event_id": event_id or str(uuid.uuid4()), "channel_id": channel_id,
            "agent_id": agent_id, "tool": tool, "arguments_json": json.dumps(arguments),
            "reason": reason, "source_message_id": source_message_id, "requested_at": datetime.now(timezone.utc)}


def result_events(request: dict, status: str, now: datetime, *, output: str = "",
                  error: str | None = None, artifacts: list[str] | None = None,
                  vote_id: str | None = None, started_at: datetime | None = None,
                  duration_ms: int = 0) -> list[tuple[str, dict]]:
    """[("ToolResult", record), ("ChatMessage", notice)], both keyed by the channel.
    Text from the tool is made valid UTF-8 (undecodable bytes replaced)."""
    output, error = safe_text(output), error and safe_text(error)
    artifacts = [safe_text(a) for a in artifacts or []]
    request_id, channel = request["event_id"], request["channel_id"]
    result = {"event_id": derived_id(request_id, "result"), "request_id": request_id,
              "channel_id": channel, "agent_id": request["agent_id"], "tool": request["tool"],
              "status": status, "output": output, "error": error,
              "artifacts": list(artifacts or []), "vote_id": vote_id,
              "started_at": started_at, "finished_at": now, "duration_ms": duration_ms}
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

