"""Agent profiles as plain data: made from templates, changed by lifecycle operations
(``gateway.registry`` publishes them to the compacted ``agora.agents`` topic that
every worker reads as its registry)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import yaml

from ops.core.errors import AlreadyExists, Invalid, NotFound
from schemas.events import AgentProfile

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATES = ("ACTIVE", "WORKING", "PAUSED", "ERROR", "MAINTENANCE")


@lru_cache(maxsize=1)
def templates() -> dict[str, dict]:
    found = {}
    for path in sorted(TEMPLATES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        found[data["template"]] = data
    return found


def _now() -> datetime:
    return datetime.now(timezone.utc)


def new_profile(template: str, channels: list[str], agent_id: str | None = None,
                name: str | None = None) -> AgentProfile:
    try:
        spec = templates()[template]
    except KeyError:
        raise Invalid(f"unknown template {template!r}; templates: "
                      f"{', '.join(templates())}") from None
    now = _now()
    return {
        "event_id": str(uuid.uuid4()), "agent_id": agent_id or template,
        "name": name or spec["name"], "template": template, "persona": spec["persona"],
        "system_prompt": spec["system_prompt"], "expertise": spec["expertise"],
        "tools": list(spec["tools"]), "channels": sorted(set(channels)),
        "permissions": list(spec["permissions"]), "state": "ACTIVE", "state_reason": None,
        "performance_score": float(spec.get("performance_score", 0.7)),
        "created_at": now, "updated_at": now,
    }


def changed(profile: AgentProfile, **fields: Any) -> AgentProfile:
    """A new version of ``profile`` (new event id and update time)."""
    # ``fields`` name the profile's own fields; a misspelt one fails the codec on send.
    return cast(AgentProfile, {**profile, **fields, "event_id": str(uuid.uuid4()),
                               "updated_at": _now()})


def created(current: AgentProfile | None, template: str, channel: str, agent_id: str,
            name: str | None = None) -> tuple[AgentProfile, str]:
    """Agent ``agent_id`` after creating it from ``template`` in ``channel``, given its
    ``current`` profile, and what happened: ``created``, ``joined`` (an existing agent
    of the template joins the channel) or ``unchanged``."""
    if current is None:
        return new_profile(template, [channel], agent_id, name), "created"
    if current["template"] != template:
        raise AgentExists(f"agent {agent_id!r} exists from template "
                          f"{current['template']!r}; choose another id")
    if channel in current["channels"]:
        return current, "unchanged"
    return changed(current, channels=sorted({*current["channels"], channel})), "joined"


def updated(current: AgentProfile | None, agent_id: str,
            change: Callable[[AgentProfile], dict]) -> AgentProfile:
    """A new version of agent ``agent_id`` with the fields ``change(current)`` returns
    (it may raise to refuse)."""
    if current is None:
        raise UnknownAgent(f"unknown agent {agent_id!r}")
    fields = change(current)
    if "state" in fields and fields["state"] not in STATES:
        raise Invalid(f"unknown state {fields['state']!r}; states: {', '.join(STATES)}")
    return changed(current, **fields)


def _tools(permissions: Sequence[str]) -> list[str]:
    return [p.removeprefix("tool:") for p in permissions if p.startswith("tool:")]


def with_permissions(profile: AgentProfile, grant: Sequence[str] = (),
                     revoke: Sequence[str] = ()) -> dict:
    """The permissions and tools of ``profile`` after granting, then revoking, permissions
    beyond its template's; ``tool:NAME`` also adds (or removes) the tool."""
    dropped = set(_tools(revoke))
    return {"permissions": [p for p in dict.fromkeys([*profile["permissions"], *grant])
                            if p not in revoke],
            "tools": [t for t in dict.fromkeys([*profile["tools"], *_tools(grant)])
                      if t not in dropped]}


class AgentExists(AlreadyExists):
    """The agent id is taken by an agent of another template."""


class UnknownAgent(NotFound):
    """No agent has this id."""
