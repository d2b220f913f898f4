"""The registry's clients (the CLI, the gateway): read ``agora.agents`` whole, publish
new versions of profiles (``streams.domain.registry`` makes and changes them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from confluent_kafka import TopicPartition

from inference.client import InferenceClient
from ops.core import kafka
from ops.core.config import Settings
from ops.core.errors import Invalid
from ops.store.memory import Memory
from schemas import codec
from schemas.topics import AGENTS
from streams.domain.registry import (
    STATES,
    AgentExists,
    UnknownAgent,
    changed,
    new_profile,
    with_permissions,
)

log = structlog.get_logger("agora.registry")
DRAINED_S = 0.2  # an empty poll this long after the end offsets: the registry is read


class Registry:
    """The CLI's and gateway's side of the registry: read it whole, publish changes."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def load(self, timeout_s: float = 10) -> dict[str, dict]:
        consumer = kafka.consumer(self.settings, "agora-registry-reader")
        try:
            parts = [TopicPartition(t, p, 0)
                     for t, p in kafka.partitions(consumer, [AGENTS.name], timeout_s)]
            ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1]
                    for p in parts}
            consumer.assign(parts)
            profiles: dict[str, dict] = {}
            remaining = {p for p, end in ends.items() if end > 0}
            while True:
                # Past the end offsets, read on until the broker has nothing more: Tansu's
                # end offsets count batches, so they can fall short of the last record.
                record = consumer.poll(timeout_s if remaining else DRAINED_S)
                if record is None:
                    if not remaining:
                        return profiles
                    raise TimeoutError(f"registry not read to its end in {timeout_s}s")
                if record.error():
                    continue
                key = (record.key() or b"").decode(errors="replace")
                if record.value() is None:
                    profiles.pop(key, None)
                else:
                    try:
                        profiles[key] = codec.decode(record.value(), expected="AgentProfile")[1]
                    except codec.CodecError as exc:
                        # A foreign record must not hide the rest of the registry.
                        log.warning("registry.bad_record", key=key, offset=record.offset(),
                                    error=str(exc))
                if record.offset() + 1 >= ends[record.partition()]:
                    remaining.discard(record.partition())
        finally:
            consumer.close()

    def publish(self, profile: dict) -> None:
        kafka.publish(self.settings, AGENTS.name,
                      [(profile["agent_id"], codec.encode("AgentProfile", profile))])

    def create(self, template: str, channel: str, agent_id: str | None = None,
               name: str | None = None,
               check: Callable[[dict], None] | None = None) -> tuple[dict, str]:
        """Create an agent, or add ``channel`` to an existing one; returns (profile, action).
        ``check`` sees an existing agent before it joins the channel, and may raise to
        refuse."""
        agent_id = agent_id or template
        current = self.load().get(agent_id)
        if current is not None:
            if current["template"] != template:
                raise AgentExists(f"agent {agent_id!r} exists from template "
                                  f"{current['template']!r}; choose another id")
            if channel in current["channels"]:
                return current, "unchanged"
            if check is not None:
                check(current)
            profile = changed(current, channels=sorted({*current["channels"], channel}))
            action = "joined"
        else:
            profile = new_profile(template, [channel], agent_id, name)
            action = "created"
            self._store_expertise(profile)
        self.publish(profile)
        return profile, action

    def _store_expertise(self, profile: dict) -> None:
        """The expertise embedding, computed once through the embedder, kept in Qdrant."""
        async def embed():
            async with InferenceClient(self.settings.triton_grpc) as client:
                return (await client.embed([profile["expertise"]]))[0]

        Memory(self.settings.qdrant).put_expertise(profile["agent_id"], profile["expertise"],
                                                  asyncio.run(embed()))

    def update(self, agent_id: str, change: Callable[[dict], dict]) -> dict:
        """Publish a new version of the agent with the fields ``change(current profile)``
        returns (it may raise to refuse)."""
        profiles = self.load()
        if agent_id not in profiles:
            raise UnknownAgent(f"unknown agent {agent_id!r}")
        profile = changed(profiles[agent_id], **change(profiles[agent_id]))
        self.publish(profile)
        return profile

    def grant(self, agent_id: str, permissions: list[str], revoke: bool = False) -> dict:
        """Override the template's permissions of one agent (``with_permissions``)."""
        return self.update(agent_id, lambda p: with_permissions(p, revoke=permissions)
                           if revoke else with_permissions(p, grant=permissions))

    def set_state(self, agent_id: str, state: str, reason: str | None = None) -> dict:
        if state not in STATES:
            raise Invalid(f"unknown state {state!r}; states: {', '.join(STATES)}")
        return self.update(agent_id, lambda p: {"state": state, "state_reason": reason})
