import datetime

from schemas.agora.v1 import tools_pb2 as _tools_pb2
from schemas.agora.v1 import votes_pb2 as _votes_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTHOR_KIND_UNSPECIFIED: _ClassVar[AuthorKind]
    AUTHOR_KIND_HUMAN: _ClassVar[AuthorKind]
    AUTHOR_KIND_AGENT: _ClassVar[AuthorKind]
    AUTHOR_KIND_SYSTEM: _ClassVar[AuthorKind]
AUTHOR_KIND_UNSPECIFIED: AuthorKind
AUTHOR_KIND_HUMAN: AuthorKind
AUTHOR_KIND_AGENT: AuthorKind
AUTHOR_KIND_SYSTEM: AuthorKind

class ChatMessage(_message.Message):
    __slots__ = ("message_id", "channel_id", "thread_id", "reply_to", "author_id", "author_kind", "text", "mentions", "thread_depth", "created_at", "task_id", "metadata", "sources")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    THREAD_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    channel_id: str
    thread_id: str
    reply_to: str
    author_id: str
    author_kind: AuthorKind
    text: str
    mentions: _containers.RepeatedScalarFieldContainer[str]
    thread_depth: int
    created_at: _timestamp_pb2.Timestamp
    task_id: str
    metadata: _containers.ScalarMap[str, str]
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    def __init__(self, message_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., reply_to: _Optional[str] = ..., author_id: _Optional[str] = ..., author_kind: _Optional[_Union[AuthorKind, str]] = ..., text: _Optional[str] = ..., mentions: _Optional[_Iterable[str]] = ..., thread_depth: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("document_id", "chunk_id", "title", "heading")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    HEADING_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    chunk_id: str
    title: str
    heading: str
    def __init__(self, document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., title: _Optional[str] = ..., heading: _Optional[str] = ...) -> None: ...

class PostMessageRequest(_message.Message):
    __slots__ = ("channel_id", "text", "reply_to", "mentions", "metadata", "idempotency_key")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    text: str
    reply_to: str
    mentions: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    idempotency_key: str
    def __init__(self, channel_id: _Optional[str] = ..., text: _Optional[str] = ..., reply_to: _Optional[str] = ..., mentions: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StreamChannelRequest(_message.Message):
    __slots__ = ("channel_id", "cursor", "start_time")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    cursor: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, channel_id: _Optional[str] = ..., cursor: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChannelEvent(_message.Message):
    __slots__ = ("cursor", "time", "message", "relevance", "tool_result", "vote_update", "reply_chunk")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    VOTE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    REPLY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    time: _timestamp_pb2.Timestamp
    message: ChatMessage
    relevance: RelevanceSummary
    tool_result: _tools_pb2.ToolResult
    vote_update: _votes_pb2.VoteUpdate
    reply_chunk: ReplyChunk
    def __init__(self, cursor: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[_Union[ChatMessage, _Mapping]] = ..., relevance: _Optional[_Union[RelevanceSummary, _Mapping]] = ..., tool_result: _Optional[_Union[_tools_pb2.ToolResult, _Mapping]] = ..., vote_update: _Optional[_Union[_votes_pb2.VoteUpdate, _Mapping]] = ..., reply_chunk: _Optional[_Union[ReplyChunk, _Mapping]] = ...) -> None: ...

class ReplyChunk(_message.Message):
    __slots__ = ("message_id", "task_id", "agent_id", "reply_to", "thread_id", "seq", "offset", "text", "created_at")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    task_id: str
    agent_id: str
    reply_to: str
    thread_id: str
    seq: int
    offset: int
    text: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., reply_to: _Optional[str] = ..., thread_id: _Optional[str] = ..., seq: _Optional[int] = ..., offset: _Optional[int] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RelevanceSummary(_message.Message):
    __slots__ = ("decision_id", "message_id", "thread_id", "selected", "scores", "skip_reason", "decided_at", "config_version")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    message_id: str
    thread_id: str
    selected: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedCompositeFieldContainer[AgentScore]
    skip_reason: str
    decided_at: _timestamp_pb2.Timestamp
    config_version: str
    def __init__(self, decision_id: _Optional[str] = ..., message_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., selected: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[_Union[AgentScore, _Mapping]]] = ..., skip_reason: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., config_version: _Optional[str] = ...) -> None: ...

class AgentScore(_message.Message):
    __slots__ = ("agent_id", "score", "expertise", "workload", "social", "timing", "quality", "selected", "reason")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPERTISE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    SOCIAL_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    score: float
    expertise: float
    workload: float
    social: float
    timing: float
    quality: float
    selected: bool
    reason: str
    def __init__(self, agent_id: _Optional[str] = ..., score: _Optional[float] = ..., expertise: _Optional[float] = ..., workload: _Optional[float] = ..., social: _Optional[float] = ..., timing: _Optional[float] = ..., quality: _Optional[float] = ..., selected: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("channel_id", "thread_id", "before", "page_size", "page_token")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    thread_id: str
    before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, channel_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RateReplyRequest(_message.Message):
    __slots__ = ("message_id", "rating", "comment")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    rating: int
    comment: str
    def __init__(self, message_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class ReplyRating(_message.Message):
    __slots__ = ("rating_id", "message_id", "channel_id", "agent_id", "rater_id", "rating", "comment", "rated_at")
    RATING_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RATER_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    RATED_AT_FIELD_NUMBER: _ClassVar[int]
    rating_id: str
    message_id: str
    channel_id: str
    agent_id: str
    rater_id: str
    rating: int
    comment: str
    rated_at: _timestamp_pb2.Timestamp
    def __init__(self, rating_id: _Optional[str] = ..., message_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., rater_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., rated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
