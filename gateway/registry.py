"""The registry's clients (the CLI, the gateway): read ``agora.agents`` whole, publish
new versions of profiles (``streams.domain.registry`` makes and changes them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from inference.client import InferenceClient
from ops.core import kafka
from ops.core.config import Settings
from ops.store.memory import open_memory
from schemas import codec
from schemas.events import AgentProfile
from schemas.topics import AGENTS
from streams.domain.registry import created, updated, with_permissions
from streams.domain.relevance.records import expertise_texts

log = structlog.get_logger("agora.registry")


class Registry:
    """The CLI's side of the registry: read it whole, publish changes (the gateway reads
    a live view instead, ``gateway.agents``, and publishes through ``save``)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def load(self) -> dict[str, AgentProfile]:
        """Every agent's latest profile: the registry topic read to its end."""
        profiles: dict[str, AgentProfile] = {}
        for record in kafka.read_to_end(self.settings, [AGENTS.name]):
            key = (record.key() or b"").decode(errors="replace")
            if record.value() is None:
                profiles.pop(key, None)
                continue
            try:
                profiles[key] = codec.decode_as(record.value(), AgentProfile)
            except codec.CodecError as exc:
                # A foreign record must not hide the rest of the registry.
                log.warning("registry.bad_record", key=key, offset=record.offset(),
                            error=str(exc))
        return profiles

    def publish(self, profile: AgentProfile) -> None:
        kafka.publish(self.settings, AGENTS.name,
                      [(profile["agent_id"], codec.encode("AgentProfile", profile))])

    def save(self, profile: AgentProfile, action: str) -> None:
        """Publish what ``created`` or ``updated`` made; a new agent's expertise texts are
        embedded first (those no agent embedded before), so relevance finds them."""
        if action == "created":
            self.store_expertise(profile)
        if action != "unchanged":
            self.publish(profile)

    def store_expertise(self, profile: AgentProfile) -> None:
        texts = expertise_texts(profile)

        async def embed(missing: list[str]):
            async with InferenceClient(self.settings.triton_grpc) as client:
                return await client.embed(missing)

        memory = open_memory(self.settings.memory)
        try:
            kept = memory.vectors(texts)
            missing = [t for t in texts if t not in kept]
            if missing:
                memory.put_vectors(dict(zip(missing, asyncio.run(embed(missing)))))
        finally:
            memory.close()

    def create(self, template: str, channel: str, agent_id: str | None = None,
               name: str | None = None) -> tuple[AgentProfile, str]:
        """Create an agent, or add ``channel`` to an existing one (``created``)."""
        agent_id = agent_id or template
        profile, action = created(self.load().get(agent_id), template, channel, agent_id, name)
        self.save(profile, action)
        return profile, action

    def update(self, agent_id: str, change: Callable[[AgentProfile], dict]) -> AgentProfile:
        profile = updated(self.load().get(agent_id), agent_id, change)
        self.save(profile, "updated")
        return profile

    def grant(self, agent_id: str, permissions: list[str], revoke: bool = False
              ) -> AgentProfile:
        """Override the template's permissions of one agent (``with_permissions``)."""
        return self.update(agent_id, lambda p: with_permissions(p, revoke=permissions)
                           if revoke else with_permissions(p, grant=permissions))

    def set_state(self, agent_id: str, state: str, reason: str | None = None
                  ) -> AgentProfile:
        return self.update(agent_id, lambda p: {"state": state, "state_reason": reason})
