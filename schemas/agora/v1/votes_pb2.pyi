import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoteType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_TYPE_UNSPECIFIED: _ClassVar[VoteType]
    VOTE_TYPE_TOOL_USAGE: _ClassVar[VoteType]
    VOTE_TYPE_PROJECT_DECISION: _ClassVar[VoteType]
    VOTE_TYPE_CONFLICT_RESOLUTION: _ClassVar[VoteType]
    VOTE_TYPE_RESOURCE_ALLOCATION: _ClassVar[VoteType]

class VoteStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_STRATEGY_UNSPECIFIED: _ClassVar[VoteStrategy]
    VOTE_STRATEGY_SIMPLE_MAJORITY: _ClassVar[VoteStrategy]
    VOTE_STRATEGY_QUALIFIED_MAJORITY: _ClassVar[VoteStrategy]
    VOTE_STRATEGY_CONSENSUS: _ClassVar[VoteStrategy]
    VOTE_STRATEGY_WEIGHTED: _ClassVar[VoteStrategy]

class VoteStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_STATUS_UNSPECIFIED: _ClassVar[VoteStatus]
    VOTE_STATUS_OPEN: _ClassVar[VoteStatus]
    VOTE_STATUS_CLOSED: _ClassVar[VoteStatus]

class VoteOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_OUTCOME_UNSPECIFIED: _ClassVar[VoteOutcome]
    VOTE_OUTCOME_PASSED: _ClassVar[VoteOutcome]
    VOTE_OUTCOME_FAILED: _ClassVar[VoteOutcome]
    VOTE_OUTCOME_NO_QUORUM: _ClassVar[VoteOutcome]
    VOTE_OUTCOME_TIED: _ClassVar[VoteOutcome]
    VOTE_OUTCOME_EXPIRED: _ClassVar[VoteOutcome]

class BallotRejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BALLOT_REJECT_REASON_UNSPECIFIED: _ClassVar[BallotRejectReason]
    BALLOT_REJECT_REASON_DUPLICATE: _ClassVar[BallotRejectReason]
    BALLOT_REJECT_REASON_LATE: _ClassVar[BallotRejectReason]
    BALLOT_REJECT_REASON_INELIGIBLE: _ClassVar[BallotRejectReason]
    BALLOT_REJECT_REASON_UNKNOWN_VOTE: _ClassVar[BallotRejectReason]
    BALLOT_REJECT_REASON_INVALID_CHOICE: _ClassVar[BallotRejectReason]
VOTE_TYPE_UNSPECIFIED: VoteType
VOTE_TYPE_TOOL_USAGE: VoteType
VOTE_TYPE_PROJECT_DECISION: VoteType
VOTE_TYPE_CONFLICT_RESOLUTION: VoteType
VOTE_TYPE_RESOURCE_ALLOCATION: VoteType
VOTE_STRATEGY_UNSPECIFIED: VoteStrategy
VOTE_STRATEGY_SIMPLE_MAJORITY: VoteStrategy
VOTE_STRATEGY_QUALIFIED_MAJORITY: VoteStrategy
VOTE_STRATEGY_CONSENSUS: VoteStrategy
VOTE_STRATEGY_WEIGHTED: VoteStrategy
VOTE_STATUS_UNSPECIFIED: VoteStatus
VOTE_STATUS_OPEN: VoteStatus
VOTE_STATUS_CLOSED: VoteStatus
VOTE_OUTCOME_UNSPECIFIED: VoteOutcome
VOTE_OUTCOME_PASSED: VoteOutcome
VOTE_OUTCOME_FAILED: VoteOutcome
VOTE_OUTCOME_NO_QUORUM: VoteOutcome
VOTE_OUTCOME_TIED: VoteOutcome
VOTE_OUTCOME_EXPIRED: VoteOutcome
BALLOT_REJECT_REASON_UNSPECIFIED: BallotRejectReason
BALLOT_REJECT_REASON_DUPLICATE: BallotRejectReason
BALLOT_REJECT_REASON_LATE: BallotRejectReason
BALLOT_REJECT_REASON_INELIGIBLE: BallotRejectReason
BALLOT_REJECT_REASON_UNKNOWN_VOTE: BallotRejectReason
BALLOT_REJECT_REASON_INVALID_CHOICE: BallotRejectReason

