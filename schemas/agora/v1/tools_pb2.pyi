import datetime

from schemas.agora.v1 import votes_pb2 as _votes_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_STATUS_UNSPECIFIED: _ClassVar[ToolStatus]
    TOOL_STATUS_OK: _ClassVar[ToolStatus]
    TOOL_STATUS_DENIED: _ClassVar[ToolStatus]
    TOOL_STATUS_REJECTED: _ClassVar[ToolStatus]
    TOOL_STATUS_FAILED: _ClassVar[ToolStatus]
    TOOL_STATUS_TIMEOUT: _ClassVar[ToolStatus]
TOOL_STATUS_UNSPECIFIED: ToolStatus
TOOL_STATUS_OK: ToolStatus
TOOL_STATUS_DENIED: ToolStatus
TOOL_STATUS_REJECTED: ToolStatus
TOOL_STATUS_FAILED: ToolStatus
TOOL_STATUS_TIMEOUT: ToolStatus

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "category", "description", "parameters", "permissions", "needs_vote", "vote_strategy", "vote_quorum", "network", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_VOTE_FIELD_NUMBER: _ClassVar[int]
    VOTE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    VOTE_QUORUM_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    category: str
    description: str
    parameters: _struct_pb2.Struct
    permissions: _containers.RepeatedScalarFieldContainer[str]
    needs_vote: bool
    vote_strategy: _votes_pb2.VoteStrategy
    vote_quorum: float
    network: bool
    limits: ToolLimits
    def __init__(self, name: _Optional[str] = ..., category: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., permissions: _Optional[_Iterable[str]] = ..., needs_vote: _Optional[bool] = ..., vote_strategy: _Optional[_Union[_votes_pb2.VoteStrategy, str]] = ..., vote_quorum: _Optional[float] = ..., network: _Optional[bool] = ..., limits: _Optional[_Union[ToolLimits, _Mapping]] = ...) -> None: ...

class ToolLimits(_message.Message):
    __slots__ = ("cpu_s", "memory_mb", "wall_s", "output_kb", "processes", "file_mb")
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KB_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    FILE_MB_FIELD_NUMBER: _ClassVar[int]
    cpu_s: int
    memory_mb: int
    wall_s: float
    output_kb: int
    processes: int
    file_mb: int
    def __init__(self, cpu_s: _Optional[int] = ..., memory_mb: _Optional[int] = ..., wall_s: _Optional[float] = ..., output_kb: _Optional[int] = ..., processes: _Optional[int] = ..., file_mb: _Optional[int] = ...) -> None: ...

class RequestToolRequest(_message.Message):
    __slots__ = ("channel_id", "agent_id", "tool", "arguments", "reason", "source_message_id", "idempotency_key")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    agent_id: str
    tool: str
    arguments: _struct_pb2.Struct
    reason: str
    source_message_id: str
    idempotency_key: str
    def __init__(self, channel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ..., source_message_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ToolRequest(_message.Message):
    __slots__ = ("request_id", "channel_id", "agent_id", "tool", "arguments", "reason", "source_message_id", "requested_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    channel_id: str
    agent_id: str
    tool: str
    arguments: _struct_pb2.Struct
    reason: str
    source_message_id: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ..., source_message_id: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("result_id", "request_id", "channel_id", "agent_id", "tool", "status", "output", "error", "artifacts", "vote_id", "started_at", "finished_at", "duration")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    request_id: str
    channel_id: str
    agent_id: str
    tool: str
    status: ToolStatus
    output: str
    error: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    vote_id: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    def __init__(self, result_id: _Optional[str] = ..., request_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., tool: _Optional[str] = ..., status: _Optional[_Union[ToolStatus, str]] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ..., vote_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
