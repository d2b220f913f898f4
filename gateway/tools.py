"""ToolService: the tool catalog, and tool requests made on an agent's behalf.

A request is checked here against what the gateway knows for sure (the caller's
channel, the catalog, the tool's arguments schema) and then published like the CLI's.
Whether the agent exists, is in the channel and may use the tool is left to the
tools worker: it decides that from its own registry and the channel policy (again
after a vote) and answers with a DENIED result in the channel's stream, so the
gateway does not read the whole registry for every request.
"""

from __future__ import annotations

import json

from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from gateway import validation
from gateway.auth import Role
from gateway.guard import caller, require_channel
from gateway.publish import Recent, publish
from ops.core.kafka import AsyncProducer
from schemas.agora.v1 import tools_pb2, tools_pb2_grpc, votes_pb2
from schemas.convert import enum, timestamp
from schemas.ids import derived_id
from schemas.topics import TOOL_REQUESTS
from streams.domain.tools import catalog
from streams.domain.tools.records import new_request


def _struct(value: dict) -> Struct:
    struct = Struct()
    struct.update(value)
    return struct


def _plain(value):
    """A Struct's value as JSON would carry it: Struct has only doubles, and a tool that
    wants an integer (a row count) should get 3, not 3.0."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def tool(definition: catalog.Tool) -> tools_pb2.Tool:
    limits = definition.limits
    return tools_pb2.Tool(
        name=definition.name, category=definition.category,
        description=definition.description, parameters=_struct(definition.parameters),
        permissions=definition.permissions, needs_vote=definition.needs_vote,
        vote_strategy=enum(votes_pb2.VoteStrategy, definition.vote_strategy),
        vote_quorum=definition.vote_quorum, network=definition.network,
        limits=tools_pb2.ToolLimits(
            cpu_s=limits.cpu_s, memory_mb=limits.memory_mb, wall_s=limits.wall_s,
            output_kb=limits.output_kb, processes=limits.processes, file_mb=limits.file_mb))


def tool_result(record: dict) -> tools_pb2.ToolResult:
    """The stream's form of a ToolResult event."""
    result = tools_pb2.ToolResult(
        result_id=record["event_id"], request_id=record["request_id"],
        channel_id=record["channel_id"], agent_id=record["agent_id"], tool=record["tool"],
        status=enum(tools_pb2.ToolStatus, record["status"]), output=record["output"],
        error=record["error"] or "", artifacts=record["artifacts"],
        vote_id=record["vote_id"] or "", finished_at=timestamp(record["finished_at"]))
    result.duration.FromMilliseconds(record["duration_ms"])
    if record["started_at"] is not None:
        result.started_at.CopyFrom(timestamp(record["started_at"]))
    return result


class ToolService(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self, producer: AsyncProducer):
        self.producer = producer
        self.recent = Recent()

    async def ListTools(self, request, context):
        return tools_pb2.ListToolsResponse(tools=[tool(t) for t in catalog.load().values()])

    async def RequestTool(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel, Role.MEMBER)
        agent_id = validation.agent_id(request.agent_id)
        tools = catalog.load()
        if request.tool not in tools:
            raise validation.InvalidField("tool", f"unknown tool {request.tool!r}; tools: "
                                                  f"{', '.join(tools)}")
        try:
            arguments = _plain(MessageToDict(request.arguments))
        except ValueError:  # NaN or infinity, which JSON cannot carry
            raise validation.InvalidField("arguments", "numbers must be finite") from None
        try:
            catalog.arguments(tools[request.tool], json.dumps(arguments))
        except catalog.InvalidArguments as exc:
            raise validation.InvalidField("arguments", str(exc)) from None
        source = (validation.identifier(request.source_message_id, "source_message_id")
                  if request.source_message_id else None)
        key = validation.idempotency_key(request.idempotency_key)
        request_id = derived_id("gateway", caller().subject, key, "tool-request")
        if (earlier := self.recent.get(request_id, request)) is not None:
            return earlier
        record = new_request(agent_id, channel, request.tool, arguments,
                             request.reason or f"requested by {caller().subject}", source,
                             event_id=request_id)
        answer = tools_pb2.ToolRequest(
            request_id=request_id, channel_id=channel, agent_id=agent_id, tool=request.tool,
            arguments=_struct(arguments), reason=record["reason"],
            source_message_id=source or "", requested_at=timestamp(record["requested_at"]))
        return await publish(self.producer, self.recent, request, request_id,
                             TOOL_REQUESTS.name, channel, "ToolRequest", record, answer)
