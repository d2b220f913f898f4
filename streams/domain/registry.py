"""Agent profiles as plain data: made from templates, changed by lifecycle operations
(``gateway.registry`` publishes them to the compacted ``agora.agents`` topic that
every worker reads as its registry)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import yaml

from ops.core.errors import AlreadyExists, Invalid, NotFound

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
                name: str | None = None) -> dict:
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


def changed(profile: dict, **fields) -> dict:
    """A new version of ``profile`` (new event id and update time)."""
    return {**profile, **fields, "event_id": str(uuid.uuid4()), "updated_at": _now()}


def _tools(permissions: Sequence[str]) -> list[str]:
    return [p.removeprefix("tool:") for p in permissions if p.startswith("tool:")]


def with_permissions(profile: dict, grant: Sequence[str] = (),
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
