"""AgentService: the agent registry (agora.agents) behind the CLI's ``agora agents``.

The gateway keeps the registry as a live table (``GlobalTable``); each call first
waits until the table holds everything written before it (``caught_up``: where the
partitions end, then the table there), so a caller reads its own and everyone's
writes without reading the topic again. Changes are read, changed and published one
at a time in this process, so that two calls at once do not lose one of their
changes. Creating an agent takes admin of its channel, changing one admin of every
channel it is in; it is visible to a caller with access to at least one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from confluent_kafka import KafkaException

from gateway import validation
from gateway.auth import Caller, Role
from gateway.guard import caller, require_channel
from gateway.registry import Registry
from inference.client import InferenceError
from ops.core.config import Settings
from ops.core.errors import Denied, NotFound, Unavailable
from ops.core.globaltable import CAUGHT_UP_S, GlobalTable
from schemas import codec
from schemas.agora.v1 import agents_pb2, agents_pb2_grpc
from schemas.convert import enum, timestamp
from schemas.events import AgentProfile
from schemas.topics import AGENTS
from streams.domain.registry import created, templates, updated, with_permissions

MAX_NAME = 128


def agent(profile: AgentProfile) -> agents_pb2.Agent:
    return agents_pb2.Agent(
        agent_id=profile["agent_id"], name=profile["name"], template=profile["template"],
        persona=profile["persona"], system_prompt=profile["system_prompt"],
        expertise=profile["expertise"], tools=profile["tools"], channels=profile["channels"],
        permissions=profile["permissions"], state=enum(agents_pb2.AgentState, profile["state"]),
        state_reason=profile["state_reason"] or "",
        performance_score=profile["performance_score"],
        created_at=timestamp(profile["created_at"]), updated_at=timestamp(profile["updated_at"]))


def _visible(who: Caller, profile: dict) -> bool:
    return any(who.may_access(c) for c in profile["channels"])


def _may_change(who: Caller, profile: AgentProfile) -> None:
    """Changing an agent (its state, its permissions) takes admin of all its channels:
    what it may do there decides who votes and who runs tools."""
    blocked = [c for c in profile["channels"] if not who.may(c, Role.ADMIN)]
    if blocked:
        raise Denied(f"{who.subject} is not admin of channel(s) {', '.join(blocked)} of "
                     f"agent {profile['agent_id']!r}")


def _permissions(values, field: str) -> list[str]:
    return [validation.identifier(v, f"{field}[{i}]") for i, v in enumerate(values)]


class AgentService(agents_pb2_grpc.AgentServiceServicer):
    def __init__(self, settings: Settings):
        self.registry = Registry(settings)
        self.profiles: GlobalTable[AgentProfile] = GlobalTable(
            settings, AGENTS.name, codec.records_of(AgentProfile))
        self._writes = asyncio.Lock()

    async def start(self) -> None:
        await self.profiles.start()

    async def stop(self) -> None:
        await self.profiles.stop()

    async def _current(self) -> dict[str, AgentProfile]:
        """The registry with every change made before the call."""
        try:
            await self.profiles.caught_up()
        except TimeoutError as exc:
            raise Unavailable("agent registry: not caught up with agora.agents in "
                              f"{CAUGHT_UP_S}s") from exc
        return self.profiles.data

    async def _save(self, profile: AgentProfile, action: str) -> None:
        """Publish a change (a new agent's expertise embedding first): Kafka and Triton
        failures are UNAVAILABLE."""
        try:
            await asyncio.to_thread(self.registry.save, profile, action)
        except (KafkaException, TimeoutError, InferenceError) as exc:
            raise Unavailable(f"agent registry: {exc}") from exc

    async def _profile(self, agent_id: str) -> AgentProfile:
        profile = (await self._current()).get(agent_id)
        if profile is None:
            raise NotFound(f"unknown agent {agent_id!r}")
        return profile

    async def _change(self, agent_id: str, fields: Callable[[AgentProfile], dict]
                      ) -> agents_pb2.Agent:
        who = caller()

        def checked(current: AgentProfile) -> dict:
            _may_change(who, current)
            return fields(current)

        async with self._writes:
            profile = updated((await self._current()).get(agent_id), agent_id, checked)
            await self._save(profile, "updated")
        return agent(profile)

    async def CreateAgent(self, request, context):
        if not request.template:
            raise validation.InvalidField("template", "is required")
        if request.template not in templates():
            raise validation.InvalidField("template", f"unknown template {request.template!r}; "
                                                      f"templates: {', '.join(templates())}")
        channel = validation.channel_id(request.channel_id)
        require_channel(channel, Role.ADMIN)
        agent_id = validation.agent_id(request.agent_id) if request.agent_id else None
        if len(request.name) > MAX_NAME:
            raise validation.InvalidField("name", f"at most {MAX_NAME} characters")
        agent_id = agent_id or request.template
        async with self._writes:
            current = (await self._current()).get(agent_id)
            profile, action = created(current, request.template, channel, agent_id,
                                      request.name or None)
            if action == "joined":  # the agent's other channels are not the caller's
                _may_change(caller(), current)
            await self._save(profile, action)
        return agent(profile)

    async def GetAgent(self, request, context):
        profile = await self._profile(validation.agent_id(request.agent_id))
        who = caller()
        if not _visible(who, profile):
            raise Denied(f"{who.subject} has no access to any channel of agent "
                         f"{profile['agent_id']!r}")
        return agent(profile)

    async def ListAgents(self, request, context):
        size = validation.page_size(request.page_size)
        who = caller()
        channel = validation.channel_id(request.channel_id) if request.channel_id else None
        if channel:
            require_channel(channel)

        def wanted(profile: dict) -> bool:
            return channel in profile["channels"] if channel else _visible(who, profile)

        # The page token is the last agent id of the previous page (agents are listed
        # by id), so a page never repeats or skips an agent created in between.
        after = validation.agent_id(request.page_token, "page_token") if request.page_token else ""
        profiles = await self._current()
        found = sorted((p for p in profiles.values() if p["agent_id"] > after and wanted(p)),
                       key=lambda p: p["agent_id"])
        page = found[:size]
        return agents_pb2.ListAgentsResponse(
            agents=[agent(p) for p in page],
            next_page_token=page[-1]["agent_id"] if len(found) > size else "")

    async def UpdateAgent(self, request, context):
        agent_id = validation.agent_id(request.agent_id)
        grant = _permissions(request.grant_permissions, "grant_permissions")
        revoke = _permissions(request.revoke_permissions, "revoke_permissions")
        if not grant and not revoke:
            raise validation.InvalidField("grant_permissions", "nothing to grant or revoke")
        if both := sorted(set(grant) & set(revoke)):
            raise validation.InvalidField("revoke_permissions", f"{', '.join(both)} also granted")
        return await self._change(agent_id, lambda p: with_permissions(p, grant, revoke))

    async def PauseAgent(self, request, context):
        agent_id = validation.agent_id(request.agent_id)
        return await self._change(agent_id, lambda p: {"state": "PAUSED",
                                                       "state_reason": request.reason or None})

    async def ResumeAgent(self, request, context):
        agent_id = validation.agent_id(request.agent_id)
        return await self._change(agent_id, lambda p: {"state": "ACTIVE", "state_reason": None})
