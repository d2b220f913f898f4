"""May this agent run this tool in this channel? Plain functions over the profile,
the tool definition and the channel policy; a denial carries the reason shown in the
channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from schemas.events import AgentProfile
from streams.domain.tools.catalog import Tool

POLICIES = Path(__file__).resolve().parent / "policies.yaml"
REQUESTING_STATES = ("ACTIVE", "WORKING")


@dataclass(frozen=True)
class Rule:
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    default: Rule = Rule()
    channels: dict[str, Rule] = field(default_factory=dict)

    def rule(self, channel_id: str) -> Rule:
        return self.channels.get(channel_id, self.default)


def _rule(data: dict | None) -> Rule:
    data = data or {}
    return Rule(allow=tuple(data.get("allow", ["*"])), deny=tuple(data.get("deny", [])))


def load_policy(path: Path | None = None) -> Policy:
    data = yaml.safe_load((path or POLICIES).read_text()) or {}
    return Policy(default=_rule(data.get("default")),
                  channels={c: _rule(r) for c, r in (data.get("channels") or {}).items()})


def _matches(tool: Tool, entries: tuple[str, ...]) -> str | None:
    for entry in entries:
        if entry in ("*", tool.name, f"category:{tool.category}"):
            return entry
    return None


def denial(tool: Tool, agent: AgentProfile | None, agent_id: str, channel_id: str,
           policy: Policy) -> str | None:
    """Why the request is denied, or None when the agent may run the tool here."""
    if agent is None:
        return f"unknown agent {agent_id!r}"
    if agent["state"] not in REQUESTING_STATES:
        return f"agent {agent_id!r} is {agent['state']}"
    if channel_id not in agent["channels"]:
        return f"agent {agent_id!r} is not a member of channel {channel_id!r}"
    if tool.name not in agent["tools"]:
        return f"{tool.name!r} is not one of {agent_id!r}'s tools ({', '.join(agent['tools'])})"
    missing = [p for p in tool.permissions if p not in agent["permissions"]]
    if missing:
        return f"agent {agent_id!r} lacks permission {', '.join(missing)}"
    rule = policy.rule(channel_id)
    denied_by = _matches(tool, rule.deny)
    if denied_by:
        return f"channel {channel_id!r} denies {denied_by!r}"
    if not _matches(tool, rule.allow):
        return f"channel {channel_id!r} allows only {', '.join(rule.allow) or 'no tools'}"
    return None