class StartVoteRequest(_message.Message):
    __slots__ = ("channel_id", "title", "description", "vote_type", "strategy", "options", "eligible_voters", "weights", "quorum", "deadline", "idempotency_key")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VOTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_VOTERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    title: str
    description: str
    vote_type: VoteType
    strategy: VoteStrategy
    options: _containers.RepeatedScalarFieldContainer[str]
    eligible_voters: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.ScalarMap[str, float]
    quorum: float
    deadline: _duration_pb2.Duration
    idempotency_key: str
    def __init__(self, channel_id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., vote_type: _Optional[_Union[VoteType, str]] = ..., strategy: _Optional[_Union[VoteStrategy, str]] = ..., options: _Optional[_Iterable[str]] = ..., eligible_voters: _Optional[_Iterable[str]] = ..., weights: _Optional[_Mapping[str, float]] = ..., quorum: _Optional[float] = ..., deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CastBallotRequest(_message.Message):
    __slots__ = ("vote_id", "channel_id", "choice", "rationale", "idempotency_key")
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    channel_id: str
    choice: str
    rationale: str
    idempotency_key: str
    def __init__(self, vote_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., choice: _Optional[str] = ..., rationale: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetVoteRequest(_message.Message):
    __slots__ = ("vote_id",)
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    def __init__(self, vote_id: _Optional[str] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("vote_id", "channel_id", "proposer_id", "vote_type", "strategy", "title", "description", "options", "eligible_voters", "weights", "quorum", "deadline_at", "created_at", "tool_request_id", "status", "result", "ballots", "rejections")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_VOTERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TOOL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    BALLOTS_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    vote_id: str
    channel_id: str
    proposer_id: str
    vote_type: VoteType
    strategy: VoteStrategy
    title: str
    description: str
    options: _containers.RepeatedScalarFieldContainer[str]
    eligible_voters: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.ScalarMap[str, float]
    quorum: float
    deadline_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    tool_request_id: str
    status: VoteStatus
    result: VoteResult
    ballots: _containers.RepeatedCompositeFieldContainer[Ballot]
    rejections: _containers.RepeatedCompositeFieldContainer[BallotRejected]
    def __init__(self, vote_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., proposer_id: _Optional[str] = ..., vote_type: _Optional[_Union[VoteType, str]] = ..., strategy: _Optional[_Union[VoteStrategy, str]] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., eligible_voters: _Optional[_Iterable[str]] = ..., weights: _Optional[_Mapping[str, float]] = ..., quorum: _Optional[float] = ..., deadline_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tool_request_id: _Optional[str] = ..., status: _Optional[_Union[VoteStatus, str]] = ..., result: _Optional[_Union[VoteResult, _Mapping]] = ..., ballots: _Optional[_Iterable[_Union[Ballot, _Mapping]]] = ..., rejections: _Optional[_Iterable[_Union[BallotRejected, _Mapping]]] = ...) -> None: ...

class Ballot(_message.Message):
    __slots__ = ("ballot_id", "vote_id", "channel_id", "voter_id", "choice", "rationale", "cast_at")
    BALLOT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    VOTER_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    CAST_AT_FIELD_NUMBER: _ClassVar[int]
    ballot_id: str
    vote_id: str
    channel_id: str
    voter_id: str
    choice: str
    rationale: str
    cast_at: _timestamp_pb2.Timestamp
    def __init__(self, ballot_id: _Optional[str] = ..., vote_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., voter_id: _Optional[str] = ..., choice: _Optional[str] = ..., rationale: _Optional[str] = ..., cast_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BallotRejected(_message.Message):
    __slots__ = ("rejection_id", "vote_id", "voter_id", "ballot_id", "reason", "detail", "rejected_at", "channel_id")
    REJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    VOTER_ID_FIELD_NUMBER: _ClassVar[int]
    BALLOT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    rejection_id: str
    vote_id: str
    voter_id: str
    ballot_id: str
    reason: BallotRejectReason
    detail: str
    rejected_at: _timestamp_pb2.Timestamp
    channel_id: str
    def __init__(self, rejection_id: _Optional[str] = ..., vote_id: _Optional[str] = ..., voter_id: _Optional[str] = ..., ballot_id: _Optional[str] = ..., reason: _Optional[_Union[BallotRejectReason, str]] = ..., detail: _Optional[str] = ..., rejected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channel_id: _Optional[str] = ...) -> None: ...

class VoteResult(_message.Message):
    __slots__ = ("result_id", "vote_id", "channel_id", "vote_type", "strategy", "outcome", "winning_option", "tally", "ballots_counted", "eligible_count", "reason", "closed_at", "tool_request_id")
    class TallyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    WINNING_OPTION_FIELD_NUMBER: _ClassVar[int]
    TALLY_FIELD_NUMBER: _ClassVar[int]
    BALLOTS_COUNTED_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    TOOL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    vote_id: str
    channel_id: str
    vote_type: VoteType
    strategy: VoteStrategy
    outcome: VoteOutcome
    winning_option: str
    tally: _containers.ScalarMap[str, float]
    ballots_counted: int
    eligible_count: int
    reason: str
    closed_at: _timestamp_pb2.Timestamp
    tool_request_id: str
    def __init__(self, result_id: _Optional[str] = ..., vote_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., vote_type: _Optional[_Union[VoteType, str]] = ..., strategy: _Optional[_Union[VoteStrategy, str]] = ..., outcome: _Optional[_Union[VoteOutcome, str]] = ..., winning_option: _Optional[str] = ..., tally: _Optional[_Mapping[str, float]] = ..., ballots_counted: _Optional[int] = ..., eligible_count: _Optional[int] = ..., reason: _Optional[str] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tool_request_id: _Optional[str] = ...) -> None: ...

class VoteUpdate(_message.Message):
    __slots__ = ("opened", "ballot_cast", "ballot_rejected", "closed")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    BALLOT_CAST_FIELD_NUMBER: _ClassVar[int]
    BALLOT_REJECTED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    opened: Vote
    ballot_cast: Ballot
    ballot_rejected: BallotRejected
    closed: VoteResult
    def __init__(self, opened: _Optional[_Union[Vote, _Mapping]] = ..., ballot_cast: _Optional[_Union[Ballot, _Mapping]] = ..., ballot_rejected: _Optional[_Union[BallotRejected, _Mapping]] = ..., closed: _Optional[_Union[VoteResult, _Mapping]] = ...) -> None: ...
